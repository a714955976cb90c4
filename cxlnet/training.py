"""Pieces every training command shares: the optimizer and its schedule, the Lightning Trainer for
a `hardware` choice, loggers, run directories and their `metrics.json`.

The schedule is XLNet's (`model_utils.get_train_op`): linear warm-up from lr 0 at step 0, then
linear ("poly", power 1) decay to `lr * min_lr_ratio`. Layer-wise decay follows the original too:
by default it scales layer l's *clipped gradients* by `rate^(n_layer-1-l)` (`layer_decay_mode: grad`);
`layer_decay_mode: lr` scales learning rates instead, the common PyTorch variant. Only what lives in
the original's `model/transformer/layer_{l}/` scope decays: `seg_embed` and the `r_*_bias` terms are
stacked over layers *outside* it (modeling.transformer_xl) and keep 1, like embeddings and heads.

Clipping: `optimizer.clip_shards: K > 1` emulates `tf.contrib.tpu.CrossShardOptimizer` on K TPU
cores, where every published Chinese-XLNet run trained: each core's gradient of loss/K on its 1/K of
the batch is clipped at `trainer.gradient_clip_val` (`tf.clip_by_global_norm`) *before* the cores'
gradients are summed. The global batch is split into K shards over devices x micro-batches;
`clip_shards: 1` clips the global gradient (Lightning's clipping), as a single GPU run of the
original does.
"""
from __future__ import annotations

import json
import logging
import math
import re
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from cxlnet.batching import BatchRequest
from cxlnet.errors import CxlnetError, atomic_write_json, atomic_write_via
from cxlnet.validate import ensure_unfinished  # noqa: F401 - the commands' check, also used before Hydra runs

log = logging.getLogger(__name__)

_LAYER_RE = re.compile(r"(?:^|\.)layer\.(\d+)\.")
# Per-layer parameters that the original keeps outside `layer_{l}/` (stacked [n_layer, ...] tensors).
_OUTSIDE_LAYER_SCOPE_RE = re.compile(r"\.seg_embed$")
# Matches XLNet's `get_train_op`: no weight decay on LayerNorm and biases, but the r_*_bias
# attention biases are decayed despite their name.
_NO_DECAY_RE = re.compile(r"(layer_norm|LayerNorm|\.bias$|^bias$)")
_ALWAYS_DECAY_RE = re.compile(r"r_[wrs]_bias")


def layer_index(param_name: str) -> int | None:
    """The transformer layer a parameter belongs to, or None for embeddings, shared biases and heads."""
    match = _LAYER_RE.search(param_name)
    return int(match.group(1)) if match else None


def decayed_layer(param_name: str) -> int | None:
    """The layer whose layer-wise decay a parameter gets: as `get_train_op`, only parameters in the
    original's `layer_{l}/` scope; `seg_embed` sits in our layer module but not in that scope."""
    return None if _OUTSIDE_LAYER_SCOPE_RE.search(param_name) else layer_index(param_name)


def layer_scales(model: torch.nn.Module, rate: float) -> dict[str, float]:
    """`rate^(n_layer-1-l)` for every parameter of layer l's scope; everything else gets 1."""
    names = [n for n, _ in model.named_parameters()]
    layers = [decayed_layer(n) for n in names]
    n_layer = 1 + max((l for l in layers if l is not None), default=-1)
    return {n: (rate ** (n_layer - 1 - l) if l is not None else 1.0) for n, l in zip(names, layers)}


def param_groups(model: torch.nn.Module, weight_decay: float, lr: float, lr_scales: dict[str, float] | None):
    """Parameter groups by (weight decay?, lr scale), so layer-wise lr decay needs no per-param loop."""
    groups: dict[tuple[bool, float], list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decay = bool(_ALWAYS_DECAY_RE.search(name)) or not _NO_DECAY_RE.search(name)
        scale = lr_scales[name] if lr_scales else 1.0
        groups.setdefault((decay, scale), []).append(param)
    return [
        {"params": params, "weight_decay": weight_decay if decay else 0.0, "lr": lr * scale}
        for (decay, scale), params in groups.items()
    ]


def lr_lambda(warmup_steps: int, total_steps: int, min_lr_ratio: float):
    """XLNet's schedule as a multiplier of the peak lr: step 0 trains with lr 0."""
    decay_steps = max(1, total_steps - warmup_steps)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / warmup_steps
        done = min(step - warmup_steps, decay_steps) / decay_steps
        return (1.0 - min_lr_ratio) * (1.0 - done) + min_lr_ratio

    return factor


def warmup_steps_for(opt_cfg: DictConfig, total_steps: int) -> int:
    if opt_cfg.warmup_steps is not None:
        return int(opt_cfg.warmup_steps)
    return int(opt_cfg.warmup_ratio * total_steps)


def build_optimizer(opt_cfg: DictConfig, model: torch.nn.Module, total_steps: int):
    """Optimizer + per-step scheduler dict for Lightning's `configure_optimizers`."""
    lr = float(opt_cfg.optim.lr)
    scales = None
    if opt_cfg.layer_decay != 1.0 and opt_cfg.layer_decay_mode == "lr":
        scales = layer_scales(model, float(opt_cfg.layer_decay))
    groups = param_groups(model, float(opt_cfg.optim.weight_decay), lr, scales)
    optimizer = instantiate(opt_cfg.optim)(groups)
    warmup = warmup_steps_for(opt_cfg, total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(warmup, total_steps, opt_cfg.min_lr_ratio))
    log.info("optimizer: %s lr %.2e, %d steps, %d warm-up", opt_cfg.name, lr, total_steps, warmup)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def clip_by_global_norm_(grads: list[torch.Tensor], clip_norm: float) -> torch.Tensor:
    """`tf.clip_by_global_norm` in place: t * clip / max(‖all t‖, clip). Returns the norm before."""
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))
    factor = clip_norm / torch.maximum(norm, torch.tensor(clip_norm, dtype=norm.dtype, device=norm.device))
    torch._foreach_mul_(grads, factor.to(grads[0].dtype))
    return norm


def _local_gradients_only(state, bucket):
    """DDP communication hook that leaves every process its own gradient: with per-shard clipping
    the shards are clipped first and their sum is all-reduced in `TrainModule.on_before_optimizer_step`."""
    fut = torch.futures.Future()
    fut.set_result(bucket.buffer())
    return fut


def shard_accumulation(clip_shards: int, world_size: int, accumulation: int) -> int:
    """Micro-batches per optimizer step so that the global batch splits into `clip_shards` shards,
    each held by one process (XLNet's shard = one TPU core): the least multiple of `accumulation`
    that is a multiple of clip_shards / world_size."""
    if clip_shards % world_size:
        raise CxlnetError(f"optimizer.clip_shards={clip_shards} with {world_size} processes: every process must "
                          f"hold whole shards (clip_shards a multiple of the process count), or use clip_shards=1")
    per_process = clip_shards // world_size
    return accumulation * per_process // math.gcd(accumulation, per_process)


class TrainModule(pl.LightningModule):
    """Base LightningModule: XLNet's optimizer, schedule, clipping and layer-wise gradient decay."""

    # Parameters the task's forward never reads, frozen: DDP requires every trainable parameter to
    # get a gradient, and an optimizer skips a parameter without one anyway.
    unused_parameters: tuple[str, ...] = ()

    def __init__(self, model: torch.nn.Module, optimizer_cfg: DictConfig):
        super().__init__()
        self.model = model
        for name in self.unused_parameters:
            model.get_parameter(name).requires_grad_(False)
        self.optimizer_cfg = optimizer_cfg
        self.clip_shards = int(optimizer_cfg.get("clip_shards", 1))
        self._shard_sum: list[torch.Tensor] | None = None  # Σ of clipped shard gradients this step
        self._micro_batches_seen = 0                         # in the current shard
        self._grad_scales: dict[str, float] | None = None
        if optimizer_cfg.layer_decay != 1.0 and optimizer_cfg.layer_decay_mode == "grad":
            self._grad_scales = layer_scales(model, float(optimizer_cfg.layer_decay))

    def configure_optimizers(self):
        return build_optimizer(self.optimizer_cfg, self.model, int(self.trainer.estimated_stepping_batches))

    # ------------------------------------------------------------ per-shard clipping (CrossShardOptimizer)
    def _trainable(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def on_train_start(self) -> None:
        if self.clip_shards == 1:
            return
        world, accumulation = int(self.trainer.world_size), int(self.trainer.accumulate_grad_batches)
        if (world * accumulation) % self.clip_shards:
            raise CxlnetError(f"optimizer.clip_shards={self.clip_shards}: {world} processes x accumulate_grad_batches "
                              f"{accumulation} micro-batches do not split into {self.clip_shards} shards")
        if str(self.trainer.precision) in ("16-mixed", "16"):
            raise CxlnetError("optimizer.clip_shards > 1 clips unscaled gradients: use hardware.precision "
                              "32-true or bf16-mixed, not fp16 with loss scaling")
        from torch.nn.parallel import DistributedDataParallel

        if isinstance(self.trainer.strategy.model, DistributedDataParallel):
            self.trainer.strategy.model.register_comm_hook(None, _local_gradients_only)
        self._shard_sum, self._micro_batches_seen = None, 0

    def on_after_backward(self) -> None:
        """Fold a finished shard into the step's sum. Lightning's backward gives ∇(loss_micro / A)
        per micro-batch; a shard of m = W·A/K micro-batches has ∇(loss_shard / K) = Σ of those / W."""
        if self.clip_shards == 1:
            return
        self._micro_batches_seen += 1
        if self._micro_batches_seen * self.clip_shards >= self.trainer.world_size * self.trainer.accumulate_grad_batches:
            self._fold_shard()

    def _fold_shard(self) -> None:
        self._micro_batches_seen = 0
        params = self._trainable()
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        world = int(self.trainer.world_size)
        if world > 1:
            torch._foreach_div_(grads, float(world))
        if self.trainer.gradient_clip_val:
            clip_by_global_norm_(grads, float(self.trainer.gradient_clip_val))
        if self._shard_sum is None:
            self._shard_sum = [g.clone() for g in grads]
        else:
            torch._foreach_add_(self._shard_sum, grads)
        for p in params:
            p.grad = None

    def on_before_optimizer_step(self, optimizer) -> None:
        if self.clip_shards == 1:
            return
        if self._micro_batches_seen:  # an epoch's last, shorter step: its open shard counts as one
            self._fold_shard()
        total = self._shard_sum
        if int(self.trainer.world_size) > 1:  # the cores' cross_replica_sum: one all-reduce of all shards
            flat = self.trainer.strategy.reduce(torch.cat([g.flatten() for g in total]), reduce_op="sum")
            total = list(flat.split([g.numel() for g in total]))
        for p, g in zip(self._trainable(), total):
            p.grad = g.view_as(p)
        self._shard_sum = None

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        # The original clips first and then scales the clipped gradients layer by layer; with
        # clip_shards > 1 every shard was clipped already (scaling the sum = scaling each shard).
        if self.clip_shards == 1:
            self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
        if self._grad_scales:
            for name, param in self.model.named_parameters():
                scale = self._grad_scales[name]
                if param.grad is not None and scale != 1.0:
                    param.grad.mul_(scale)

    def example_ids(self, batch) -> dict:
        """What identifies a training batch's examples (the divergence guard writes it): the fine-tuning
        loaders' last column is each row's index into the task's training examples (file order)."""
        return {"example_index": [int(i) for i in batch[-1]]}

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], prog_bar=False)


def resuming_csv_logger(run_dir: Path, resume_step: int | None):
    """Lightning's CSVLogger, except that an existing `csv/metrics.csv` is kept: Lightning's writer
    deletes it when it starts, which loses a resumed run's earlier rows. A resumed run keeps the
    rows of the steps before `resume_step` (the later ones it logs again)."""
    import csv

    from pytorch_lightning.loggers import CSVLogger
    from pytorch_lightning.loggers.csv_logs import ExperimentWriter

    class KeepingWriter(ExperimentWriter):
        def _check_log_dir_exists(self) -> None:
            path = Path(self.metrics_file_path)
            if not path.is_file():
                return
            with path.open(newline="", encoding="utf-8") as fh:
                reader = csv.DictReader(fh)
                rows = [r for r in reader if resume_step is None or _csv_step(r) < resume_step]
                self.metrics_keys = sorted(reader.fieldnames or [])

            def write(tmp: Path) -> None:
                with tmp.open("w", newline="", encoding="utf-8") as fh:
                    writer = csv.DictWriter(fh, fieldnames=self.metrics_keys)
                    writer.writeheader()
                    writer.writerows(rows)

            atomic_write_via(path, write)

    class KeepingCSVLogger(CSVLogger):
        @property
        def experiment(self):
            if self._experiment is None:
                self._fs.makedirs(self.root_dir, exist_ok=True)
                self._experiment = KeepingWriter(log_dir=self.log_dir)
            return self._experiment

    return KeepingCSVLogger(save_dir=str(run_dir), name="csv", version="")


def _csv_step(row: dict) -> float:
    try:
        return float(row.get("step") or 0)
    except ValueError:
        return 0.0


def build_loggers(cfg: DictConfig, run_dir: Path, group: str | None, resume_step: int | None = None) -> list:
    from pytorch_lightning.loggers import WandbLogger

    from cxlnet.record import record_for_wandb

    kind = cfg.logger.kind
    if kind == "none":
        return []
    if kind == "csv":
        return [resuming_csv_logger(run_dir, resume_step)]
    if kind == "wandb":
        return [
            resuming_csv_logger(run_dir, resume_step),
            WandbLogger(
                project=cfg.logger.project,
                entity=cfg.logger.entity,
                name=cfg.run_name,
                group=cfg.logger.group or group or cfg.run_name,
                tags=list(cfg.logger.tags),
                save_dir=str(run_dir),
                config={**OmegaConf.to_container(cfg, resolve=True), **record_for_wandb(run_dir)},
            ),
        ]
    raise CxlnetError(f"logger.kind={kind!r}: expected csv, wandb or none")


def build_trainer(cfg: DictConfig, run_dir: Path, group: str | None, batch: BatchRequest | None = None,
                  **overrides: Any) -> pl.Trainer:
    """A Trainer for the chosen `hardware` and `logger`, with the rich progress bar and the divergence
    guard. For a training run, `batch` (the global batch and the model) sets the accumulation:
    `cxlnet.batching` splits the global batch over the devices and `hardware.micro_batch_size`."""
    from pytorch_lightning.callbacks import LearningRateMonitor, RichProgressBar

    from cxlnet.guard import build_guard
    from cxlnet.quiet import silence_third_party_notices
    from cxlnet.launch import WeightsAgree, cpu_threads_per_job, job_devices
    from cxlnet.runs import single_run_argv_for_workers

    silence_third_party_notices()
    hw = cfg.hardware
    accelerator = hw.accelerator
    if accelerator == "tpu":
        from cxlnet.xla import xla_accelerator

        accelerator = xla_accelerator()
    if hw.accelerator == "gpu" and not torch.cuda.is_available():
        raise CxlnetError("hardware=gpu: no CUDA GPU is visible to torch (torch.cuda.is_available() is False); "
                          "use hardware=cpu, or install a CUDA build of torch")
    single_run_argv_for_workers()
    loggers = build_loggers(cfg, run_dir, group, resume_step=overrides.pop("csv_resume_step", None))
    callbacks = overrides.pop("callbacks", None)
    if callbacks is None:
        callbacks = [RichProgressBar(leave=True)] if cfg.trainer.enable_progress_bar else []
        if loggers:
            callbacks.append(LearningRateMonitor(logging_interval="step"))
    callbacks = [*callbacks, build_guard(cfg.guard, run_dir)]
    cpu_threads_per_job(hw, cfg.get("launcher"))
    tcfg = cfg.trainer
    kwargs = dict(
        accelerator=accelerator,
        devices=job_devices(hw, cfg.get("launcher")),
        num_nodes=hw.num_nodes,
        precision=hw.precision,
        strategy=hw.strategy,
        logger=loggers or False,
        callbacks=callbacks,
        default_root_dir=str(run_dir),
        enable_checkpointing=False,
        enable_progress_bar=tcfg.enable_progress_bar,
        enable_model_summary=False,
        log_every_n_steps=tcfg.log_every_n_steps,
        val_check_interval=tcfg.val_check_interval,
        limit_train_batches=tcfg.limit_train_batches,
        limit_val_batches=tcfg.limit_val_batches,
        gradient_clip_val=tcfg.gradient_clip_val,
        deterministic=hw.accelerator == "cpu",
        fast_dev_run=tcfg.get("fast_dev_run", False),
    )
    kwargs.update(overrides)
    if tcfg.get("overfit_batches"):  # debug=overfit: one batch again and again, for overfit_steps steps
        kwargs.update(overfit_batches=tcfg.overfit_batches, max_steps=int(tcfg.overfit_steps), max_epochs=-1)
    kwargs["callbacks"] = [*kwargs["callbacks"], WeightsAgree()]
    trainer = pl.Trainer(**kwargs)
    if batch is not None:
        trainer.accumulate_grad_batches = batch.plan(hw, trainer).accumulation  # derived, never set by hand
    clip_shards = int(cfg.optimizer.get("clip_shards", 1))
    if clip_shards > 1:  # XLNet's TPU shards as micro-batches: the data modules read this back
        trainer.accumulate_grad_batches = shard_accumulation(clip_shards, trainer.world_size,
                                                             trainer.accumulate_grad_batches)
    if batch is not None and trainer.is_global_zero:
        log.info("batch: %s", batch.final(trainer).line())
    return trainer


def close_loggers(trainer: pl.Trainer, metrics: dict[str, float]) -> None:
    """Log the final metrics and close the loggers. A W&B run is finished explicitly: Lightning's
    finalize leaves it open, and the next seed of a sweep (same process) would log into it."""
    from pytorch_lightning.loggers import WandbLogger

    for logger in trainer.loggers:
        logger.log_metrics(metrics, step=trainer.global_step)
        logger.finalize("success")
        if isinstance(logger, WandbLogger):
            logger.experiment.finish()


def per_device_batch(global_batch: int, trainer: pl.Trainer | None) -> int:
    """`task.batch_size` is the batch of one optimizer step over all devices (Chinese-XLNet's 16 and
    48): each process loads global / (processes x accumulation) examples per micro-batch, the
    accumulation being derived from `hardware.micro_batch_size` (`cxlnet.batching`)."""
    if trainer is None:
        return int(global_batch)
    parts = int(trainer.world_size) * int(trainer.accumulate_grad_batches)
    if global_batch % parts:
        raise CxlnetError(f"task.batch_size {global_batch} is not divisible by {trainer.world_size} processes x "
                          f"accumulation {trainer.accumulate_grad_batches}")
    return global_batch // parts


class TaskData(pl.LightningDataModule):
    """Base of the fine-tuning data modules: seeded loaders; the training loader's micro-batch is
    the task's global batch split over processes and accumulation steps."""

    def __init__(self, task_cfg: DictConfig, num_workers: int, seed: int):
        super().__init__()
        self.cfg = task_cfg
        self.num_workers = num_workers
        self.seed = seed

    def loader(self, dataset, shuffle: bool) -> torch.utils.data.DataLoader:
        batch = per_device_batch(self.cfg.batch_size, self.trainer) if shuffle else self.cfg.eval_batch_size
        return torch.utils.data.DataLoader(
            dataset, batch_size=batch, shuffle=shuffle, drop_last=shuffle, num_workers=self.num_workers,
            generator=torch.Generator().manual_seed(self.seed),
        )


def metrics_path(run_dir: Path) -> Path:
    return Path(run_dir) / "metrics.json"


def write_metrics(run_dir: Path, cfg: DictConfig, metrics: dict[str, float], started: float, **extra: Any) -> Path:
    """The run's finished record; `extra` adds fields (finetune: the configuration hash)."""
    ensure_unfinished(run_dir)
    record = {
        "command": cfg.command,
        "task": cfg.task.name,
        "model": cfg.model.name,
        "seed": cfg.seed,
        "run_name": cfg.run_name,
        "metrics": {k: round(float(v), 4) for k, v in sorted(metrics.items())},
        "seconds": round(time.time() - started, 1),
        **extra,
    }
    return atomic_write_json(metrics_path(run_dir), record)


def read_metrics(path: Path) -> dict:
    with Path(path).open(encoding="utf-8") as fh:
        return json.load(fh)
