"""Where the Hydra config tree lives.

The tree is `conf/` at the top of the repository, next to `cxlnet/`, so a checkout reads and
diffs it as the project's own files. A wheel ships the same tree inside the package as
`cxlnet/conf/` (`pyproject.toml`: `force-include`), so an installed cxlnet finds it there, and an
editable install or a plain checkout finds the top-level one.
"""
from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

_PACKAGE = Path(__file__).resolve().parent


def conf_dir() -> Path:
    """The config tree: inside the installed package (wheel), else the checkout's `conf/`."""
    for candidate in (_PACKAGE / "conf", _PACKAGE.parent / "conf"):
        if (candidate / "finetune.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"cxlnet's config tree is neither {_PACKAGE / 'conf'} nor {_PACKAGE.parent / 'conf'}")


CONF_DIR = str(conf_dir())


def parallel_jobs() -> int:
    """`${cxlnet.parallel_jobs:}` (conf/launcher/joblib.yaml): one job per visible GPU, else 2.
    Registered here, where every command finds its config tree, so Hydra's launcher resolves it."""
    import torch

    return torch.cuda.device_count() or 2


OmegaConf.register_new_resolver("cxlnet.parallel_jobs", parallel_jobs, replace=True)
