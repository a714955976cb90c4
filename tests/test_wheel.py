"""The config tree ships inside the wheel: build the wheel, install it into a scratch venv and
compose every option of every config group from the installed package, away from this checkout."""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Runs inside the scratch venv: every option of every group composes with its command's config.
COMPOSE_ALL = r"""
import sys
from pathlib import Path
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
import cxlnet
from cxlnet.confdir import CONF_DIR, conf_dir

assert Path(cxlnet.__file__).resolve().is_relative_to(Path(sys.prefix).resolve()), cxlnet.__file__
assert conf_dir() == Path(cxlnet.__file__).resolve().parent / "conf", conf_dir()
count = 0
with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
    for group in sorted(p for p in conf_dir().iterdir() if p.is_dir()):
        for option in sorted(group.glob("*.yaml")):
            primary = "train" if option.stem.startswith("pretrain_") else "finetune"
            cfg = compose(primary, overrides=[f"{group.name}={option.stem}"])
            OmegaConf.to_container(cfg, resolve=True)
            count += 1
print("composed", count)
"""


def scratch_venv(root: Path) -> Path:
    """A venv holding only the wheel; this interpreter's site-packages are appended to its path
    afterwards (a .pth file), so torch and the other dependencies need no download."""
    dist = root / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(dist), str(REPO)], check=True, cwd=root, capture_output=True)
    (wheel,) = dist.glob("cxlnet-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    # Installed before the .pth exists, so pip sees no other cxlnet and touches nothing outside the venv.
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                    str(wheel)], check=True, cwd=root, capture_output=True)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    return venv


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CXLNET_COMMAND")}
    return scratch_venv(root), {**env, "WANDB_MODE": "disabled"}


def test_every_option_composes_from_the_installed_wheel(installed, tmp_path):
    venv, env = installed
    proc = subprocess.run([str(venv / "bin" / "python"), "-c", COMPOSE_ALL], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    options = sum(1 for p in (REPO / "conf").glob("*/*.yaml"))
    assert proc.stdout.split()[-1] == str(options)


def test_installed_command_shows_the_architecture(installed, tmp_path):
    venv, env = installed
    proc = subprocess.run([str(venv / "bin" / "cxlnet"), "finetune", "model=mid", "--cfg", "job"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "    n_layer: 24\n" in proc.stdout and "    ff_activation: relu\n" in proc.stdout
