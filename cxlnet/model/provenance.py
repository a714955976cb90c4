"""What a `from_pretrained` load actually read: the format, the architecture stored with the
weights, how many tensors and parameters came from the file, and which heads were loaded or start
from random initialisation. `load_pretrained` attaches it to the model as `model.load_summary`;
`report` lays it out on one screen next to the architecture the run asked for (`model=`), so
silently wrong weights (a GELU config for ReLU weights, `mem_len` null, a missing head) show at once.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

# Architecture fields shown in the report, in this order.
FIELDS = ("n_layer", "d_model", "n_head", "d_head", "d_inner", "ff_activation", "untie_r", "vocab_size",
          "mem_len", "reuse_len", "attn_type", "bi_data", "clamp_len", "same_length", "dropout", "dropatt")
FORMATS = {"model.safetensors": "HF safetensors", "pytorch_model.bin": "pytorch_model.bin"}
TF_FORMAT = "hfl TF checkpoint"


@dataclass
class LoadSummary:
    format: str  # "HF safetensors" | "pytorch_model.bin" | "hfl TF checkpoint"
    weights: Path  # the file (or TF checkpoint prefix) the tensors came from
    stored: dict[str, Any]  # architecture as stored with the weights (before run overrides)
    used: dict[str, Any]  # architecture of the model built (stored + overrides)
    tensors_in_file: int
    tensors_loaded: int
    parameters_loaded: int
    heads: dict[str, str] = field(default_factory=dict)  # head -> "loaded" | "initialised fresh" | ...


def hf_format(directory: Path) -> tuple[str, Path]:
    """(format, file) of a Hugging Face directory, in the order `_read_hf_weights` prefers them."""
    for name, fmt in FORMATS.items():
        if (directory / name).is_file():
            return fmt, directory / name
    return "none", directory


def summarise_load(model, hf: dict[str, Tensor], fmt: str, weights: Path, stored) -> LoadSummary:
    """Summary of loading the HF-named tensors `hf` into `model` (after a successful load)."""
    own_heads = sorted({k.split(".")[0] for k in model.state_dict() if not k.startswith("transformer.")}) \
        if hasattr(model, "transformer") else []
    body = ("transformer.", "word_embedding.", "mask_emb", "layer.")
    file_heads = {k.split(".")[0] for k in hf if not k.startswith(body) and k != "lm_loss.weight"}
    heads = {h: "loaded" if h in file_heads else "initialised fresh" for h in own_heads}
    unused = set()
    for h in sorted(file_heads - set(own_heads)):
        heads[h] = "in the file, not used (this model has no such head)"
        unused |= {k for k in hf if k.split(".")[0] == h}
    if "lm_loss.weight" in hf:
        unused.add("lm_loss.weight")  # tied to the word embedding, never a tensor of its own
    loaded = [k for k in hf if k not in unused]
    return LoadSummary(fmt, Path(weights), _arch(stored), _arch(model.config), len(hf), len(loaded),
                       sum(hf[k].numel() for k in loaded), heads)


def _arch(config) -> dict[str, Any]:
    d = config if isinstance(config, dict) else config.to_dict()
    return {k: d.get(k) for k in FIELDS}


def report(summary: LoadSummary, setting: str, origin: str, chosen: dict[str, Any] | None, chosen_name: str):
    """A rich renderable: header lines, the architecture table (stored / used / `model=`), heads."""
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    header = Text()
    header.append("origin   ", style="bold").append(f"{origin}\n")
    header.append("format   ", style="bold").append(f"{summary.format}  ({summary.weights})\n")
    header.append("loaded   ", style="bold").append(
        f"{summary.tensors_loaded} of {summary.tensors_in_file} tensors, {summary.parameters_loaded:,} parameters")
    chosen = chosen or {}
    arch = Table(box=None, pad_edge=False, show_edge=False)
    for column in ("field", "checkpoint", "used", f"model={chosen_name}", ""):
        arch.add_column(column)
    differ = []
    for name in FIELDS:
        stored, used, want = summary.stored.get(name), summary.used.get(name), chosen.get(name)
        note = []
        if chosen and want != stored:
            note.append("≠ model=")
            differ.append(name)
        if used != stored:
            note.append("overridden")
        style = "yellow" if note else None
        arch.add_row(name, str(stored), str(used), str(want) if chosen else "-", ", ".join(note), style=style)
    heads = Table(box=None, pad_edge=False, show_edge=False)
    heads.add_column("head")
    heads.add_column("weights")
    for head, state in summary.heads.items():
        heads.add_row(head, state, style="yellow" if state != "loaded" else "green")
    parts = [header, arch]
    if summary.heads:
        parts.append(heads)
    verdict = (f"[yellow]differs from model={chosen_name}: {', '.join(differ)}[/yellow]" if differ
               else f"[green]architecture matches model={chosen_name}[/green]" if chosen else "")
    return Panel(Group(*parts), title=f"[bold]weights[/bold] model.pretrained={setting}", subtitle=verdict,
                 expand=False)


def one_line(summary: LoadSummary, setting: str) -> str:
    """The same in one log line."""
    fresh = [h for h, s in summary.heads.items() if s == "initialised fresh"]
    a = summary.used
    return (f"weights {setting}: {summary.format}, {summary.tensors_loaded}/{summary.tensors_in_file} tensors, "
            f"{summary.parameters_loaded:,} parameters; n_layer {a['n_layer']} d_model {a['d_model']} "
            f"{a['ff_activation']} vocab {a['vocab_size']} mem_len {a['mem_len']} reuse_len {a['reuse_len']}"
            + (f"; fresh heads: {', '.join(fresh)}" if fresh else ""))
