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

Scores are `(q + r_w)·k` (content) + `(q + r_r)·k_r` (relative position, realigned by the
"rel-shift") + `(q + r_s)·seg_embed[same/different segment]` (segment), scaled by 1/sqrt(Dh).
The content term is handed to `scaled_dot_product_attention`; the position and segment terms and
the mask are folded into its additive float bias, so the fused kernels do the softmax and the
value product.

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


def _glorot_uniform_(p: Tensor) -> None:
    # TF's default initializer for mask_emb [1, 1, d]: fan_in = 1, fan_out = d.
    limit = math.sqrt(6.0 / (1 + p.shape[-1]))
    nn.init.uniform_(p, -limit, limit)


class RelativeAttention(nn.Module):
    """Two-stream relative multi-head attention + output projection + residual + LayerNorm."""

    def __init__(self, cfg: XLNetConfig):
        super().__init__()
        self.n_head, self.d_head = cfg.n_head, cfg.d_head
        hd = cfg.n_head * cfg.d_head
        self.qkv = nn.Linear(cfg.d_model, 3 * hd, bias=False)  # fused q|k|v projections, no biases
        self.r = nn.Linear(cfg.d_model, hd, bias=False)  # projects the positional encoding
        self.o = nn.Linear(hd, cfg.d_model, bias=False)
        self.seg_embed = nn.Parameter(torch.empty(2, cfg.n_head, cfg.d_head))  # [same, different]
        self.layer_norm = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)
        self.dropatt = cfg.dropatt
        self.scale = cfg.d_head ** -0.5

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, k_r: Tensor, code: Tensor | None,
                mask: Tensor | None, r_w: Tensor, r_r: Tensor, r_s: Tensor) -> Tensor:
        """q (B, L, H, Dh); k, v (B, H, K, Dh); k_r (Bp, H, R, Dh) with Bp in {1, 2, B};
        code (B, 1, L, K): 0 same segment, 1 different segment, 2 masked (None: no segments);
        mask (B or 1, L, K) True = may not attend (used only without segments).
        Returns the attention vectors (B, L, H*Dh)."""
        B, L, H, Dh = q.shape
        K = k.shape[2]
        Bp, R = k_r.shape[0], k_r.shape[2]

        # Position term. bd_raw[i, r] scores query i against relative distance pos_seq[r] = K - r;
        # query i / key j are (M + i) - j apart, so the score we need is bd_raw[i, L - i + j].
        # Flattening rows and dropping the first L entries realigns every row by that amount
        # (the Transformer-XL "rel-shift"), as views only - no copy of the (B, H, L, R) tensor.
        q_r = ((q + r_r) * self.scale).transpose(1, 2)  # (B, H, L, Dh)
        # k_r is shared by a group of B // Bp rows (Bp = 2: forward / backward halves for bi_data).
        bd = q_r.reshape(Bp, B // Bp, H, L, Dh) @ k_r.unsqueeze(1).transpose(-1, -2)  # (Bp, B/Bp, H, L, R)
        bd = bd.reshape(B, H, L * R)[:, :, L:].unflatten(-1, (L, R - 1))[..., :K]  # (B, H, L, K)
        # (For attn_type "uni", R = K + 1 and the entries read past a row's end land only on
        # causally masked keys.)

        # A finite minimum for masked keys keeps fully masked rows (possible in the query stream)
        # uniform, as the original's `- 1e30`, instead of NaN; it is safe in fp16/bf16 too.
        neg = torch.finfo(bd.dtype).min
        if code is not None:
            # Segment term: only 2 segment embeddings exist, so score each query against both
            # (B, H, L, 2) instead of a one-hot (B, L, K, 2) einsum, then one gather per key picks
            # "same", "different" or the mask value: a single pass over (B, H, L, K).
            ef = torch.einsum("blhd,shd->bhls", (q + r_s) * self.scale, self.seg_embed)  # (B, H, L, 2)
            table = torch.cat([ef, ef.new_full((B, H, L, 1), neg)], dim=-1)  # (B, H, L, 3)
            bias = table.gather(-1, code.expand(B, H, L, K)).add_(bd)  # (B, H, L, K)
        elif mask is not None:
            bias = bd.masked_fill(mask.unsqueeze(1), neg)
        else:
            bias = bd

        out = F.scaled_dot_product_attention(
            (q + r_w).transpose(1, 2), k, v, attn_mask=bias,
            dropout_p=self.dropatt if self.training else 0.0, scale=self.scale,
        )  # (B, H, L, Dh)
        return out.transpose(1, 2).reshape(B, L, H * Dh)

    def _post(self, x: Tensor, attn_vec: Tensor) -> Tensor:
        return self.layer_norm(x + self.dropout(self.o(attn_vec)))

    def forward(self, h: Tensor, g: Tensor | None, mem: Tensor | None, k_r_input: Tensor,
                codes: tuple[Tensor, Tensor] | None, mask_h: Tensor | None, mask_g: Tensor | None,
                target_mapping: Tensor | None, r_w: Tensor, r_r: Tensor, r_s: Tensor):
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

        code_h, code_g = (None, None) if codes is None else codes
        h_out = self._post(h, self._attend(q, k, v, k_r, code_h, mask_h, r_w, r_r, r_s))
        if g is None:
            return h_out, None

        q_g = F.linear(g, self.qkv.weight[:hd])  # (B, P, H*Dh)
        if target_mapping is not None:
            # Each target slot queries from the sequence position it predicts: scatter the P slot
            # queries to the L positions, attend with the position's relative offsets, gather back.
            # Unmapped positions get zero queries and padded slots get zero vectors, as in TF.
            q_g = target_mapping.transpose(1, 2) @ q_g  # (B, L, H*Dh)
        a_g = self._attend(q_g.view(B, -1, H, Dh), k, v, k_r, code_g, mask_g, r_w, r_r, r_s)
        if target_mapping is not None:
            a_g = target_mapping @ a_g  # (B, P, H*Dh)
        return h_out, self._post(g, a_g)


class FeedForward(nn.Module):
    def __init__(self, cfg: XLNetConfig):
        super().__init__()
        self.layer_1 = nn.Linear(cfg.d_model, cfg.d_inner)
        self.layer_2 = nn.Linear(cfg.d_inner, cfg.d_model)
        self.layer_norm = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)
        self.act = _activation(cfg.ff_activation)

    def forward(self, x: Tensor) -> Tensor:
        y = self.layer_2(self.dropout(self.act(self.layer_1(x))))
        return self.layer_norm(x + self.dropout(y))  # post-LN


class XLNetLayer(nn.Module):
    def __init__(self, cfg: XLNetConfig):
        super().__init__()
        self.rel_attn = RelativeAttention(cfg)
        self.ff = FeedForward(cfg)  # shared by both streams

    def forward(self, h, g, mem, k_r_input, codes, mask_h, mask_g, target_mapping, r_w, r_r, r_s):
        h, g = self.rel_attn(h, g, mem, k_r_input, codes, mask_h, mask_g, target_mapping, r_w, r_r, r_s)
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
        self.dropout = nn.Dropout(c.dropout)
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
            pos_emb = self.dropout(pos_emb.repeat_interleave(B // pos_emb.shape[0], dim=0))  # (B, R, d)
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
        codes = None
        if token_type_ids is not None:
            # Per (query, key): 0 same segment, 1 different, 2 masked - computed once for all
            # layers. Memory counts as segment 0. Only equality of the ids matters.
            seg_k = F.pad(token_type_ids, (M, 0), value=0)  # (B, K)
            diff = (token_type_ids[:, :, None] != seg_k[:, None, :]).long()  # (B, L, K)
            codes = tuple((diff if m is None else diff.masked_fill(m, 2)).unsqueeze(1) for m in (mask_h, mask_g))

        h = self.dropout(self.word_embedding(input_ids))  # (B, L, d)
        g = None
        if target_mapping is not None:
            target_mapping = target_mapping.to(dtype)
            g = self.dropout(self.mask_emb.expand(B, target_mapping.shape[1], -1))  # (B, P, d)
        pos_emb = self._positional_encoding(L, K, B, dtype, device)

        new_mems: list[Tensor] | None = [] if c.mem_len else None
        for i, layer in enumerate(self.layer):
            if new_mems is not None:
                new_mems.append(self._cache_mem(h, None if mems is None else mems[i]))
            b = i if c.untie_r else 0
            args = (h, g, None if mems is None else mems[i].to(dtype), pos_emb, codes, mask_h, mask_g,
                    target_mapping, self.r_w_bias[b], self.r_r_bias[b], self.r_s_bias[b])
            if c.grad_checkpointing and self.training:
                h, g = checkpoint(layer, *args, use_reentrant=False)
            else:
                h, g = layer(*args)

        out = self.dropout(g if g is not None else h)
        return XLNetOutput(last_hidden_state=out, mems=new_mems)
