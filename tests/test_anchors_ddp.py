"""What a multi-process evaluation must count, checked in one CPU process: a distributed sampler
pads the processes' shares with repeats, and `all_gather` stacks the processes' rows. Here the
gather is replaced by the stack of two processes' rows it would return, so the de-duplication of
classification accuracy and of span windows runs exactly as under DDP. Also the sweep summary
rebuilt from per-run files."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from cxlnet.classify.module import ClassificationModule
from cxlnet.model import XLNetConfig, XLNetForSequenceClassification
from cxlnet.sweep import aggregate

OPT = OmegaConf.create({"layer_decay": 1.0, "layer_decay_mode": "grad"})


class TwoProcesses:
    """`all_gather` of two ranks: rank 0 holds the module's own rows, rank 1 `other`'s."""

    def __init__(self, other):
        self.other = other

    def __call__(self, tensor):
        other = self.other(tensor) if callable(self.other) else self.other
        return torch.stack([tensor, other])


def classification_module(monkeypatch, logged: dict):
    model = XLNetForSequenceClassification(XLNetConfig.named("tiny", vocab_size=40, dropout=0.0), num_labels=2)
    module = ClassificationModule(model, OPT)
    monkeypatch.setattr(module, "log", lambda name, value, **kw: logged.__setitem__(name, value))
    return module


def test_accuracy_counts_each_example_once_across_processes(monkeypatch):
    """5 examples on 2 processes: rank 0 gets 0, 2, 4; rank 1 gets 1, 3 and example 0 again as
    padding. Examples 0, 1, 3 are answered right: 3 of 5, not 4 of 6 (or 4 of 5) with the copy."""
    logged: dict = {}
    module = classification_module(monkeypatch, logged)
    labels = torch.tensor([0, 1, 0, 1, 0])
    fixed = {}

    def forward(input_ids, token_type_ids, input_mask, labels=None):
        logits = torch.zeros(len(input_ids), 2)
        logits[torch.arange(len(input_ids)), fixed["pred"]] = 1.0
        return type("Out", (), {"logits": logits})()

    monkeypatch.setattr(module, "forward", forward)
    dummy = torch.zeros(3, 4, dtype=torch.long)
    fixed["pred"] = torch.tensor([0, 1, 1])  # examples 0, 2, 4: right, wrong, wrong
    module._count((dummy, dummy, dummy.float(), labels[[0, 2, 4]], torch.tensor([0, 2, 4])))
    rank1 = torch.tensor([[1, 1], [3, 1], [0, 1]])  # (index, correct): example 0 again, as padding
    monkeypatch.setattr(module, "all_gather", TwoProcesses(rank1))
    module._report("dev")
    assert logged["dev/acc"] == pytest.approx(100.0 * 3 / 5)
    assert module._seen == []


def test_span_windows_are_decoded_once_across_processes(monkeypatch):
    """The span module keeps the first copy of every window (feature) before decoding."""
    from cxlnet.span.module import SpanModule

    model_cfg = XLNetConfig.named("tiny", vocab_size=40)
    module = SpanModule.__new__(SpanModule)
    torch.nn.Module.__init__(module)
    module.model = type("M", (), {"config": model_cfg})()
    seen = {}

    class Data:
        def features(self, split):
            return type("F", (), {"unique_ids": np.array([100, 101, 102])})()

        def examples(self, split):
            return ["examples"]

    def fake_decode(examples, features, results, **kw):
        seen.update(results)
        return {}, {}

    monkeypatch.setattr("cxlnet.span.module.decode", fake_decode)
    module.data = Data()
    module.task_cfg = OmegaConf.create({"n_best_size": 5, "max_answer_length": 40})
    rows = {"start_top_log_probs": torch.tensor([[0.0], [1.0], [2.0], [0.5]]),
            "start_top_index": torch.tensor([[0], [1], [2], [0]]),
            "end_top_log_probs": torch.tensor([[0.0], [1.0], [2.0], [0.5]]),
            "end_top_index": torch.tensor([[0], [1], [2], [0]]),
            "feature_index": torch.tensor([0, 2, 1, 0])}  # window 0 twice: the sampler's padding
    module._results = [rows]
    module._decode("dev")
    assert seen["unique_ids"].tolist() == [100, 101, 102]
    assert seen["start_top_log_probs"][:, 0].tolist() == [0.0, 2.0, 1.0]  # the first copy of window 0


def test_aggregate_rebuilds_the_summary_from_run_files(tmp_path):
    sweep = tmp_path / "sweep"
    for seed, acc in enumerate([90.0, 91.0, 93.0]):
        (sweep / f"seed={seed}").mkdir(parents=True)
        (sweep / f"seed={seed}" / "metrics.json").write_text(json.dumps(
            {"task": "chnsenticorp", "model": "tiny", "seed": seed, "metrics": {"dev/acc": acc, "dev/loss": -seed}}))
    (sweep / "seed=3" / ".hydra").mkdir(parents=True)  # started, never finished
    (sweep / "notes").mkdir()  # neither a run nor a failed one
    summary = aggregate(sweep, quiet=True)
    assert json.loads((sweep / "summary.json").read_text()) == summary
    assert summary["runs"] == ["seed=0", "seed=1", "seed=2"] and summary["seeds"] == [0, 1, 2]
    assert summary["failed"] == ["seed=3"] and summary["task"] == "chnsenticorp" and summary["model"] == "tiny"
    acc = summary["metrics"]["dev/acc"]
    assert (acc["max"], acc["mean"], acc["std"], acc["n"]) == (93.0, 91.3333, 1.5275, 3)
    assert acc["values"] == {"seed=0": 90.0, "seed=1": 91.0, "seed=2": 93.0}
    assert summary["metrics"]["dev/loss"]["formatted"] == "0.0 (-1.0)"
