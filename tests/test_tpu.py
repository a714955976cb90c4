"""`hardware=tpu` for real, on this CPU: torch-xla runs XLA on the host with `PJRT_DEVICE=CPU`.

Run by `make test-tpu`, which builds `.venv-tpu` (torch 2.9 + torch-xla 2.9; it cannot import beside
the main environment's torch) and selects the `tpu` marker; the default suite deselects it. Every run
goes through the real CLI in a subprocess of this interpreter, so the XLA runtime starts afresh each
time, as it does for a user. Each run spends most of its minutes compiling XLA graphs, hence the
small shapes and few steps.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import cli_env, cxlnet_subprocess
from cxlnet.paths import sample_dir
from cxlnet.pretrain.commands import read_losses
from test_pretrain_train import work  # noqa: F401  (the token store fixture)

# minutes per test: every run compiles its XLA graphs first
pytestmark = [pytest.mark.tpu, pytest.mark.timeout(3600)]

SAMPLE_DEV = sample_dir() / "chnsenticorp" / "dev.tsv"
STEPS, STOP = 12, 6
TRAIN = [
    "experiment=pretrain_demo", "hardware=tpu", "logger=none", "trainer.enable_progress_bar=false", "seed=0",
    "data.bsz=4", "data.seq_len=32", "data.reuse_len=16", "data.perm_size=16", "data.num_predict=6",
    "mem_len=16", "optimizer.optim.lr=1e-3", "optimizer.warmup_steps=3", f"train.max_steps={STEPS}", "train.save_steps=3",
    "data.num_workers=0",
]


def cxlnet(*args: str, cwd: Path) -> str:
    """Run the real CLI on the XLA CPU device; its stdout + stderr."""
    proc = cxlnet_subprocess(*args, cwd=cwd, check=False, env=cli_env(PJRT_DEVICE="CPU"), timeout=1800)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"cxlnet {' '.join(args)} failed ({proc.returncode}):\n{out[-4000:]}"
    assert "using: 1 TPU cores" in out, "Lightning did not run on the XLA device:\n" + out[-2000:]
    return out


def train(work: dict, run_name: str, *extra: str) -> str:
    return cxlnet("train", *TRAIN, f"data.store={work['store']}", f"paths.output_dir={work['runs']}",
                  f"run_name={run_name}", *extra, cwd=work["root"])


def run_dir(work: dict, run_name: str) -> Path:
    return work["runs"] / "pretrain" / run_name


def losses_of(run: Path) -> list[float]:
    rows = read_losses(run / "losses.tsv")
    assert [s for s, _, _ in rows] == list(range(len(rows)))
    return [loss for _, loss, _ in rows]


def test_train_on_xla_falls_and_resumes_the_same_curve(work):  # noqa: F811
    """12 steps straight; then stopped at step 6 (checkpoint written through XLA's device-to-host
    copy) and the same command again: it resumes at step 6 with the optimizer, data position, RNG
    (the XLA generator's too: dropout runs on the device) and memories restored."""
    train(work, "straight")
    straight = run_dir(work, "straight")
    losses = losses_of(straight)
    assert len(losses) == STEPS
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.3, losses  # the LM loss falls
    assert json.loads((straight / "metrics.json").read_text())["steps"] == STEPS
    assert (straight / "model" / "model.safetensors").is_file()

    resumed = run_dir(work, "resumed")
    train(work, "resumed", f"train.stop_after={STOP}")
    assert not (resumed / "metrics.json").exists()
    ckpt = torch.load(resumed / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == STOP
    assert len(losses_of(resumed)) == STOP
    out = train(work, "resumed")
    assert "resuming from" in out
    again = losses_of(resumed)
    assert len(again) == STEPS
    # XLA on the CPU is deterministic for a fixed graph; the resumed run compiles the same graphs
    assert again == pytest.approx(losses, rel=1e-4, abs=1e-5)
    assert json.loads((resumed / "metrics.json").read_text())["steps"] == STEPS


def test_finetune_on_xla_beats_the_majority_class(tmp_path):
    """A tiny ChnSentiCorp fine-tune on the XLA device writes its metrics.json with an accuracy above
    always answering the dev set's majority label."""
    dev = tmp_path / "dev.tsv"
    dev.write_text("".join(SAMPLE_DEV.read_text(encoding="utf-8").splitlines(keepends=True)[:241]), encoding="utf-8")
    labels = [line.split("\t")[0] for line in dev.read_text(encoding="utf-8").splitlines()[1:]]
    majority = 100 * max(labels.count(v) for v in set(labels)) / len(labels)
    run = tmp_path / "run"
    cxlnet("finetune", "experiment=demo", "hardware=tpu", "task.max_train_examples=1024", "task.max_seq_length=64",
           "task.batch_size=32", "task.epochs=3", f"task.dev_file={dev}", f"paths.output_dir={tmp_path / 'runs'}",
           "trainer.enable_progress_bar=false", "logger=none", f"hydra.run.dir={run}", cwd=tmp_path)
    record = json.loads((run / "metrics.json").read_text())
    acc = record["metrics"]["dev/acc"]
    assert majority + 5 < acc <= 100, (acc, majority)
