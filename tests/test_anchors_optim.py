"""Optimizer pieces checked against numbers computed here by hand: layer-wise gradient decay (clip
first, then scale; which parameters) through a real Lightning step, warm-up by ratio as the
ChnSentiCorp preset sets it, and the sample std of a sweep summary."""
from __future__ import annotations

import copy
import math

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf

from cxlnet.model import XLNetConfig, XLNetForSequenceClassification
from cxlnet.sweep import summarize
from cxlnet.training import TrainModule, layer_index, lr_lambda, warmup_steps_for

N_LAYER, RATE, CLIP = 3, 0.5, 1.0


def sgd_cfg(layer_decay: float) -> OmegaConf:
    """Plain SGD with lr 1 and no warm-up: the first update is exactly minus the processed gradient."""
    return OmegaConf.create({
        "name": "sgd", "optim": {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 1.0, "weight_decay": 0.0},
        "warmup_steps": 0, "warmup_ratio": 0.0, "min_lr_ratio": 1.0, "layer_decay": layer_decay,
        "layer_decay_mode": "grad"})


class OneBatch(TrainModule):
    def __init__(self, model, cfg, batch):
        super().__init__(model, cfg)
        self.batch = batch

    def training_step(self, batch, batch_idx):
        return 100.0 * self.model(**self.batch).loss  # large: the clip at 1.0 is active

    def train_dataloader(self):
        return [0]


def one_step_update(model, cfg, batch) -> dict[str, torch.Tensor]:
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = pl.Trainer(accelerator="cpu", max_steps=1, gradient_clip_val=CLIP, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(OneBatch(model, cfg, batch))
    return {n: p.detach() - before[n] for n, p in model.named_parameters()}


@pytest.mark.parametrize("only_layers", [False, True])
def test_layer_decay_scales_the_clipped_gradient_of_layer_parameters_only(only_layers):
    """All parameters trainable (which ones are scaled), and only the layers' (where the norm of the
    scaled gradient differs most from the clipped one's, so the order of clip and scale shows)."""
    torch.manual_seed(0)
    model = XLNetForSequenceClassification(XLNetConfig.named("tiny", vocab_size=60, n_layer=N_LAYER, dropout=0.0,
                                                           summary_last_dropout=0.0))
    for name, param in model.named_parameters():
        param.requires_grad_(not only_layers or layer_index(name) is not None)
    g = torch.Generator().manual_seed(1)
    batch = {"input_ids": torch.randint(0, 60, (4, 7), generator=g),
             "token_type_ids": torch.randint(0, 2, (4, 7), generator=g), "labels": torch.tensor([0, 1, 1, 0])}
    reference = copy.deepcopy(model)
    (100.0 * reference(**batch).loss).backward()
    grads = {n: p.grad for n, p in reference.named_parameters() if p.grad is not None}
    norm = torch.sqrt(sum((v.double() ** 2).sum() for v in grads.values())).item()
    assert norm > 2 * CLIP  # the clip is active
    clipped = {n: v * (CLIP / (norm + 1e-6)) for n, v in grads.items()}

    update = one_step_update(model, sgd_cfg(RATE), batch)
    pinned = set()
    for name, grad in clipped.items():
        layer = layer_index(name)
        if layer is not None and "seg_embed" in name:
            continue  # per-layer in the HF layout but outside `layer_{l}` in the original: owned by the recipe
        scale = 1.0 if layer is None else RATE ** (N_LAYER - 1 - layer)
        torch.testing.assert_close(update[name], -scale * grad, rtol=1e-4, atol=1e-7,
                                   msg=lambda m, name=name: f"{name}: {m}")
        pinned.add(layer)
    assert pinned == ({0, 1, 2} if only_layers else {None, 0, 1, 2})
    assert (update["transformer.mask_emb"] == 0).all() and all(
        (u == 0).all() for n, u in update.items() if n not in grads)
    if only_layers:  # scaling first and clipping the scaled gradient would move 1.6x more
        scaled = {n: v * RATE ** (N_LAYER - 1 - layer_index(n)) for n, v in grads.items()}
        scaled_norm = torch.sqrt(sum((v.double() ** 2).sum() for v in scaled.values())).item()
        assert norm / scaled_norm > 1.3, norm / scaled_norm


def test_no_layer_decay_is_a_plain_clipped_step():
    torch.manual_seed(0)
    model = XLNetForSequenceClassification(XLNetConfig.named("tiny", vocab_size=60, n_layer=N_LAYER, dropout=0.0,
                                                           summary_last_dropout=0.0))
    batch = {"input_ids": torch.randint(0, 60, (4, 7)), "labels": torch.tensor([0, 1, 1, 0])}
    update = one_step_update(model, sgd_cfg(1.0), batch)
    total = math.sqrt(sum(float((u.double() ** 2).sum()) for u in update.values()))
    assert total == pytest.approx(CLIP, rel=1e-4)  # lr 1: the update is the clipped gradient, norm 1


def test_chnsenticorp_warms_up_over_ten_percent_of_the_steps():
    from hydra import compose, initialize_config_dir

    from cxlnet.confdir import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="finetune", overrides=["task=chnsenticorp"])
    assert warmup_steps_for(cfg.optimizer, total_steps=250) == 25
    f = lr_lambda(warmup_steps_for(cfg.optimizer, 250), 250, float(cfg.optimizer.min_lr_ratio))
    assert [f(0), f(5), f(25)] == pytest.approx([0.0, 0.2, 1.0])
    assert f(137) == pytest.approx(1 - 112 / 225)  # linear decay to 0 over the remaining 225 steps
    explicit = OmegaConf.create({"warmup_steps": 7, "warmup_ratio": 0.5})
    assert warmup_steps_for(explicit, total_steps=250) == 7  # an explicit number wins over the ratio


def test_sweep_summary_std_is_the_sample_std():
    runs = [{"run": f"seed={i}", "overrides": [], "metrics": {"dev/acc": v}} for i, v in enumerate([90.0, 91.0, 93.0])]
    stats = summarize(runs, [])["metrics"]["dev/acc"]
    # mean 91.333; squared deviations 1.778 + 0.111 + 2.778 = 4.667; / (n - 1) = 2.333
    assert stats["std"] == pytest.approx(1.5275, abs=1e-4)
    assert stats["mean"] == pytest.approx(91.3333, abs=1e-4) and stats["max"] == 93.0 and stats["n"] == 3
    assert stats["formatted"] == "93.0 (91.3)"
    assert summarize(runs[:1], [])["metrics"]["dev/acc"]["std"] == 0.0
