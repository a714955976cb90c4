"""User-facing errors and atomic file writes shared by every command.

A `CxlnetError` carries one line for the user (file, record, what is wrong); the CLI prints it
without a traceback and exits non-zero. Outputs are written to a temporary file in the same
directory and renamed into place, so an interrupted run never leaves a half-written file under
its final name.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable


class CxlnetError(Exception):
    """An error caused by the user's input or environment, reported as one line."""


def one_line(err: CxlnetError) -> str:
    """The user's line of a CxlnetError, also when a DataLoader worker raised it: torch re-raises
    it in the main process with the worker's traceback in the message."""
    text = str(err)
    if "Original Traceback" in text:
        text = text.rstrip().splitlines()[-1].split(f"{type(err).__name__}: ", 1)[-1]
    return text


def _file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


# mkstemp creates files 0600; outputs get the mode an ordinary open() would give them.
_FILE_MODE = _file_mode()


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
