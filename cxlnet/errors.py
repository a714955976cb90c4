"""User-facing errors and atomic file writes shared by every command.

A `CxlnetError` carries one line for the user (file, record, what is wrong); the CLI prints it
without a traceback and exits non-zero. Outputs are written to a temporary file in the same
directory and renamed into place, so an interrupted run never leaves a half-written file under
its final name.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator


class CxlnetError(Exception):
    """An error caused by the user's input or environment, reported as one line."""


def one_line(err: CxlnetError) -> str:
    """The user's line of a CxlnetError, also when a DataLoader worker raised it: torch re-raises
    it in the main process with the worker's traceback in the message."""
    text = str(err)
    if "Original Traceback" in text:
        text = text.rstrip().splitlines()[-1].split(f"{type(err).__name__}: ", 1)[-1]
    return text


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


# mkstemp / mkdtemp create 0600 / 0700; outputs get the mode an ordinary open() / mkdir() would give.
_FILE_MODE = 0o666 & ~_umask()
_DIR_MODE = 0o777 & ~_umask()


def atomic_write_via(path: str | Path, write_to: Callable[[Path], Any]) -> Path:
    """Call `write_to(tmp)` with a temporary path beside `path`, fsync it, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, _FILE_MODE)
    try:
        write_to(Path(tmp))
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_with(path: str | Path, write: Callable[[BinaryIO], Any]) -> Path:
    """Call `write(fh)` on a temporary file beside `path`, fsync it, then rename it into place."""
    def write_to(tmp: Path) -> None:
        with tmp.open("wb") as fh:
            write(fh)

    return atomic_write_via(path, write_to)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write_with(path, lambda fh: fh.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=2) + "\n")


def read_json(path: str | Path) -> Any:
    """Load JSON, turning a missing file or a syntax error into one line with file, line and column."""
    path = Path(path)
    if not path.is_file():
        raise CxlnetError(f"{path}: file not found")
    try:
        with path.open(encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as err:
        raise CxlnetError(f"{path}:{err.lineno}:{err.colno}: malformed JSON: {err.msg}") from None
    except UnicodeDecodeError as err:
        raise CxlnetError(f"{path}: not UTF-8 at byte {err.start}") from None


def load_tensors(path: str | Path, what: str = "PyTorch file", mmap: bool = False) -> Any:
    """`torch.load(path, weights_only=True)` with one line for each way a user's file fails:
    truncated or not a PyTorch file, or refused because unpickling it would run code (a pickle of
    anything but tensors and plain containers). Nothing here ever loads such a file."""
    import pickle

    import torch

    path = Path(path)
    try:
        with warnings.catch_warnings():  # torch's advice on pickle protocols is not the user's business
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        text = str(err)
        if "Weights only load failed" in text or "Unsupported global" in text or "Unsupported operand" in text:
            found = re.search(r"GLOBAL ([\w.]+)", text)
            what_runs = f" ({found.group(1)})" if found else ""
            raise CxlnetError(f"{path}: refused: this {what} holds Python code or objects{what_runs}, not only "
                              f"tensors, and loading it would run that code; use a safetensors copy from a "
                              f"source you trust") from None
        raise CxlnetError(f"{path}: not a readable {what} ({_first_line(err)})") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, TypeError, AttributeError) as err:
        if mmap and "mmap" in str(err):  # an old (non-zip) serialization cannot be memory-mapped
            return load_tensors(path, what)
        raise CxlnetError(f"{path}: truncated or not a {what} ({_first_line(err)})") from None


def _first_line(err: BaseException) -> str:
    lines = [ln for ln in str(err).splitlines() if ln.strip()]
    return (lines[0].split(". ")[0] if lines else type(err).__name__)[:200]


@contextlib.contextmanager
def atomic_dir(target: str | Path, overwrite: bool = False, flag: str = "--overwrite") -> Iterator[Path]:
    """Build a directory under a temporary name beside `target` and rename it into place when the
    block completes; an existing non-empty `target` is refused unless `overwrite` (then it is
    replaced whole, never modified in place). The refusal comes before anything is written."""
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise CxlnetError(f"{target}: a file, not a directory")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise CxlnetError(f"{target}: already exists and is not empty; pass {flag} to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    os.chmod(tmp, _DIR_MODE)
    try:
        yield tmp
        old = target.with_name(f".{target.name}.{os.getpid()}.old") if target.exists() else None
        if old is not None:
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
