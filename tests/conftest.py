"""Shared fixtures. Tests marked `fulldata` read the full data sets (default ../shared/data, or
$CXLNET_FULL_DATA_DIR); where those are absent they are deselected with a visible notice, never
counted as passed. Everything else uses the sample shipped inside the package."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FULL_DATA_DIR = Path(os.environ.get("CXLNET_FULL_DATA_DIR", REPO.parent / "shared" / "data"))

os.environ.setdefault("WANDB_MODE", "disabled")


def pytest_configure(config):
    config.addinivalue_line("markers", "fulldata: needs the full data sets in $CXLNET_FULL_DATA_DIR")


def pytest_collection_modifyitems(config, items):
    if (FULL_DATA_DIR / "cmrc2018" / "train.json").is_file():
        return
    deselected = [item for item in items if "fulldata" in item.keywords]
    if deselected:
        items[:] = [item for item in items if "fulldata" not in item.keywords]
        config.hook.pytest_deselected(items=deselected)
        print(f"\n{len(deselected)} fulldata tests deselected: {FULL_DATA_DIR} not found")


@pytest.fixture(scope="session")
def full_data_dir() -> Path:
    return FULL_DATA_DIR


def cli_env(cwd: str | Path | None = None, **extra: str) -> dict[str, str]:
    """The environment of a real-CLI run in a test: W&B off, no HYDRA_FULL_ERROR (so errors are the
    one line a user sees) and, with `cwd`, no $CXLNET_DATA_DIR and an empty download cache there,
    as on a fresh clone without a data directory beside it; `extra` on top."""
    env = {**os.environ, "WANDB_MODE": "disabled"}
    env.pop("HYDRA_FULL_ERROR", None)
    if cwd is not None:
        env.pop("CXLNET_DATA_DIR", None)
        env["CXLNET_CACHE_DIR"] = str(Path(cwd) / "empty-cache")
    return {**env, **extra}


def cxlnet_subprocess(*args: str, cwd: str | Path, check: bool = True, env: dict[str, str] | None = None,
                      timeout: int = 600):
    """`python -m cxlnet ARGS` in a fresh interpreter (`env`: default `cli_env(cwd)`); with `check`,
    a non-zero exit fails the test with the end of its stderr."""
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "cxlnet", *args], cwd=cwd, env=env or cli_env(cwd),
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"cxlnet {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def run_cli_inproc(capsys, argv: list[str]) -> tuple[int, str, str]:
    """Run `cxlnet ARGV...` in this process (no interpreter start-up): (exit code, stdout, stderr).
    Hydra's job log goes to stdout, the error line to stderr."""
    from cxlnet import cli

    capsys.readouterr()
    argv0 = sys.argv[:]
    try:
        rc = cli.main(list(argv))
    except SystemExit as exit_:
        rc = exit_.code
    finally:
        sys.argv = argv0
        os.environ.pop(cli.ENV_COMMAND, None)
    captured = capsys.readouterr()
    return (0 if rc is None else rc), captured.out, captured.err


@pytest.fixture
def run_cli(capsys):
    """`run_cli(*argv)`: `run_cli_inproc` with this test's captured output."""
    return lambda *argv: run_cli_inproc(capsys, list(argv))


def cxlnet_inproc(capsys, *args: str) -> tuple[int, str]:
    """`run_cli_inproc` with stdout and stderr together: (exit code, output)."""
    rc, out, err = run_cli_inproc(capsys, list(args))
    return rc, out + err


@pytest.fixture
def cxlnet_run(capsys):
    """`cxlnet_inproc` bound to this test's capsys: `rc, out = cxlnet_run("finetune", ...)`."""
    return lambda *args: cxlnet_inproc(capsys, *args)
