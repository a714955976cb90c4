"""XLNet's optimizer recipe: schedule, weight-decay groups, layer-wise decay."""
from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from cxlnet.model import XLNetConfig, XLNetForSequenceClassification
from cxlnet.training import build_optimizer, layer_index, layer_scales, lr_lambda, param_groups


def tiny_model():
    return XLNetForSequenceClassification(XLNetConfig.named("tiny", vocab_size=100, n_layer=3))


def test_schedule_warms_up_from_zero_and_decays_linearly():
    f = lr_lambda(warmup_steps=10, total_steps=110, min_lr_ratio=0.001)
    assert f(0) == 0.0 and f(5) == 0.5 and f(10) == 1.0
    assert f(60) == pytest.approx(0.999 * 0.5 + 0.001)
    assert f(110) == pytest.approx(0.001) and f(500) == pytest.approx(0.001)


def test_weight_decay_groups_follow_xlnet():
    model = tiny_model()
    groups = param_groups(model, weight_decay=0.01, lr=1.0, lr_scales=None)
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    by_name = dict(model.named_parameters())
    for name, param in by_name.items():
        expect = "r_w_bias" in name or "r_r_bias" in name or "r_s_bias" in name or not (
            "layer_norm" in name or "LayerNorm" in name or name.endswith("bias"))
        assert (id(param) in decayed) == expect, name


def test_layer_decay_scales_by_depth():
    model = tiny_model()
    scales = layer_scales(model, 0.5)
    # seg_embed lives in our layer modules but outside the original's `layer_{l}/` scope (stacked
    # model/transformer/seg_embed): like r_*_bias, embeddings and heads it keeps 1 (spec §4.2)
    layered = {n: s for n, s in scales.items() if layer_index(n) is not None and not n.endswith("seg_embed")}
    assert {layer_index(n) for n in layered} == {0, 1, 2}
    for name, scale in layered.items():
        assert scale == 0.5 ** (2 - layer_index(name))
    outside = {n: s for n, s in scales.items() if n not in layered}
    assert any(n.endswith("seg_embed") for n in outside) and any("r_s_bias" in n for n in outside)
    assert all(s == 1.0 for s in outside.values())


def test_build_optimizer_lr_mode_scales_learning_rates():
    model = tiny_model()
    cfg = OmegaConf.create({
        "name": "adamw", "optim": {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3,
                                   "betas": [0.9, 0.999], "eps": 1e-6, "weight_decay": 0.01},
        "warmup_steps": 2, "warmup_ratio": 0.1, "min_lr_ratio": 0.0, "layer_decay": 0.5, "layer_decay_mode": "lr"})
    built = build_optimizer(cfg, model, total_steps=10)
    lrs = sorted({g["initial_lr"] for g in built["optimizer"].param_groups})
    assert lrs == pytest.approx([0.25e-3, 0.5e-3, 1e-3])
    assert isinstance(built["optimizer"], torch.optim.AdamW)
    assert built["optimizer"].param_groups[0]["lr"] == 0.0  # step 0 trains with lr 0


def test_wandb_runs_of_a_sweep_share_a_group(tmp_path, monkeypatch):
    from cxlnet.training import build_loggers

    monkeypatch.setenv("WANDB_MODE", "disabled")
    cfg = OmegaConf.create({"run_name": "cmrc2018-mid-seed3", "logger": {
        "kind": "wandb", "project": "cxlnet", "entity": None, "group": None, "tags": []}})
    csv_logger, wandb_logger = build_loggers(cfg, tmp_path, group="sweep_2026-01-01")
    assert wandb_logger._wandb_init["group"] == "sweep_2026-01-01"
    assert wandb_logger._wandb_init["name"] == "cmrc2018-mid-seed3"
    _, single = build_loggers(cfg, tmp_path, group=None)
    assert single._wandb_init["group"] == "cmrc2018-mid-seed3"


def test_shard_accumulation_splits_the_batch_into_whole_shards_per_process():
    from cxlnet.errors import CxlnetError
    from cxlnet.training import shard_accumulation

    assert shard_accumulation(8, world_size=1, accumulation=1) == 8   # one device: 8 micro-batches
    assert shard_accumulation(8, world_size=2, accumulation=1) == 4   # DDP: 4 shards per process
    assert shard_accumulation(8, world_size=8, accumulation=1) == 1   # one shard per device, like a TPU core
    assert shard_accumulation(8, world_size=1, accumulation=16) == 16  # smaller micro-batches: 2 per shard
    assert shard_accumulation(8, world_size=2, accumulation=3) == 12
    with pytest.raises(CxlnetError, match="clip_shards=8 with 3 processes"):
        shard_accumulation(8, world_size=3, accumulation=1)


def test_task_presets_use_the_originals_optimizer():
    from test_config import compose_finetune

    for task in ("cmrc2018", "drcd", "chnsenticorp"):
        cfg = compose_finetune(f"task={task}")
        assert cfg.optimizer.optim._target_ == "cxlnet.optim.TFAdam" and cfg.optimizer.clip_shards == 8
    assert compose_finetune("task=cmrc2018", "optimizer=adamw").optimizer.optim._target_ == "torch.optim.AdamW"
    demo = compose_finetune("experiment=demo").optimizer
    assert demo.optim._target_ == "torch.optim.AdamW" and demo.clip_shards == 1


def test_tf_adam_refuses_weight_decay():
    from cxlnet.optim import TFAdam

    with pytest.raises(ValueError, match="xlnet_adamw"):
        TFAdam([torch.nn.Parameter(torch.zeros(2))], weight_decay=0.01)
