"""Interrupted and repeated runs: what resumes, what is refused, and that a refusal or a re-run
never modifies a finished result or a run's record in place (`cxlnet train`, `cxlnet export`)."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from cxlnet.paths import sample_dir

HFL_SPIECE = sample_dir() / "pretrained" / "hfl-chinese-xlnet-base" / "spiece.model"
CORPUS = sample_dir() / "corpus" / "zh-hans.txt"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    from cxlnet.pretrain.corpus import build_store
    from cxlnet.text import Tokenizer

    root = tmp_path_factory.mktemp("runs")
    corpus = root / "corpus.txt"
    corpus.write_text("".join(CORPUS.read_text(encoding="utf-8").splitlines(keepends=True)[:300]), encoding="utf-8")
    build_store([corpus], Tokenizer(HFL_SPIECE), root / "store", num_shards=1)
    return root / "store"


def call(run_cli, *argv: str) -> tuple[int, str]:
    rc, out, err = run_cli(*argv)
    return rc, out + err


def train_args(store: Path, run: Path, *extra: str) -> list[str]:
    return ["train", "experiment=pretrain_demo", "logger=csv", "trainer.enable_progress_bar=false",
            "trainer.log_every_n_steps=1", f"data.store={store}", "data.bsz=4", "data.seq_len=32",
            "data.reuse_len=16", "data.perm_size=16", "data.num_predict=6", "mem_len=16", "data.num_workers=0", "data.val_shards=0",
            "train.max_steps=5", "train.save_steps=100", f"hydra.run.dir={run}", *extra]


def csv_steps(run: Path) -> list[int]:
    with (run / "csv" / "metrics.csv").open(newline="") as fh:
        return sorted({int(float(r["step"])) for r in csv.DictReader(fh) if r.get("train/loss")})


def record(run: Path) -> dict[str, bytes]:
    """The run's record and log: what a refused command must leave as it was."""
    files = [run / "config.yaml", *sorted((run / ".hydra").glob("*")), *sorted(run.glob("*.log"))]
    return {str(p.relative_to(run)): p.read_bytes() for p in files}


def test_stop_after_continues_with_the_same_command_and_csv_keeps_every_row(store, tmp_path, run_cli):
    run = tmp_path / "run"
    args = train_args(store, run, "train.stop_after=2")
    for expected_steps in ([0, 1], [0, 1, 2, 3]):
        rc, out = call(run_cli, *args)
        assert rc == 0, out
        assert not (run / "metrics.json").exists()
        assert csv_steps(run) == expected_steps, "a resume lost (or repeated) earlier CSV rows"
    rc, out = call(run_cli, *args)  # the third time reaches train.max_steps=5 and finishes
    assert rc == 0, out
    assert (run / "metrics.json").is_file() and csv_steps(run) == [0, 1, 2, 3, 4]
    finished = (run / "metrics.json").read_bytes()
    rc, out = call(run_cli, *args)
    assert rc == 2 and "already finished" in out
    assert (run / "metrics.json").read_bytes() == finished


def test_refused_resume_leaves_the_runs_record_untouched(store, tmp_path, run_cli):
    run = tmp_path / "run"
    rc, out = call(run_cli, *train_args(store, run, "train.stop_after=1"))
    assert rc == 0, out
    before = record(run)
    assert "config.yaml" in before and ".hydra/overrides.yaml" in before
    rc, out = call(run_cli, *train_args(store, run, "data.num_predict=5"))
    assert rc == 2 and "trained on other data (num_predict 6 -> 5)" in out, out
    assert record(run) == before


def test_export_refuses_an_existing_directory_and_replaces_it_whole_with_overwrite(store, tmp_path, run_cli):
    run = tmp_path / "run"
    rc, out = call(run_cli, *train_args(store, run, "train.stop_after=1"))
    assert rc == 0, out
    out_dir = tmp_path / "exported"
    assert call(run_cli, "export", str(run), str(out_dir))[0] == 0
    weights = (out_dir / "model.safetensors").read_bytes()
    (out_dir / "notes.txt").write_text("mine")
    rc, out = call(run_cli, "export", str(run), str(out_dir))
    assert rc == 2 and "already exists and is not empty; pass --overwrite" in out
    assert (out_dir / "notes.txt").read_text() == "mine"
    assert call(run_cli, "export", str(run), str(out_dir), "--overwrite")[0] == 0
    assert not (out_dir / "notes.txt").exists(), "--overwrite replaces the directory as a whole"
    assert (out_dir / "model.safetensors").read_bytes() == weights
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "a temporary directory was left"
