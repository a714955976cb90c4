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
