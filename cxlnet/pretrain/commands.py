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
import os
import shutil
import tempfile
import time
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from cxlnet.confdir import CONF_DIR
from cxlnet.errors import CxlnetError, atomic_write_json, atomic_write_via
from cxlnet.paths import resolve_data_file
from cxlnet.runs import chosen_architecture, hydra_job, load_reported, run_dir, show_config

log = logging.getLogger(__name__)

LOSS_LOG = "losses.tsv"


# ------------------------------------------------------------------------------------- vocab
def vocab(cfg: DictConfig) -> Path:
    from cxlnet.pretrain.vocab import train_vocab

    v = cfg.vocab
    inputs = [resolve_data_file(cfg.paths.data_dir, p) for p in v.inputs]
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
    from cxlnet.pretrain.corpus import build_store
    from cxlnet.text import Tokenizer

    d = cfg.data
    corpus = [resolve_data_file(cfg.paths.data_dir, p) for p in d.corpus]
    tokenizer = Tokenizer(resolve_data_file(cfg.paths.data_dir, d.spiece_model), lower=bool(d.lower))
    out_dir = Path(str(d.out_dir)).expanduser()
    manifest = build_store(corpus, tokenizer, out_dir, num_shards=int(d.num_shards))
    c = manifest["counts"]
    if not c.get("sentences"):  # only blank lines: build_store keeps the document-break tokens alone
        (out_dir / "store.json").unlink(missing_ok=True)
        raise CxlnetError(f"empty corpus: no text line in {', '.join(map(str, corpus))}")
    log.info("token store -> %s: %d tokens, %d documents, %d shards", d.out_dir, c["tokens"], c["documents"],
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
    """XLNetLMHeadModel for the run: random init (`model.size`) or `model.pretrained` (hfl / cxlnet)."""
    from cxlnet.model import XLNetConfig, XLNetLMHeadModel

    overrides = dict(OmegaConf.to_container(cfg.model.config, resolve=True))
    overrides.update(mem_len=int(cfg.mem_len) or None, reuse_len=int(cfg.data.reuse_len),
                     bi_data=bool(cfg.data.bi_data), grad_checkpointing=bool(cfg.model.grad_checkpointing))
    if cfg.model.pretrained is None:
        overrides.setdefault("vocab_size", vocab_size)
        model = XLNetLMHeadModel(XLNetConfig.named(cfg.model.size, **overrides))
        source = f"XLNet-{cfg.model.size} config"
    else:
        source = f"model.pretrained={cfg.model.pretrained}"
        model = load_reported(XLNetLMHeadModel, cfg.model.pretrained,
                              chosen_architecture(cfg, **{"vocab_size": vocab_size, **overrides}), cfg.model.name, **overrides)
    if model.config.vocab_size != vocab_size:
        raise CxlnetError(f"{source}: vocab size {model.config.vocab_size} differs from the tokenizer's "
                          f"{vocab_size} ({store_desc})")
    return model


def write_store_record(cfg: DictConfig, out_dir: Path, store) -> None:
    """The run record of a pre-training run: every file of the token store and its tokenizer."""
    from cxlnet.pretrain.corpus import MANIFEST
    from cxlnet.record import write_run_record

    names = [MANIFEST, "start_pieces.npy"] + [s[k] for s in store.manifest["shards"] for k in ("ids", "sent")]
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


def train(cfg: DictConfig) -> dict:
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint, RichProgressBar

    from cxlnet.pretrain.corpus import TokenStore
    from cxlnet.pretrain.module import PretrainModule
    from cxlnet.training import build_trainer, ensure_unfinished

    started = time.time()
    out_dir = run_dir()
    ensure_unfinished(out_dir)
    store_path = resolve_data_file(cfg.paths.data_dir, cfg.data.store)
    store = TokenStore(store_path)
    vocab_size = int(store.manifest["vocab_size"])
    tok_path = store.manifest.get("tokenizer", {}).get("path", "?")
    show_config(cfg, out_dir)
    write_store_record(cfg, out_dir, store)
    ckpt = _resume_path(cfg, out_dir)
    pl.seed_everything(int(cfg.seed), workers=True)
    model = build_model(cfg, vocab_size, f"{tok_path}, store {store_path}")
    if cfg.model.compile:
        model.compile()
    data_cfg = OmegaConf.merge(cfg.data, {"store": str(store_path)})
    module = PretrainModule(model, cfg.optimizer, data_cfg, seed=int(cfg.seed), loss_log=out_dir / LOSS_LOG,
                            stop_after=cfg.train.stop_after)

    callbacks = [RichProgressBar(leave=True)] if cfg.trainer.enable_progress_bar else []
    if cfg.logger.kind != "none":
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    callbacks.append(ModelCheckpoint(
        dirpath=str(out_dir / "checkpoints"), filename="step-{step:08d}", auto_insert_metric_name=False,
        every_n_train_steps=int(cfg.train.save_steps), save_top_k=int(cfg.train.keep_checkpoints),
        monitor="step", mode="max", save_last=True, save_on_train_epoch_end=False,
    ))
    plugins = [atomic_checkpoint_io(cfg.hardware.accelerator)]
    trainer = build_trainer(
        cfg, out_dir, group=None, max_steps=int(cfg.train.max_steps), max_epochs=-1,
        enable_checkpointing=True, callbacks=callbacks, plugins=plugins, num_sanity_val_steps=0,
        limit_val_batches=0, val_check_interval=None,
    )
    if ckpt is not None:
        log.info("resuming from %s", ckpt)
    trainer.fit(module, ckpt_path=str(ckpt) if ckpt else None)
    if trainer.interrupted:
        raise CxlnetError(f"training interrupted at step {trainer.global_step}; run the same command to resume")
    trainer.save_checkpoint(out_dir / "checkpoints" / "last.ckpt")
    if trainer.global_step < int(cfg.train.max_steps):
        log.info("stopped at step %d of %d (train.stop_after); run the same command to continue",
                 trainer.global_step, int(cfg.train.max_steps))
        return {}
    metrics = {}
    if trainer.is_global_zero:
        export_model(module.model, out_dir / "model", spiece=Path(tok_path))
        losses = read_losses(out_dir / LOSS_LOG)
        metrics = {"first_loss": losses[0][1] if losses else float("nan"),
                   "last_loss": losses[-1][1] if losses else float("nan"),
                   "last10_loss": sum(l for _, l, _ in losses[-10:]) / max(1, len(losses[-10:]))}
        record = {"command": "train", "model": cfg.model.name, "seed": int(cfg.seed), "run_name": cfg.run_name,
                  "steps": int(trainer.global_step), "metrics": {k: round(v, 4) for k, v in metrics.items()},
                  "seconds": round(time.time() - started, 1)}
        atomic_write_json(out_dir / "metrics.json", record)
        log.info("loss %.3f -> %.3f in %d steps; HF weights -> %s", metrics["first_loss"], metrics["last_loss"],
                 trainer.global_step, out_dir / "model")
    return metrics


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
    """Save an XLNetLMHeadModel in HF format with fine-tuning's memory settings (no mem / bi_data)."""
    from cxlnet.model import XLNetLMHeadModel

    config = model.config.replace(mem_len=None, reuse_len=None, bi_data=False, grad_checkpointing=False)
    clean = XLNetLMHeadModel(config)
    clean.load_state_dict(model.state_dict())
    clean.save_pretrained(out_dir)
    if spiece is not None and Path(spiece).is_file():
        shutil.copyfile(spiece, Path(out_dir) / "spiece.model")
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


def export_checkpoint(ckpt: str | Path, out_dir: str | Path) -> Path:
    """A `cxlnet train` checkpoint (or run dir) -> Hugging Face `config.json` + `model.safetensors`."""
    from cxlnet.model import XLNetConfig, XLNetLMHeadModel
    from cxlnet.pretrain.module import STATE_KEY

    ckpt = find_checkpoint(ckpt)
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is a user error here
        raise CxlnetError(f"{ckpt}: not a readable checkpoint ({str(err).splitlines()[0][:200]})") from None
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
    run = ckpt.parent.parent
    spiece = run / "model" / "spiece.model"
    if not spiece.is_file():
        tok = _store_tokenizer(run)
        spiece = tok if tok and tok.is_file() else None
    return export_model(model, Path(out_dir), spiece=spiece)


def _store_tokenizer(run: Path) -> Path | None:
    cfg_file = run / "config.yaml"
    if not cfg_file.is_file():
        return None
    try:
        store = OmegaConf.load(cfg_file).data.store
        from cxlnet.pretrain.corpus import TokenStore
        return Path(TokenStore(store).manifest["tokenizer"]["path"])
    except Exception:  # noqa: BLE001 - the tokenizer copy is a convenience only
        return None


def exported_checkpoint(ckpt: str | Path) -> Path:
    """HF-format export of a checkpoint, cached under `<cache>/exported/<hash of path, size, mtime>`."""
    from cxlnet.paths import cache_dir

    ckpt = Path(ckpt).resolve()
    st = ckpt.stat()
    key = hashlib.sha1(f"{ckpt}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]
    target = cache_dir() / "exported" / f"{ckpt.parent.parent.name}-{ckpt.stem}-{key}"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        export_checkpoint(ckpt, tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
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
    parser.add_argument("out_dir", help="output directory")
    args = parser.parse_args(argv)
    from cxlnet.modelcard import export_any

    out = export_any(args.checkpoint, args.out_dir)
    print(out)
    return 0
