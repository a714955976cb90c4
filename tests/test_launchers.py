"""Scaling out with existing engines: Hydra's launcher plugins run the jobs of a sweep, Lightning
the processes of one job across machines."""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import cli_env
from cxlnet.confdir import CONF_DIR, conf_dir
from cxlnet.launch import weights_checksum

LAUNCHERS = sorted(p.stem for p in (conf_dir() / "launcher").glob("*.yaml"))
HYDRA_LAUNCHER = {"local": "BasicLauncher", "joblib": "JoblibLauncher", "slurm": "SlurmLauncher"}


@pytest.mark.parametrize("command", ["finetune", "train"])
@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_every_launcher_composes(command, launcher):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(command, overrides=[f"launcher={launcher}", "hardware.num_nodes=2"], return_hydra_config=True)
    assert cfg.launcher.name == launcher
    assert cfg.hydra.launcher._target_.endswith(HYDRA_LAUNCHER[launcher])
    if launcher == "slurm":
        assert cfg.hydra.launcher.nodes == 2 and cfg.hydra.launcher.max_num_timeout > 0
    if launcher == "joblib":
        OmegaConf.resolve(cfg)
        assert cfg.hydra.launcher.n_jobs == cfg.launcher.jobs >= 1


def test_weights_checksum_tells_one_update_apart():
    import torch

    model = torch.nn.Linear(4, 3)
    before = weights_checksum(model)
    assert torch.equal(before, weights_checksum(model))
    with torch.no_grad():
        model.weight[0, 0] += 1e-6
    assert not torch.equal(before, weights_checksum(model))


def _cli(*args: str, cwd: Path, env: dict | None = None, timeout: int = 600) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cxlnet", *args], cwd=cwd, env=cli_env(cwd, **(env or {})),
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _finish(proc: subprocess.Popen, timeout: int = 600) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return out


TINY = ["experiment=demo", "task.max_train_examples=64", "task.max_seq_length=32", "task.batch_size=16",
        "task.epochs=1", "trainer.enable_progress_bar=false"]
TESTS = Path(__file__).resolve().parent


def _small_dev(tmp_path: Path, rows: int) -> Path:
    from cxlnet.paths import sample_dir

    lines = (sample_dir() / "chnsenticorp" / "dev.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    dev = tmp_path / "dev.tsv"
    dev.write_text("".join(lines[: rows + 1]), encoding="utf-8")
    return dev


def test_joblib_runs_two_seeds_side_by_side(tmp_path):
    """`launcher=joblib`: both seeds' jobs are alive at once (a barrier in a test-only Hydra
    callback: jobs run one after another could never meet), in two worker processes, and each
    writes its metrics into the one sweep summary."""
    sweep, meet = tmp_path / "sweep", tmp_path / "barrier"
    barrier = ["+hydra.callbacks.barrier._target_=hydra_barrier.Barrier", f"+hydra.callbacks.barrier.dir={meet}",
               "+hydra.callbacks.barrier.parties=2"]
    out = _finish(_cli("finetune", *TINY, f"task.dev_file={_small_dev(tmp_path, 120)}",
                       f"paths.output_dir={tmp_path / 'runs'}", "launcher=joblib", "launcher.jobs=2",
                       f"hydra.sweep.dir={sweep}", *barrier, "-m", "seed=0,1", cwd=tmp_path,
                       env={"PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}))
    assert "Joblib.Parallel(n_jobs=2" in out
    jobs = [json.loads(p.read_text()) for p in meet.glob("job-*.json")]
    assert len({j["pid"] for j in jobs}) == 2 and all(j["saw"] == 2 for j in jobs), jobs
    summary = json.loads((sweep / "summary.json").read_text())
    assert summary["metrics"]["dev/acc"]["n"] == 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_train_and_agree_on_the_weights(tmp_path):
    """2 nodes x 1 process over gloo on 127.0.0.1 (Lightning's environment variables, as a cluster
    sets them): both train the same steps and finish with identical weights."""
    dev = _small_dev(tmp_path, 40)
    port = _free_port()
    procs = []
    for node in (0, 1):
        env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "NODE_RANK": str(node)}
        procs.append(_cli("finetune", *TINY, f"task.dev_file={dev}", "hardware.strategy=ddp", "hardware.num_nodes=2",
                          f"hydra.run.dir={tmp_path / f'node{node}'}", cwd=tmp_path, env=env))
    outs = [_finish(p) for p in procs]
    sums = [re.findall(r"rank (\d) of 2: weights checksum (\S+ \S+)", out) for out in outs]
    assert [s[0][0] for s in sums] == ["0", "1"], outs[1][-2000:]
    assert sums[0][0][1] == sums[1][0][1]
    assert "weights agree across 2 processes on 2 node(s)" in outs[0]
    assert (tmp_path / "node0" / "metrics.json").is_file() and not (tmp_path / "node1" / "metrics.json").exists()


def test_tpu_without_torch_xla_is_one_clear_line(monkeypatch, tmp_path):
    from cxlnet.errors import CxlnetError
    from cxlnet.training import build_trainer

    monkeypatch.setitem(sys.modules, "torch_xla", None)  # as in an environment without the tpu extra
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("finetune", overrides=["hardware=tpu", "logger=none"])
    with pytest.raises(CxlnetError, match=r"hardware=tpu needs torch-xla: pip install 'cxlnet\[tpu\]'"):
        build_trainer(cfg, tmp_path, group=None)


def test_xla_devices_come_from_the_pjrt_runtime(monkeypatch):
    """Lightning counts TPU chips only; under PJRT_DEVICE=CPU the XLA devices are the host's."""
    from cxlnet.errors import CxlnetError
    from cxlnet.xla import pjrt_device_count

    monkeypatch.setenv("PJRT_DEVICE", "CPU")
    monkeypatch.delenv("CPU_NUM_DEVICES", raising=False)
    assert pjrt_device_count() == 1
    monkeypatch.setenv("CPU_NUM_DEVICES", "3")
    assert pjrt_device_count() == 3
    monkeypatch.setenv("PJRT_DEVICE", "CUDA")
    with pytest.raises(CxlnetError, match="PJRT_DEVICE=CUDA"):
        pjrt_device_count()
