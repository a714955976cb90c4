"""XLNet's `AdamWeightDecayOptimizer` (model_utils.py; spec §4.3), used for pre-training.

Unlike `torch.optim.AdamW` it has **no bias correction** and adds the decoupled decay to the
update before the learning rate:

    m = β1·m + (1-β1)·g,   v = β2·v + (1-β2)·g²,   u = m / (√v + ε)
    u += wd·θ             (only for parameters whose group has weight_decay > 0)
    θ -= lr·u

Which parameters decay is decided by the parameter groups (`cxlnet.training.param_groups`: not
LayerNorm / biases, but always the `r_*_bias` attention biases), exactly as XLNet's name rules.
"""
from __future__ import annotations

from typing import Iterable

import torch


class AdamWeightDecay(torch.optim.Optimizer):
    def __init__(self, params: Iterable, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-6, weight_decay: float = 0.0):
        betas = tuple(float(b) for b in betas)
        if lr < 0 or eps < 0 or weight_decay < 0 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"bad AdamWeightDecay settings: lr {lr}, betas {betas}, eps {eps}, wd {weight_decay}")
        super().__init__(params, dict(lr=float(lr), betas=betas, eps=float(eps), weight_decay=float(weight_decay)))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("AdamWeightDecay does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                g = p.grad.to(state["exp_avg"].dtype)
                m, v = state["exp_avg"], state["exp_avg_sq"]
                state["step"] += 1
                m.mul_(beta1).add_(g, alpha=1.0 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
                update = m / (v.sqrt() + eps)
                if wd > 0:
                    update.add_(p, alpha=wd)
                p.add_(update.to(p.dtype), alpha=-lr)
        return loss


__all__ = ["AdamWeightDecay"]
