"""Spreading runs over processes, GPUs and machines with existing engines: Hydra's launcher plugins
for the jobs of a sweep (`launcher=local|joblib|slurm`), Lightning for the processes of one job
(`hardware.devices`, `hardware.num_nodes`).

Two pieces are ours. With the joblib launcher and GPUs, job k of a sweep takes GPU k mod (visible
GPUs), so 8 seeds on an 8-GPU box run side by side, one GPU each, instead of each seed spreading a
tiny batch over all 8. And after a distributed fit every process checks that all processes hold the
same weights (one all-gather of a checksum): a silently desynchronised replica would otherwise only
show up as a worse score.
"""
from __future__ import annotations

import logging
import os

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

from cxlnet.errors import CxlnetError

log = logging.getLogger(__name__)


def job_devices(hw: DictConfig, launcher: DictConfig | None):
    """`devices` for this job's Trainer: one GPU of its own when the launcher runs GPU jobs side
    by side (`launcher.gpu_per_job`), else `hardware.devices` as configured."""
    if not (launcher and launcher.get("gpu_per_job") and hw.accelerator == "gpu"):
        return hw.devices
    from hydra.core.hydra_config import HydraConfig

    visible = torch.cuda.device_count()
    if not visible:
        return hw.devices  # build_trainer reports the missing GPU in one line
    index = int(HydraConfig.get().job.get("num") or 0) % visible
    log.info("launcher %s: job %s runs on GPU %d of %d", launcher.name, HydraConfig.get().job.num, index, visible)
    return [index]


def cpu_threads_per_job(hw: DictConfig, launcher: DictConfig | None) -> None:
    """CPU jobs run side by side share the cores instead of each taking all of them."""
    if launcher and launcher.get("gpu_per_job") and hw.accelerator == "cpu":
        jobs = max(1, int(launcher.get("jobs") or 1))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // jobs))


def weights_checksum(module: torch.nn.Module) -> torch.Tensor:
    """Two float64 numbers per model (sum and sum of squares of every parameter): equal weights
    give equal checksums bit for bit, a replica that drifted by one update does not."""
    total = torch.zeros(2, dtype=torch.float64)
    for param in module.parameters():
        p = param.detach().to("cpu", torch.float64)
        total += torch.stack([p.sum(), (p * p).sum()])
    return total


class WeightsAgree(pl.Callback):
    """After a fit over several processes, all of them must hold the same weights."""

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.world_size < 2:
            return
        mine = weights_checksum(pl_module)
        every = trainer.strategy.all_gather(mine.to(pl_module.device)).reshape(trainer.world_size, 2).cpu()
        log.info("rank %d of %d: weights checksum %s", trainer.global_rank, trainer.world_size,
                 " ".join(f"{v:.12e}" for v in mine.tolist()))
        if not torch.equal(every, every[:1].expand_as(every)):
            raise CxlnetError(f"the {trainer.world_size} processes hold different weights after training "
                              f"(checksums {every.tolist()}): a replica fell out of sync")
        if trainer.is_global_zero:
            log.info("weights agree across %d processes on %d node(s)", trainer.world_size, trainer.num_nodes)
