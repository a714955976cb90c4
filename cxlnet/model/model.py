"""The XLNet body (Transformer-XL with two-stream relative attention) in plain PyTorch.

Layout. Everything is batch-major: token tensors are (B, T), hidden states (B, T, d), attention
heads (B, H, T, Dh) and attention scores (B, H, L, K) with L = length of the current segment,
M = length of the memory carried over from the previous segment and K = M + L keys. The original
TF code (and Hugging Face's port of it) is time-major; only the API names are shared with them.

Two streams. The *content* stream h starts from the word embeddings and is an ordinary
bidirectional encoder whose attention pattern is restricted by `perm_mask` (1 = may not attend);
each position may always see itself. The *query* stream g (pre-training only) starts from the
learnt `mask_emb` at the P target slots of `target_mapping` (B, P, L) and may NOT see the content of
its own position - that is what makes the permutation LM predict the token instead of copying
it. Both streams share every weight; g's queries attend to h's keys/values of the same layer.
The original scatters the P slot queries to their L positions, attends for all L rows and gathers
back; here only the P target rows are computed (`_Targets`), which is the same for one-hot rows.

Scores are `(q + r_w)·k` (content) + `(q + r_r)·k_r` (relative position, realigned by the
"rel-shift") + `(q + r_s)·seg_embed[same/different segment]` (segment), scaled by 1/sqrt(Dh).
The position and segment terms and the mask form one additive float bias. On GPU the content term
goes to `scaled_dot_product_attention` with that bias, so the fused kernels do the softmax, the
dropout and the value product. On CPU (no fused kernel for a float bias + dropout) the same thing
is spelled out as baddbmm(bias, q, kᵀ) -> softmax -> dropout -> @ v, with a cheaper dropout mask
(`Dropout`) and a rel-shift whose backward writes its gradient once (`_RelShift`).

Memory (Transformer-XL recurrence): the input of every layer for the first `reuse_len`
positions is cached (detached) and the last `mem_len` cached states are prepended to that layer's
keys and values in the next segment. Memory is always visible and counts as segment 0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from cxlnet.model.config import XLNetConfig


@dataclass
class XLNetOutput:
    last_hidden_state: Tensor  # (B, L, d), or (B, P, d) when target_mapping is given (query stream)
    mems: list[Tensor] | None = None  # per layer (B, M', d), detached; None when mem_len is 0/None


def _activation(name: str):
    if name == "relu":
        return F.relu
    if name == "gelu":  # HF's "gelu": exact erf form
        return F.gelu
    return lambda x: F.gelu(x, approximate="tanh")  # "gelu_new": the original XLNet gelu


class Dropout(nn.Dropout):
    """nn.Dropout with a cheaper mask on CPU.

    torch's CPU dropout draws its mask with `bernoulli_` (~5 ns/element, single-threaded: the masks
    were ~15% of a CPU training step). Here one 63-bit `random_` draw gives the masks of 4 elements
    (four 15-bit uniform integers, thresholded straight into a float buffer): ~3x cheaper for the
    whole forward + backward. Each element is kept independently with probability 1 - p, with p
    rounded to a multiple of 2^-15 (0.1 -> 0.100006), and the scale 1 / (1 - p) uses the rounded p,
    so the expectation is exact. Other devices keep F.dropout (fused Philox kernels on CUDA).
    The input may be a broadcast (expanded) view: the product materialises it, no copy first."""

    def forward(self, x: Tensor) -> Tensor:
        p = self.p
        if not self.training or p == 0.0:
            return x
        n, drop = x.numel(), round(p * 2 ** 15)
        if x.device.type != "cpu" or drop == 2 ** 15:
            return F.dropout(x, p, True)
        words = torch.empty((n + 3) // 4, dtype=torch.int64).random_()  # uniform in [0, 2^63)
        bits = words.view(torch.int16)[:n].view(x.shape).bitwise_and_(0x7FFF)  # uniform in [0, 2^15)
        noise = torch.ge(bits, drop, out=torch.empty(x.shape, dtype=x.dtype))  # 1.0 = keep
        return x * noise.mul_(2 ** 15 / (2 ** 15 - drop))


class _RelShift(torch.autograd.Function):
    """Transformer-XL rel-shift (B, H, L, R) -> (B, H, L, K): out[..., i, j] = raw[..., i, L - i + j].

    Forward is views only: flatten each (L, R) block, drop the first L entries, re-read the rest as
    rows of R - 1 and keep the first K columns. Autograd through that chain of views would
    zero-fill and copy the gradient twice ((B, H, L*R), then (B, H, L, R-1)). The entries of raw
    that are *not* read form the complementary view (the first L, then the last R - 1 - K of every
    row of R - 1), so the backward below writes each element of the raw gradient exactly once."""

    @staticmethod
    def forward(ctx, raw: Tensor, K: int) -> Tensor:
        B, H, L, R = raw.shape
        ctx.R = R
        return raw.reshape(B, H, L * R)[:, :, L:].unflatten(-1, (L, R - 1))[..., :K]

    @staticmethod
    def backward(ctx, grad: Tensor):
        B, H, L, K = grad.shape
        R = ctx.R
        g = grad.new_empty(B * H, L * R)  # (B, H) merged: 3-d strided copies are much faster here
        g[:, :L].zero_()
        rows = g[:, L:].view(B * H, L, R - 1)
        rows[..., :K].copy_(grad.reshape(B * H, L, K))
        rows[..., K:].zero_()
        return g.view(B, H, L, R), None


@dataclass
class _Targets:
    """The query stream's P target slots, prepared once per forward for all layers.

    ASSUMPTION: every row of `target_mapping` (B, P, L) is one-hot or all zero (a padded slot).
    Every XLNet data pipeline (the original's, Hugging Face's and ours) produces exactly that. Then
    scattering the slot queries to the L positions, attending for all L rows and gathering back
    (the original) equals attending for the P slots only, each from its position t = argmax:
    mask row mask_g[t], segment row same[t], position term raw[m, L - t + j]. A padded slot (zero
    row, t = 0) gets its attention vector multiplied by the row sum 0, i.e. the original's zero
    vector; for one-hot rows the row sum is exactly 1. Multi-hot rows (a slot that sums several
    positions' attention vectors) are NOT supported: they would silently give the attention of
    the first position only, scaled by the row sum. Checking that would need a device sync."""

    rel_index: Tensor  # (B, 1, P, K) int64: columns of the (B, H, P, R) position scores to read
    weight: Tensor  # (B, P, 1): row sums of target_mapping (1 target, 0 padded slot)
    mask: Tensor | None  # (B, 1, P, K) additive query-stream mask rows of the target positions
    same: Tensor | None  # (B, 1, P, K) same-segment rows of the target positions

    @staticmethod
    def build(target_mapping: Tensor, mask_g: Tensor | None, same: Tensor | None, K: int, R: int) -> "_Targets":
        B, P, L = target_mapping.shape
        t = target_mapping.argmax(-1)  # (B, P); 0 for padded (all-zero) slots
        rows = t.view(B, 1, P, 1)
        # Window of query position t: columns L - t, ..., L - t + K - 1 of R. For attn_type "uni"
        # (R = K + 1) the columns past R - 1 fall on causally masked keys only (the rel-shift
        # reads them from the next row): wrap them to columns 0 .. L - t - 2, which no key of the
        # row reads. Their probabilities are 0 unless the whole row is masked (uniform softmax);
        # only then do their (meaningless) gradients land elsewhere than the original's.
        idx = ((L - t).view(B, 1, P, 1) + torch.arange(K, device=t.device)).remainder_(R)
        pick = lambda x: None if x is None else torch.take_along_dim(x, rows, dim=2)  # noqa: E731
        return _Targets(idx, target_mapping.sum(-1, keepdim=True), pick(mask_g), pick(same))


def _glorot_uniform_(p: Tensor) -> None:
    # TF's default initializer for mask_emb [1, 1, d]: fan_in = 1, fan_out = d.
    limit = math.sqrt(6.0 / (1 + p.shape[-1]))
    nn.init.uniform_(p, -limit, limit)


class RelativeAttention(nn.Module):
    """Two-stream relative multi-head attention + output projection + residual + LayerNorm."""

    # Which attention kernel: True = SDPA (the fused GPU path), False = the written-out CPU path,
    # None = SDPA on every device but the CPU. Both compute the same thing; tests compare them.
    use_sdpa: bool | None = None

    def __init__(self, cfg: XLNetConfig):
        super().__init__()
        self.n_head, self.d_head = cfg.n_head, cfg.d_head
        hd = cfg.n_head * cfg.d_head
        self.qkv = nn.Linear(cfg.d_model, 3 * hd, bias=False)  # fused q|k|v projections, no biases
        self.r = nn.Linear(cfg.d_model, hd, bias=False)  # projects the positional encoding
        self.o = nn.Linear(hd, cfg.d_model, bias=False)
        self.seg_embed = nn.Parameter(torch.empty(2, cfg.n_head, cfg.d_head))  # [same, different]
        self.layer_norm = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.dropout = Dropout(cfg.dropout)
        self.dropatt = cfg.dropatt
        self.attn_dropout = Dropout(cfg.dropatt)  # CPU path; SDPA drops out itself on GPU
        self.scale = cfg.d_head ** -0.5

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, k_r: Tensor, same: Tensor | None,
                mask: Tensor | None, r_w: Tensor, r_r: Tensor, r_s: Tensor,
                targets: _Targets | None = None) -> Tensor:
        """q (B, L, H, Dh); k, v (B, H, K, Dh); k_r (Bp, H, R, Dh) with Bp in {1, 2, B};
        same (B, 1, L, K): 1.0 same segment, 0.0 different (None: no segments);
        mask (B or 1, 1, L, K) additive: 0 may attend, dtype-min may not (None: no mask).
        targets: the queries are not the L segment positions but the target slots (here L = P);
        query i reads position column targets.rel_index[i, j] (see `_Targets`).
        Returns the attention vectors (B, L, H*Dh)."""
        B, L, H, Dh = q.shape
        K = k.shape[2]
        Bp, R = k_r.shape[0], k_r.shape[2]

        # Position term. bd_raw[i, r] scores query i against relative distance pos_seq[r] = K - r;
        # query i / key j are (M + i) - j apart, so the score we need is bd_raw[i, L - i + j].
        # Flattening rows and dropping the first L entries realigns every row by that amount
        # (the Transformer-XL "rel-shift", _RelShift), as views only - no copy of (B, H, L, R).
        q_r = ((q + r_r) * self.scale).transpose(1, 2)  # (B, H, L, Dh)
        # k_r is shared by a group of B // Bp rows (Bp = 2: forward / backward halves for bi_data).
        bd = q_r.reshape(Bp, B // Bp, H, L, Dh) @ k_r.unsqueeze(1).transpose(-1, -2)  # (Bp, B/Bp, H, L, R)
        if targets is None:
            bd = _RelShift.apply(bd.view(B, H, L, R), K)  # (B, H, L, K)
        else:  # query-stream target slots: each row its own window (its position's rel-shift)
            # (A gather: its scatter_add backward is as fast as a hand-written scatter here.)
            bd = bd.view(B, H, L, R).gather(-1, targets.rel_index.expand(B, H, L, K))  # (B, H, P, K)
        # (For attn_type "uni", R = K + 1 and the entries read past a row's end land only on
        # causally masked keys.)

        bias = bd
        if same is not None:
            # Segment term: query i scores ef_s = (q_i + r_s)·seg_embed[s] against a key of the
            # same (s = 0) or a different (s = 1) segment. ef_1 is the same for every key of row i,
            # and softmax ignores per-row constants, so only the difference
            # c = ef_0 - ef_1 on same-segment keys matters: one matvec (B, H, L, 1) and one
            # multiply-add over (B, H, L, K) (no gather/scatter, no (B, L, K, 2) one-hot).
            w = (self.seg_embed[0] - self.seg_embed[1]) * self.scale  # (H, Dh)
            c = torch.einsum("blhd,hd->bhl", q + r_s, w).unsqueeze(-1)  # (B, H, L, 1)
            bias = torch.addcmul(bd, c, same)  # (B, H, L, K)
        if mask is not None:
            bias = bias + mask  # dtype-min + a finite score stays finite: masked rows stay uniform

        q_w = q + r_w  # (B, L, H, Dh)
        if self.use_sdpa or (self.use_sdpa is None and q.device.type != "cpu"):
            # GPU (any non-CPU device): SDPA's fused (memory-efficient) kernel takes the float
            # bias and the dropout, so no (B, H, L, K) probabilities are materialised.
            out = F.scaled_dot_product_attention(
                q_w.transpose(1, 2), k, v, attn_mask=bias,
                dropout_p=self.dropatt if self.training else 0.0, scale=self.scale,
            )  # (B, H, L, Dh)
            return out.transpose(1, 2).reshape(B, L, H * Dh)
        # CPU: SDPA with a float bias and dropout falls back to its unfused math path, which also
        # pays for a NaN-guarded softmax (isneginf/all/where passes we never need: the mask is
        # finite). Spelled out, the bias is the baddbmm accumulator, so the score tensor is
        # written once before the softmax.
        scores = torch.baddbmm(bias.reshape(B * H, L, K), q_w.transpose(1, 2).reshape(B * H, L, Dh),
                               k.reshape(B * H, K, Dh).transpose(1, 2), alpha=self.scale)  # (B*H, L, K)
        probs = self.attn_dropout(scores.softmax(-1))
        out = probs @ v.reshape(B * H, K, Dh)  # (B*H, L, Dh)
        return out.view(B, H, L, Dh).transpose(1, 2).reshape(B, L, H * Dh)

    def _post(self, x: Tensor, attn_vec: Tensor) -> Tensor:
        return self.layer_norm(x + self.dropout(self.o(attn_vec)))

    def forward(self, h: Tensor, g: Tensor | None, mem: Tensor | None, k_r_input: Tensor,
                same: Tensor | None, mask_h: Tensor | None, mask_g: Tensor | None,
                targets: _Targets | None, r_w: Tensor, r_r: Tensor, r_s: Tensor):
        B, L, _ = h.shape
        H, Dh = self.n_head, self.d_head
        hd = H * Dh
        q, k, v = self.qkv(h).view(B, L, 3, H, Dh).unbind(2)  # each (B, L, H, Dh)
        if mem is not None:
            # Memory only needs keys and values: project it with the k|v rows of the fused weight.
            k_m, v_m = F.linear(mem, self.qkv.weight[hd:]).view(B, mem.shape[1], 2, H, Dh).unbind(2)
            k, v = torch.cat([k_m, k], 1), torch.cat([v_m, v], 1)  # (B, K, H, Dh)
        k, v = k.transpose(1, 2), v.transpose(1, 2)  # (B, H, K, Dh)
        k_r = self.r(k_r_input).unflatten(-1, (H, Dh)).transpose(1, 2)  # (Bp, H, R, Dh)

        h_out = self._post(h, self._attend(q, k, v, k_r, same, mask_h, r_w, r_r, r_s))
        if g is None:
            return h_out, None

        q_g = F.linear(g, self.qkv.weight[:hd])  # (B, P, H*Dh)
        if targets is None:  # g given without target slots: g's rows are the L positions
            a_g = self._attend(q_g.view(B, L, H, Dh), k, v, k_r, same, mask_g, r_w, r_r, r_s)
        else:
            # Each target slot queries from the sequence position it predicts, attending for the P
            # slots only (the original scatters to all L positions and gathers back; the same for
            # one-hot rows, see `_Targets`). Padded slots get zero vectors, as in TF.
            a_g = self._attend(q_g.view(B, -1, H, Dh), k, v, k_r, targets.same, targets.mask,
                               r_w, r_r, r_s, targets=targets)
            a_g = a_g * targets.weight.to(a_g.dtype)  # (B, P, H*Dh)
        return h_out, self._post(g, a_g)


class FeedForward(nn.Module):
    def __init__(self, cfg: XLNetConfig):
        super().__init__()
        self.layer_1 = nn.Linear(cfg.d_model, cfg.d_inner)
        self.layer_2 = nn.Linear(cfg.d_inner, cfg.d_model)
        self.layer_norm = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.dropout = Dropout(cfg.dropout)
        self.act = _activation(cfg.ff_activation)

    def forward(self, x: Tensor) -> Tensor:
        y = self.layer_2(self.dropout(self.act(self.layer_1(x))))
        return self.layer_norm(x + self.dropout(y))  # post-LN


class XLNetLayer(nn.Module):
    def __init__(self, cfg: XLNetConfig):
        super().__init__()
        self.rel_attn = RelativeAttention(cfg)
        self.ff = FeedForward(cfg)  # shared by both streams

    def forward(self, h, g, mem, k_r_input, same, mask_h, mask_g, targets, r_w, r_r, r_s):
        h, g = self.rel_attn(h, g, mem, k_r_input, same, mask_h, mask_g, targets, r_w, r_r, r_s)
        return self.ff(h), (None if g is None else self.ff(g))


class XLNetPreTrained(nn.Module):
    """Weight loading/saving shared by the body and the head models (implemented in weights.py)."""

    config: XLNetConfig
    hf_architecture = "XLNetModel"

    @classmethod
    def from_pretrained(cls, path: str | Path, **config_overrides: Any):
        """Load a Hugging Face directory (config.json + model.safetensors / pytorch_model.bin)
        or an original TF checkpoint directory (xlnet_config.json + xlnet_model.ckpt.*)."""
        from cxlnet.model.weights import load_pretrained
        return load_pretrained(cls, path, **config_overrides)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write config.json + model.safetensors in Hugging Face's format and names."""
        from cxlnet.model.weights import save_pretrained
        return save_pretrained(self, directory)

    @torch.no_grad()
    def _init_module(self, m: nn.Module) -> None:
        """Spec §3.10: normal(0, 0.02) (not truncated) kernels and embeddings, zero biases, LN 1/0."""
        std = self.config.initializer_range
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, 0.0, std)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, RelativeAttention):
            nn.init.normal_(m.seg_embed, 0.0, std)
        elif isinstance(m, XLNet):
            for p in (m.r_w_bias, m.r_r_bias, m.r_s_bias):
                nn.init.normal_(p, 0.0, std)
            _glorot_uniform_(m.mask_emb)

    def reset_parameters(self) -> None:
        self.apply(self._init_module)


class XLNet(XLNetPreTrained):
    def __init__(self, config: XLNetConfig):
        super().__init__()
        self.config = config
        c = config
        self.word_embedding = nn.Embedding(c.vocab_size, c.d_model)
        self.mask_emb = nn.Parameter(torch.empty(1, 1, c.d_model))  # query-stream start state
        # Attention biases in the TF layout: one row per layer (untie_r) or a single shared row.
        n_bias = c.n_layer if c.untie_r else 1
        self.r_w_bias = nn.Parameter(torch.empty(n_bias, c.n_head, c.d_head))
        self.r_r_bias = nn.Parameter(torch.empty(n_bias, c.n_head, c.d_head))
        self.r_s_bias = nn.Parameter(torch.empty(n_bias, c.n_head, c.d_head))
        self.layer = nn.ModuleList(XLNetLayer(c) for _ in range(c.n_layer))
        self.dropout = Dropout(c.dropout)
        self.reset_parameters()

    # ------------------------------------------------------------------ inputs -> masks etc.
    def _positional_encoding(self, L: int, K: int, B: int, dtype: torch.dtype, device) -> Tensor:
        """Sinusoids of the relative distances K, K-1, ..., -L+1 ("bi") or K..0 ("uni"):
        (Bp, R, d) with Bp = 2 (forward, backward) for bi_data, else 1; B in training (below)."""
        c = self.config
        inv_freq = 1.0 / 10000 ** (torch.arange(0, c.d_model, 2, device=device, dtype=torch.float32) / c.d_model)
        end = -L if c.attn_type == "bi" else -1
        pos_seq = torch.arange(K, end, -1, device=device, dtype=torch.float32)  # (R,)
        if c.bi_data:
            pos_seq = torch.stack([pos_seq, -pos_seq])  # backward rows see negated distances
        else:
            pos_seq = pos_seq.unsqueeze(0)
        if c.clamp_len > 0:
            pos_seq = pos_seq.clamp(-c.clamp_len, c.clamp_len)
        angles = pos_seq.unsqueeze(-1) * inv_freq  # (Bp, R, d/2)
        pos_emb = torch.cat([angles.sin(), angles.cos()], -1).to(dtype)  # sin block, then cos block
        if self.training and self.dropout.p > 0:
            # The original drops out an encoding broadcast over the batch, i.e. a fresh mask per
            # example; in eval (or without dropout) one copy per direction is enough.
            Bp, R, d = pos_emb.shape
            pos_emb = self.dropout(pos_emb.unsqueeze(1).expand(Bp, B // Bp, R, d)).reshape(B, R, d)
        return pos_emb

    def _masks(self, B: int, L: int, M: int, attention_mask, input_mask, perm_mask, device):
        """Boolean "may not attend" masks (B or 1, L, K) for the query stream (mask_g) and the
        content stream (mask_h = mask_g but every position may see itself); None = no mask."""
        if attention_mask is not None and input_mask is not None:
            raise ValueError("pass either attention_mask (1 = keep) or input_mask (1 = pad), not both")
        K = M + L
        blocked = None
        if attention_mask is not None:
            input_mask = 1 - attention_mask
        if input_mask is not None:
            blocked = (input_mask > 0)[:, None, :].expand(B, L, L)  # padding keys
        if perm_mask is not None:
            blocked = perm_mask > 0 if blocked is None else blocked | (perm_mask > 0)
        if blocked is not None and M > 0:
            blocked = torch.cat([blocked.new_zeros(B, L, M), blocked], dim=2)  # memory always visible
        if self.config.attn_type == "uni":
            ones = torch.ones(L, K, dtype=torch.bool, device=device)
            causal = ones.triu(M + 1)  # future keys
            if self.config.same_length:  # every query sees the same number of keys
                causal = causal | F.pad(ones[:, :L].tril(-1), (0, K - L))
            blocked = causal.unsqueeze(0) if blocked is None else blocked | causal
        if blocked is None:
            return None, None
        own = F.pad(torch.eye(L, dtype=torch.bool, device=device), (M, 0))  # key j = M + i
        return blocked & ~own, blocked

    def _cache_mem(self, h: Tensor, prev: Tensor | None) -> Tensor:
        c = self.config
        if c.reuse_len:
            h = h[:, : c.reuse_len]
        if prev is not None:
            h = torch.cat([prev.to(h.dtype), h], dim=1)
        return h[:, -c.mem_len:].detach()

    # ------------------------------------------------------------------ forward
    def forward(self, input_ids: Tensor, token_type_ids: Tensor | None = None,
                attention_mask: Tensor | None = None, mems: list[Tensor] | None = None,
                perm_mask: Tensor | None = None, target_mapping: Tensor | None = None,
                input_mask: Tensor | None = None) -> XLNetOutput:
        """input_ids, token_type_ids (B, L); attention_mask (B, L) 1 = keep *or* input_mask (B, L)
        1 = pad; mems: per layer (B, M, d); perm_mask (B, L, L) 1 = query i may not see key j;
        target_mapping (B, P, L) one-hot rows (zeros for padded slots)."""
        c = self.config
        B, L = input_ids.shape
        if c.bi_data and B % 2:
            raise ValueError(f"bi_data needs an even batch size (forward/backward halves), got {B}")
        M = mems[0].shape[1] if mems is not None else 0
        K = M + L
        device = input_ids.device
        dtype = self.word_embedding.weight.dtype

        mask_h, mask_g = self._masks(B, L, M, attention_mask, input_mask, perm_mask, device)
        # Additive masks (0 / dtype-min) and the same-segment indicator, built once for all layers
        # in the dtype of the attention scores (autocast's, if on: SDPA wants the bias in the
        # query's dtype). A finite minimum for masked keys keeps fully masked rows (possible in
        # the query stream) uniform, as the original's `- 1e30`, instead of NaN; adding finite
        # scores to it cannot overflow, and it is safe in fp16/bf16 too.
        sdtype = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else dtype
        neg = torch.finfo(sdtype).min
        mask_h, mask_g = (None if m is None else torch.zeros(m.shape, dtype=sdtype, device=device)
                          .masked_fill_(m, neg).unsqueeze(1) for m in (mask_h, mask_g))  # (B or 1, 1, L, K)
        same = None
        if token_type_ids is not None:
            # 1.0 where query and key are in the same segment. Memory counts as segment 0. Only
            # equality of the ids matters.
            seg_k = F.pad(token_type_ids, (M, 0), value=0)  # (B, K)
            same = (token_type_ids[:, :, None] == seg_k[:, None, :]).to(sdtype).unsqueeze(1)  # (B, 1, L, K)

        h = self.dropout(self.word_embedding(input_ids))  # (B, L, d)
        g = None
        if target_mapping is not None:
            target_mapping = target_mapping.to(dtype)
            g = self.dropout(self.mask_emb.expand(B, target_mapping.shape[1], -1))  # (B, P, d)
        pos_emb = self._positional_encoding(L, K, B, dtype, device)
        targets = None
        if target_mapping is not None:
            targets = _Targets.build(target_mapping, mask_g, same, K, pos_emb.shape[1])
            mask_g = None  # only the target rows of the query-stream mask are needed

        new_mems: list[Tensor] | None = [] if c.mem_len else None
        for i, layer in enumerate(self.layer):
            if new_mems is not None:
                new_mems.append(self._cache_mem(h, None if mems is None else mems[i]))
            b = i if c.untie_r else 0
            args = (h, g, None if mems is None else mems[i].to(dtype), pos_emb, same, mask_h, mask_g,
                    targets, self.r_w_bias[b], self.r_r_bias[b], self.r_s_bias[b])
            if c.grad_checkpointing and self.training:
                h, g = checkpoint(layer, *args, use_reentrant=False)
            else:
                h, g = layer(*args)

        out = self.dropout(g if g is not None else h)
        return XLNetOutput(last_hidden_state=out, mems=new_mems)
