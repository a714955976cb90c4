"""`cxlnet finetune`: fine-tune on one task and write `metrics.json` (and the fine-tuned weights)
into the run directory. The task's `kind` picks the package that builds its module and data."""
from __future__ import annotations

import importlib
import logging
import time

import hydra
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from cxlnet.confdir import CONF_DIR
from cxlnet.errors import CxlnetError
from cxlnet.paths import resolve_data_files
from cxlnet.record import write_run_record
from cxlnet.runs import hydra_job, model_loader, resolve_spiece, run_dir, show_config, sweep_dir, sweep_group
from cxlnet.sweep import check_resume, config_hash, refresh
from cxlnet.text import Tokenizer, save_tokenizer
from cxlnet.training import build_trainer, close_loggers, ensure_unfinished, write_metrics

log = logging.getLogger(__name__)

# task.kind -> module with `build(cfg, tokenizer, model_loader, files) -> (module, datamodule)`
TASK_KINDS = {"classification": "cxlnet.classify", "span": "cxlnet.span.task"}


def task_files(cfg: DictConfig, train: bool) -> dict:
    """The task's data files by split, resolved through `paths.data_dir` (train only when training)."""
    names = {"train": cfg.task.train_file if train else None, "dev": cfg.task.dev_file, "test": cfg.task.test_file}
    files = resolve_data_files(cfg.paths.data_dir, {split: name for split, name in names.items() if name})
    log.info("data: %s", ", ".join(f"{split} {path}" for split, path in files.items()))
    return files


def build_task(cfg: DictConfig, out_dir, train: bool = True):
    """Tokenizer, LightningModule and DataModule for `cfg.task`."""
    if cfg.task.kind not in TASK_KINDS:
        raise CxlnetError(f"task.kind={cfg.task.kind!r}: expected one of {', '.join(TASK_KINDS)}")

    tokenizer = Tokenizer(resolve_spiece(cfg))
    files = task_files(cfg, train)
    write_run_record(out_dir, files, tokenizer.path, accelerator=cfg.hardware.accelerator, devices=cfg.hardware.devices)
    package = importlib.import_module(TASK_KINDS[cfg.task.kind])
    module, data = package.build(cfg, tokenizer, model_loader(cfg, tokenizer.vocab_size), files)
    module.output_dir = out_dir
    return tokenizer, module, data


def finetune(cfg: DictConfig) -> dict[str, float]:
    started = time.time()
    out_dir = run_dir()
    digest = config_hash(cfg)
    sweep = sweep_dir()
    if sweep is not None:
        finished = check_resume(digest, sweep, out_dir, list(HydraConfig.get().overrides.task))
        if finished is not None:
            log.info("%s: finished with the same configuration, skipped", out_dir)
            return finished["metrics"]
    ensure_unfinished(out_dir)
    show_config(cfg, out_dir)
    pl.seed_everything(cfg.seed, workers=True)
    tokenizer, module, data = build_task(cfg, out_dir)
    if cfg.model.compile:
        module.model = module.model.compile() or module.model
    trainer = build_trainer(
        cfg, out_dir, group=sweep_group(cfg),
        max_epochs=cfg.task.epochs, max_steps=cfg.task.max_steps, num_sanity_val_steps=0,
        limit_val_batches=cfg.trainer.limit_val_batches if cfg.trainer.val_check_interval else 0,
    )
    trainer.fit(module, datamodule=data)
    metrics = {}
    eval_trainer = build_trainer(cfg, out_dir, group=None, logger=False)
    for result in eval_trainer.validate(module, datamodule=data, verbose=False):
        metrics.update(result)
    if cfg.task.test_file:
        for result in eval_trainer.test(module, datamodule=data, verbose=False):
            metrics.update(result)
    close_loggers(trainer, metrics)
    if not trainer.is_global_zero:  # DDP workers re-run this script; only rank 0 writes results
        return metrics
    module.model.save_pretrained(out_dir / "model")
    save_tokenizer(tokenizer, out_dir / "model")  # the run is fine-tuned further or evaluated with it
    path = write_metrics(out_dir, cfg, metrics, started, config_hash=digest)
    log.info("%s -> %s", ", ".join(f"{k} {v:.2f}" for k, v in sorted(metrics.items())), path)
    if sweep is not None:
        refresh(sweep)
    return metrics


def objective(cfg: DictConfig, metrics: dict[str, float]) -> float:
    """The task's primary metric (`task.objective`), the value a Hydra sweeper (Optuna) maximises."""
    if cfg.task.objective not in metrics:
        raise CxlnetError(f"task.objective={cfg.task.objective}: not among the run's metrics "
                          f"({', '.join(sorted(metrics))})")
    return float(metrics[cfg.task.objective])


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="finetune")
@hydra_job
def main(cfg: DictConfig) -> float:
    return objective(cfg, finetune(cfg))
