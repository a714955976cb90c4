"""What a run ran on and with: the hardware line and package versions recorded in its
`metrics.json`, so a table row can state them next to its scores."""
from __future__ import annotations

import platform
import subprocess
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware(accelerator: str, num_devices: int) -> str:
    """`1x NVIDIA H100 80GB HBM3`, or `CPU <model>, 2 threads`: what the trainer really used."""
    import torch

    if accelerator in ("gpu", "cuda") and torch.cuda.is_available():
        return f"{num_devices}x {torch.cuda.get_device_name(0)}"
    if accelerator == "tpu":
        return f"{num_devices}x TPU core"
    return f"CPU {cpu_model()}, {torch.get_num_threads()} threads"


def cxlnet_version() -> str:
    """The git commit of a checkout (`+dirty` with uncommitted changes), else the package version."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        release = version("cxlnet")
    except PackageNotFoundError:
        release = "unknown"
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PACKAGE_DIR, capture_output=True,
                                text=True, timeout=10).stdout.strip()
        if not commit:
            return release
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=PACKAGE_DIR,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return release


def versions() -> dict[str, str]:
    import pytorch_lightning
    import torch

    return {"cxlnet": cxlnet_version(), "torch": torch.__version__, "pytorch-lightning": pytorch_lightning.__version__,
            "python": platform.python_version()}
