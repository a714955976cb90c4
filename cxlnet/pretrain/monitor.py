"""What a pre-training run watches besides its training loss: a held-out validation PLM loss, the
collapse signal of the content stream, and throughput (tokens/s, FLOP/s, MFU).

Collapse signal. Fine-tuning reads the *content* stream, but the PLM loss only scores the query
stream, and the two share every weight. A run that cannot learn positional context (too little
text for its vocabulary, too high an effective learning rate) finds a shortcut: the shared attention
adds one large bag-of-words vector to every position, after which LayerNorm leaves all positions of
a sequence nearly the same state. The PLM loss barely notices; a fine-tuned classifier starts from
near-identical token states and may not recover. `content_spread` measures this on a fixed
held-out batch: the standard deviation of the last layer's content states across positions,
relative to their RMS (about 1 at random init; a collapsed model has a few hundredths).
"""
from __future__ import annotations

import logging
import os

import torch
from pytorch_lightning.callbacks import ThroughputMonitor

log = logging.getLogger(__name__)


@torch.no_grad()
def content_spread(model, batch: dict[str, torch.Tensor]) -> float:
    """Std of the last layer's content-stream states across positions / their RMS, averaged over
    rows and features; the content stream as fine-tuning sees it (no perm mask, no memory)."""
    h = model.transformer(batch["input_ids"], token_type_ids=batch["token_type_ids"]).last_hidden_state.float()
    return float(h.std(dim=1).mean() / h.pow(2).mean().sqrt().clamp_min(1e-12))


@torch.no_grad()
def validation_loss(model, batches: list[dict[str, torch.Tensor]], loss_fn) -> float:
    """Mean PLM loss over the target slots of `batches` (consecutive stream batches: the memory is
    carried from one to the next, starting empty)."""
    mems, total, count = None, 0.0, 0.0
    for b in batches:
        out = model(b["input_ids"], token_type_ids=b["token_type_ids"], mems=mems, perm_mask=b["perm_mask"],
                    target_mapping=b["target_mapping"])
        mems = out.mems
        n = float(b["target_mask"].sum())
        total += float(loss_fn(out.logits, b["target"], b["target_mask"])) * n
        count += n
    return total / max(count, 1.0)


def step_flops(config, rows: int, seq_len: int, num_predict: int) -> int:
    """FLOPs of one training micro-batch (forward + backward) of an XLNetLMHeadModel with `config`,
    counted by Lightning's `measure_flops` on a 2-row CPU batch of zeros and scaled to `rows`
    (every matmul is per row; the positional projection, shared by the rows, is a small part)."""
    from lightning_fabric.utilities.throughput import measure_flops

    from cxlnet.model import XLNetLMHeadModel

    model = XLNetLMHeadModel(config.replace(dropout=0.0, dropatt=0.0, grad_checkpointing=False))
    ids = torch.zeros(2, seq_len, dtype=torch.long)
    mems = [torch.zeros(2, config.mem_len, config.d_model) for _ in range(config.n_layer)] if config.mem_len else None
    perm_mask = torch.zeros(2, seq_len, seq_len)
    target_mapping = torch.zeros(2, num_predict, seq_len)
    target_mapping[:, :, 0] = 1.0  # one-hot slots, as in training

    def forward():
        return model(ids, token_type_ids=ids, mems=mems, perm_mask=perm_mask, target_mapping=target_mapping).logits

    return int(measure_flops(model, forward, loss_fn=torch.Tensor.sum) * rows / 2)


def early_update_scale(warmup_steps: int, total_steps: int, min_lr_ratio: float, betas) -> tuple[float, int]:
    """(largest ratio of AdamWeightDecay's step to the peak lr, the step where it happens) for a
    gradient of constant sign. Without bias correction a step is lr(t)·(1-β1^t)/√(1-β2^t) times
    sign(g): 3.2x at t=1, 6.5x at t=10, still 2x at t=300. The original's 20k-step warm-up keeps
    lr(t) small for the ~1/(1-β2) steps this lasts; a warm-up of a few dozen steps does not, and
    the first few hundred updates are then several times larger than `lr` says."""
    from cxlnet.training import lr_lambda

    beta1, beta2 = (float(b) for b in betas)
    factor = lr_lambda(int(warmup_steps), int(total_steps), float(min_lr_ratio))
    horizon = min(int(total_steps), int(10 / (1.0 - beta2)))
    scale = [(factor(t - 1) * (1 - beta1 ** t) / (1 - beta2 ** t) ** 0.5, t) for t in range(1, horizon + 1)]
    return max(scale) if scale else (0.0, 0)


class PretrainThroughput(ThroughputMonitor):
    """Lightning's ThroughputMonitor for pre-training batches (samples = rows, items = tokens), with
    the device's peak FLOP/s given by `peak_flops` where Lightning has no figure (CPUs), for MFU."""

    def __init__(self, peak_flops: float | None = None, window_size: int = 20):
        super().__init__(batch_size_fn=lambda b: int(b["input_ids"].shape[0]),
                         length_fn=lambda b: int(b["input_ids"].numel()), window_size=window_size)
        self.peak_flops = None if peak_flops is None else float(peak_flops)

    def setup(self, trainer, pl_module, stage: str) -> None:
        if trainer.strategy.root_device.type == "xla" and os.environ.get("PJRT_DEVICE", "").upper() == "CPU":
            # XLA on the host CPU: Lightning would ask a TPU VM's metadata server for the chip's FLOP/s
            from unittest import mock

            with mock.patch("pytorch_lightning.callbacks.throughput_monitor.get_available_flops", return_value=None):
                super().setup(trainer, pl_module, stage)
        else:
            super().setup(trainer, pl_module, stage)
        if self.peak_flops is not None:
            self.available_flops = self.peak_flops
            for throughput in self._throughputs.values():
                throughput.available_flops = self.peak_flops
