"""The pre-train -> fine-tune chain with a tokenizer of the run's own (not hfl's), and what a
pre-training run monitors: held-out validation loss, collapse signal, throughput."""
from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cxlnet.paths import sample_dir

CORPUS = sample_dir() / "corpus" / "zh-hans.txt"
SAMPLE_DEV = sample_dir() / "chnsenticorp" / "dev.tsv"

VOCAB = 3000  # not hfl's 32000: a chain that falls back to hfl's tokenizer fails loudly


def cxlnet(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled", "CXLNET_CACHE_DIR": str(Path(cwd) / "cache")}
    for name in ("HYDRA_FULL_ERROR", "CXLNET_DATA_DIR"):
        env.pop(name, None)
    proc = subprocess.run([sys.executable, "-m", "cxlnet", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, f"cxlnet {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return proc


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> dict:
    """vocab (3,000 pieces) -> data (4 shards, the last held out) -> 6 tiny training steps."""
    root = tmp_path_factory.mktemp("chain")
    corpus = root / "slice.txt"
    corpus.write_text("".join(CORPUS.read_text(encoding="utf-8").splitlines(keepends=True)[:800]), encoding="utf-8")
    common = [f"paths.output_dir={root / 'runs'}"]
    cxlnet("vocab", f"vocab.inputs=[{corpus}]", f"vocab.vocab_size={VOCAB}", f"vocab.output={root / 'sp'}",
           "vocab.num_threads=1", *common, cwd=root)
    cxlnet("data", f"data.corpus=[{corpus}]", f"data.spiece_model={root / 'sp.model'}", f"data.out_dir={root / 'store'}",
           "data.num_shards=4", *common, cwd=root)
    cxlnet("train", "experiment=pretrain_demo", "logger=csv", "trainer.enable_progress_bar=false", "data.bsz=4",
           "data.seq_len=32", "data.reuse_len=16", "data.perm_size=16", "data.num_predict=6", "mem_len=16",
           "data.num_workers=0", "train.max_steps=6", "train.save_steps=3", "optimizer.warmup_steps=2",
           f"data.store={root / 'store'}", "run_name=run", "monitor.every_n_steps=3", "monitor.throughput_window=2",
           "monitor.peak_flops=1e12", "trainer.log_every_n_steps=1", *common, cwd=root)
    # the store's tokenizer moves away: the run must not depend on where it was
    (root / "sp.model").rename(root / "moved.model")
    dev = root / "dev.tsv"
    dev.write_text("".join(SAMPLE_DEV.read_text(encoding="utf-8").splitlines(keepends=True)[:41]), encoding="utf-8")
    finetune = ["experiment=demo", "task.max_train_examples=32", "task.max_seq_length=32", "task.batch_size=16",
                "task.epochs=1", f"task.dev_file={dev}", "trainer.enable_progress_bar=false", *common]
    return {"root": root, "run": root / "runs" / "pretrain" / "run", "spiece": root / "moved.model", "common": common,
            "finetune": finetune}


def test_run_checkpoint_and_export_carry_the_tokenizer(chain, monkeypatch, tmp_path):
    run, want = chain["run"], sha256(chain["spiece"])
    assert sha256(run / "spiece.model") == want and sha256(run / "model" / "spiece.model") == want
    record = json.loads((run / "tokenizer.json").read_text())
    assert record["sha256"] == want and record["vocab_size"] == VOCAB
    state = torch.load(run / "checkpoints" / "step-00000003.ckpt", map_location="cpu", weights_only=True)
    assert hashlib.sha256(state["cxlnet_pretrain"]["tokenizer"]["spiece_model"]).hexdigest() == want

    from omegaconf import OmegaConf

    from cxlnet.runs import resolve_spiece

    monkeypatch.setenv("CXLNET_CACHE_DIR", str(tmp_path / "cache"))
    for pretrained in (run, run / "checkpoints" / "step-00000003.ckpt"):  # the export of a checkpoint too
        cfg = OmegaConf.create({"paths": {"data_dir": "auto"}, "model": {
            "pretrained": str(pretrained), "spiece_model": "auto", "fallback_spiece_model": "nope.model"}})
        assert sha256(resolve_spiece(cfg)) == want, pretrained
    cfg.model.spiece_model = str(chain["spiece"])  # an explicit tokenizer wins
    assert resolve_spiece(cfg) == chain["spiece"]


def test_finetune_from_the_run_uses_its_tokenizer(chain):
    """`cxlnet finetune model.pretrained=<run>` with no tokenizer flag; the fine-tuned run keeps it."""
    out = chain["root"] / "ft"
    cxlnet("finetune", *chain["finetune"], f"model.pretrained={chain['run']}", f"hydra.run.dir={out}",
           cwd=chain["root"])
    assert json.loads((out / "model" / "config.json").read_text())["vocab_size"] == VOCAB
    assert sha256(out / "model" / "spiece.model") == sha256(chain["spiece"])


def test_random_init_takes_the_vocab_size_of_the_tokenizer(chain):
    out = chain["root"] / "scratch"
    cxlnet("finetune", *chain["finetune"], f"model.spiece_model={chain['spiece']}", f"hydra.run.dir={out}",
           cwd=chain["root"])
    assert json.loads((out / "model" / "config.json").read_text())["vocab_size"] == VOCAB


def test_validation_loss_collapse_signal_and_throughput_are_logged(chain):
    run = chain["run"]
    rows = [line.split("\t") for line in (run / "val.tsv").read_text().splitlines()]
    assert [int(r[0]) for r in rows] == [0, 3, 6]  # before the first update, every 3 steps, after the last
    val_loss = [float(r[1]) for r in rows]
    assert abs(val_loss[0] - torch.log(torch.tensor(float(VOCAB))).item()) < 0.3  # untrained: about ln V
    assert all(0.5 < float(r[2]) <= 1.5 for r in rows)  # a healthy tiny model: spread near 1
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    assert metrics["val_loss"] == pytest.approx(val_loss[-1], abs=1e-4)
    assert metrics["first_content_spread"] == pytest.approx(float(rows[0][2]), abs=1e-4)
    with open(next(run.glob("csv/**/metrics.csv")), newline="") as fh:
        logged = list(csv.DictReader(fh))
    columns = set(logged[0])
    assert {"val/loss", "val/content_spread", "train|device|items_per_sec", "train|device|mfu"} <= columns, columns
    mfu = [float(r["train|device|mfu"]) for r in logged if r.get("train|device|mfu")]
    tokens = [float(r["train|device|items_per_sec"]) for r in logged if r.get("train|device|items_per_sec")]
    assert mfu and all(0 < m < 1 for m in mfu) and tokens and all(t > 0 for t in tokens)


def test_content_spread_measures_collapse():
    from cxlnet.model import XLNetConfig, XLNetLMHeadModel
    from cxlnet.pretrain.monitor import content_spread

    torch.manual_seed(0)
    model = XLNetLMHeadModel(XLNetConfig.named("tiny", vocab_size=100)).eval()
    batch = {"input_ids": torch.randint(10, 100, (2, 16)), "token_type_ids": torch.zeros(2, 16, dtype=torch.long)}
    assert content_spread(model, batch) > 0.8  # random init: states differ across positions
    with torch.no_grad():  # every word the same embedding and no position signal left: collapsed
        model.transformer.word_embedding.weight[:] = model.transformer.word_embedding.weight[0]
        for layer in model.transformer.layer:
            layer.rel_attn.r.weight.zero_()
    assert content_spread(model, batch) < 0.01


def test_collapse_warning(chain, capsys):
    """A threshold above any spread: the run warns (once) and still finishes."""
    proc = cxlnet("train", "experiment=pretrain_demo", "logger=none", "trainer.enable_progress_bar=false",
                  "data.bsz=4", "data.seq_len=32", "data.reuse_len=16", "data.perm_size=16", "data.num_predict=6",
                  "mem_len=16", "data.num_workers=0", "train.max_steps=2", f"data.store={chain['root'] / 'store'}",
                  "run_name=warn", "monitor.every_n_steps=1", "monitor.collapse_threshold=5", "monitor.throughput=false",
                  *chain["common"], cwd=chain["root"])
    log = proc.stdout + proc.stderr
    assert log.count("the content stream has collapsed") == 1, log[-2000:]
