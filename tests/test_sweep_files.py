"""`cxlnet.sweep` on sweep directories written by hand: the configuration hash, the printed summary,
the end-of-sweep callback's exit and the resume checks (no fine-tuning run needed)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from cxlnet.sweep import ConfigMismatch, SweepSummary, _remove_fresh_run_dir, check_resume, config_hash, refresh


def _run(sweep: Path, name: str, overrides: list[str], metrics: dict | None = None, digest: str = "h1",
         error: str | None = None) -> Path:
    run = sweep / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(overrides))
    if metrics is not None:
        record = {"task": "chnsenticorp", "model": "tiny", "seed": int(name.split("=")[1]), "config_hash": digest,
                  "metrics": metrics}
        (run / "metrics.json").write_text(json.dumps(record))
    if error is not None:
        (run / "error.json").write_text(json.dumps({"error": error}))
    return run


def test_config_hash_ignores_seed_paths_and_logger_only():
    base = {"seed": 0, "paths": {"output_dir": "a"}, "logger": {"kind": "csv"},
            "trainer": {"enable_progress_bar": True, "max_epochs": 3}, "optimizer": {"lr": 1e-3}}
    same = {**base, "seed": 7, "paths": {"output_dir": "b"}, "logger": {"kind": "wandb"},
            "trainer": {"enable_progress_bar": False, "max_epochs": 3}}
    other = {**base, "optimizer": {"lr": 2e-3}}
    h = config_hash(OmegaConf.create(base))
    assert len(h) == 16 and h == config_hash(OmegaConf.create(same)) != config_hash(OmegaConf.create(other))


def test_summary_table_and_failed_runs_are_printed(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    _run(sweep, "seed=0", ["seed=0"], {"dev/acc": 80.0, "dev/f1": 1.0})
    _run(sweep, "seed=1", ["seed=1"], {"dev/acc": 84.0})
    _run(sweep, "seed=2", ["seed=2"], error="task.batch_size=0: expected a positive integer")
    summary = refresh(sweep)
    callback = SweepSummary()
    with pytest.raises(SystemExit) as exit_:
        callback.on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}, "command": "finetune"}))
    assert exit_.value.code == 1
    out, err = capsys.readouterr()
    assert "chnsenticorp / tiny" in out and "max (mean) ±std per configuration" in out
    assert "84.0 (82.0) ±2.83" in out and "1.0 (1.0) ±0.00" in out
    assert "seed=2: task.batch_size=0: expected a positive integer" in out
    assert err.strip() == ("cxlnet finetune: error: 1 of 3 runs failed "
                           "(seed=2: task.batch_size=0: expected a positive integer)")
    assert summary["errors"] == {"seed=2": "task.batch_size=0: expected a positive integer"}


def test_a_sweep_without_failures_ends_normally(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    _run(sweep, "seed=0", ["seed=0"], {"dev/acc": 80.0})
    SweepSummary().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}, "command": "finetune"}))
    assert "80.0 (80.0)" in capsys.readouterr().out


def test_resume_refuses_a_finished_sibling_of_another_configuration(tmp_path):
    sweep = tmp_path / "sweep"
    _run(sweep, "seed=0", ["seed=0", "optimizer.optim.lr=1e-3"], {"dev/acc": 80.0}, digest="other")  # not these overrides
    _run(sweep, "seed=1", ["seed=1", "optimizer.optim.lr=2e-3"], {"dev/acc": 81.0}, digest="old")
    fresh = sweep / "seed=2"
    (fresh / ".hydra").mkdir(parents=True)
    (fresh / "finetune.log").write_text("")
    with pytest.raises(ConfigMismatch, match="seed=1: the sweep's finished runs of these overrides"):
        check_resume("new", sweep, fresh, ["seed=2", "optimizer.optim.lr=2e-3"])
    assert not fresh.exists()  # the refused job's fresh directory is removed


def test_only_a_fresh_run_directory_is_removed(tmp_path):
    fresh, used = tmp_path / "fresh", tmp_path / "used"
    for d in (fresh, used):
        (d / ".hydra").mkdir(parents=True)
        (d / "finetune.log").write_text("")
    (used / "metrics.json").write_text("{}")
    _remove_fresh_run_dir(fresh)
    _remove_fresh_run_dir(used)
    _remove_fresh_run_dir(tmp_path / "missing")
    assert not fresh.exists() and used.is_dir()
