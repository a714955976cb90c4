"""The pre-training commands: `cxlnet vocab`, `cxlnet data`, `cxlnet train` (Hydra apps) and
`cxlnet export` (argparse).

    cxlnet vocab vocab.vocab_size=8000                 # SentencePiece on the shipped corpus sample
    cxlnet data                                        # corpus -> token store (runs/pretrain/data)
    cxlnet train experiment=pretrain_demo              # tiny XLNet on CPU, a few minutes
    cxlnet export runs/pretrain/pretrain-demo out/     # a checkpoint (or run dir) -> HF format

`train` writes into a deterministic run directory `${paths.output_dir}/pretrain/${run_name}`:
`checkpoints/` (`step-XXXXXXXX.ckpt` every `train.save_steps`, `last.ckpt`), `losses.tsv` (step,
loss, lr per optimizer step), `csv/` (logger), and at the end `model/` (Hugging Face format, plus
the `spiece.model` of the token store) and `metrics.json`. Running the same command again resumes
from `checkpoints/last.ckpt`; once `metrics.json` exists the run is finished and is not rerun.
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from omegaconf import DictConfig, OmegaConf

from cxlnet.confdir import CONF_DIR
from cxlnet.errors import CxlnetError, atomic_dir, atomic_write_bytes, atomic_write_json, atomic_write_via, load_tensors
from cxlnet.paths import resolve_data_file
from cxlnet.runs import (check_architecture, chosen_architecture, hydra_job, load_reported, model_settings, record_run,
                         run_dir, show_config)
from cxlnet.text import SPIECE_FILE, save_tokenizer, sha256_bytes

if TYPE_CHECKING:  # torch is imported where it is used: `cxlnet data` / `vocab` start without it
    import torch

log = logging.getLogger(__name__)

LOSS_LOG = "losses.tsv"
VAL_LOG = "val.tsv"  # step, held-out PLM loss, content spread (cxlnet.pretrain.monitor)


# ------------------------------------------------------------------------------------- vocab
def vocab(cfg: DictConfig) -> Path:
    from cxlnet.pretrain.vocab import train_vocab

    v = cfg.vocab
    inputs = [resolve_data_file(cfg.paths.data_dir, p) for p in v.inputs]
    record_run(cfg, run_dir())
    output = Path(str(v.output)).expanduser()
    output.parent.mkdir(parents=True, exist_ok=True)
    model = train_vocab(
        inputs, output, vocab_size=int(v.vocab_size), character_coverage=float(v.character_coverage),
        input_sentence_size=int(v.input_sentence_size), shuffle=bool(v.shuffle),
        num_threads=None if v.num_threads is None else int(v.num_threads),
        seed=None if v.seed is None else int(v.seed), lower=bool(v.lower),
        control_symbols=list(v.control_symbols), user_defined_symbols=list(v.user_defined_symbols),
    )
    log.info("vocabulary (%d pieces) -> %s", int(v.vocab_size), model)
    return model


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="vocab")
@hydra_job
def vocab_main(cfg: DictConfig) -> None:
    vocab(cfg)


# -------------------------------------------------------------------------------------- data
def data(cfg: DictConfig) -> dict:
    from cxlnet.pretrain.corpus import IF_EXISTS, build_store, expand_corpus, slice_name
    from cxlnet.pretrain.encode import default_workers
    from cxlnet.text import Tokenizer

    d = cfg.data
    if d.if_exists not in IF_EXISTS:
        raise CxlnetError(f"data.if_exists={d.if_exists}: must be one of {', '.join(IF_EXISTS)}")
    if not 0 <= int(d.task) < int(d.num_task):
        raise CxlnetError(f"data.task={d.task}: must be in 0..data.num_task-1 (data.num_task={d.num_task})")
    if d.num_workers is not None and int(d.num_workers) < 0:
        raise CxlnetError(f"data.num_workers={d.num_workers}: must be >= 0 (0: encode in this process) or null (one per core)")
    if float(d.part_mb) <= 0:
        raise CxlnetError(f"data.part_mb={d.part_mb}: must be > 0")
    corpus = expand_corpus(list(d.corpus), lambda p: resolve_data_file(cfg.paths.data_dir, p))
    tokenizer = Tokenizer(resolve_data_file(cfg.paths.data_dir, d.spiece_model), lower=bool(d.lower))
    record_run(cfg, run_dir())
    out_dir = Path(str(d.out_dir)).expanduser()
    workers = default_workers() if d.num_workers is None else int(d.num_workers)
    manifest = build_store(corpus, tokenizer, out_dir, num_shards=int(d.num_shards), num_workers=workers,
                           part_bytes=max(1, int(float(d.part_mb) * 2**20)), if_exists=str(d.if_exists),
                           num_task=int(d.num_task), task=int(d.task))
    c = manifest["counts"]
    where = out_dir / slice_name(int(d.task), int(d.num_task)) if int(d.num_task) > 1 else out_dir
    log.info("token store -> %s: %d tokens, %d documents, %d shards", where, c["tokens"], c["documents"],
             len(manifest["shards"]))
    return manifest


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="data")
@hydra_job
def data_main(cfg: DictConfig) -> None:
    data(cfg)


# ------------------------------------------------------------------------------------- train
def atomic_checkpoint_io(accelerator: str):
    """Lightning's checkpoint writer for the accelerator (torch.save, or XLA's device-to-host copy
    first), writing to a temporary file beside the target that is fsynced and renamed into place."""
    from lightning_fabric.utilities.cloud_io import get_filesystem

    from cxlnet.xla import require_torch_xla

    if accelerator == "tpu":
        require_torch_xla()  # XLACheckpointIO raises a bare ModuleNotFoundError without it
        from lightning_fabric.plugins.io.xla import XLACheckpointIO as Writer
    else:
        from pytorch_lightning.plugins.io import TorchCheckpointIO as Writer

    class AtomicCheckpointIO(Writer):
        def save_checkpoint(self, checkpoint, path, storage_options=None):
            if not isinstance(get_filesystem(str(path)), type(get_filesystem("/"))):
                return super().save_checkpoint(checkpoint, path, storage_options)  # remote: fsspec
            atomic_write_via(path, lambda tmp: super(AtomicCheckpointIO, self).save_checkpoint(
                checkpoint, tmp, storage_options))

    return AtomicCheckpointIO()


def build_model(cfg: DictConfig, vocab_size: int, store_desc: str = "the token store"):
    """XLNetLMHeadModel for the run: random init (`model.config`) or `model.pretrained` (hfl / cxlnet)."""
    from cxlnet.model import XLNetConfig, XLNetLMHeadModel

    memory = dict(mem_len=int(cfg.mem_len) or None, reuse_len=int(cfg.data.reuse_len), bi_data=bool(cfg.data.bi_data))
    arch, run_settings = model_settings(cfg.model, vocab_size, **memory)
    if cfg.model.pretrained is None:
        model = XLNetLMHeadModel(XLNetConfig.from_dict(arch, source="model.config"))
        source = f"XLNet-{cfg.model.name} config"
    else:
        source = f"model.pretrained={cfg.model.pretrained}"
        model = load_reported(XLNetLMHeadModel, cfg.model.pretrained, chosen_architecture(cfg, vocab_size, **memory),
                              cfg.model.name, **run_settings)
        check_architecture(cfg.model, model.config)
    if model.config.vocab_size != vocab_size:
        raise CxlnetError(f"{source}: vocab size {model.config.vocab_size} differs from the tokenizer's "
                          f"{vocab_size} ({store_desc})")
    return model


def unigram_log_prior(store, shards: list[int], vocab_size: int) -> torch.Tensor:
    """log p(piece) over the tokens of `shards`, add-one smoothed (`train.lm_bias_init=unigram`)."""
    import numpy as np
    import torch

    counts = np.zeros(vocab_size, dtype=np.float64)
    for k in shards:
        counts += np.bincount(store.shard(k).ids, minlength=vocab_size)[:vocab_size]
    store.release()
    return torch.from_numpy(np.log((counts + 1.0) / (counts.sum() + vocab_size))).float()


def record_tokenizer(store, store_path: Path, out_dir: Path) -> dict:
    """Copy the token store's SentencePiece model into the run as `spiece.model` (once; a resumed
    run keeps its copy) and return its record (source, sha256, the model's bytes) for checkpoints,
    so a run, a checkpoint and an export each carry the tokenizer the model was trained with."""
    info = store.manifest.get("tokenizer", {})
    want, source = info.get("sha256"), Path(str(info.get("path", "?")))
    copy = out_dir / SPIECE_FILE
    for candidate in (copy, source):
        if candidate.is_file() and sha256_bytes(data := candidate.read_bytes()) == want:
            break
    else:
        raise CxlnetError(f"data.store={store_path}: its tokenizer {source} is missing or changed since the store "
                          f"was built (sha256 {want}); rebuild the store with `cxlnet data`")
    if candidate != copy:
        save_tokenizer(source, out_dir)
    record = {"source": str(source), "sha256": want, "vocab_size": int(store.manifest["vocab_size"])}
    atomic_write_json(out_dir / "tokenizer.json", record)
    return {**record, "spiece_model": data}


def write_store_record(cfg: DictConfig, out_dir: Path, store) -> None:
    """The run record of a pre-training run: every file of the token store and its tokenizer."""
    from cxlnet.pretrain.corpus import MANIFEST
    from cxlnet.record import write_run_record

    names = [MANIFEST, store.manifest.get("start_pieces", "start_pieces.npy"),  # a union of slices: theirs
             *(f"{name}/{MANIFEST}" for name in store.manifest.get("slices", []))]
    names += [s[k] for s in store.manifest["shards"] for k in ("ids", "sent")]
    files = {f"store/{name}": store.dir / name for name in names if (store.dir / name).is_file()}
    tok = Path(store.manifest.get("tokenizer", {}).get("path", ""))
    write_run_record(out_dir, files, tok if tok.is_file() else None,
                     accelerator=cfg.hardware.accelerator, devices=cfg.hardware.devices)


def _resume_path(cfg: DictConfig, out_dir: Path) -> Path | None:
    setting = cfg.train.ckpt_path
    last = out_dir / "checkpoints" / "last.ckpt"
    if setting is None or str(setting).lower() in ("null", "none", ""):
        if last.exists():
            log.warning("train.ckpt_path=null: starting afresh; checkpoints in %s will be overwritten", last.parent)
        return None
    if str(setting) in ("auto", "last"):
        return last if last.is_file() else None
    path = Path(str(setting)).expanduser()
    if path.is_dir():
        path = path / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise CxlnetError(f"train.ckpt_path={setting}: no checkpoint there")
    return path


def _num_slices(cfg: DictConfig) -> int | None:
    """Row slices of a stream batch (processes x accumulation), when the config fixes them."""
    devices = cfg.hardware.devices
    if isinstance(devices, int):
        world = devices
    elif OmegaConf.is_list(devices):
        world = len(devices)
    elif cfg.hardware.accelerator == "cpu":
        world = 1
    else:
        return None  # `auto` on an accelerator: the restore checks it once the trainer knows
    processes = world * int(cfg.hardware.get("num_nodes", 1))
    micro = cfg.hardware.get("micro_batch_size")
    if micro == "auto":
        return None  # picked at start: the restore checks it once the trainer knows
    per_process = int(cfg.data.bsz) // processes
    return processes * (1 if micro is None else max(1, per_process // int(micro)))


def resume_state(cfg: DictConfig, out_dir: Path, store_path: Path) -> tuple[Path | None, dict | None]:
    """The checkpoint this run resumes from and its contents, checked against the run's data and
    row layout before anything is written: a truncated, foreign or code-executing file and a
    resume on other data are one line each."""
    from cxlnet.errors import load_tensors
    from cxlnet.pretrain.corpus import TokenStore
    from cxlnet.pretrain.module import STATE_KEY, check_resume, data_identity

    ckpt = _resume_path(cfg, out_dir)
    if ckpt is None:
        return None, None
    state = load_tensors(ckpt, "checkpoint", mmap=True)
    info = state.get(STATE_KEY) if isinstance(state, dict) else None
    if not isinstance(info, dict) or "global_step" not in state:
        raise CxlnetError(f"{ckpt}: not a `cxlnet train` checkpoint (no {STATE_KEY} state)")
    slices = _num_slices(cfg)
    train_shards, _ = split_shards(cfg.data, TokenStore(store_path).num_shards)
    data_cfg = OmegaConf.merge(cfg.data, {"store": str(store_path), "shards": train_shards})
    identity = data_identity(data_cfg, slices or int(info["num_slices"]), int(cfg.seed))
    check_resume(info, slices or int(info["num_slices"]), identity)
    check_recipe(info.get("recipe"), recipe_identity(cfg))
    return ckpt, state


def recipe_identity(cfg: DictConfig) -> dict:
    """The training settings a checkpoint was written with, as dotted keys (`train.max_steps` and
    `train.stop_after` are left out: a run may be extended)."""
    settings = {"optimizer": OmegaConf.to_container(cfg.optimizer, resolve=True),
                "trainer.gradient_clip_val": cfg.trainer.gradient_clip_val,
                "train.lm_bias_init": cfg.train.lm_bias_init, "mem_reset_every": cfg.get("mem_reset_every")}
    return dict(_leaves(settings))


def _leaves(node: dict, prefix: str = ""):
    for key, value in node.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def check_recipe(saved: dict | None, now: dict) -> None:
    """Refuse to resume with another optimizer, schedule, clipping or initialisation: the run
    would silently continue under settings its first steps never had (older checkpoints record
    none and are not checked)."""
    if saved is None or saved == now:
        return
    diff = sorted(k for k in {**saved, **now} if saved.get(k) != now.get(k))
    what = ", ".join(f"{k} {saved.get(k)!r} -> {now.get(k)!r}" for k in diff)
    raise CxlnetError(f"the checkpoint was trained with other settings ({what}): resume with the settings it was "
                      f"written with, or start a new run_name")


def preflight(cfg: DictConfig, run: str | None) -> None:
    """`cxlnet train`'s checks before Hydra creates or touches the run directory."""
    if run is not None:
        resume_state(cfg, Path(run), resolve_data_file(cfg.paths.data_dir, cfg.data.store))


def train(cfg: DictConfig) -> dict:
    import pytorch_lightning as pl
    import torch
    from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint, RichProgressBar

    from cxlnet.batching import BatchRequest
    from cxlnet.pretrain.corpus import TokenStore
    from cxlnet.pretrain.module import PretrainModule
    from cxlnet.training import build_trainer, ensure_unfinished

    started = time.time()
    out_dir = run_dir()
    ensure_unfinished(out_dir)
    store_path = resolve_data_file(cfg.paths.data_dir, cfg.data.store)
    store = TokenStore(store_path)
    vocab_size = int(store.manifest["vocab_size"])
    tok_path = out_dir / SPIECE_FILE  # the run's copy, written once the checks below pass
    ckpt, state = resume_state(cfg, out_dir, store_path)
    start_step = int(state["global_step"]) if state else 0
    pl.seed_everything(int(cfg.seed), workers=True)
    model = build_model(cfg, vocab_size, f"{tok_path}, store {store_path}")
    train_shards, val_shards = split_shards(cfg.data, store.num_shards)
    if cfg.train.lm_bias_init == "unigram" and cfg.model.pretrained is None and ckpt is None:
        # a fresh run only: a resumed one restores its bias from the checkpoint (no pass over the store)
        with torch.no_grad():
            model.lm_loss.bias.copy_(unigram_log_prior(store, train_shards, vocab_size))
    show_config(cfg, out_dir)  # every refusal above leaves the run's record as it was
    tokenizer = record_tokenizer(store, store_path, out_dir)
    write_store_record(cfg, out_dir, store)
    if cfg.model.compile:
        model.compile()
    _warn_early_updates(cfg)
    data_cfg = OmegaConf.merge(cfg.data, {"store": str(store_path), "shards": train_shards})
    # train.stop_after counts the steps of this invocation: the same command continues as far again
    stop_at = None if cfg.train.stop_after is None else min(start_step + int(cfg.train.stop_after),
                                                             int(cfg.train.max_steps))
    module = PretrainModule(model, cfg.optimizer, data_cfg, seed=int(cfg.seed), loss_log=out_dir / LOSS_LOG,
                            stop_after=stop_at, mem_reset_every=cfg.get("mem_reset_every"),
                            tokenizer=tokenizer, val_batches=validation_batches(data_cfg, val_shards, int(cfg.seed)),
                            monitor_cfg=cfg.monitor, val_log=out_dir / VAL_LOG, recipe=recipe_identity(cfg))

    callbacks = [RichProgressBar(leave=True)] if cfg.trainer.enable_progress_bar else []
    if cfg.monitor.throughput:
        from cxlnet.pretrain.monitor import PretrainThroughput

        callbacks.append(PretrainThroughput(cfg.monitor.peak_flops, int(cfg.monitor.throughput_window)))
    if cfg.logger.kind != "none":
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    callbacks.append(ModelCheckpoint(
        dirpath=str(out_dir / "checkpoints"), filename="step-{step:08d}", auto_insert_metric_name=False,
        every_n_train_steps=int(cfg.train.save_steps), save_top_k=int(cfg.train.keep_checkpoints),
        monitor="step", mode="max", save_last=True, save_on_train_epoch_end=False,
    ))
    plugins = [atomic_checkpoint_io(cfg.hardware.accelerator)]
    batch = BatchRequest(int(cfg.data.bsz), "data.bsz", model, seq_len=int(cfg.data.seq_len), mem_len=int(cfg.mem_len),
                         num_predict=int(cfg.data.num_predict), multiple_of=2 if cfg.data.bi_data else 1)
    trainer = build_trainer(
        cfg, out_dir, group=None, batch=batch, max_steps=int(cfg.train.max_steps), max_epochs=-1,
        enable_checkpointing=True, callbacks=callbacks, plugins=plugins, num_sanity_val_steps=0,
        limit_val_batches=0, val_check_interval=None, csv_resume_step=start_step if ckpt else None,
    )
    if cfg.monitor.throughput:  # FLOPs of one micro-batch (its rows: the global batch over devices x accumulation)
        from cxlnet.pretrain.monitor import step_flops

        rows = int(cfg.data.bsz) // (int(trainer.accumulate_grad_batches) * int(trainer.world_size))
        module.flops_per_batch = step_flops(model.config, rows, int(cfg.data.seq_len), int(cfg.data.num_predict))
    if ckpt is not None:
        log.info("resuming from %s", ckpt)
    trainer.fit(module, ckpt_path=str(ckpt) if ckpt else None)
    if trainer.interrupted:
        raise CxlnetError(f"training interrupted at step {trainer.global_step}; run the same command to resume")
    trainer.save_checkpoint(out_dir / "checkpoints" / "last.ckpt")
    if trainer.global_step < int(cfg.train.max_steps):
        log.info("stopped at step %d of %d (train.stop_after=%d); run the same command to train %d more steps",
                 trainer.global_step, int(cfg.train.max_steps), int(cfg.train.stop_after), int(cfg.train.stop_after))
        return {}
    metrics = {}
    if trainer.is_global_zero:
        export_model(module.model, out_dir / "model", spiece=tok_path)
        losses = read_losses(out_dir / LOSS_LOG)
        metrics = {"first_loss": losses[0][1] if losses else float("nan"),
                   "last_loss": losses[-1][1] if losses else float("nan"),
                   "last10_loss": sum(l for _, l, _ in losses[-10:]) / max(1, len(losses[-10:]))}
        validation = read_validation(out_dir / VAL_LOG)
        if validation:  # the last validation (held-out PLM loss, collapse signal) and the first one
            metrics.update(val_loss=validation[-1][1], content_spread=validation[-1][2],
                           first_val_loss=validation[0][1], first_content_spread=validation[0][2])
        record = {"command": "train", "model": cfg.model.name, "seed": int(cfg.seed), "run_name": cfg.run_name,
                  "steps": int(trainer.global_step), "metrics": {k: round(v, 4) for k, v in metrics.items()},
                  "seconds": round(time.time() - started, 1)}
        atomic_write_json(out_dir / "metrics.json", record)
        log.info("loss %.3f -> %.3f in %d steps; HF weights -> %s", metrics["first_loss"], metrics["last_loss"],
                 trainer.global_step, out_dir / "model")
    return metrics


# Largest early AdamWeightDecay step (per weight, steady gradient) without a warning: 5% of the 0.02
# init std. The demo's old preset (lr 1e-3, 30 warm-up steps) reached 5.5e-3 and collapsed.
EARLY_UPDATE_LIMIT = 1e-3


def _warn_early_updates(cfg: DictConfig) -> None:
    """AdamWeightDecay (no bias correction) with a warm-up too short for its lr: say how large its
    first updates are (see `early_update_scale`)."""
    from cxlnet.pretrain.monitor import early_update_scale

    if not str(cfg.optimizer.optim.get("_target_", "")).endswith("AdamWeightDecay"):
        return
    warmup = cfg.optimizer.warmup_steps
    warmup = int(warmup) if warmup is not None else int(float(cfg.optimizer.warmup_ratio) * int(cfg.train.max_steps))
    scale, step = early_update_scale(warmup, int(cfg.train.max_steps), float(cfg.optimizer.min_lr_ratio),
                                     cfg.optimizer.optim.betas)
    lr = float(cfg.optimizer.optim.lr)
    if scale * lr > EARLY_UPDATE_LIMIT:
        log.warning("optimizer: AdamWeightDecay has no bias correction; with %d warm-up steps its update at step %d "
                    "is %.1fx the peak lr %.1e = %.1e per step, 1/%d of the 0.02 init std (XLNet's 20k-step warm-up "
                    "keeps it below 1x lr): a risk of the content-stream collapse that monitor.collapse_threshold "
                    "watches for; lower the lr or lengthen the warm-up", warmup, step, scale, lr, scale * lr,
                    round(0.02 / (scale * lr)))


def split_shards(data_cfg: DictConfig, num_shards: int) -> tuple[list[int] | None, list[int]]:
    """(training shards, held-out validation shards): the last `data.val_shards` shards of the store
    are never trained on. Training shards stay None (the stream's `shards[task::num_task]`) when
    nothing is held out and `data.shards` is unset."""
    held = int(data_cfg.val_shards)
    if held < 0 or held >= num_shards:
        raise CxlnetError(f"data.val_shards={held}: the store has {num_shards} shards, at least one must be left to "
                          f"train on (data.val_shards=0 holds none out; `cxlnet data data.num_shards=N` makes more)")
    val = list(range(num_shards - held, num_shards))
    if data_cfg.shards is not None:
        train = [int(s) for s in data_cfg.shards]
        if set(train) & set(val):
            raise CxlnetError(f"data.shards={train} includes held-out validation shards {sorted(set(train) & set(val))} "
                              f"(data.val_shards={held} holds out the last {held})")
        return train, val
    if not held:
        return None, val
    return list(range(num_shards - held))[int(data_cfg.task)::int(data_cfg.num_task)], val


def validation_batches(data_cfg: DictConfig, shards: list[int], seed: int) -> list[dict]:
    """The first `data.val_batches` stream batches of the held-out shards (the whole global batch,
    same data settings as training), built once."""
    from cxlnet.pretrain.examples import PretrainStream
    from cxlnet.pretrain.module import stream_kwargs

    if not shards or not int(data_cfg.val_batches):
        return []
    kwargs = {**stream_kwargs(data_cfg, 1, seed), "shards": shards, "num_task": 1, "task": 0}
    try:
        stream = PretrainStream(data_cfg.store, **kwargs)
        return list(stream.iter_batches(0, int(data_cfg.val_batches)))
    except CxlnetError as err:
        raise CxlnetError(f"validation shards {shards} (data.val_shards): {err}") from None


def read_validation(path: Path) -> list[tuple[int, float, float]]:
    """(step, validation loss, content spread) rows of a run's val.tsv."""
    if not Path(path).is_file():
        return []
    return [(int(s), float(v), float(c)) for s, v, c in
            (line.split("\t") for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip())]


def read_losses(path: Path) -> list[tuple[int, float, float]]:
    """(step, loss, lr) rows of a run's losses.tsv."""
    if not Path(path).is_file():
        return []
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            s, loss, lr = line.split("\t")
            rows.append((int(s), float(loss), float(lr)))
    return rows


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
@hydra_job
def train_main(cfg: DictConfig) -> None:
    train(cfg)


# ------------------------------------------------------------------------------------ export
def export_model(model, out_dir: Path, spiece: Path | None = None) -> Path:
    """Save an XLNetLMHeadModel in HF format with fine-tuning's memory settings (no mem / bi_data),
    with the `spiece` tokenizer beside it as `spiece.model`."""
    from cxlnet.model import XLNetLMHeadModel

    config = model.config.replace(mem_len=None, reuse_len=None, bi_data=False, grad_checkpointing=False)
    clean = XLNetLMHeadModel(config)
    clean.load_state_dict(model.state_dict())
    clean.save_pretrained(out_dir)
    if spiece is not None:
        save_tokenizer(spiece, out_dir)
    return Path(out_dir)


def find_checkpoint(path_setting: str | Path) -> Path:
    """A `.ckpt` file, or a run directory's `checkpoints/last.ckpt`."""
    path = Path(path_setting).expanduser()
    if path.is_dir():
        last = path / "checkpoints" / "last.ckpt"
        if not last.is_file():
            raise CxlnetError(f"{path}: no checkpoints/last.ckpt (not a `cxlnet train` run directory)")
        return last
    if not path.is_file():
        raise CxlnetError(f"{path}: no such checkpoint")
    return path


def export_checkpoint(ckpt: str | Path, out_dir: str | Path, overwrite: bool = False) -> Path:
    """A `cxlnet train` checkpoint (or run dir) -> Hugging Face `config.json` + `model.safetensors`,
    built beside `out_dir` and renamed into place; an existing `out_dir` needs `overwrite`."""
    with atomic_dir(out_dir, overwrite) as tmp:
        _export_checkpoint(ckpt, tmp)
    return Path(out_dir)


def _export_checkpoint(ckpt: str | Path, out_dir: Path) -> Path:
    from cxlnet.model import XLNetConfig, XLNetLMHeadModel
    from cxlnet.pretrain.module import STATE_KEY

    ckpt = find_checkpoint(ckpt)
    state = load_tensors(ckpt, "checkpoint")
    info = state.get(STATE_KEY) if isinstance(state, dict) else None
    if info is None or "state_dict" not in state:
        raise CxlnetError(f"{ckpt}: not a `cxlnet train` checkpoint (no {STATE_KEY} state)")
    config = XLNetConfig.from_dict(dict(info["model_config"]), source=str(ckpt))
    model = XLNetLMHeadModel(config)
    sd = {k[len("model."):]: v for k, v in state["state_dict"].items() if k.startswith("model.")}
    sd = {k.replace("_orig_mod.", ""): v for k, v in sd.items()}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise CxlnetError(f"{ckpt}: weights do not match the saved config (missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]})")
    out = export_model(model, Path(out_dir))
    tokenizer = info.get("tokenizer")
    if tokenizer:  # the checkpoint carries the tokenizer it was trained with
        if sha256_bytes(tokenizer["spiece_model"]) != tokenizer["sha256"]:
            raise CxlnetError(f"{ckpt}: the saved tokenizer does not match its sha256 (a damaged checkpoint)")
        atomic_write_bytes(out / SPIECE_FILE, tokenizer["spiece_model"])
    elif (ckpt.parent.parent / SPIECE_FILE).is_file():  # a checkpoint of a run that recorded none in it
        save_tokenizer(ckpt.parent.parent / SPIECE_FILE, out)
    else:
        log.warning("%s: no tokenizer recorded with this checkpoint; give model.spiece_model when fine-tuning", ckpt)
    return out


def exported_checkpoint(ckpt: str | Path) -> Path:
    """HF-format export of a checkpoint, cached under `<cache>/exported/<hash of path, size, mtime>`."""
    from cxlnet.paths import cache_dir

    ckpt = Path(ckpt).resolve()
    st = ckpt.stat()
    key = hashlib.sha1(f"{ckpt}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]
    target = cache_dir() / "exported" / f"{ckpt.parent.parent.name}-{ckpt.stem}-{key}"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    export_checkpoint(ckpt, target, overwrite=True)  # an incomplete earlier export is replaced
    log.info("exported %s -> %s", ckpt, target)
    return target


def export_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="cxlnet export",
        description="Write a publishable model directory: Hugging Face format (config.json + "
                    "model.safetensors, loadable by transformers), spiece.model and a model card (README.md "
                    "with a model-index, max (mean) over seeds), from a fine-tuning sweep or run directory, "
                    "or a `cxlnet train` checkpoint or run directory (its checkpoints/last.ckpt).")
    parser.add_argument("checkpoint", help="a sweep dir (summary.json), a finetune run dir, a `cxlnet train` "
                                           "run dir or a .ckpt file")
    parser.add_argument("out_dir", help="output directory (refused if it exists and is not empty)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT_DIR (as a whole)")
    args = parser.parse_args(argv)
    from cxlnet.modelcard import export_any

    out = export_any(args.checkpoint, args.out_dir, overwrite=args.overwrite)
    print(out)
    return 0
