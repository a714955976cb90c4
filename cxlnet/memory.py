"""Training memory of XLNet: an analytic estimate, a measurement on a device, and `cxlnet memory`.

    cxlnet memory model=mid task=cmrc2018 hardware=gpu

The estimate counts what one optimizer step keeps alive at its peak (per device):
  * the model state: weights + gradients (fp32; mixed precision keeps fp32 masters) + Adam's two
    moments = 16 bytes per parameter;
  * the activations autograd saves for the backward pass, per layer (B micro-batch, L query length,
    K = L + memory keys, d model width, F inner width, H heads):
      14·B·L·d + 3·B·L·F elements of the activation width (fp32 4 bytes, bf16 2), plus the attention
      maps B·H·L·K: three fp32 maps (softmax output, dropout mask, probabilities) on the written-out
      CPU path, one map of the activation width (the bias SDPA's fused kernel keeps) on a GPU;
    with activation checkpointing only each layer's input is kept, plus one layer recomputed;
  * the working space of the last layer's backward (two attention maps and a layer's activations).
The pre-training query stream adds the same per-layer terms for its P target rows, and the LM
head its (B, P, vocab) logits. The estimate is checked against a measured CPU peak in
tests/test_memory.py (within ESTIMATE_ERROR).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import hydra
from omegaconf import DictConfig

from cxlnet.confdir import CONF_DIR
from cxlnet.model.config import XLNetConfig

log = logging.getLogger(__name__)

HEADROOM = 0.9  # `auto` and the table leave 10% of a device's memory for the allocator and the kernels
ESTIMATE_ERROR = 0.25  # the estimate is within ±25% of the measured CPU peak (tests/test_memory.py)
GIB = 2 ** 30


@dataclass(frozen=True)
class Workload:
    """One micro-batch's forward/backward: `seq_len` tokens, `mem_len` memory, `num_predict` targets."""

    config: XLNetConfig
    seq_len: int
    mem_len: int = 0
    num_predict: int = 0  # query-stream targets (pre-training); 0 for fine-tuning
    precision: str = "32-true"
    checkpointing: bool = False
    fused_attention: bool = True  # SDPA (GPU); False: the written-out CPU path
    optimizer_bytes_per_param: int = 8  # Adam's two fp32 moments


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    gradients: int
    optimizer: int
    activations: int
    workspace: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations + self.workspace


def activation_bytes(precision: str) -> int:
    return 2 if ("bf16" in precision or "16-mixed" in precision or precision.startswith("16")) else 4


def parameter_count(cfg: XLNetConfig) -> int:
    d, F, hd = cfg.d_model, cfg.d_inner, cfg.n_head * cfg.d_head
    per_layer = 3 * d * hd + 2 * d * hd + 2 * hd + 2 * d + (d * F + F + F * d + d) + 2 * d  # attn, seg, LNs, FFN
    biases = 3 * (cfg.n_layer if cfg.untie_r else 1) * hd
    head = d * d + d + 2  # the largest fine-tuning head (summary projection); the LM head is tied
    return cfg.vocab_size * d + d + biases + cfg.n_layer * per_layer + head


def estimate(work: Workload, micro_batch: int) -> MemoryEstimate:
    c, B = work.config, int(micro_batch)
    a = activation_bytes(work.precision)
    L, P = work.seq_len, work.num_predict
    K = L + work.mem_len
    d, F, H = c.d_model, c.d_inner, c.n_head
    maps = (1, a) if work.fused_attention else (3, 4)  # (attention maps kept per stream, bytes each)

    def layer(rows: int) -> int:  # saved activations of one layer for `rows` queries per example
        return a * B * rows * (14 * d + 3 * F) + maps[0] * maps[1] * B * H * rows * K

    per_layer = layer(L) + (layer(P) if P else 0) + a * B * work.mem_len * d  # + the memory it reads
    if work.checkpointing:
        activations = c.n_layer * a * B * (L + P) * d + per_layer
    else:
        activations = c.n_layer * per_layer
    logits = 3 * 4 * B * P * c.vocab_size  # fp32 logits, log-softmax and their gradient (pre-training)
    workspace = 2 * 4 * B * H * (L + P) * K + layer(L) // 2 + logits
    n = parameter_count(c)
    return MemoryEstimate(weights=4 * n, gradients=4 * n, optimizer=work.optimizer_bytes_per_param * n,
                          activations=activations, workspace=workspace)


# ------------------------------------------------------------------------------ measured
def measure_peak(model, work: Workload, micro_batch: int, device) -> int:
    """Peak CUDA memory of one forward/backward of `model`'s body on a synthetic micro-batch,
    plus the optimizer state it will hold (bytes); raises torch.cuda.OutOfMemoryError."""
    import torch

    body = getattr(model, "transformer", model)
    B, L = int(micro_batch), work.seq_len
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    dtype = torch.bfloat16 if activation_bytes(work.precision) == 2 else torch.float32
    inputs = dict(input_ids=torch.randint(0, body.config.vocab_size, (B, L), device=device),
                  token_type_ids=torch.zeros(B, L, dtype=torch.long, device=device))
    if work.mem_len:
        inputs["mems"] = [torch.zeros(B, work.mem_len, body.config.d_model, device=device)] * body.config.n_layer
    if work.num_predict:
        P = work.num_predict
        inputs["perm_mask"] = torch.zeros(B, L, L, device=device)
        inputs["target_mapping"] = torch.eye(L, device=device)[:P].expand(B, P, L)
    try:
        with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
            out = body(**inputs).last_hidden_state
            loss = out.float().square().mean()
        loss.backward()
        peak = torch.cuda.max_memory_allocated(device)
    finally:
        body.zero_grad(set_to_none=False)  # keep the gradient buffers: training allocates them anyway
        torch.cuda.empty_cache()
    params = sum(p.numel() for p in model.parameters())
    return peak + work.optimizer_bytes_per_param * params


# ------------------------------------------------------------------------------ the command
def table_rows(cfg: DictConfig, vocab_size: int):
    """(seq_len, micro, {(precision, checkpointing): bytes}) for the `memory` block's choices."""
    from cxlnet.runs import model_settings

    arch, _ = model_settings(cfg.model, vocab_size)
    config = XLNetConfig.from_dict(arch, source="model.config")
    fused = cfg.hardware.accelerator != "cpu"
    for seq_len in cfg.memory.seq_lens or [cfg.task.max_seq_length]:
        for micro in cfg.memory.micro_batches:
            cells = {}
            for precision in cfg.memory.precisions:
                for ckpt in (False, True):
                    work = Workload(config, int(seq_len), precision=precision, checkpointing=ckpt,
                                    fused_attention=fused)
                    cells[(precision, ckpt)] = estimate(work, int(micro)).total
            yield int(seq_len), int(micro), cells


def device_memory(hw: DictConfig) -> int | None:
    """Bytes one device has: `hardware.device_memory_gb`, else the visible CUDA GPU's, else None."""
    if hw.get("device_memory_gb"):
        return int(float(hw.device_memory_gb) * GIB)
    if hw.accelerator == "gpu":
        import torch

        if torch.cuda.is_available():
            return int(torch.cuda.get_device_properties(0).total_memory)
    if hw.accelerator == "cpu":
        import os

        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    return None


def show(cfg: DictConfig) -> None:
    from rich.console import Console
    from rich.table import Table

    from cxlnet.runs import resolve_spiece
    from cxlnet.text import Tokenizer

    vocab = cfg.model.config.vocab_size
    if vocab is None:  # the tokenizer's, as for a random initialisation
        vocab = Tokenizer(resolve_spiece(cfg)).vocab_size
    limit = device_memory(cfg.hardware)
    precisions = list(cfg.memory.precisions)
    table = Table(title=f"estimated training memory per device: XLNet-{cfg.model.name}, {cfg.task.name}, "
                        f"hardware={cfg.hardware.name}" + (f" ({limit / GIB:.1f} GiB)" if limit else ""))
    table.add_column("seq len", justify="right")
    table.add_column("micro", justify="right")
    for precision in precisions:
        for ckpt in (False, True):
            table.add_column(f"{precision}{' + ckpt' if ckpt else ''}", justify="right")
    for seq_len, micro, cells in table_rows(cfg, vocab):
        text = []
        for precision in precisions:
            for ckpt in (False, True):
                b = cells[(precision, ckpt)]
                over = limit is not None and b > limit * HEADROOM
                text.append(f"[red]{b / GIB:.1f}[/red]" if over else f"{b / GIB:.1f}")
        table.add_row(str(seq_len), str(micro), *text)
    console = Console()
    console.print(table)
    console.print(f"GiB; ckpt = model.grad_checkpointing=true; red: over {HEADROOM:.0%} of the device. "
                  f"An estimate (±{ESTIMATE_ERROR:.0%} of a measured peak); hardware.micro_batch_size=auto "
                  "measures one forward/backward on a GPU.")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="memory")
def main(cfg: DictConfig) -> None:
    show(cfg)
