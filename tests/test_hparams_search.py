"""`cxlnet finetune` returns `task.objective`, so Hydra's sweepers (Optuna) can drive it."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from cxlnet.confdir import CONF_DIR, conf_dir
from cxlnet.errors import CxlnetError
from cxlnet.finetune import objective
from cxlnet.paths import sample_dir


def test_every_finetuning_task_names_its_objective():
    from cxlnet.finetune import TASK_KINDS

    tasks = []
    for path in sorted(conf_dir().joinpath("task").glob("*.yaml")):
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose("finetune", overrides=[f"task={path.stem}"])
        if cfg.task.kind in TASK_KINDS:  # tasks `finetune` can train (not e.g. fillmask, predict only)
            tasks.append(path.stem)
            assert cfg.task.objective == {"chnsenticorp": "dev/acc", "cmrc2018": "dev/f1", "drcd": "dev/f1"}[path.stem]
    assert tasks == ["chnsenticorp", "cmrc2018", "drcd"]


def test_objective_is_the_task_metric_or_one_line():
    cfg = OmegaConf.create({"task": {"objective": "dev/f1"}})
    assert objective(cfg, {"dev/em": 60.0, "dev/f1": 85.5}) == 85.5
    with pytest.raises(CxlnetError, match=r"task.objective=dev/f1: not among the run's metrics \(dev/acc\)"):
        objective(cfg, {"dev/acc": 90.0})


def test_optuna_search_composes():
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("finetune", overrides=["experiment=chnsenticorp_mid", "hparams_search=chnsenticorp_optuna"],
                      return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_ == "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    assert sweeper.direction == "maximize" and sweeper.sampler._target_ == "optuna.samplers.TPESampler"
    assert set(sweeper.params) == {"optimizer.optim.lr", "optimizer.warmup_ratio"}
    assert cfg.task.objective == "dev/acc" and str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    # every trial its own directory: the seed alone would put all trials into one
    assert OmegaConf.to_container(cfg.hydra.sweep)["subdir"] == "trial=${hydra.job.num}"


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_optuna_drives_finetune(tmp_path):
    """Two real trials of the tiny model: Optuna's best value is one trial's dev/acc."""
    dev = tmp_path / "dev.tsv"
    dev.write_text("".join((sample_dir() / "chnsenticorp" / "dev.tsv").read_text(encoding="utf-8")
                           .splitlines(keepends=True)[:121]), encoding="utf-8")
    sweep = tmp_path / "search"
    args = ["experiment=demo", "hparams_search=chnsenticorp_optuna", "hydra.sweeper.n_trials=2",
            "task.max_train_examples=64", "task.max_seq_length=32", "task.batch_size=16", "task.epochs=1",
            f"task.dev_file={dev}", "trainer.enable_progress_bar=false", f"hydra.sweep.dir={sweep}"]
    env = {**os.environ, "WANDB_MODE": "disabled", "CXLNET_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "cxlnet", "finetune", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    accs = [json.loads((sweep / f"trial={i}" / "metrics.json").read_text())["metrics"]["dev/acc"] for i in range(2)]
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(max(accs), abs=1e-3)
    assert set(best["best_params"]) == {"optimizer.optim.lr", "optimizer.warmup_ratio"}
