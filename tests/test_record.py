"""The run record (`run_record.json`): versions, git state, file hashes and hardware."""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import re
import subprocess
from pathlib import Path

import torch

from cxlnet import record
from cxlnet.paths import sample_dir

REPO = Path(__file__).resolve().parents[1]
SPIECE = sample_dir() / "pretrained" / "hfl-chinese-xlnet-base" / "spiece.model"


def test_record_fields(tmp_path):
    data = tmp_path / "train.tsv"
    data.write_bytes(b"label\ttext_a\n1\tgood\n")
    path = record.write_run_record(tmp_path, {"train": data}, SPIECE, accelerator="cpu", devices=1)
    assert path == tmp_path / "run_record.json"
    rec = json.loads(path.read_text())
    v = rec["versions"]
    assert v["torch"] == torch.__version__ and v["numpy"] == importlib.metadata.version("numpy")
    for key in ("lightning", "hydra", "omegaconf", "sentencepiece", "cxlnet"):
        assert v[key] == importlib.metadata.version({"lightning": "pytorch-lightning", "hydra": "hydra-core"}.get(key, key))
    assert rec["data"]["train"] == {"path": str(data.resolve()), "sha256": hashlib.sha256(data.read_bytes()).hexdigest(),
                                    "bytes": data.stat().st_size}
    # hfl's published spiece.model hash (shared/data/SOURCES.md)
    assert rec["tokenizer"]["sha256"] == "830e1e16012640ca728fd681f0077269cf5ba629c609951ecff7e1f7b5d497ae"
    hw = rec["hardware"]
    assert hw["cores"] >= 1 and hw["cpu"] and hw["accelerator"] == "cpu" and hw["devices"] == 1
    assert hw["gpus"] == [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


def test_git_state_of_a_checkout_and_of_an_install(tmp_path):
    state = record.git_state()
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:  # tests run from a checkout (CI clones one)
        assert state["commit"] == head.stdout.strip() and re.fullmatch(r"[0-9a-f]{40}", state["commit"])
        porcelain = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True).stdout
        assert state["dirty"] is bool(porcelain.strip())
    # An installed package (site-packages/cxlnet) inside some other repository reports no commit.
    other = tmp_path / "project"
    (other / "venv" / "cxlnet").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(other)], check=True)
    assert record.git_state(other / "venv" / "cxlnet") == {"commit": None, "dirty": None}


def test_wandb_config_gets_the_record(tmp_path):
    assert record.record_for_wandb(tmp_path) == {}
    record.write_run_record(tmp_path, {}, None)
    assert record.record_for_wandb(tmp_path)["run_record"]["versions"]["torch"] == torch.__version__
