"""Where data files come from: one setting, `paths.data_dir`.

All three data locations share the layout of the full data directory (`cmrc2018/train.json`,
`chnsenticorp/train.tsv`, `pretrained/hfl-chinese-xlnet-base/spiece.model`, ...):

* an explicit directory (`paths.data_dir=/data/cxlnet`),
* the download cache that `cxlnet download` fills (`$CXLNET_CACHE_DIR`, else
  `$XDG_CACHE_HOME/cxlnet`, else `~/.cache/cxlnet`),
* the small sample shipped inside the package (`cxlnet/sample/`, see its NOTICE.md).

With `paths.data_dir=auto` (the default) a file is taken from `$CXLNET_DATA_DIR` when that is set,
else from the download cache when the file is there, else from the embedded sample.
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


def resolve_data_file(data_dir: str | os.PathLike | None, relative: str | os.PathLike) -> Path:
    """The path of a data file (or directory) named `relative` under the data layout.

    `relative` that is absolute or already exists (relative to the working directory) is returned
    as is. Otherwise `data_dir` decides: a directory means `data_dir/relative`; `"auto"` or None
    means `$CXLNET_DATA_DIR/relative` if that variable is set, else the download cache if it holds
    the file, else the embedded sample. A file that is not found is a CxlnetError naming where it
    was looked for.
    """
    rel = Path(relative).expanduser()
    if rel.is_absolute():
        if not rel.exists():
            raise CxlnetError(f"{rel}: file not found")
        return rel
    if rel.exists():
        return rel

    if data_dir is not None and str(data_dir).strip() not in ("", AUTO):
        root = Path(data_dir).expanduser()
        if not root.is_dir():
            raise CxlnetError(f"paths.data_dir={data_dir}: not a directory (use a directory or 'auto')")
        path = root / rel
        if not path.exists():
            raise CxlnetError(f"{path}: file not found (paths.data_dir={data_dir})")
        return path

    env = os.environ.get("CXLNET_DATA_DIR")
    if env:
        path = Path(env).expanduser() / rel
        if not path.exists():
            raise CxlnetError(f"{path}: file not found ($CXLNET_DATA_DIR={env}, paths.data_dir=auto)")
        return path

    looked = []
    for root in (cache_dir(), sample_dir()):
        path = root / rel
        if path.exists():
            return path
        looked.append(str(path))
    raise CxlnetError(
        f"{rel}: not found in the download cache or the embedded sample (looked at {', '.join(looked)}); "
        f"run `cxlnet download`, set $CXLNET_DATA_DIR or paths.data_dir"
    )
