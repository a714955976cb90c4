"""The divergence guard: a Lightning callback that stops a run going nowhere, with one clear line.

* A NaN or infinite training loss stops the run at once; the example ids of the offending batch
  (`TrainModule.example_ids`) go to `<run dir>/nonfinite_batch.json`, so the input can be checked.
* A loss that has not fallen stops it too: after `patience_steps` optimizer steps, the mean loss of
  the last `window` batches must be below the mean of the first `window`. A run that learns and then
  plateaus is never stopped (its loss stays below the start); one that does not learn, or climbs
  back to where it began, is. Only a run the guard saw from step 0 is checked: a resumed run's
  first batches are not its start (NaN/inf is checked always).

Both raise `CxlnetError`, which the command prints as `cxlnet <command>: error: ...` (exit 2).
Reading the loss is one host sync per batch, which Lightning's own logging pays anyway.
"""
from __future__ import annotations

import math
from collections import deque
from pathlib import Path

import pytorch_lightning as pl
import torch

from cxlnet.errors import CxlnetError, atomic_write_json

NONFINITE_FILE = "nonfinite_batch.json"
GO_ON, STOP_STALLED, STOP_NONFINITE = 0, 1, 2  # a rank's verdict; the run takes the highest


def batch_loss(outputs) -> torch.Tensor | None:
    """The loss a `training_step` returned (a tensor or a dict with "loss"); None when it returned none."""
    if isinstance(outputs, dict):
        outputs = outputs.get("loss")
    return outputs if isinstance(outputs, torch.Tensor) else None


class DivergenceGuard(pl.Callback):
    def __init__(self, run_dir: str | Path, nonfinite: bool = True, patience_steps: int | None = None,
                 window: int = 20):
        if window < 1:
            raise CxlnetError(f"guard.window must be a positive number of batches, got {window}")
        self.run_dir = Path(run_dir)
        self.nonfinite = bool(nonfinite)
        self.patience_steps = None if patience_steps is None else int(patience_steps)
        self.window = int(window)
        self.first: list[float] = []
        self.from_start: bool | None = None  # did this run start at step 0 (not a resume)?
        self.recent: deque[float] = deque(maxlen=self.window)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss_t = batch_loss(outputs)
        if loss_t is None:
            return
        loss = float(loss_t.detach())
        step = int(trainer.global_step)
        verdict = STOP_NONFINITE if self.nonfinite and not math.isfinite(loss) else self._verdict(loss, step)
        if trainer.world_size > 1:  # every rank stops together, or the others would wait in all-reduce
            verdict = int(trainer.strategy.reduce(torch.tensor(verdict, device=pl_module.device), reduce_op="max"))
        if verdict == STOP_NONFINITE:
            self._stop_nonfinite(trainer, pl_module, batch, batch_idx, loss, step)
        if verdict == STOP_STALLED:
            start, now = sum(self.first) / len(self.first), sum(self.recent) / max(1, len(self.recent))
            raise CxlnetError(
                f"the training loss has not fallen in {step} steps (mean of the first {self.window} batches "
                f"{start:.4f}, of the last {self.window} {now:.4f}); check the learning rate and the data, "
                f"or raise guard.patience_steps (null: off)")

    def _verdict(self, loss: float, step: int) -> int:
        if self.from_start is None:
            self.from_start = step <= 1  # global_step is already counted for the first batch's update
        if not math.isfinite(loss) or not self.from_start:
            return GO_ON
        if len(self.first) < self.window:
            self.first.append(loss)
        self.recent.append(loss)
        if self.patience_steps is None or step < self.patience_steps or len(self.first) < self.window:
            return GO_ON
        return STOP_STALLED if sum(self.recent) / len(self.recent) >= sum(self.first) / len(self.first) else GO_ON

    def _stop_nonfinite(self, trainer, pl_module, batch, batch_idx: int, loss: float, step: int) -> None:
        if math.isfinite(loss):  # another rank's batch was the bad one
            raise CxlnetError(f"the training loss of another process is not finite at step {step}: stopped")
        ids = pl_module.example_ids(batch) if hasattr(pl_module, "example_ids") else {}
        record = {"step": step, "epoch": int(trainer.current_epoch), "batch": int(batch_idx),
                  "rank": int(trainer.global_rank), "loss": str(loss), **ids}
        name = NONFINITE_FILE if trainer.world_size == 1 else f"nonfinite_batch.rank{trainer.global_rank}.json"
        path = atomic_write_json(self.run_dir / name, record)
        raise CxlnetError(f"the training loss is {loss} at batch {batch_idx} of epoch {trainer.current_epoch} "
                          f"(step {step}): stopped; the batch's example ids are in "
                          f"{path} (guard.nonfinite=false runs on)")


def build_guard(guard_cfg, run_dir: Path) -> DivergenceGuard:
    return DivergenceGuard(run_dir, nonfinite=guard_cfg.nonfinite, patience_steps=guard_cfg.patience_steps,
                           window=guard_cfg.window)
