"""`cxlnet export` of fine-tuning results: the best seed's weights and a model card whose
model-index reports max (mean) over the seeds."""
from __future__ import annotations

import json
import os
import sys

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from cxlnet import cli
from cxlnet.model import XLNetConfig, XLNetForSequenceClassification
from cxlnet.paths import sample_dir
from cxlnet.sweep import aggregate

HFL = sample_dir() / "pretrained" / "hfl-chinese-xlnet-base" / "spiece.model"
ACCS = {0: 91.25, 1: 93.5, 2: 92.0}


def front_matter(readme: str) -> dict:
    assert readme.startswith("---\n")
    return yaml.safe_load(readme.split("---\n")[1])


@pytest.fixture
def sweep(tmp_path):
    """A three-seed ChnSentiCorp sweep as `cxlnet finetune -m` leaves it (tiny weights)."""
    root = tmp_path / "sweep"
    for seed, acc in ACCS.items():
        run = root / f"seed={seed}"
        torch.manual_seed(seed)
        XLNetForSequenceClassification(XLNetConfig.named("tiny", vocab_size=40)).save_pretrained(run / "model")
        (run / "metrics.json").write_text(json.dumps({
            "command": "finetune", "task": "chnsenticorp", "model": "base", "seed": seed, "run_name": "x",
            "metrics": {"dev/acc": acc, "test/acc": acc - 1.0}}))
        cfg = {"task": {"name": "chnsenticorp", "batch_size": 48, "max_seq_length": 256, "epochs": 3},
               "model": {"name": "base", "pretrained": "hfl/chinese-xlnet-base"}, "optimizer": {"optim": {"lr": 2e-5}}}
        (run / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(cfg)))
        (run / "run_record.json").write_text(json.dumps({"tokenizer": {"path": str(HFL)}}))
    aggregate(root, quiet=True)
    return root


def test_sweep_export_writes_best_seed_and_model_index(sweep, tmp_path, monkeypatch, capsys):
    out = tmp_path / "publish"
    monkeypatch.setattr(sys, "argv", ["cxlnet"])
    assert cli.main(["export", str(sweep), str(out)]) == 0
    best = sweep / "seed=1"  # 93.5 on dev/acc
    assert (out / "model.safetensors").read_bytes() == (best / "model" / "model.safetensors").read_bytes()
    assert (out / "spiece.model").read_bytes() == HFL.read_bytes()
    XLNetForSequenceClassification.from_pretrained(out)  # loads as is

    readme = (out / "README.md").read_text(encoding="utf-8")
    meta = front_matter(readme)
    assert meta["base_model"] == "hfl/chinese-xlnet-base" and meta["license"] == "apache-2.0"
    (index,) = meta["model-index"]
    by_split = {r["dataset"]["split"]: r for r in index["results"]}
    dev = by_split["dev"]
    assert dev["task"]["type"] == "text-classification" and dev["dataset"]["type"] == "chnsenticorp"
    (metric,) = dev["metrics"]
    mean = sum(ACCS.values()) / 3
    assert metric["type"] == "accuracy" and metric["value"] == 93.5
    assert f"max (mean) over 3 seeds: 93.5 ({mean:.1f})" in metric["name"]
    assert by_split["test"]["metrics"][0]["value"] == 92.5
    assert f"| dev/acc | 93.5 ({mean:.1f}) |" in readme and "`seed=1`" in readme


def test_single_run_export_says_one_seed(sweep, tmp_path):
    from cxlnet.modelcard import export_any

    out = export_any(sweep / "seed=0", tmp_path / "one")
    (index,) = front_matter((out / "README.md").read_text(encoding="utf-8"))["model-index"]
    dev = [r for r in index["results"] if r["dataset"]["split"] == "dev"][0]
    assert dev["metrics"][0]["value"] == 91.25 and "1 seed" in dev["metrics"][0]["name"]
    assert (out / "config.json").is_file() and (out / "spiece.model").is_file()
