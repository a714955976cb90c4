"""`cxlnet.memory`: the analytic estimate against a measured CPU peak, and `cxlnet memory`."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cxlnet.memory import ESTIMATE_ERROR, Workload, estimate, parameter_count
from cxlnet.model import XLNetConfig, XLNetLMHeadModel

REPO = Path(__file__).resolve().parents[1]

# One forward/backward in a fresh process: peak RSS minus the RSS just before it (model, inputs and
# a warm-up step already in memory), first with activation checkpointing, then without (the larger
# peak second, so the process's peak RSS is that step's). Large allocations are mmapped, so freed
# memory leaves the RSS.
MEASURE = r"""
import json, sys, torch
from cxlnet.model import XLNetConfig, XLNetForSequenceClassification
torch.manual_seed(0)
cfg = XLNetConfig.from_dict(json.loads(sys.argv[1]))
B, L = int(sys.argv[2]), int(sys.argv[3])
m = XLNetForSequenceClassification(cfg, num_labels=2).train()
x = dict(input_ids=torch.randint(0, cfg.vocab_size, (B, L)), token_type_ids=torch.zeros(B, L, dtype=torch.long),
         input_mask=torch.zeros(B, L), labels=torch.zeros(B, dtype=torch.long))
def use_checkpointing(on):
    m.config.grad_checkpointing = m.transformer.config.grad_checkpointing = on
for checkpointing in (True, False):  # warm-up of both paths (one-time allocations of torch)
    use_checkpointing(checkpointing)
    m(**{k: v[:2, :8] if v.dim() == 2 else v[:2] for k, v in x.items()}).loss.backward()
for checkpointing in (True, False):
    m.zero_grad(set_to_none=True)
    use_checkpointing(checkpointing)
    before = int(open("/proc/self/statm").read().split()[1]) * 4096
    # Reset the peak (VmHWM): ru_maxrss would keep the parent's size from before exec (fork copies it).
    open("/proc/self/clear_refs", "w").write("5")
    m(**x).loss.backward()
    hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    print(hwm * 1024 - before)
"""


def tiny(**overrides) -> XLNetConfig:
    return XLNetConfig.named("tiny", vocab_size=1000, **overrides)


def test_estimate_is_within_the_stated_error_of_a_measured_cpu_peak():
    cfg = tiny()
    B, L = 16, 256
    # A clean environment: variables other tests leave in this process must not change the allocator.
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/"), "PYTHONPATH": str(REPO),
           "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", MEASURE, json.dumps(cfg.to_dict()), str(B), str(L)],
                          capture_output=True, text=True, env=env, timeout=120, check=True)
    measured = dict(zip((True, False), map(int, proc.stdout.split())))
    for checkpointing, peak in measured.items():
        e = estimate(Workload(cfg, L, checkpointing=checkpointing, fused_attention=False), B)
        predicted = e.gradients + e.activations + e.workspace  # the weights were in memory before
        assert peak > 50 * 2 ** 20  # activations dominate: the comparison means something
        assert abs(predicted - peak) <= ESTIMATE_ERROR * peak, (checkpointing, predicted, peak)
    assert measured[True] < 0.8 * measured[False]


def test_estimate_grows_as_expected():
    cfg = XLNetConfig.named("mid", vocab_size=32000)
    work = Workload(cfg, 512, precision="bf16-mixed")
    one, eight = estimate(work, 1), estimate(work, 8)
    assert one.optimizer == 2 * one.weights and eight.weights == one.weights
    assert 7 < (eight.activations / one.activations) <= 8
    fp32 = estimate(Workload(cfg, 512), 8).activations
    assert estimate(Workload(cfg, 512, checkpointing=True), 8).activations < fp32 / 5
    assert fp32 > eight.activations  # fp32 keeps more than bf16


def test_parameter_count_matches_the_model():
    import torch

    for name in ("tiny", "mid"):
        cfg = XLNetConfig.named(name, vocab_size=32000)
        with torch.device("meta"):
            n = sum(p.numel() for p in XLNetLMHeadModel(cfg).parameters())
        head = cfg.d_model * cfg.d_model + cfg.d_model + 2  # the summary head counted on top
        assert parameter_count(cfg) - head == n - 32000  # the LM head's bias is not in the body


def test_memory_command_prints_the_table(cxlnet_run):
    rc, out = cxlnet_run("memory", "model=mid", "task=cmrc2018", "hardware=gpu", "memory.micro_batches=[1,4]")
    assert rc == 0, out
    assert "XLNet-mid, cmrc2018" in out and "bf16-mixed + ckpt" in out
    rows = [line for line in out.splitlines() if line.startswith("│")]
    assert len(rows) == 3 * 2  # 3 sequence lengths x 2 micro-batches
