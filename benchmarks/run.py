"""cxlnet vs transformers: full training steps (forward + backward + AdamW), side by side, one run.

    python -m benchmarks.run                    # CPU shapes (always) + GPU shapes (when CUDA exists) + data rows
    python -m benchmarks.run --quick            # tiny shapes, a few steps: a smoke test
    python -m benchmarks.run --only cpu-span    # one row (or a prefix: --only gpu-mid, --only data)
    python -m benchmarks.run --data-dir ../shared/data   # data rows on the full data sets
    python -m benchmarks.run --only data-scale  # `cxlnet data` + loader on 10 MB / 100 MB / 1 GB corpora

Both sides get the same config, the same weights (copied with cxlnet.model.weights), the same batch,
precision and optimizer; warm-up steps are excluded; the figure is the median step time over the
timed steps, which alternate between the two libraries (round-robin), so slow drifts of a shared
machine hit both. Benchmarks report, they never fail: a row that cannot run says why.
The run's table is appended to benchmarks/RESULTS.md unless --no-record is given.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import gc
import logging
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks import data_scale
from cxlnet.model import XLNet, XLNetConfig, XLNetForSequenceClassification, XLNetLMHeadModel
from cxlnet.model.weights import to_hf_state_dict

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
VOCAB = 32000  # Chinese-XLNet's SentencePiece vocabulary


# ---------------------------------------------------------------------------- shapes
@dataclass(frozen=True)
class Shape:
    name: str  # row id, e.g. "cpu-span"
    task: str  # "span" | "cls" | "lm"
    size: dict  # XLNetConfig overrides (d_model, n_layer, ...)
    batch: int
    length: int
    mem: int = 0  # mem_len (lm)
    reuse: int = 0  # reuse_len (lm)
    predict: int = 0  # num_predict (lm)
    bi_data: bool = False
    device: str = "cpu"
    bf16: bool = False
    compile: bool = False  # add a torch.compile'd cxlnet variant

    def describe(self) -> str:
        s = self.size
        txt = f"{s['n_layer']}L d{s['d_model']} {self.batch}x{self.length}"
        if self.task == "lm":
            txt += f" mem{self.mem} reuse{self.reuse} P{self.predict}" + (" bi" if self.bi_data else "")
        return txt + (" bf16" if self.bf16 else " fp32")


CPU_SIZE = dict(d_model=256, n_layer=3, n_head=4, d_head=64, d_inner=1024)
TINY_SIZE = dict(d_model=64, n_layer=2, n_head=4, d_head=16, d_inner=128)
MID = dict(d_model=768, n_layer=24, n_head=12, d_head=64, d_inner=3072)
BASE = dict(d_model=768, n_layer=12, n_head=12, d_head=64, d_inner=3072)


def cpu_shapes(quick: bool) -> list[Shape]:
    if quick:
        s = TINY_SIZE
        return [Shape("cpu-span", "span", s, 2, 32), Shape("cpu-cls", "cls", s, 2, 32),
                Shape("cpu-lm", "lm", s, 2, 32, mem=16, reuse=16, predict=4, bi_data=True)]
    s = CPU_SIZE
    return [Shape("cpu-span", "span", s, 4, 256), Shape("cpu-cls", "cls", s, 8, 128),
            Shape("cpu-lm", "lm", s, 4, 128, mem=64, reuse=64, predict=16, bi_data=True)]


def gpu_shapes(quick: bool) -> list[Shape]:
    if quick:
        s = dict(d_model=256, n_layer=2, n_head=4, d_head=64, d_inner=1024)
        return [Shape("gpu-quick-span", "span", s, 4, 128, device="cuda", bf16=True)]
    out = []
    for tag, size in (("mid", MID), ("base", BASE)):
        out += [Shape(f"gpu-{tag}-span", "span", size, 16, 512, device="cuda", bf16=True, compile=True),
                Shape(f"gpu-{tag}-cls", "cls", size, 48, 256, device="cuda", bf16=True, compile=True),
                Shape(f"gpu-{tag}-lm", "lm", size, 32, 512, mem=384, reuse=256, predict=85, bi_data=True,
                      device="cuda", bf16=True, compile=True)]
    return out


# ---------------------------------------------------------------------------- models
class SpanSimple(nn.Module):
    """cxlnet's body + a start/end linear head: the same model as HF's XLNetForQuestionAnsweringSimple
    (same parameter names, so the weight copy is the ordinary HF one)."""

    def __init__(self, config: XLNetConfig):
        super().__init__()
        self.config = config
        self.transformer = XLNet(config)
        self.qa_outputs = nn.Linear(config.d_model, 2)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, start_positions=None,
                end_positions=None):
        h = self.transformer(input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask).last_hidden_state
        start, end = self.qa_outputs(h).float().unbind(-1)
        return (F.cross_entropy(start, start_positions) + F.cross_entropy(end, end_positions)) / 2


def make_config(shape: Shape, vocab: int) -> XLNetConfig:
    extra = {}
    if shape.task == "lm":
        extra = dict(mem_len=shape.mem, reuse_len=shape.reuse, bi_data=shape.bi_data)
    return XLNetConfig(vocab_size=vocab, **shape.size, **extra)


def build_pair(shape: Shape, vocab: int):
    """(cxlnet model, transformers model) with identical weights, in training mode (dropout on)."""
    import transformers

    cfg = make_config(shape, vocab)
    torch.manual_seed(0)
    ours: nn.Module
    if shape.task == "span":
        ours, hf_cls, extra = SpanSimple(cfg), transformers.XLNetForQuestionAnsweringSimple, {}
        with torch.no_grad():
            ours.transformer.reset_parameters()
            nn.init.normal_(ours.qa_outputs.weight, 0.0, cfg.initializer_range)
            nn.init.zeros_(ours.qa_outputs.bias)
    elif shape.task == "cls":
        ours, hf_cls, extra = XLNetForSequenceClassification(cfg, num_labels=2), \
            transformers.XLNetForSequenceClassification, {"num_labels": 2}
    else:
        ours, hf_cls, extra = XLNetLMHeadModel(cfg), transformers.XLNetLMHeadModel, {"use_mems_train": True}
    hf_cfg = transformers.XLNetConfig(**{**cfg.to_dict(), **extra})
    hf = hf_cls(hf_cfg)
    missing, unexpected = hf.load_state_dict(to_hf_state_dict(ours), strict=False)
    missing = [k for k in missing if k != "lm_loss.weight"]  # tied to the word embedding
    if missing or unexpected:
        raise RuntimeError(f"weight copy: missing {missing[:3]}, unexpected {unexpected[:3]}")
    if shape.task == "lm":
        hf.tie_weights()
    return ours.to(shape.device).train(), hf.to(shape.device).train()


def make_batch(shape: Shape, vocab: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A batch shaped like the real task's features (both libraries accept the same keys)."""
    g = torch.Generator().manual_seed(seed)
    B, L = shape.batch, shape.length
    ids = torch.randint(10, vocab, (B, L), generator=g)
    x: dict[str, torch.Tensor] = {"input_ids": ids}
    if shape.task == "span":  # paragraph <sep> question <sep> <cls> pad; right padding
        lens = torch.randint(L // 2, L + 1, (B,), generator=g)
        pos = torch.arange(L)
        keep = pos[None] < lens[:, None]
        seg = torch.where(pos[None] < (lens[:, None] * 3) // 4, 0, 1)
        seg = torch.where(pos[None] == lens[:, None] - 1, 2, seg)
        x["token_type_ids"] = torch.where(keep, seg, 3)
        x["attention_mask"] = keep.float()
        x["start_positions"] = (torch.rand(B, generator=g) * lens * 0.5).long()
        x["end_positions"] = x["start_positions"] + 3
    elif shape.task == "cls":  # text <sep> <cls>, left padding; input_mask 1 = pad
        lens = torch.randint(L // 4, L + 1, (B,), generator=g)
        pad = torch.arange(L)[None] < (L - lens)[:, None]
        seg = torch.zeros(B, L, dtype=torch.long)
        seg[:, -1] = 2
        x["token_type_ids"] = torch.where(pad, 4, seg)
        x["input_mask"] = pad.float()
        x["labels"] = torch.randint(0, 2, (B,), generator=g)
    else:  # permutation LM: A <sep> B <sep> <cls>, random factorisation order, P targets
        P = shape.predict
        seg = torch.zeros(B, L, dtype=torch.long)
        seg[:, L // 2:] = 1
        seg[:, -1] = 2
        x["token_type_ids"] = seg
        order = torch.stack([torch.randperm(L, generator=g) for _ in range(B)])
        x["perm_mask"] = (order[:, None, :] >= order[:, :, None]).float()
        tm = torch.zeros(B, P, L)
        labels = torch.empty(B, P, dtype=torch.long)
        for b in range(B):
            pos = torch.randperm(L, generator=g)[:P]
            tm[b, torch.arange(P), pos] = 1.0
            labels[b] = ids[b, pos]
        x["target_mapping"] = tm
        x["labels"] = labels
    return {k: v.to(shape.device) for k, v in x.items()}


class Runner:
    """One training setup: model + AdamW + the step function (mems fed back for the LM)."""

    def __init__(self, name: str, model: nn.Module, batch: dict, shape: Shape, is_hf: bool):
        self.name, self.model, self.batch, self.shape, self.is_hf = name, model, batch, shape, is_hf
        # The fused AdamW kernel (CUDA and CPU) on both sides: the optimizer is not what is compared.
        self.opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.01, fused=True)
        self.mems = None
        self.times: list[float] = []
        self.peak: int | None = None
        self.fwd: Callable = model

    def step(self) -> None:
        shape = self.shape
        self.opt.zero_grad(set_to_none=True)
        with torch.autocast(shape.device, dtype=torch.bfloat16, enabled=shape.bf16):
            if shape.task == "span":
                out = self.fwd(**self.batch)
                loss = out if isinstance(out, torch.Tensor) else out.loss
            elif shape.task == "cls":
                loss = self.fwd(**self.batch).loss
            else:
                out = self.fwd(**self.batch, mems=self.mems)
                loss = out.loss
                self.mems = [m.detach() for m in out.mems]
        loss.backward()
        self.opt.step()

    def timed_step(self) -> float:
        sync = torch.cuda.synchronize if self.shape.device == "cuda" else (lambda: None)
        sync()
        t0 = time.perf_counter()
        self.step()
        sync()
        dt = time.perf_counter() - t0
        return dt


# ---------------------------------------------------------------------------- FLOPs
def train_flops(shape: Shape, vocab: int) -> float:
    """Model FLOPs of one training step, counted analytically (multiply-add = 2 FLOPs; backward =
    2x forward, so a step = 3x forward; no recomputation counted). Per example and layer, with
    h = n_head*d_head, K = M + L keys, R = K + L relative positions ("bi"):
      content stream: 2L(d*3h) + 2M(d*2h) [memory k|v] + 2R(d*h) [position projection, one per
        example in training: dropout on the encoding] + 2L(h*d) [output] + 4L(d*d_inner) [FFN]
        + attention 2L*K*h [q.k] + 2L*R*h [q.k_r, position term] + 2L*K*h [probs.v]
      query stream (P targets, pre-training): 2P(d*h) + 2P(h*d) + 4P(d*d_inner) + 2P*K*h*2 + 2P*R*h
    plus the head: LM 2P*d*V, span 2L*d*2, classification 2d*d + 2d*2. Segment-term / softmax /
    LayerNorm / elementwise work is not counted (it is not matmul work)."""
    s = shape.size
    d, h, di, n = s["d_model"], s["n_head"] * s["d_head"], s["d_inner"], s["n_layer"]
    L, M, P = shape.length, shape.mem, shape.predict
    K = M + L
    R = K + L
    layer = (2 * L * d * 3 * h + 2 * M * d * 2 * h + 2 * R * d * h + 2 * L * h * d + 4 * L * d * di
             + 2 * L * K * h * 2 + 2 * L * R * h)
    if shape.task == "lm":
        layer += 2 * P * d * h + 2 * P * h * d + 4 * P * d * di + 2 * P * K * h * 2 + 2 * P * R * h
        head = 2 * P * d * vocab
    elif shape.task == "span":
        head = 2 * L * d * 2
    else:
        head = 2 * d * d + 2 * d * 2
    return 3.0 * shape.batch * (n * layer + head)


def measure_bf16_peak(seconds: float = 3.0, n: int = 8192) -> float:
    """Achieved bf16 matmul TFLOP/s of this GPU: the best of a loop of n x n x n matmuls."""
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(5):
        a @ b
    torch.cuda.synchronize()
    best, t_end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(10):
            a @ b
        stop.record()
        stop.synchronize()
        best = max(best, 10 * 2 * n ** 3 / (start.elapsed_time(stop) / 1e3) / 1e12)
    del a, b
    torch.cuda.empty_cache()
    return best


# ---------------------------------------------------------------------------- model rows
def run_shape(shape: Shape, vocab: int, warmup: int, rounds: int, per_round: int, peak_tflops: float | None,
              profile: bool = False) -> list[dict]:
    ours, hf = build_pair(shape, vocab)
    batch = make_batch(shape, vocab)
    hf_batch = dict(batch)
    runners = [Runner("cxlnet", ours, batch, shape, False), Runner("transformers", hf, hf_batch, shape, True)]
    if shape.compile and shape.device == "cuda":
        ours_c, _ = build_pair(shape, vocab)
        del _
        rc = Runner("cxlnet+compile", ours_c, batch, shape, False)
        rc.fwd = torch.compile(ours_c)
        runners.insert(1, rc)
    cuda = shape.device == "cuda"
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    # Warm-up (and the peak memory of each variant: its own weights, grads, AdamW state, activations).
    for r in runners:
        try:
            base = torch.cuda.memory_allocated() if cuda else 0
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            for _ in range(max(warmup, 3 if shape.task == "lm" else 1)):  # LM: mems reach mem_len
                r.step()
            if cuda:
                torch.cuda.synchronize()
                weights = sum(p.numel() * p.element_size() for p in r.model.parameters())  # built before `base`
                r.peak = torch.cuda.max_memory_allocated() - base + weights
        except Exception as err:  # noqa: BLE001 - a benchmark reports
            r.error = _short_error(err)
            r.opt.zero_grad(set_to_none=True)
            r.mems = None
            if cuda:
                torch.cuda.empty_cache()
    live = [r for r in runners if not getattr(r, "error", None)]
    for _ in range(rounds):  # interleaved: each round runs every variant `per_round` times
        for r in live:
            for _ in range(per_round):
                r.times.append(r.timed_step())
    if profile:
        for r in live:
            profile_runner(r)

    flops = train_flops(shape, vocab)
    hf_r = runners[-1]
    hf_t = statistics.median(hf_r.times) if hf_r.times else None
    rows = []
    for r in runners:
        row: dict[str, Any] = {"kind": "model", "name": shape.name,
                               "variant": r.name, "shape": shape.describe(), "task": shape.task}
        if getattr(r, "error", None):
            row["error"] = r.error
            rows.append(row)
            continue
        t = statistics.median(r.times)
        row.update(ms=t * 1e3, samples_s=shape.batch / t, tokens_s=shape.batch * shape.length / t,
                   tflops=flops / t / 1e12, steps=len(r.times), peak_mb=None if r.peak is None else r.peak / 2**20)
        if peak_tflops:
            row["mfu"] = flops / t / 1e12 / peak_tflops
        if r is not hf_r and hf_t:
            # Median of the per-round ratios: round i ran both variants back to back, so a burst of
            # load on a shared machine hits the pair, not only one side.
            row["speed_ratio"] = statistics.median(h / c for h, c in zip(hf_r.times, r.times))
            if r.peak is not None and hf_r.peak:
                row["mem_ratio"] = r.peak / hf_r.peak
        rows.append(row)
    del runners, ours, hf
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return rows


def _short_error(err: BaseException) -> str:
    msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if isinstance(err, torch.OutOfMemoryError):
        msg = "out of memory"
    return f"{type(err).__name__}: {msg[:120]}"


def profile_runner(r: Runner, steps: int = 3, top: int = 12) -> None:
    from torch.profiler import ProfilerActivity, profile as tprofile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if r.shape.device == "cuda" else [])
    with tprofile(activities=acts) as prof:
        for _ in range(steps):
            r.step()
        if r.shape.device == "cuda":
            torch.cuda.synchronize()
    key = "self_cuda_time_total" if r.shape.device == "cuda" else "self_cpu_time_total"
    print(f"\n--- profile: {r.shape.name} / {r.name} ({steps} steps, sorted by {key}) ---")
    print(prof.key_averages().table(sort_by=key, row_limit=top, max_name_column_width=48))


# ---------------------------------------------------------------------------- data rows
def _skip(name: str, what: str, reason: str) -> dict:
    return {"kind": "data", "name": name, "variant": "cxlnet", "shape": what, "skipped": reason}


def _chnsenticorp_batches(tok, data_dir: str, quick: bool) -> dict:
    from cxlnet.classify.data import encode_examples, read_tsv
    from cxlnet.paths import resolve_data_file

    path = resolve_data_file(data_dir, "chnsenticorp/train.tsv")
    t0 = time.perf_counter()
    dataset = encode_examples(read_tsv(path), tok, 256)
    return {"seconds": time.perf_counter() - t0, "items": len(dataset), "unit": "examples", "source": str(path)}


def _cmrc2018_features(tok, data_dir: str, quick: bool) -> dict:
    from cxlnet.paths import resolve_data_file
    from cxlnet.span.features import SpanConfig, convert_file

    path = resolve_data_file(data_dir, "cmrc2018/train.json")
    t0 = time.perf_counter()
    _, feats, _ = convert_file(path, tok, SpanConfig(), is_training=True)
    return {"seconds": time.perf_counter() - t0, "items": len(feats), "unit": "features", "source": str(path)}


def _pretrain_batches(tok, data_dir: str, quick: bool) -> dict:
    import tempfile

    from cxlnet.pretrain.corpus import build_store
    from cxlnet.pretrain.examples import PretrainStream

    n_batches = 2 if quick else 8
    corpus = _corpus_file(data_dir)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        build_store([corpus], tok, Path(tmp) / "store", num_shards=1)
        t_store = time.perf_counter() - t0
        stream = PretrainStream(Path(tmp) / "store", num_passes=1)
        t0 = time.perf_counter()
        got = sum(1 for _ in stream.iter_batches(0, n_batches))
        seconds = time.perf_counter() - t0
    if not got:
        raise RuntimeError(f"{corpus.name}: too small for one 32x512 batch")
    return {"seconds": seconds, "items": got, "unit": "batches", "source": str(corpus),
            "note": f"store build {t_store:.2f} s"}


# name -> (what is measured, function(tokenizer, data_dir, quick) -> row fields)
DATA_ROWS = {
    "data-chnsenticorp": ("ChnSentiCorp train -> features, len 256", _chnsenticorp_batches),
    "data-cmrc2018": ("CMRC 2018 train -> features, len 512", _cmrc2018_features),
    "data-pretrain": ("corpus -> store -> batches 32x512 P85", _pretrain_batches),
}


def data_rows(data_dir: str, quick: bool, only: list[str] | None) -> list[dict]:
    """The data side, in seconds on one process; a row that cannot run says why instead."""
    from cxlnet.paths import resolve_data_file
    from cxlnet.text import Tokenizer

    rows = []
    for name, (what, measure) in DATA_ROWS.items():
        if not _selected(name, only):
            continue
        try:
            tok = Tokenizer(resolve_data_file(data_dir, "pretrained/hfl-chinese-xlnet-base/spiece.model"))
            rows.append({"kind": "data", "name": name, "variant": "cxlnet", "shape": what,
                         **measure(tok, data_dir, quick)})
        except Exception as err:  # noqa: BLE001 - a benchmark reports, it never fails
            rows.append(_skip(name, what, _short_error(err)))
    return rows


def _corpus_file(data_dir: str) -> Path:
    from cxlnet.paths import resolve_data_file

    for rel in ("corpus/zh-hans.txt", "corpus/cmrc2018_train_trial_contexts.zh-hans.txt"):
        try:
            return resolve_data_file(data_dir, rel)
        except Exception:  # noqa: BLE001
            continue
    root = resolve_data_file(data_dir, "corpus")
    files = sorted(Path(root).glob("*.txt"))
    if not files:
        raise RuntimeError(f"{root}: no *.txt corpus")
    return files[0]


# ---------------------------------------------------------------------------- table + record
COLUMNS = ["row", "variant", "shape", "ms/step", "samples/s", "tokens/s", "TFLOP/s", "MFU", "peak MiB",
           "speed ×", "mem ×", "note"]


def _fmt(v, spec):
    return "—" if v is None else format(v, spec)


def table_cells(rows: list[dict]) -> list[list[str]]:
    out = []
    for r in rows:
        if r["kind"] == "data":
            if "skipped" in r:
                cells = [r["name"], r["variant"], r["shape"], "", "", "", "", "", "", "", "", f"skipped: {r['skipped']}"]
            else:
                note = f"{r['seconds']:.2f} s for {r['items']} {r['unit']} ({r['items'] / r['seconds']:.0f}/s)"
                if r.get("note"):
                    note += f"; {r['note']}"
                cells = [r["name"], r["variant"], r["shape"], "", "", "", "", "", "", "", "", note]
        elif "error" in r:
            cells = [r["name"], r["variant"], r["shape"], "", "", "", "", "", "", "", "", f"failed: {r['error']}"]
        else:
            cells = [r["name"], r["variant"], r["shape"], f"{r['ms']:.1f}", f"{r['samples_s']:.1f}",
                     f"{r['tokens_s']:.0f}", f"{r['tflops']:.3f}", _fmt(r.get("mfu"), ".1%"),
                     _fmt(r.get("peak_mb"), ".0f"), _fmt(r.get("speed_ratio"), ".2f"),
                     _fmt(r.get("mem_ratio"), ".2f"), f"median of {r['steps']} (alternating)"]
        out.append(cells)
    return out


def print_table(rows: list[dict], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title, show_lines=False)
    for c in COLUMNS:
        t.add_column(c, justify="right" if c not in ("row", "variant", "shape", "note") else "left",
                     overflow="fold")
    for cells in table_cells(rows):
        t.add_row(*cells)
    Console(width=max(160, int(os.environ.get("COLUMNS", 0) or 0))).print(t)


def markdown_table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    for cells in table_cells(rows):
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


def device_line() -> str:
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        return f"GPU {p.name} ({p.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}; CPU {cpu_model()}"
    return f"CPU {cpu_model()}, {os.cpu_count()} cores visible, torch threads {torch.get_num_threads()}; no GPU"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions() -> str:
    import transformers

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                text=True, timeout=10).stdout.strip() or "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        commit += "+dirty" if dirty else ""
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    return (f"torch {torch.__version__}, transformers {transformers.__version__}, cxlnet {commit}, "
            f"Python {platform.python_version()}")


def record(rows: list[dict], argv: list[str], notes: list[str], path: Path = RESULTS,
           extra: list[str] = ()) -> None:
    """Append a section: the command, device, versions, notes, the table of `rows` (when any) and
    `extra` markdown blocks."""
    from cxlnet.errors import atomic_write_text

    cmd = "python -m benchmarks.run" + ("" if not argv else " " + shlex.join(argv))
    now = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    section = "\n".join([
        f"## {now}", "",
        f"- command: `{cmd}`",
        f"- device: {device_line()}",
        f"- versions: {versions()}",
        *[f"- {n}" for n in notes], "",
        *([markdown_table(rows), ""] if rows else []),
        *[block + "\n" for block in extra],
    ])
    old = path.read_text(encoding="utf-8") if path.is_file() else (
        "# Benchmark results\n\nAppended by `python -m benchmarks.run` (one section per run; see README.md "
        "for what the columns mean). speed × = transformers step time / cxlnet step time (>1: cxlnet "
        "faster); mem × = cxlnet peak / transformers peak (<1: cxlnet uses less).\n")
    atomic_write_text(path, old.rstrip("\n") + "\n\n" + section)


# ---------------------------------------------------------------------------- main
def _selected(name: str, only: list[str] | None) -> bool:
    return not only or any(name == o or name.startswith(o) for o in only)


def parse_args(argv: list[str] | None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny shapes and few steps (smoke test)")
    p.add_argument("--only", action="append", metavar="NAME",
                   help="run only rows whose name is or starts with NAME (repeatable): cpu-span, cpu-cls, "
                        "cpu-lm, gpu-mid-span, gpu-base, data-cmrc2018, data, ...")
    p.add_argument("--data-dir", default="auto", help="data directory for the data rows ('auto': the shipped "
                                                      "sample; the full data: ../shared/data)")
    p.add_argument("--no-record", action="store_true", help="do not append to benchmarks/RESULTS.md")
    p.add_argument("--no-data", action="store_true", help="skip the data rows")
    p.add_argument("--profile", action="store_true", help="print a torch.profiler op table per variant")
    p.add_argument("--steps", type=int, default=None, help="timed steps per variant (default 12 CPU / 20 GPU)")
    p.add_argument("--scale-mb", default=None, help="data-scale corpus sizes in MB, comma-separated "
                                                    "(default 10,100,1000; --quick: 2)")
    p.add_argument("--scratch", default=None, help="where data-scale writes its corpora and stores (default: the "
                                                   "system temp dir; removed after)")
    p.add_argument("--baseline-rev", default=data_scale.DEFAULT_BASELINE,
                   help="git revision whose encoder and loader data-scale compares with ('' : none)")
    p.add_argument("--baseline-max-mb", type=float, default=100,
                   help="largest corpus the baseline encoder runs on (it needs ~12 bytes of RAM per byte of text)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    try:
        import transformers  # noqa: F401
        transformers.logging.set_verbosity_error()
    except ImportError:
        print("transformers is not installed: pip install transformers (it is in cxlnet[test])")
        return []

    cuda = torch.cuda.is_available()
    notes = []
    print(f"device: {device_line()}\nversions: {versions()}")
    if not cuda:
        print("no GPU: running the CPU part only")
        notes.append("no GPU: CPU part only")
    rows: list[dict] = []
    per_round = 1  # strict alternation: step i of every variant runs back to back
    steps = args.steps or (2 if args.quick else 12)
    rounds = max(1, math.ceil(steps / per_round))
    warmup = 1 if args.quick else 2
    vocab = 1000 if args.quick else VOCAB

    peak = None
    shapes = cpu_shapes(args.quick) + (gpu_shapes(args.quick) if cuda else [])
    shapes = [s for s in shapes if _selected(s.name, args.only)]
    if cuda and any(s.device == "cuda" for s in shapes):
        peak = measure_bf16_peak(1.0 if args.quick else 3.0)
        print(f"measured bf16 matmul peak: {peak:.0f} TFLOP/s")
        notes.append(f"measured bf16 matmul peak (8192³ loop): {peak:.0f} TFLOP/s; MFU is against it")
    for s in shapes:
        t0 = time.perf_counter()
        try:
            got = run_shape(s, vocab, warmup, rounds if s.device == "cpu" or args.quick or args.steps else 20,
                            per_round, peak if s.device == "cuda" else None, profile=args.profile)
        except Exception as err:  # noqa: BLE001 - benchmarks report, they never fail
            traceback.print_exc()
            got = [{"kind": "model", "name": s.name, "variant": "both", "shape": s.describe(), "error": _short_error(err)}]
        rows += got
        print(f"  {s.name}: {time.perf_counter() - t0:.1f} s", flush=True)
    if not args.no_data:
        rows += data_rows(args.data_dir, args.quick, args.only)
    if rows:
        notes.append("CPU rows: fp32, torch default threads; data rows: single process (pure Python/numpy)")
        print_table(rows, "cxlnet vs transformers — training step = forward + backward + AdamW "
                          "(speed × = transformers time / cxlnet time)")
    extra, scale_rows = [], []
    if not args.no_data and _selected("data-scale", args.only):
        scale_rows, scale_notes = run_data_scale(args)
        notes += scale_notes
        extra.append("data-scale: `cxlnet data` and the loader vs corpus size (speed × = MB/s / baseline MB/s)\n\n"
                     + data_scale.markdown(scale_rows))
        print(extra[-1])
    if not args.no_record:
        record(rows, argv, notes, extra=extra)
        print(f"appended to {RESULTS.relative_to(REPO)}")
    return rows + scale_rows


def run_data_scale(args) -> tuple[list[dict], list[str]]:
    from cxlnet.paths import resolve_data_file, sample_dir

    sizes = [float(x) for x in (args.scale_mb or ("2" if args.quick else "10,100,1000")).split(",")]
    spiece = resolve_data_file(args.data_dir, "pretrained/hfl-chinese-xlnet-base/spiece.model")
    return data_scale.run(sizes, spiece, sample_dir() / "corpus" / "zh-hans.txt", args.scratch,
                          args.baseline_rev or None, args.baseline_max_mb, steps=5 if args.quick else 50)


if __name__ == "__main__":
    main()
