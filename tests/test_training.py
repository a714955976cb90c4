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
