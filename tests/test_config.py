"""Every config group option composes (Hydra's compose API, no subprocess per option)."""
from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from cxlnet.confdir import CONF_DIR, conf_dir

CONF = conf_dir()
GROUPS = ["model", "task", "hardware", "optimizer", "logger", "sweep", "experiment"]


def options(group: str) -> list[str]:
    return sorted(p.name[:-5] for p in CONF.joinpath(group).iterdir() if p.name.endswith(".yaml"))


def compose_finetune(*overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("finetune", overrides=list(overrides), return_hydra_config=True)


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes(group, option):
    cfg = compose_finetune(f"{group}={option}")
    OmegaConf.resolve(cfg.task)
    OmegaConf.resolve(cfg.optimizer)
    assert cfg.task.name and cfg.model.config.n_layer > 0
    if group == "model":
        assert cfg.model.name == option


def test_groups_have_the_options_the_issue_names():
    assert {"tiny", "base", "mid"} <= set(options("model"))
    assert {"cpu", "gpu", "tpu"} <= set(options("hardware"))
    assert {"csv", "wandb", "none"} <= set(options("logger"))
    assert "seeds10" in options("sweep")
    assert "chnsenticorp" in options("task")


def test_chnsenticorp_carries_chinese_xlnet_hyperparameters():
    cfg = compose_finetune("model=mid", "hardware=gpu", "task=chnsenticorp")
    assert (cfg.task.batch_size, cfg.task.max_seq_length, cfg.task.epochs) == (48, 256, 3)
    assert cfg.optimizer.optim.lr == 2e-5
    assert cfg.hardware.precision == "bf16-mixed"
    assert cfg.model.config.n_layer == 24


def test_command_line_beats_task_recipe():
    cfg = compose_finetune("task=chnsenticorp", "optimizer.optim.lr=5e-5", "optimizer=adamw_llrd")
    assert cfg.optimizer.optim.lr == 5e-5
    assert (cfg.optimizer.layer_decay, cfg.optimizer.layer_decay_mode) == (0.75, "lr")
    span = compose_finetune("task=cmrc2018")  # XLNet's own variant: scaled gradients
    assert (span.optimizer.layer_decay, span.optimizer.layer_decay_mode) == (0.75, "grad")


def test_seeds10_sweeps_ten_seeds():
    cfg = compose_finetune("sweep=seeds10")
    assert cfg.hydra.sweeper.params.seed == "range(10)"


def test_command_line_flags_go_before_the_overrides():
    from cxlnet.cli import split_hydra_args, sweep_subdir

    flags, overrides = split_hydra_args(["task=x", "-m", "seed=range(3)", "--cfg", "job", "a=1", "--resolve",
                                         "--info", "defaults", "b=2", "-i", "c=3"])
    assert flags == ["-m", "--cfg", "job", "--resolve", "--info", "defaults", "-i"]
    assert overrides == ["task=x", "seed=range(3)", "a=1", "b=2", "c=3"]
    # a sweep over more than the seed: one directory per job, named by the swept values
    assert sweep_subdir(["seed=range(3)"]) is None
    assert sweep_subdir(["model=base,mid", "optimizer.optim.lr=1e-5,2e-5", "task=x"]) == (
        "hydra.sweep.subdir='model=${hydra:runtime.choices.model},optimizer.optim.lr=${optimizer.optim.lr},seed=${seed}'")
    assert sweep_subdir(["a=1,2", "hydra.sweep.subdir=mine"]) is None


@pytest.mark.parametrize("option", options("model"))
def test_cfg_job_shows_the_whole_architecture(option, cxlnet_run):
    """`cxlnet finetune model=X --cfg job` prints every XLNetConfig field; random init builds exactly that."""
    import dataclasses

    import yaml

    from cxlnet.model import XLNetConfig

    rc, out = cxlnet_run("finetune", f"model={option}", "--cfg", "job")
    assert rc == 0, out
    printed = yaml.safe_load(out)["model"]
    fields = {f.name for f in dataclasses.fields(XLNetConfig)} - {"extra", "grad_checkpointing"}
    assert fields <= set(printed["config"]), fields - set(printed["config"])
    built = XLNetConfig.named(option, vocab_size=32000)
    for name in fields - {"vocab_size", "dropatt"}:
        assert printed["config"][name] == getattr(built, name), name
    expected_layers = {"tiny": 2, "base": 12, "mid": 24}[option]
    assert printed["config"]["n_layer"] == expected_layers and printed["grad_checkpointing"] is False
