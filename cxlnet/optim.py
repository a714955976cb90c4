"""The two optimizers of XLNet's `model_utils.get_train_op` (spec §4.3), which picks one by weight decay.

`AdamWeightDecay` (`AdamWeightDecayOptimizer`, weight decay > 0: pre-training) has **no bias
correction** and adds the decoupled decay to the update before the learning rate:

    m = β1·m + (1-β1)·g,   v = β2·v + (1-β2)·g²,   u = m / (√v + ε)
    u += wd·θ             (only for parameters whose group has weight_decay > 0)
    θ -= lr·u

Which parameters decay is decided by the parameter groups (`cxlnet.training.param_groups`: not
LayerNorm / biases, but always the `r_*_bias` attention biases), exactly as XLNet's name rules.

`TFAdam` (`tf.train.AdamOptimizer`, weight decay 0: every Chinese-XLNet fine-tuning run) is Adam
with TensorFlow's "ε-hat": the bias correction goes into the step size and ε is added to the raw √v,

    θ -= lr·√(1-β2ᵗ)/(1-β1ᵗ) · m / (√v + ε)

which is `torch.optim.Adam` with ε' = ε/√(1-β2ᵗ): 31.6x larger at step 1 with β2 0.999. Because
XLNet's layer-wise decay scales gradients (`layer_decay_mode: grad`), it acts only where ε matters,
so where ε sits changes how far the lower layers move.
"""
from __future__ import annotations

import math
from typing import Iterable

import torch


class _Adam(torch.optim.Optimizer):
    """The moment updates both optimizers share; `_apply` turns the moments into the step."""

    def __init__(self, params: Iterable, lr: float, betas: tuple[float, float], eps: float, weight_decay: float):
        betas = tuple(float(b) for b in betas)
        if lr < 0 or eps < 0 or weight_decay < 0 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"bad {type(self).__name__} settings: lr {lr}, betas {betas}, eps {eps}, "
                             f"wd {weight_decay}")
        super().__init__(params, dict(lr=float(lr), betas=betas, eps=float(eps), weight_decay=float(weight_decay)))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
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
                self._apply(p, m, v, int(state["step"]), group)
        return loss

    def _apply(self, p, m, v, t: int, group: dict) -> None:
        raise NotImplementedError


class AdamWeightDecay(_Adam):
    def __init__(self, params: Iterable, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-6, weight_decay: float = 0.0):
        super().__init__(params, lr, betas, eps, weight_decay)

    def _apply(self, p, m, v, t, group):
        update = m / (v.sqrt() + group["eps"])
        if group["weight_decay"] > 0:
            update.add_(p, alpha=group["weight_decay"])
        p.add_(update.to(p.dtype), alpha=-group["lr"])


class TFAdam(_Adam):
    """`tf.train.AdamOptimizer`; no weight decay (the original switches to AdamWeightDecay for that)."""

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0):
        if weight_decay:
            raise ValueError(f"TFAdam has no weight decay (got {weight_decay}): XLNet uses AdamWeightDecay "
                             "when weight_decay > 0 (optimizer=xlnet_adamw)")
        super().__init__(params, lr, betas, eps, 0.0)

    def _apply(self, p, m, v, t, group):
        beta1, beta2 = group["betas"]
        step_size = group["lr"] * math.sqrt(1.0 - beta2 ** t) / (1.0 - beta1 ** t)
        p.addcdiv_(m.to(p.dtype), (v.sqrt() + group["eps"]).to(p.dtype), value=-step_size)


__all__ = ["AdamWeightDecay", "TFAdam"]
