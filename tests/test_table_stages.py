"""`cxlnet table run` with pre-training stages: a stage runs once, before the first row naming it,
and every seed of every such row fine-tunes from it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from cxlnet import table
from cxlnet.errors import CxlnetError

SPEC = """title: T
columns: {dev: [dev/acc]}
pretrain_stages:
  corpus: {data: [data.num_shards=4], train: [experiment=pretrain_cpu]}
rows:
  - {name: A pre-trained, pretrain: corpus, overrides: [experiment=demo], seeds: 2}
  - {name: A scratch, overrides: [experiment=demo], seeds: 2}
  - {name: B pre-trained, pretrain: corpus, overrides: [experiment=demo_cmrc2018], seeds: 1}
"""


@pytest.fixture
def calls(monkeypatch, tmp_path) -> list[tuple[str, list[str]]]:
    """Record the cxlnet commands the table runs; fake what each writes."""
    seen: list[tuple[str, list[str]]] = []

    def fake(command: str, *args: str) -> int:
        seen.append((command, list(args)))
        value = lambda key: next(a.split("=", 1)[1] for a in args if a.startswith(key + "="))  # noqa: E731
        if command == "data":
            Path(value("data.out_dir")).mkdir(parents=True)
            (Path(value("data.out_dir")) / "store.json").write_text("{}")
        elif command == "train":
            (Path(value("hydra.run.dir")) / "metrics.json").write_text("{}")
        elif command == "finetune":
            for seed in value("seed").split(","):
                run = Path(value("hydra.sweep.dir")) / f"seed={seed}"
                run.mkdir(parents=True)
                (run / "metrics.json").write_text(json.dumps({"seed": int(seed), "metrics": {"dev/acc": 80.0}}))
        return 0

    monkeypatch.setattr(table, "_cxlnet", fake)
    (tmp_path / "t.yaml").write_text(SPEC)
    return seen


def test_stage_runs_once_and_rows_start_from_it(calls, tmp_path):
    assert table.main(["run", str(tmp_path / "t.yaml")]) == 0
    assert [c for c, _ in calls] == ["data", "train", "finetune", "finetune", "finetune"]
    stage = (tmp_path / "results" / "t" / "corpus").resolve()
    assert f"data.out_dir={stage / 'store'}" in calls[0][1]
    assert calls[1][1][-2:] == [f"data.store={stage / 'store'}", f"hydra.run.dir={stage}"]
    pretrained = [[a for a in args if a.startswith("model.pretrained=")] for c, args in calls if c == "finetune"]
    assert pretrained == [[f"model.pretrained={stage}"], [], [f"model.pretrained={stage}"]]
    calls.clear()  # everything finished: nothing runs again
    assert table.main(["run", str(tmp_path / "t.yaml")]) == 0
    assert calls == []


def test_failed_stage_skips_its_rows(calls, monkeypatch, tmp_path, capsys):
    recorded = table._cxlnet
    monkeypatch.setattr(table, "_cxlnet", lambda command, *args: 1 if command == "train" else recorded(command, *args))
    assert table.main(["run", str(tmp_path / "t.yaml")]) == 1
    assert [c for c, _ in calls] == ["data", "finetune"]  # the scratch row still runs
    assert "skipped (pre-training stage 'corpus' failed)" in capsys.readouterr().out


def test_bad_stage_declarations_are_one_line(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text(SPEC.replace("pretrain: corpus, overrides: [experiment=demo]", "pretrain: wiki, overrides: []"))
    with pytest.raises(CxlnetError, match=r"t.yaml: row 0: pretrain: 'wiki' is not one of pretrain_stages \(corpus\)"):
        table.load_tables(path)
    path.write_text(SPEC.replace("train: [experiment=pretrain_cpu]", "steps: 3"))
    with pytest.raises(CxlnetError, match=r"pretrain_stages.corpus: unknown keys \['steps'\]"):
        table.load_tables(path)


def test_shipped_pretraining_table_declares_its_stage():
    spec = dict(table.load_tables(Path(__file__).resolve().parents[1] / "experiments" / "pretraining.yaml"))
    rows = spec["pretraining"]["rows"]
    assert {r.get("pretrain") for r in rows} == {"corpus", None}
    assert sum(r["seeds"] for r in rows if "ChnSentiCorp" in r["name"]) >= 10
    assert sum(r["seeds"] for r in rows if "CMRC" in r["name"]) >= 6


def test_a_profile_without_stages_runs_no_pre_training(calls, tmp_path):
    """The smoke profile starts every row from random init: its stages are not run."""
    (tmp_path / "profiles").mkdir()
    profile = tmp_path / "profiles" / "nostages.yaml"  # not beside the tables: render reads every *.yaml there
    profile.write_text("results: results-x\nout: results-x/RESULTS.md\npretrain_stages: false\n"
                       "overrides: [model.pretrained=null]\n")
    assert table.main(["run", str(tmp_path / "t.yaml"), "--profile", str(profile)]) == 0
    assert [c for c, _ in calls] == ["finetune", "finetune", "finetune"]
    assert not any(a.startswith("model.pretrained=/") for _, args in calls for a in args)
    smoke = table.load_profile(Path(__file__).resolve().parents[1] / "experiments", "smoke")
    assert smoke["pretrain_stages"] is False
