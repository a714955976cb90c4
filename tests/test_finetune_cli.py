"""`cxlnet finetune` end to end on the shipped ChnSentiCorp sample, through the real CLI."""
from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from conftest import cli_env, cxlnet_subprocess
from cxlnet.classify.data import read_tsv
from cxlnet.errors import CxlnetError
from cxlnet.paths import sample_dir

SAMPLE_DEV = sample_dir() / "chnsenticorp" / "dev.tsv"


def cxlnet(*args: str, cwd: Path, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real CLI. The data comes from the shipped sample only: no $CXLNET_DATA_DIR and an
    empty download cache, as on a fresh clone without any data directory beside it."""
    return cxlnet_subprocess(*args, cwd=cwd, check=check, env=cli_env(cwd, **(env or {})))


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> dict:
    """A 120-row dev file and the overrides of a seconds-long tiny run."""
    root = tmp_path_factory.mktemp("cli")
    dev = root / "dev.tsv"
    dev.write_text("".join(SAMPLE_DEV.read_text(encoding="utf-8").splitlines(keepends=True)[:121]), encoding="utf-8")
    overrides = [
        "experiment=demo", "task.max_train_examples=64", "task.max_seq_length=32", "task.batch_size=16",
        "task.epochs=1", f"task.dev_file={dev}", f"paths.output_dir={root / 'runs'}",
        "trainer.enable_progress_bar=false",
    ]
    return {"root": root, "dev": dev, "overrides": overrides}


def test_seed_sweep_writes_metrics_and_summary(small):
    sweep = small["root"] / "sweep"
    proc = cxlnet("finetune", *small["overrides"], f"hydra.sweep.dir={sweep}", "-m", "seed=range(2)", cwd=small["root"])
    runs = sorted(sweep.glob("*/metrics.json"))
    assert [p.parent.name for p in runs] == ["seed=0", "seed=1"]
    records = [json.loads(p.read_text()) for p in runs]
    assert [r["seed"] for r in records] == [0, 1]
    summary = json.loads((sweep / "summary.json").read_text())
    accs = [r["metrics"]["dev/acc"] for r in records]
    stats = summary["metrics"]["dev/acc"]
    assert stats["values"] == {"seed=0": accs[0], "seed=1": accs[1]}
    assert stats["max"] == max(accs) and stats["mean"] == pytest.approx(sum(accs) / 2, abs=1e-4)
    assert stats["formatted"] == f"{max(accs):.1f} ({sum(accs) / 2:.1f})"
    assert summary["failed"] == [] and summary["seeds"] == [0, 1]
    assert "max (mean)" in proc.stdout
    assert (sweep / "seed=0" / "model" / "config.json").is_file()
    assert (sweep / "seed=0" / "config.yaml").is_file()
    rec = json.loads((sweep / "seed=0" / "run_record.json").read_text())
    assert sorted(rec["data"]) == ["dev", "train"] and rec["data"]["dev"]["path"] == str(small["dev"])
    assert rec["data"]["dev"]["sha256"] == hashlib.sha256(small["dev"].read_bytes()).hexdigest()
    assert rec["tokenizer"]["path"].endswith("spiece.model") and rec["versions"]["cxlnet"]


LR_SWEEP = ("-m", "optimizer.optim.lr=1e-3,1e-4", "seed=0,1")


@pytest.fixture(scope="module")
def lr_sweep(small) -> Path:
    """2 learning rates x 2 seeds: each job its own directory."""
    sweep = small["root"] / "lr-sweep"
    proc = cxlnet("finetune", *small["overrides"], f"hydra.sweep.dir={sweep}", *LR_SWEEP, cwd=small["root"])
    return sweep, proc


def test_sweep_summary_has_one_group_per_configuration(lr_sweep):
    sweep, proc = lr_sweep
    runs = sorted(p.parent.name for p in sweep.glob("*/metrics.json"))
    assert runs == [f"optimizer.optim.lr={lr},seed={s}" for lr in ("0.0001", "0.001") for s in (0, 1)]
    summary = json.loads((sweep / "summary.json").read_text())
    assert summary["metrics"] is None  # one max (mean) over two learning rates would mean nothing
    groups = {g["label"]: g for g in summary["groups"]}
    assert sorted(groups) == ["optimizer.optim.lr=0.0001", "optimizer.optim.lr=0.001"]
    for label, group in groups.items():
        records = [json.loads((sweep / run / "metrics.json").read_text()) for run in group["runs"]]
        assert [r["seed"] for r in records] == [0, 1] and len({r["config_hash"] for r in records}) == 1
        accs = [r["metrics"]["dev/acc"] for r in records]
        assert group["metrics"]["dev/acc"]["formatted"] == f"{max(accs):.1f} ({sum(accs) / 2:.1f})"
        assert group["metrics"]["dev/acc"]["values"] == dict(zip(group["runs"], accs))
        assert group["config_hash"] == records[0]["config_hash"]
    assert groups["optimizer.optim.lr=0.0001"]["config_hash"] != groups["optimizer.optim.lr=0.001"]["config_hash"]
    table_rows = [line for line in proc.stdout.splitlines() if "optimizer.optim.lr=" in line and "│" in line]
    assert len(table_rows) == 2 and all("±" in line for line in table_rows)  # one printed row per group


def test_sweep_resumes_the_same_configuration_and_refuses_another(lr_sweep, small):
    sweep, _ = lr_sweep
    before = {p: p.read_bytes() for p in sweep.glob("*/metrics.json")}
    proc = cxlnet("finetune", *small["overrides"], f"hydra.sweep.dir={sweep}", *LR_SWEEP, cwd=small["root"])
    assert proc.stdout.count("finished with the same configuration, skipped") + \
        proc.stderr.count("finished with the same configuration, skipped") == 4
    proc = cxlnet("finetune", *small["overrides"], "task.max_seq_length=24", f"hydra.sweep.dir={sweep}", *LR_SWEEP,
                  cwd=small["root"], check=False)
    assert proc.returncode == 2
    message = one_line_error(proc)
    assert "finished with another configuration (hash " in message and "seed=0" in message
    assert {p: p.read_bytes() for p in sweep.glob("*/metrics.json")} == before


def test_resume_check_compares_a_new_seed_with_its_finished_siblings(tmp_path):
    from cxlnet.sweep import ConfigMismatch, check_resume

    sweep = tmp_path / "sweep"
    (sweep / "seed=0" / ".hydra").mkdir(parents=True)
    (sweep / "seed=0" / ".hydra" / "overrides.yaml").write_text("- experiment=demo\n- seed=0\n")
    (sweep / "seed=0" / "metrics.json").write_text(json.dumps({"seed": 0, "metrics": {"dev/acc": 1.0}, "config_hash": "a"}))
    assert check_resume("a", sweep, sweep / "seed=0", ["experiment=demo", "seed=0"])["seed"] == 0  # finished: kept
    assert check_resume("a", sweep, sweep / "seed=1", ["experiment=demo", "seed=1"]) is None  # new seed: runs
    assert check_resume("b", sweep, sweep / "seed=1", ["experiment=demo", "task.epochs=1", "seed=1"]) is None
    (sweep / "seed=1" / ".hydra").mkdir(parents=True)  # what Hydra makes before the job starts
    with pytest.raises(ConfigMismatch, match="seed=0: the sweep's finished runs of these overrides used another"):
        check_resume("b", sweep, sweep / "seed=1", ["experiment=demo", "seed=1"])
    assert not (sweep / "seed=1").exists()  # the refused job leaves no directory
    with pytest.raises(ConfigMismatch, match="seed=0: finished with another configuration .hash a, this one b"):
        check_resume("b", sweep, sweep / "seed=0", ["experiment=demo", "seed=0"])


def test_failed_last_seed_is_one_line_and_in_the_summary(small, tmp_path):
    sweep = tmp_path / "failing"
    proc = cxlnet("finetune", *small["overrides"], f"task.train_file={tmp_path / 'nope.tsv'}",
                  f"hydra.sweep.dir={sweep}", "-m", "seed=0,1", cwd=tmp_path, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stdout + proc.stderr
    assert len((proc.stdout + proc.stderr).splitlines()) < 20, proc.stderr
    summary = json.loads((sweep / "summary.json").read_text())
    assert summary["failed"] == ["seed=0", "seed=1"]
    assert summary["errors"]["seed=1"].startswith(f"{tmp_path / 'nope.tsv'}")
    (line,) = [l for l in proc.stderr.splitlines() if l.startswith("cxlnet finetune: error:")]
    assert "2 of 2 runs failed (seed=0: " in line and "; seed=1: " in line


def test_runs_from_the_shipped_sample_alone(small):
    run = small["root"] / "sample-only"
    cxlnet("finetune", *small["overrides"][:5], f"paths.output_dir={small['root']}", f"hydra.run.dir={run}",
           cwd=small["root"], env={"CXLNET_FULL_DATA_DIR": "/nonexistent"})
    log = (run / "finetune.log").read_text()
    assert f"train {sample_dir() / 'chnsenticorp' / 'train.tsv'}" in log
    assert f"dev {SAMPLE_DEV}" in log
    assert "shared" not in log.split("data: ", 1)[1].splitlines()[0]


def test_same_seed_gives_same_metrics(small):
    first, second = (small["root"] / f"det{i}" for i in range(2))
    for run in (first, second):
        cxlnet("finetune", *small["overrides"], "seed=3", f"hydra.run.dir={run}", cwd=small["root"])
    a, b = (json.loads((run / "metrics.json").read_text())["metrics"] for run in (first, second))
    assert a == b


def test_aggregate_recovers_a_sweep_with_a_failed_seed(small, tmp_path):
    sweep = tmp_path / "sweep"
    for seed in (0, 1):
        run = sweep / f"seed={seed}"
        (run / ".hydra").mkdir(parents=True)
        (run / "metrics.json").write_text(json.dumps(
            {"task": "chnsenticorp", "model": "tiny", "seed": seed, "metrics": {"dev/acc": 90.0 + seed}}))
    (sweep / "seed=2" / ".hydra").mkdir(parents=True)  # started, crashed before metrics.json
    proc = cxlnet("aggregate", str(sweep), cwd=tmp_path)
    summary = json.loads((sweep / "summary.json").read_text())
    assert summary["failed"] == ["seed=2"]
    assert summary["metrics"]["dev/acc"]["formatted"] == "91.0 (90.5)"
    assert "seed=2" in proc.stdout and "91.0 (90.5)" in proc.stdout
    for broken in ('[1, 2]', '{"seed": 3}', '{"metrics": {"dev/acc": "high"}}', '{"metrics": '):
        (sweep / "seed=3").mkdir(exist_ok=True)
        (sweep / "seed=3" / "metrics.json").write_text(broken)
        proc = cxlnet("aggregate", str(sweep), cwd=tmp_path, check=False)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert f"{sweep / 'seed=3' / 'metrics.json'}:" in proc.stderr


def test_finished_run_is_never_overwritten(small):
    run = small["root"] / "finished"
    run.mkdir()
    (run / "metrics.json").write_text('{"metrics": {"dev/acc": 99.0}}')
    proc = cxlnet("finetune", *small["overrides"], f"hydra.run.dir={run}", cwd=small["root"], check=False)
    assert proc.returncode != 0
    assert "already finished" in proc.stderr and "Traceback" not in proc.stderr
    assert (run / "metrics.json").read_text() == '{"metrics": {"dev/acc": 99.0}}'
    assert not (run / ".hydra").exists()


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    """The error line of a failed command: exactly one, and no traceback anywhere."""
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, proc.stderr
    return errors[0]


CASES = ["no_tab", "bad_label", "not_utf8", "missing_file", "missing_spiece", "bad_pretrained", "bad_group", "no_gpu"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_gets_one_clear_line(small, tmp_path, case):
    bad = tmp_path / "train.tsv"
    overrides = {
        "no_tab": [f"task.train_file={bad}"],
        "bad_label": [f"task.train_file={bad}"],
        "not_utf8": [f"task.train_file={bad}"],
        "missing_file": [f"task.train_file={tmp_path / 'nope.tsv'}"],
        "missing_spiece": [f"model.spiece_model={tmp_path / 'nope.model'}"],
        "bad_pretrained": [f"model.pretrained={tmp_path / 'no-weights'}"],
        "bad_group": ["model=huge"],
        "no_gpu": ["hardware=gpu"],  # with CUDA_VISIBLE_DEVICES empty: no GPU even where there is one
    }[case]
    third = {"no_tab": b"0 no tab here\n", "not_utf8": b"1\t\xff\xfe bad\n"}.get(case, b"2\tbad label\n")
    bad.write_bytes(b"label\ttext_a\n1\tgood\n" + third)
    proc = cxlnet("finetune", *small["overrides"], *overrides, f"hydra.run.dir={tmp_path / 'run'}",
                  cwd=tmp_path, check=False, env={"CUDA_VISIBLE_DEVICES": ""})
    if case == "bad_group":  # Hydra's own message (it lists the available options) is the one shown
        assert proc.returncode != 0 and "Traceback" not in proc.stderr
        assert "Could not find 'model/huge'" in proc.stderr and "tiny" in proc.stderr
        return
    message = one_line_error(proc)
    expected = {
        "no_tab": f"{bad}:3: no tab", "bad_label": f"{bad}:3: label '2'", "not_utf8": f"{bad}:3: not valid UTF-8",
        "missing_file": "nope.tsv: ", "missing_spiece": "nope.model: ", "bad_pretrained": "no-weights: no such file",
        "no_gpu": "hardware=gpu: no CUDA GPU",
    }[case]
    assert expected in message, message


def test_read_tsv_keeps_quotes_and_skips_header(tmp_path):
    path = tmp_path / "x.tsv"
    path.write_text('label\ttext_a\n1\t他说"好"\t还有tab\n\n0\t 差 \n', encoding="utf-8")
    examples = read_tsv(path)
    assert [(e.line, e.label, e.text) for e in examples] == [(2, 1, '他说"好"\t还有tab'), (4, 0, " 差 ")]
    path.write_text("label\ttext_a\n", encoding="utf-8")
    with pytest.raises(CxlnetError, match="no examples"):
        read_tsv(path)


def test_cli_help_lists_commands_and_groups(tmp_path):
    top = cxlnet("--help", cwd=tmp_path)
    assert "finetune" in top.stdout and "aggregate" in top.stdout
    unknown = cxlnet("fientune", cwd=tmp_path, check=False)
    assert unknown.returncode == 2 and "unknown command 'fientune'" in unknown.stderr
    groups = cxlnet("finetune", "--help", cwd=tmp_path)
    for group in ("model:", "task:", "hardware:", "optimizer:", "logger:", "sweep:", "experiment:"):
        assert group in groups.stdout
    job = cxlnet("finetune", "model=mid", "hardware=gpu", "task=chnsenticorp", "--cfg", "job", cwd=tmp_path)
    for text in ("batch_size: 48", "max_seq_length: 256", "lr: 2.0e-05", "epochs: 3", "n_layer: 24",
                 "micro_batch_size: auto"):
        assert text in job.stdout


def test_wandb_offline_needs_no_network(small, tmp_path):
    """A two-seed sweep with W&B offline: one run per seed, named by task/model/seed, in one group,
    and nothing reaches the network."""
    sweep = tmp_path / "wandb-sweep"
    # A dead local address: any attempt to reach W&B's servers would fail the run.
    cxlnet("finetune", *small["overrides"], "logger=wandb", f"hydra.sweep.dir={sweep}", "-m", "seed=0,1", cwd=tmp_path,
           env={"WANDB_MODE": "offline", "WANDB_BASE_URL": "http://127.0.0.1:9", "WANDB_API_KEY": ""})
    for seed in (0, 1):
        run = sweep / f"seed={seed}"
        (offline,) = run.glob("wandb/offline-run-*/run-*.wandb")  # its own run, not seed 0's reused
        data = offline.read_bytes()
        assert f"chnsenticorp-tiny-seed{seed}".encode() in data
        assert f"chnsenticorp-tiny-{sweep.name}".encode() in data  # the sweep's group
        assert b"run_record" in data and b"sentencepiece" in data  # the run record is in W&B's config
        assert (run / "metrics.json").is_file()


@pytest.mark.slow
def test_ddp_seed_sweep(small, tmp_path):
    """Two CPU processes (DDP over gloo) per seed, two seeds in one sweep: each job launches its own
    workers (no second sweep from the re-executed command line), the global batch stays the
    recipe's, and accuracy counts each of the 33 dev examples once despite the sampler's padding."""
    dev = tmp_path / "dev33.tsv"
    dev.write_text("".join(SAMPLE_DEV.read_text(encoding="utf-8").splitlines(keepends=True)[:34]), encoding="utf-8")
    runs = tmp_path / "runs"
    proc = cxlnet("finetune", *small["overrides"], f"task.dev_file={dev}", f"paths.output_dir={runs}",
                  "hardware.devices=2", "hardware.strategy=ddp", "-m", "seed=0,1", cwd=tmp_path)
    (sweep,) = runs.glob("chnsenticorp/tiny/sweep_*")  # one sweep directory, not one per process
    assert proc.stdout.count("Launching 2 jobs") == 1
    for seed in (0, 1):
        acc = json.loads((sweep / f"seed={seed}" / "metrics.json").read_text())["metrics"]["dev/acc"]
        assert acc * 33 / 100 == pytest.approx(round(acc * 33 / 100), abs=1e-2), acc
    assert proc.stdout.count("optimizer: adamw lr 1.00e-03, 4 steps") + proc.stderr.count(
        "optimizer: adamw lr 1.00e-03, 4 steps") >= 2  # 64 examples / global batch 16, on 2 processes
    assert json.loads((sweep / "summary.json").read_text())["metrics"]["dev/acc"]["n"] == 2
