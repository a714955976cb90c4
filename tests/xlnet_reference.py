"""The original's update rule, written from zihangdai/xlnet's code for the training-parity tests.

Everything here follows `model_utils.get_train_op` / `AdamWeightDecayOptimizer`, TF 1.x's
`tf.train.AdamOptimizer`, `tf.clip_by_global_norm` and `tf.contrib.tpu.CrossShardOptimizer`
literally, on the original's *variable names*, and shares no code with cxlnet's optimizer.
"""
from __future__ import annotations

import math
import re

import torch

# Our / transformers' parameter names -> the TF variable they stand for (modeling.py scopes). The
# r_*_bias terms and seg_embed are single [n_layer, ...] variables directly under model/transformer/.
_TF_NAMES = [
    (r"^transformer\.word_embedding\.weight$", r"model/transformer/word_embedding/lookup_table"),
    (r"^transformer\.mask_emb$", r"model/transformer/mask_emb/mask_emb"),
    (r"^transformer\.(?:layer\.\d+\.rel_attn\.)?(r_[wrs]_bias|seg_embed)$", r"model/transformer/\1"),
    (r"^transformer\.layer\.(\d+)\.rel_attn\.(qkv|q|k|v|o|r)(?:\.weight)?$", r"model/transformer/layer_\1/rel_attn/\2/kernel"),
    (r"^transformer\.layer\.(\d+)\.(rel_attn|ff)\.layer_norm\.weight$", r"model/transformer/layer_\1/\2/LayerNorm/gamma"),
    (r"^transformer\.layer\.(\d+)\.(rel_attn|ff)\.layer_norm\.bias$", r"model/transformer/layer_\1/\2/LayerNorm/beta"),
    (r"^transformer\.layer\.(\d+)\.ff\.(layer_[12])\.weight$", r"model/transformer/layer_\1/ff/\2/kernel"),
    (r"^transformer\.layer\.(\d+)\.ff\.(layer_[12])\.bias$", r"model/transformer/layer_\1/ff/\2/bias"),
    (r"^lm_loss\.bias$", r"model/lm_loss/bias"),
    # task heads live in their own scopes beside model/transformer (a kernel or a bias each)
    (r"^(.*)\.weight$", r"head/\1/kernel"),
    (r"^(.*)\.bias$", r"head/\1/bias"),
]


def tf_variable_name(name: str) -> str:
    for pattern, repl in _TF_NAMES:
        if re.match(pattern, name):
            return re.sub(pattern, repl, name)
    raise KeyError(name)


def do_use_weight_decay(tf_name: str, weight_decay: float) -> bool:
    """AdamWeightDecayOptimizer._do_use_weight_decay with get_train_op's exclusions."""
    if not weight_decay:
        return False
    if any(re.search(r, tf_name) for r in ["r_s_bias", "r_r_bias", "r_w_bias"]):
        return True
    return not any(re.search(r, tf_name) for r in ["LayerNorm", "layer_norm", "bias"])


def layer_decay_multipliers(tf_names: list[str], rate: float) -> list[float]:
    """get_train_op's lr_layer_decay_rate loop: multiplier of each (clipped) gradient."""
    n_layer = 0
    for name in tf_names:
        m = re.search(r"model/transformer/layer_(\d+?)/", name)
        if m:
            n_layer = max(n_layer, int(m.group(1)) + 1)
    out = []
    for name in tf_names:
        mult = 1.0
        for l in range(n_layer):
            if "model/transformer/layer_{}/".format(l) in name:
                mult = rate ** (n_layer - 1 - l)
                break
        out.append(mult)
    return out


def clip_by_global_norm(grads: list[torch.Tensor], clip_norm: float) -> tuple[list[torch.Tensor], float]:
    """tf.clip_by_global_norm: t * clip_norm / max(global_norm, clip_norm)."""
    norm = math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads))
    return [g * (clip_norm / max(norm, clip_norm)) for g in grads], norm


def learning_rate(step: int, lr: float, warmup: int, train_steps: int, min_lr_ratio: float) -> float:
    """tf.where(step < warmup, step / warmup * lr, polynomial_decay(lr, step - warmup, ...))."""
    if step < warmup:
        return step / warmup * lr
    decay_steps = train_steps - warmup
    done = min(step - warmup, decay_steps)
    end = lr * min_lr_ratio
    return (lr - end) * (1 - done / decay_steps) ** 1.0 + end


class AdamWeightDecayReference:
    """AdamWeightDecayOptimizer.apply_gradients: no bias correction, u += wd·θ where allowed."""

    def __init__(self, params: list[torch.Tensor], tf_names: list[str], weight_decay: float, eps: float,
                 beta_1: float = 0.9, beta_2: float = 0.999):
        self.params, self.names = params, tf_names
        self.wd, self.eps, self.b1, self.b2 = weight_decay, eps, beta_1, beta_2
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]

    @torch.no_grad()
    def apply(self, grads: list[torch.Tensor], lr: float) -> None:
        for i, (p, g) in enumerate(zip(self.params, grads)):
            self.m[i] = self.b1 * self.m[i] + (1.0 - self.b1) * g
            self.v[i] = self.b2 * self.v[i] + (1.0 - self.b2) * g * g
            update = self.m[i] / (torch.sqrt(self.v[i]) + self.eps)
            if do_use_weight_decay(self.names[i], self.wd):
                update = update + self.wd * p
            p.copy_(p - lr * update)


class TFAdamReference:
    """tf.train.AdamOptimizer: lr_t = lr·√(1-β2ᵗ)/(1-β1ᵗ); θ -= lr_t·m/(√v + ε) (ε-hat)."""

    def __init__(self, params: list[torch.Tensor], eps: float, beta_1: float = 0.9, beta_2: float = 0.999):
        self.params, self.eps, self.b1, self.b2 = params, eps, beta_1, beta_2
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.beta1_power, self.beta2_power = beta_1, beta_2  # TF's accumulators start at β, not 1

    @torch.no_grad()
    def apply(self, grads: list[torch.Tensor], lr: float) -> None:
        lr_t = lr * math.sqrt(1 - self.beta2_power) / (1 - self.beta1_power)
        for i, (p, g) in enumerate(zip(self.params, grads)):
            self.m[i] = self.b1 * self.m[i] + (1 - self.b1) * g
            self.v[i] = self.b2 * self.v[i] + (1 - self.b2) * g * g
            p.copy_(p - lr_t * self.m[i] / (torch.sqrt(self.v[i]) + self.eps))
        self.beta1_power *= self.b1
        self.beta2_power *= self.b2


def cross_shard_gradients(shard_losses, params: list[torch.Tensor], clip: float, multipliers: list[float]):
    """CrossShardOptimizer on K cores: core k's gradient of loss_k / K (Reduction.MEAN), clipped
    (`tf.clip_by_global_norm` between compute_gradients and apply_gradients), layer-decayed, then
    cross_replica_sum. Returns the summed gradients and each shard's norm before clipping."""
    K = len(shard_losses)
    total, norms = None, []
    for loss in shard_losses:
        grads = torch.autograd.grad(loss / K, params)
        clipped, norm = clip_by_global_norm(list(grads), clip)
        norms.append(norm)
        scaled = [g * mult for g, mult in zip(clipped, multipliers)]
        total = scaled if total is None else [a + b for a, b in zip(total, scaled)]
    return total, norms
