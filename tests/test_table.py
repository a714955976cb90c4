"""`cxlnet table`: declarative rows -> sweeps -> Chinese-XLNet's tables (markdown, CSV, LaTeX, PNG)."""
from __future__ import annotations

import csv
import io
import json
import re
import shutil
from pathlib import Path

import pytest

from cxlnet.errors import CxlnetError
from cxlnet.sweep import config_hash
from cxlnet.table import compose_row, load_tables, main, render

REPO = Path(__file__).resolve().parents[1]

# Chinese-XLNet's three tables as published (README of ymcui/Chinese-XLNet; ../shared/spec): every
# row, column and cell, and the numbers it prints in bold (max and mean of each metric, per column).
PUBLISHED = {
    "cmrc2018": (["dev", "test", "challenge"], {
        "BERT": ["65.5 (64.4) / 84.5 (84.0)", "70.0 (68.7) / 87.0 (86.3)", "18.6 (17.0) / 43.3 (41.3)"],
        "BERT-wwm": ["66.3 (65.0) / 85.6 (84.7)", "70.5 (69.1) / 87.4 (86.7)", "21.0 (19.3) / 47.0 (43.9)"],
        "BERT-wwm-ext": ["67.1 (65.6) / 85.7 (85.0)", "71.4 (70.0) / 87.7 (87.0)", "24.0 (20.0) / 47.3 (44.6)"],
        "XLNet-base": ["65.2 (63.0) / 86.9 (85.9)", "67.0 (65.8) / 87.2 (86.8)", "25.0 (22.7) / 51.3 (49.5)"],
        "XLNet-mid": ["66.8 (66.3) / 88.4 (88.1)", "69.3 (68.5) / 89.2 (88.8)", "29.1 (27.1) / 55.8 (54.9)"],
    }),
    "drcd": (["dev", "test"], {
        "BERT": ["83.1 (82.7) / 89.9 (89.6)", "82.2 (81.6) / 89.2 (88.8)"],
        "BERT-wwm": ["84.3 (83.4) / 90.5 (90.2)", "82.8 (81.8) / 89.7 (89.0)"],
        "BERT-wwm-ext": ["85.0 (84.5) / 91.2 (90.9)", "83.6 (83.0) / 90.4 (89.9)"],
        "XLNet-base": ["83.8 (83.2) / 92.3 (92.0)", "83.5 (82.8) / 92.2 (91.8)"],
        "XLNet-mid": ["85.3 (84.9) / 93.5 (93.3)", "85.5 (84.8) / 93.6 (93.2)"],
    }),
    "chnsenticorp": (["dev", "test"], {
        "BERT": ["94.7 (94.3)", "95.0 (94.7)"],
        "BERT-wwm": ["95.1 (94.5)", "95.4 (95.0)"],
        "XLNet-base": ["–", "–"],  # not reported
        "XLNet-mid": ["95.8 (95.2)", "95.4 (94.9)"],
    }),
}
BOLD = {  # (row, column) -> the bold numbers of that cell in the original
    "cmrc2018": {("BERT-wwm-ext", "dev"): ["67.1"], ("XLNet-mid", "dev"): ["66.3", "88.4", "88.1"],
                 ("BERT-wwm-ext", "test"): ["71.4", "70.0"], ("XLNet-mid", "test"): ["89.2", "88.8"],
                 ("XLNet-mid", "challenge"): ["29.1", "27.1", "55.8", "54.9"]},
    "drcd": {("XLNet-mid", "dev"): ["85.3", "84.9", "93.5", "93.3"], ("XLNet-mid", "test"): ["85.5", "84.8", "93.6", "93.2"]},
    "chnsenticorp": {("BERT-wwm", "test"): ["95.4", "95.0"], ("XLNet-mid", "dev"): ["95.8", "95.2"],
                     ("XLNet-mid", "test"): ["95.4"]},
}


def markdown_rows(text: str, title: str) -> tuple[list[str], dict[str, list[str]]]:
    """(column names, row -> cells) of the markdown table under the heading starting with `title`."""
    section = text.split(f"## {title}", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[2:]:  # after the header and its alignment line
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return header[1:], rows


def fake_run(sweep: Path, seed: int, metrics: dict, digest: str | None = "h" * 16) -> None:
    run = sweep / f"seed={seed}"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps(
        {"task": "chnsenticorp", "model": "tiny", "seed": seed, "metrics": metrics, "seconds": 90.0,
         "config_hash": digest}))
    (run / "run_record.json").write_text(json.dumps(
        {"versions": {"torch": "2.13.0", "lightning": "2.6.6", "python": "3.11.7", "cxlnet": "0.1.0"},
         "git": {"commit": "abc1234def", "dirty": False},
         "hardware": {"cpu": "AMD EPYC", "cores": 16, "gpus": ["NVIDIA A100"], "accelerator": "gpu", "devices": "auto"}}))


def test_shipped_tables_render_chinese_xlnet_rows_columns_and_bold(tmp_path):
    """Every published row, column and cell of the three tables, bold where the original is, and
    our rows in the same columns with "–" until they have runs."""
    tables = load_tables(REPO / "experiments")
    text = render(tables, tmp_path / "results", tmp_path / "RESULTS.md")
    titles = {"cmrc2018": "CMRC 2018 (EM / F1): max (mean) over 10 seeds", "drcd": "DRCD (EM / F1): max (mean) over 10 seeds",
              "chnsenticorp": "ChnSentiCorp (accuracy): max (mean) over 10 seeds"}
    for table_id, (columns, published) in PUBLISHED.items():
        header, rows = markdown_rows(text, titles[table_id])
        assert header == columns, table_id
        ours = [name for name in rows if name.endswith("(cxlnet)")]
        assert list(rows) == [*published, *ours] and {"XLNet-base (cxlnet)", "XLNet-mid (cxlnet)"} == set(ours)
        for name, cells in published.items():
            assert [c.replace("**", "") for c in rows[name]] == cells, (table_id, name)
            for column, cell in zip(columns, rows[name]):
                assert re.findall(r"\*\*([\d.]+)\*\*", cell) == BOLD[table_id].get((name, column), []), (name, column)
        assert all(rows[name] == ["–"] * len(columns) for name in ours)
        for ext in ("md", "csv", "tex", "png"):
            assert (tmp_path / "results" / f"{table_id}.{ext}").stat().st_size > 0
        assert f"![{titles[table_id].split(' (')[0]}](results/{table_id}.png)" in text


def test_our_row_sits_in_the_published_columns_with_provenance(tmp_path):
    spec = tmp_path / "t.yaml"
    spec.write_text("title: T\nmetric: accuracy\nseeds: 10\ncolumns: {dev: [dev/acc], test: [test/acc]}\nrows:\n"
                    "  - {name: XLNet-mid, published: {dev: 95.8 (95.2), test: 95.4 (94.9)}}\n"
                    "  - {name: XLNet-mid (cxlnet), overrides: [], seeds: 2}\n")
    for seed, acc in enumerate([94.0, 96.0]):
        fake_run(tmp_path / "results" / "t" / "xlnet-mid-cxlnet", seed, {"dev/acc": acc, "test/acc": acc - 1})
    text = render(load_tables(spec), tmp_path / "results", tmp_path / "RESULTS.md")
    assert "## T (accuracy): max (mean) over 10 seeds (XLNet-mid (cxlnet): 2)" in text
    assert "| XLNet-mid | 95.8 (**95.2**) | **95.4** (**94.9**) |" in text
    assert "| XLNet-mid (cxlnet) | **96.0** (95.0) | 95.0 (94.0) |" in text
    assert "2 seeds in" in text and "3.0 min in total (1.5 min per seed) on 1x NVIDIA A100; cxlnet abc1234, torch 2.13.0, lightning 2.6.6, python 3.11.7" in text
    lines = list(csv.DictReader(io.StringIO((tmp_path / "results" / "t.csv").read_text())))
    assert [(r["model"], r["source"], r["dev:dev/acc:max"], r["dev:dev/acc:mean"]) for r in lines] == [
        ("XLNet-mid", "published", "95.8", "95.2"), ("XLNet-mid (cxlnet)", "cxlnet", "96.0", "95.0")]
    tex = (tmp_path / "results" / "t.tex").read_text()
    assert r"XLNet-mid (cxlnet) & \textbf{96.0} (95.0) & 95.0 (94.0) \\" in tex and r"\toprule" in tex
    assert (tmp_path / "results" / "t.png").read_bytes()[:4] == b"\x89PNG"


def test_organiser_scored_columns_take_supplied_scores_or_a_dash(tmp_path):
    spec = tmp_path / "t.yaml"
    spec.write_text("title: T\ncolumns: {dev: [dev/em, dev/f1], test: [test/em, test/f1]}\nexternal: [test]\nrows:\n"
                    "  - {name: A (cxlnet), overrides: [], scores: {test: 70.1 (69.0) / 88.0 (87.5)}}\n"
                    "  - {name: B (cxlnet), overrides: []}\n")
    text = render(load_tables(spec), tmp_path / "results", tmp_path / "RESULTS.md")
    assert "| A (cxlnet) | – | **70.1** (**69.0**) / **88.0** (**87.5**)† |" in text
    assert "| B (cxlnet) | – | – |" in text and "† scored by the organisers" in text
    spec.write_text(spec.read_text().replace("scores: {test:", "scores: {dev:"))
    with pytest.raises(CxlnetError, match=r"row 0 \(A \(cxlnet\)\): `scores` names \['dev'\], not among the external"):
        load_tables(spec)


@pytest.mark.parametrize("body, message", [
    ("title: x\nrows: []\n", "missing `columns`"),
    ("title: x\ncolumns: {}\nrows: [{name: r, sweep: seeds3}]\n", "columns: expected column"),
    ("title: x\ncolumns: {dev: [dev/acc]}\nrows: [{name: r, sweep: seeds3}]\n", r"row 0: unknown keys \['sweep'\]"),
    ("title: x\ncolumns: {dev: [dev/acc]}\nrows: [{name: r, overrides: [], published: {dev: 1.0 (1.0)}}]\n",
     "`published` and `overrides` both set"),
    ("title: x\ncolumns: {dev: [dev/em, dev/f1]}\nrows: [{name: r, published: {dev: 65.5 (64.4)}}]\n",
     r"r: published.dev: '65.5 \(64.4\)' is not max \(mean\) / max \(mean\)"),
    ("title: x\ncolumns: {dev: [dev/acc]}\nrows: [{name: r, overrides: [], seeds: 0}]\n", "seeds=0: expected a positive"),
    ("title: x\ncolumns: {dev: [dev/acc]}\nrows: [{name: r, overrides: [], pretrain: s1}]\n",
     r"pretrain: 's1' is not one of pretrain_stages \(none declared\)"),
    ("title: x\ncolumns: {dev: [dev/acc]}\nrows: [{name: r, overrides: []}, {name: r, overrides: []}]\n",
     r"names \['r'\] share a results directory"),
    ("title: x\ncolumns: {dev: [dev/acc]}\nrows: [\n", "not a valid YAML table"),
])
def test_bad_table_is_one_line(tmp_path, body, message):
    (tmp_path / "bad.yaml").write_text(body)
    with pytest.raises(CxlnetError, match=message):
        load_tables(tmp_path)


def test_pretraining_tables_keys_are_accepted(tmp_path):
    """A table of pre-training stages (table key `pretrain_stages`, row key `pretrain`) loads and
    renders like any other."""
    (tmp_path / "p.yaml").write_text("title: P\ncolumns: {dev: [dev/acc]}\npretrain_stages: {s1: {data: [], train: []}}\n"
                                     "rows: [{name: from s1, overrides: [], pretrain: s1}]\n")
    text = render(load_tables(tmp_path), tmp_path / "results", tmp_path / "RESULTS.md")
    assert "| from s1 | – |" in text


DEMO_ROW = ["experiment=demo", "logger=csv"]


def write_table(tmp_path: Path, overrides: list[str], seeds: int = 2) -> Path:
    spec = tmp_path / "t.yaml"
    spec.write_text(f"title: T\ncolumns: {{dev: [dev/acc]}}\nrows:\n  - {{name: R, overrides: {overrides}, seeds: {seeds}}}\n")
    return spec


def test_run_keeps_seeds_finished_with_the_same_configuration(tmp_path, capsys):
    spec = write_table(tmp_path, DEMO_ROW)
    digest = config_hash(compose_row(DEMO_ROW))
    for seed in (0, 1):
        fake_run(tmp_path / "results" / "t" / "r", seed, {"dev/acc": 90.0 + seed}, digest)
    assert main(["run", str(spec)]) == 0
    out = capsys.readouterr().out
    assert "t / R: nothing to run: all 2 seeds finished in" in out and "with this configuration" in out
    assert "| R | **91.0** (**90.5**) |" in (tmp_path / "RESULTS.md").read_text()


def test_shipped_demo_results_say_there_is_nothing_to_run(tmp_path, capsys):
    """`make reproduce-table TABLES=experiments/demo.yaml` on a fresh clone: the committed results
    are kept, and the command says so instead of silently running nothing."""
    shutil.copy(REPO / "experiments" / "demo.yaml", tmp_path)
    shutil.copytree(REPO / "experiments" / "results" / "demo", tmp_path / "results" / "demo")
    assert main(["run", str(tmp_path / "demo.yaml")]) == 0
    out = capsys.readouterr().out
    assert "demo / XLNet-tiny (random init): nothing to run: all 3 seeds finished in" in out
    assert "| XLNet-tiny (random init) | **86.4** (**85.5**) |" in (tmp_path / "RESULTS.md").read_text()


def test_run_refuses_seeds_finished_with_another_configuration(tmp_path, capsys):
    spec = write_table(tmp_path, DEMO_ROW)
    fake_run(tmp_path / "results" / "t" / "r", 0, {"dev/acc": 90.0}, "0" * 16)
    assert main(["run", str(spec)]) == 1
    out = capsys.readouterr().out
    assert "rows: 1 refused" in out
    (line,) = [l for l in out.splitlines() if l.startswith("t / R: refused: ")]
    assert "used another configuration (hash 0000000000000000" in line
    assert sorted(p.name for p in (tmp_path / "results" / "t" / "r").iterdir()) == ["seed=0", "summary.json"]


def test_run_skips_a_row_without_its_weights_in_one_line(tmp_path, capsys, monkeypatch):
    """No hfl weights in the cache: the row is skipped before anything starts, and leaves no directory."""
    monkeypatch.setenv("CXLNET_CACHE_DIR", str(tmp_path / "empty-cache"))
    spec = write_table(tmp_path, ["experiment=chnsenticorp_mid", "hardware=cpu"])
    assert main(["run", str(spec)]) == 0
    out = capsys.readouterr().out
    assert "rows: 1 skipped" in out
    (line,) = [l for l in out.splitlines() if l.startswith("t / R: ")]
    assert line.startswith("t / R: skipped: model.pretrained=hfl/chinese-xlnet-mid: not in ")
    assert not (tmp_path / "results" / "t").exists()


def test_run_accepts_overrides_after_options_and_profiles(tmp_path, capsys):
    spec = write_table(tmp_path, DEMO_ROW, seeds=1)
    digest = config_hash(compose_row([*DEMO_ROW, "task.epochs=1"]))
    fake_run(tmp_path / "res" / "t" / "r", 0, {"dev/acc": 90.0}, digest)
    assert main(["run", str(spec), "--results", str(tmp_path / "res"), "task.epochs=1"]) == 0
    assert "nothing to run" in capsys.readouterr().out
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "quick.yaml").write_text("results: quick\nout: quick/RESULTS.md\nseeds: 1\n"
                                                      "overrides: [task.epochs=1]\n")
    shutil.copytree(tmp_path / "res", tmp_path / "quick")
    assert main(["run", str(spec), "--profile", "quick"]) == 0
    assert "nothing to run" in capsys.readouterr().out and (tmp_path / "quick" / "RESULTS.md").is_file()
    with pytest.raises(CxlnetError, match="--profile nope: no .*profiles/nope.yaml .profiles: quick."):
        main(["run", str(spec), "--profile", "nope"])


def test_shipped_profiles_keep_smoke_results_apart():
    from cxlnet.table import load_profile

    smoke, paper = (load_profile(REPO / "experiments", name) for name in ("smoke", "paper"))
    assert smoke["results"] != paper["results"] and smoke["out"].startswith(smoke["results"] + "/")
    assert "model=tiny" in smoke["overrides"] and "hardware=cpu" in smoke["overrides"] and paper["overrides"] == []
    assert "experiments/results-smoke/" in (REPO / ".gitignore").read_text().splitlines()


def test_shipped_rows_take_weights_from_the_presets_and_fill_every_column():
    """The rows name no environment variable of their own (the presets fall back to the download
    cache); every column that our runs score has a row setting that can fill it."""
    for table_id, spec in load_tables(REPO / "experiments"):
        for row in (r for r in spec["rows"] if "overrides" in r):
            assert not any("oc.env" in o for o in row["overrides"]), (table_id, row["name"])
            if "test" in spec["columns"] and "test" not in spec.get("external", []):
                assert any(o.startswith("task.test_file=") for o in row["overrides"]), (table_id, row["name"])
            compose_row(row["overrides"])  # every row's preset composes


def test_wandb_summary_run_per_row_offline(tmp_path, monkeypatch):
    """One W&B run per table row, job_type `summary`, with max / mean / std / n of every metric and
    the per-seed table; offline, so the check reads the run's files on disk."""
    from omegaconf import OmegaConf
    from wandb.proto import wandb_internal_pb2 as pb

    from cxlnet.sweep import summarize
    from cxlnet.wandb_summary import log_row_summary, summary_run_id

    monkeypatch.setenv("WANDB_MODE", "offline")
    runs = [{"run": f"seed={s}", "seed": s, "overrides": [], "config_hash": "a" * 16, "task": "chnsenticorp",
             "model": "tiny", "metrics": {"dev/acc": 90.0 + s}} for s in range(3)]
    logger = OmegaConf.create({"project": "cxlnet", "entity": None, "tags": []})
    run_id = log_row_summary(logger, "demo", "XLNet-tiny", "table-demo", summarize(runs, []), tmp_path)
    assert run_id == summary_run_id("demo", "XLNet-tiny", "a" * 16)
    (run_dir,) = (tmp_path / "wandb").glob(f"offline-run-*-{run_id}")
    data = next(run_dir.glob("run-*.wandb")).read_bytes()
    assert pb.RunRecord(job_type="summary").SerializeToString() in data
    for key, value in (("max", "92.0"), ("mean", "91.0"), ("std", "1.0"), ("n", "3")):
        assert pb.SummaryItem(key=f"dev/acc/{key}", value_json=value).SerializeToString() in data, key
    (table,) = run_dir.glob("files/media/table/seeds_*.table.json")
    assert json.loads(table.read_text()) == {"columns": ["run", "seed", "dev/acc"],
                                             "data": [["seed=0", 0, 90.0], ["seed=1", 1, 91.0], ["seed=2", 2, 92.0]]}


@pytest.mark.slow
@pytest.mark.timeout(3600)  # a few minutes on 2 free cores; much longer on a shared machine
def test_smoke_profile_runs_every_row_of_every_table(tmp_path):
    """`make reproduce-table PROFILE=smoke` from a clean copy of experiments/: every row of ours runs
    (tiny model, CPU), every table is written with real numbers, plots, CSV and LaTeX, in the layout of
    Chinese-XLNet's tables; a second run has nothing to do."""
    import os
    import subprocess
    import sys

    experiments = tmp_path / "experiments"
    experiments.mkdir()
    for path in (REPO / "experiments").glob("*.yaml"):
        shutil.copy(path, experiments)
    shutil.copytree(REPO / "experiments" / "profiles", experiments / "profiles")
    env = {**os.environ, "WANDB_MODE": "disabled", "CXLNET_CACHE_DIR": str(tmp_path / "empty-cache")}
    env.pop("CXLNET_DATA_DIR", None)
    command = [sys.executable, "-m", "cxlnet", "table", "run", str(experiments), "--profile", "smoke"]
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=3000)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    smoke = experiments / "results-smoke"
    text = (smoke / "RESULTS.md").read_text()
    assert not (experiments / "results").exists() and not (experiments / "RESULTS.md").exists()
    tables = dict(load_tables(experiments))
    for table_id, spec in tables.items():
        title = f"{spec['title']} ({spec['metric']}): max (mean) over {spec['seeds']} seeds"
        header, rows = markdown_rows(text, title)
        assert header == list(spec["columns"]), table_id
        if table_id in PUBLISHED:
            columns, published = PUBLISHED[table_id]
            assert header == columns and all([c.replace("**", "") for c in rows[n]] == cells for n, cells in published.items())
        for row in (r for r in spec["rows"] if "overrides" in r):
            dev = rows[row["name"]][0].replace("**", "")
            parts = len(spec["columns"]["dev"])
            assert re.fullmatch(r" / ".join([r"\d+\.\d \(\d+\.\d\)"] * parts), dev), (table_id, row["name"], dev)
            assert len(list((smoke / table_id).glob("*/seed=*/metrics.json"))) >= 2
        for ext in ("md", "csv", "tex", "png"):
            assert (smoke / f"{table_id}.{ext}").stat().st_size > 0
    again = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    ours = sum("overrides" in r for spec in tables.values() for r in spec["rows"])
    assert again.returncode == 0 and again.stdout.count("nothing to run") == ours, again.stdout
