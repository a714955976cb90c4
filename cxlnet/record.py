"""The run record: what a result was produced with, written as `run_record.json` into every run
directory (finetune, eval, train; next to `predict.output`) and into W&B's run config.

    {"versions": {"torch": "2.9.1", ...}, "git": {"commit": "...", "dirty": false},
     "data": {"train": {"path": ..., "sha256": ..., "bytes": ...}, ...},
     "tokenizer": {"path": ..., "sha256": ..., "bytes": ...},
     "hardware": {"cpu": "...", "cores": 16, "gpus": [...], "accelerator": "cpu", ...},
     "command": [...], "created": "2026-12-01T22:40:00+00:00"}

The composed config is `config.yaml` beside it (see `cxlnet.runs.show_config`). The git commit is
the one of the cxlnet checkout that ran (None when cxlnet runs from an installed wheel): a
checkout is recognised by its `pyproject.toml` naming the project, so a virtual environment that
happens to sit inside some other repository does not report that repository's commit.
"""
from __future__ import annotations

import datetime as _dt
import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping

from cxlnet.errors import atomic_write_json, read_json

RECORD = "run_record.json"

# distribution name -> key in the record
PACKAGES = {
    "torch": "torch", "pytorch-lightning": "lightning", "hydra-core": "hydra", "omegaconf": "omegaconf",
    "sentencepiece": "sentencepiece", "numpy": "numpy", "safetensors": "safetensors", "wandb": "wandb",
    "cxlnet": "cxlnet",
}


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist, key in PACKAGES.items():
        try:
            out[key] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[key] = None
    return out


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_state(package_dir: Path | None = None) -> dict[str, Any]:
    """{"commit", "dirty"} of the checkout holding the cxlnet package, both None outside one."""
    package_dir = Path(package_dir or Path(__file__).resolve().parent)
    root = package_dir.parent
    pyproject = root / "pyproject.toml"
    top = _git(root, "rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != root.resolve() or not pyproject.is_file() \
            or 'name = "cxlnet"' not in pyproject.read_text(encoding="utf-8"):
        return {"commit": None, "dirty": None}
    status = _git(root, "status", "--porcelain", "--untracked-files=no")
    return {"commit": _git(root, "rev-parse", "HEAD"), "dirty": None if status is None else bool(status)}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware(accelerator: str | None = None, devices: Any = None) -> dict[str, Any]:
    import torch

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] \
        if torch.cuda.is_available() else []
    return {"cpu": _cpu_model(), "cores": os.cpu_count(), "usable_cores": usable, "machine": platform.machine(),
            "system": platform.platform(), "host": platform.node(), "gpus": gpus,
            "cuda": torch.version.cuda, "accelerator": accelerator, "devices": devices}


def file_entry(path: str | Path) -> dict[str, Any]:
    from cxlnet.download import file_hashes

    path = Path(path)
    return {"path": str(path.resolve()), "sha256": file_hashes(path)[0], "bytes": path.stat().st_size}


def build_record(data_files: Mapping[str, str | Path], tokenizer: str | Path | None, *,
                 accelerator: str | None = None, devices: Any = None) -> dict[str, Any]:
    return {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "versions": package_versions(),
        "git": git_state(),
        "data": {name: file_entry(p) for name, p in data_files.items()},
        "tokenizer": None if tokenizer is None else file_entry(tokenizer),
        "hardware": hardware(accelerator, devices),
    }


def write_run_record(path: str | Path, data_files: Mapping[str, str | Path], tokenizer: str | Path | None, *,
                     accelerator: str | None = None, devices: Any = None) -> Path | None:
    """Write the record to `path` (a run directory's RECORD, or a file name) from rank 0 only
    (DDP workers re-run the command; one record per run). Returns the path written, else None."""
    from lightning_fabric.utilities.rank_zero import rank_zero_only

    if getattr(rank_zero_only, "rank", 0) != 0:
        return None
    path = Path(path)
    if path.is_dir():
        path = path / RECORD
    return atomic_write_json(path, build_record(data_files, tokenizer, accelerator=accelerator, devices=devices))


def record_for_wandb(run_dir: str | Path) -> dict[str, Any]:
    """The run record as W&B config entries (`run_record/...`), empty when the run has none."""
    path = Path(run_dir) / RECORD
    return {"run_record": read_json(path)} if path.is_file() else {}
