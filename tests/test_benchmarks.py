"""The benchmark runner's quick mode: tiny shapes, both libraries, finite ratios, no RESULTS.md write."""
from __future__ import annotations

import math

import pytest

pytest.importorskip("transformers")

from benchmarks import run as bench  # noqa: E402


def test_quick_cpu_rows_have_finite_ratios(capsys):
    before = bench.RESULTS.read_text(encoding="utf-8") if bench.RESULTS.is_file() else None
    rows = bench.main(["--quick", "--no-record", "--no-data", "--only", "cpu"])
    out = capsys.readouterr().out
    assert "cxlnet vs transformers" in out
    model = [r for r in rows if r["kind"] == "model"]
    names = {r["name"] for r in model}
    assert names == {"cpu-span", "cpu-cls", "cpu-lm"}, names
    assert not [r for r in model if "error" in r], [r["error"] for r in model if "error" in r]
    ours = [r for r in model if r["variant"] == "cxlnet"]
    assert len(ours) == 3
    for r in ours:
        assert math.isfinite(r["speed_ratio"]) and r["speed_ratio"] > 0
        assert math.isfinite(r["tflops"]) and r["tflops"] > 0
    after = bench.RESULTS.read_text(encoding="utf-8") if bench.RESULTS.is_file() else None
    assert after == before  # --no-record


def test_data_rows_report_or_skip(tmp_path):
    rows = bench.main(["--quick", "--no-record", "--only", "data-chnsenticorp"])
    (row,) = rows
    assert row["kind"] == "data"
    assert "skipped" in row or (row["seconds"] > 0 and row["items"] > 0)


def test_flop_formula_matches_flop_counter():
    """The analytic count agrees with torch's FlopCounterMode on one training step (content stream)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    shape = bench.Shape("t", "cls", bench.TINY_SIZE, 2, 32)
    ours, _ = bench.build_pair(shape, 1000)
    r = bench.Runner("cxlnet", ours, bench.make_batch(shape, 1000), shape, False)
    with FlopCounterMode(display=False) as fc:
        r.step()
    counted = fc.get_total_flops()
    analytic = bench.train_flops(shape, 1000)
    assert abs(counted - analytic) / analytic < 0.15, (counted, analytic)
    assert torch.isfinite(torch.tensor(counted))


def test_record_appends(tmp_path):
    rows = [{"kind": "data", "name": "data-x", "variant": "cxlnet", "shape": "s", "skipped": "because"}]
    path = tmp_path / "RESULTS.md"
    bench.record(rows, ["--quick"], ["note"], path)
    bench.record(rows, ["--quick"], ["note"], path)
    text = path.read_text(encoding="utf-8")
    assert text.count("python -m benchmarks.run --quick") == 2
    assert "skipped: because" in text


def test_data_scale_corpus_and_table(tmp_path):
    from benchmarks import data_scale
    from cxlnet.paths import sample_dir

    source = sample_dir() / "corpus" / "zh-hans.txt"
    files = data_scale.synth_corpus(tmp_path, 0.6, source)
    size = sum(f.stat().st_size for f in files)
    assert 0.6e6 <= size < 0.6e6 + 2 * source.stat().st_size
    docs = set(source.read_text(encoding="utf-8").strip("\n").split("\n\n"))
    assert set(files[0].read_text(encoding="utf-8").strip("\n").split("\n\n")) == docs  # whole documents only
    ok = {"rc": 0, "seconds": 2.0, "cpu_s": 4.0, "peak_mb": 300.0, "peak_pss_mb": 200.0, "peak_anon_mb": 100.0}
    rows = [{"mb": 10.0, "files": 1, "workers": 2, "tokens": 2_600_000, "new": ok, "raw_mb_s": 4.0, "raw_mb_cpu_s": 5.0,
             "old": {**ok, "seconds": 8.0, "cpu_s": 8.0}, "loader": ok, "old_loader": ok},
            {"mb": 1000.0, "files": 8, "workers": 2, "tokens": 260_000_000, "new": {**ok, "seconds": 200.0, "cpu_s": 400.0},
             "raw_mb_s": 4.0, "raw_mb_cpu_s": 5.0, "loader": ok, "old_loader": ok}]
    table = data_scale.markdown(rows).splitlines()
    assert len(table) == 4 and all(line.count("|") == len(data_scale.COLUMNS) + 1 for line in table)
    # 10 MB: 5 MB/s (2.5 MB/CPU-s) vs the baseline's 1.25 (1.25); 1 GB (baseline not run): against 10 MB's
    assert "| 5.00 | 2.50 | 200 (300) | 8.0 | 1.25 | 1.25 | 300 | 4.00 | 2.00 | 4.00 (5.00) | 0.50 | 300 (100) |" in table[2]
    assert "| not run |  |  |  | 4.00 (vs 10 MB) | 2.00 (vs 10 MB) |" in table[3]
