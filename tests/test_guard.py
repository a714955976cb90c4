"""The divergence guard stops a run fed a NaN (writing the batch's ids) or one whose loss does not
fall; `debug=overfit` drives a tiny model's loss to about zero, and a normal run prints no
third-party advertising or deprecation warning."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from cxlnet.errors import CxlnetError
from cxlnet.guard import NONFINITE_FILE, DivergenceGuard

REPO = Path(__file__).resolve().parents[1]


class Regression(pl.LightningModule):
    """y = w·x on rows (x, y, index); `example_ids` as the fine-tuning modules give them."""

    def __init__(self, lr: float):
        super().__init__()
        self.w = torch.nn.Linear(4, 1)
        self.lr = lr

    def training_step(self, batch, batch_idx):
        x, y, _ = batch
        return torch.nn.functional.mse_loss(self.w(x).squeeze(-1), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)

    def example_ids(self, batch) -> dict:
        return {"example_index": [int(i) for i in batch[-1]]}


def fit(tmp_path: Path, x: torch.Tensor, lr: float, **guard) -> None:
    y = x.sum(-1)
    data = torch.utils.data.TensorDataset(x, y, torch.arange(len(x)))
    trainer = pl.Trainer(max_steps=40, callbacks=[DivergenceGuard(tmp_path, **guard)], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(Regression(lr), torch.utils.data.DataLoader(data, batch_size=4))


def test_a_nan_stops_the_run_and_names_the_batch(tmp_path):
    x = torch.randn(32, 4)
    x[13, 2] = float("nan")  # row 13: the 4th batch (rows 12-15)
    stopped = r"the training loss is nan at batch 3 of epoch 0 \(step 4\): stopped; the batch's example ids are in"
    with pytest.raises(CxlnetError, match=stopped):
        fit(tmp_path, x, lr=0.01)
    record = json.loads((tmp_path / NONFINITE_FILE).read_text())
    assert record["example_index"] == [12, 13, 14, 15] and record["batch"] == 3


def test_a_loss_that_does_not_fall_stops_the_run(tmp_path):
    x = torch.randn(4, 4).repeat(8, 1)  # every batch the same: with lr 0 the loss stays put
    with pytest.raises(CxlnetError, match="the training loss has not fallen in 10 steps"):
        fit(tmp_path, x, lr=0.0, patience_steps=10, window=4)
    fit(tmp_path, x, lr=0.05, patience_steps=10, window=4)  # a learning run goes on to max_steps
    resumed = DivergenceGuard(tmp_path, patience_steps=10, window=4)
    resumed.from_start = False  # a resumed run: its first batches are not its start, so no verdict
    assert all(resumed._verdict(1.0, step) == 0 for step in range(100, 140))


def test_overfit_reaches_zero_loss_and_the_run_prints_no_third_party_notices(tmp_path):
    """A real `cxlnet finetune` run (subprocess: its real stdout/stderr) with debug=overfit."""
    env = {k: v for k, v in os.environ.items() if k not in ("CXLNET_COMMAND", "HYDRA_FULL_ERROR")}
    env.update(PYTHONPATH=str(REPO), WANDB_MODE="disabled")
    run_dir = tmp_path / "overfit"
    dev = tmp_path / "dev.tsv"
    dev.write_text("".join((REPO / "cxlnet" / "sample" / "chnsenticorp" / "dev.tsv").read_text(encoding="utf-8")
                           .splitlines(keepends=True)[:17]), encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "cxlnet", "finetune", "experiment=demo", "debug=overfit", "task.batch_size=8",
         "task.max_seq_length=32", "task.max_train_examples=64", f"task.dev_file={dev}",
         "trainer.overfit_steps=60", f"hydra.run.dir={run_dir}", "trainer.enable_progress_bar=false"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "litlogger" not in out and "LeafSpec" not in out, out
    losses = [float(row["train/loss"]) for row in _csv_rows(run_dir / "csv" / "metrics.csv") if row.get("train/loss")]
    assert len(losses) >= 5 and losses[0] > 0.3  # about ln 2 at the start
    assert losses[-1] < 0.05, losses  # one batch memorised (0.03 after 60 steps; the default 150 go lower)


def _csv_rows(path: Path) -> list[dict]:
    import csv

    with path.open(encoding="utf-8") as fh:
        return list(csv.DictReader(fh))
