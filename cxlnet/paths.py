"""Where data files come from: one setting, `paths.data_dir`.

All three data locations share the layout of the full data directory (`cmrc2018/train.json`,
`chnsenticorp/train.tsv`, `pretrained/hfl-chinese-xlnet-base/spiece.model`, ...):

* an explicit directory (`paths.data_dir=/data/cxlnet`),
* the download cache that `cxlnet download` fills (`$CXLNET_CACHE_DIR`, else
  `$XDG_CACHE_HOME/cxlnet`, else `~/.cache/cxlnet`),
* the small sample shipped inside the package (`cxlnet/sample/`, see its NOTICE.md).

With `paths.data_dir=auto` (the default) a file is taken from `$CXLNET_DATA_DIR` when that is set,
else from the download cache when the file is there, else from the embedded sample; the files of
one task (train / dev / test) always come from the same one of those places.
"""
from __future__ import annotations

import os
from pathlib import Path

from cxlnet.errors import CxlnetError

AUTO = "auto"


def cache_dir() -> Path:
    """The download cache: `$CXLNET_CACHE_DIR`, else `$XDG_CACHE_HOME/cxlnet`, else `~/.cache/cxlnet`."""
    env = os.environ.get("CXLNET_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "cxlnet"


def sample_dir() -> Path:
    """The data sample shipped inside the package (same layout as the full data directory)."""
    return Path(__file__).resolve().parent / "sample"


def _explicit_root(data_dir: str | os.PathLike | None) -> Path | None:
    if data_dir is None or str(data_dir).strip() in ("", AUTO):
        return None
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise CxlnetError(f"paths.data_dir={data_dir}: not a directory (use a directory or 'auto')")
    return root


def resolve_data_file(data_dir: str | os.PathLike | None, relative: str | os.PathLike) -> Path:
    """The path of a data file (or directory) named `relative` under the data layout.

    An absolute `relative` is returned as is. Otherwise `data_dir` decides: a directory means
    `data_dir/relative`; `"auto"` or None means the path relative to the working directory if it
    exists there, else `$CXLNET_DATA_DIR/relative` if that variable is set, else the download cache
    if it holds the file, else the embedded sample. A file that is not found is a CxlnetError naming
    where it was looked for.
    """
    return resolve_data_files(data_dir, {"file": relative})["file"]


def resolve_data_files(data_dir: str | os.PathLike | None, names: dict[str, str | os.PathLike]) -> dict[str, Path]:
    """`resolve_data_file` for files that belong together (a task's train / dev / test files): with
    `paths.data_dir=auto` they all come from the first of the download cache and the embedded sample
    that holds every one of them, so a downloaded dev set is never paired with the sample's train
    set (the sample's DRCD train set is cut from the official dev set)."""
    out: dict[str, Path] = {}
    todo: dict[str, Path] = {}
    relative = {key: Path(name).expanduser() for key, name in names.items()}
    explicit = _explicit_root(data_dir) if any(not rel.is_absolute() for rel in relative.values()) else None
    for key, rel in relative.items():
        if rel.is_absolute():
            if not rel.exists():
                raise CxlnetError(f"{rel}: file not found")
            out[key] = rel
        elif explicit is not None:
            if not (explicit / rel).exists():
                raise CxlnetError(f"{explicit / rel}: file not found (paths.data_dir={data_dir})")
            out[key] = explicit / rel
        elif rel.exists():
            out[key] = rel
        else:
            todo[key] = rel
    if not todo:
        return out

    env = os.environ.get("CXLNET_DATA_DIR")
    if env:
        for key, rel in todo.items():
            path = Path(env).expanduser() / rel
            if not path.exists():
                raise CxlnetError(f"{path}: file not found ($CXLNET_DATA_DIR={env}, paths.data_dir=auto)")
            out[key] = path
        return out

    looked = []
    for root in (cache_dir(), sample_dir()):
        missing = [root / rel for rel in todo.values() if not (root / rel).exists()]
        if not missing:
            return {**out, **{key: root / rel for key, rel in todo.items()}}
        looked += map(str, missing)
    what = ", ".join(map(str, todo.values()))
    together = " together" if len(todo) > 1 else ""
    raise CxlnetError(
        f"{what}: not found{together} in the download cache or the embedded sample (missing {', '.join(looked)}); "
        f"run `cxlnet download`, set $CXLNET_DATA_DIR or paths.data_dir"
    )
