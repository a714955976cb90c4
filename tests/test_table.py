"""`cxlnet table`: declarative rows → sweeps → RESULTS.md with published and measured cells."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from cxlnet.errors import CxlnetError
from cxlnet.table import finished_seeds, load_tables, main, render

REPO = Path(__file__).resolve().parents[1]


def fake_run(sweep: Path, seed: int, acc: float) -> None:
    run = sweep / f"seed={seed}"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps(
        {"task": "chnsenticorp", "model": "tiny", "seed": seed, "metrics": {"dev/acc": acc, "test/acc": acc - 1}}))


def test_shipped_tables_load_and_name_published_numbers():
    tables = dict(load_tables(REPO / "experiments"))
    assert {"chnsenticorp", "cmrc2018", "drcd", "demo"} <= set(tables)
    mid = [r for r in tables["cmrc2018"]["rows"] if r["name"] == "XLNet-mid"][0]
    assert mid["published"]["dev"] == "66.8 (66.3) / 88.4 (88.1)"


def test_render_puts_ours_next_to_published(tmp_path):
    spec = tmp_path / "t.yaml"
    spec.write_text("title: T\ncolumns: {dev: [dev/acc], test: [test/acc]}\n"
                    "rows:\n  - {name: XLNet-mid, overrides: [], published: {dev: 95.8 (95.2)}}\n"
                    "  - {name: Other, overrides: []}\n")
    for seed, acc in enumerate([94.0, 96.0]):
        fake_run(tmp_path / "results" / "t" / "xlnet-mid", seed, acc)
    assert finished_seeds(tmp_path / "results" / "t" / "xlnet-mid") == {0, 1}
    text = render(load_tables(spec), tmp_path / "results", tmp_path / "RESULTS.md")
    assert "| XLNet-mid | 95.8 (95.2) | – | 96.0 (95.0) | 95.0 (94.0) | 2 |" in text
    assert "| Other | – | – | – | – | 0 |" in text
    assert (tmp_path / "RESULTS.md").read_text() == text


def test_run_skips_finished_seeds(tmp_path, capsys):
    spec = tmp_path / "t.yaml"
    spec.write_text("title: T\ncolumns: {dev: [dev/acc]}\nrows:\n  - {name: R, overrides: [], seeds: 2}\n")
    for seed in (0, 1):
        fake_run(tmp_path / "results" / "t" / "r", seed, 90.0 + seed)
    assert main(["run", str(spec)]) == 0
    assert "all seeds finished" in capsys.readouterr().out
    assert "| R | – | 91.0 (90.5) | 2 |" in (tmp_path / "RESULTS.md").read_text()


def test_bad_table_is_one_line(tmp_path):
    (tmp_path / "bad.yaml").write_text("title: x\nrows: []\n")
    with pytest.raises(CxlnetError, match="bad.yaml: missing `columns`"):
        load_tables(tmp_path)
    (tmp_path / "bad.yaml").write_text("title: x\ncolumns: {}\nrows: [{name: r, sweep: seeds3}]\n")
    with pytest.raises(CxlnetError, match=r"bad.yaml: row 0: unknown keys \['sweep'\]"):
        load_tables(tmp_path)


def test_shipped_rows_take_weights_from_the_presets_and_fill_every_column():
    """The rows name no environment variable of their own (the presets fall back to the download
    cache), and every declared column has a row setting that can fill it."""
    for table_id, spec in load_tables(REPO / "experiments"):
        for row in spec["rows"]:
            assert not any("oc.env" in o for o in row["overrides"]), (table_id, row["name"])
            if "test" in spec["columns"]:
                assert any(o.startswith("task.test_file=") for o in row["overrides"]), (table_id, row["name"])


def test_run_accepts_overrides_after_options(tmp_path, capsys):
    spec = tmp_path / "t.yaml"
    spec.write_text("title: T\ncolumns: {dev: [dev/acc]}\nrows:\n  - {name: R, overrides: [], seeds: 1}\n")
    fake_run(tmp_path / "res" / "t" / "r", 0, 90.0)
    assert main(["run", str(spec), "--results", str(tmp_path / "res"), "hardware=cpu"]) == 0
    assert "all seeds finished" in capsys.readouterr().out
