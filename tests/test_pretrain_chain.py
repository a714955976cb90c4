"""The pre-train -> fine-tune chain with a tokenizer of the run's own (not hfl's), and what a
pre-training run monitors: held-out validation loss, collapse signal, throughput."""
from __future__ import annotations

import csv
import hashlib
import json
import os
import sys
from pathlib import Path

import pytest
import torch

from cxlnet.paths import sample_dir
from test_finetune_cli import cxlnet  # the real CLI, sample data only, an empty cache

CORPUS = sample_dir() / "corpus" / "zh-hans.txt"
SAMPLE_DEV = sample_dir() / "chnsenticorp" / "dev.tsv"

VOCAB = 3000  # not hfl's 32000: a chain that falls back to hfl's tokenizer fails loudly


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> dict:
    """vocab (3,000 pieces) -> data (4 shards, the last held out) -> 6 tiny training steps whose
    collapse threshold (5) lies above any spread, so the run must warn."""
    from cxlnet import cli
    from cxlnet.pretrain.vocab import train_vocab

    root = tmp_path_factory.mktemp("chain")
    corpus = root / "slice.txt"
    corpus.write_text("".join(CORPUS.read_text(encoding="utf-8").splitlines(keepends=True)[:800]), encoding="utf-8")
    common = [f"paths.output_dir={root / 'runs'}"]
    train_vocab([corpus], root / "sp", vocab_size=VOCAB, num_threads=1)
    argv0 = sys.argv[:]
    try:
        assert cli.main(["data", f"data.corpus=[{corpus}]", f"data.spiece_model={root / 'sp.model'}",
                         f"data.out_dir={root / 'store'}", "data.num_shards=4", *common]) in (0, None)
    finally:
        sys.argv = argv0
        os.environ.pop(cli.ENV_COMMAND, None)
    proc = cxlnet("train", "experiment=pretrain_demo", "logger=csv", "trainer.enable_progress_bar=false", "data.bsz=4",
                  "data.seq_len=32", "data.reuse_len=16", "data.perm_size=16", "data.num_predict=6", "mem_len=16",
                  "data.num_workers=0", "train.max_steps=6", "train.save_steps=3", "optimizer.warmup_steps=2",
                  "optimizer.optim.lr=1e-3", f"data.store={root / 'store'}", "run_name=run", "monitor.every_n_steps=3",
                  "monitor.throughput_window=2", "monitor.peak_flops=1e12", "monitor.collapse_threshold=5",
                  "trainer.log_every_n_steps=1", *common, cwd=root)
    # the store's tokenizer moves away: the run must not depend on where it was
    (root / "sp.model").rename(root / "moved.model")
    dev = root / "dev.tsv"
    dev.write_text("".join(SAMPLE_DEV.read_text(encoding="utf-8").splitlines(keepends=True)[:41]), encoding="utf-8")
    finetune = ["experiment=demo", "task.max_train_examples=32", "task.max_seq_length=32", "task.batch_size=16",
                "task.epochs=1", f"task.dev_file={dev}", "trainer.enable_progress_bar=false", *common]
    return {"root": root, "run": root / "runs" / "pretrain" / "run", "spiece": root / "moved.model", "common": common,
            "finetune": finetune, "train_log": proc.stdout + proc.stderr}


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
    from omegaconf import OmegaConf

    from cxlnet.model import XLNetForSequenceClassification
    from cxlnet.runs import model_loader

    from cxlnet.confdir import conf_dir

    cfg = OmegaConf.create({"model": OmegaConf.load(conf_dir() / "model" / "tiny.yaml")})  # vocab_size: null
    assert cfg.model.config.vocab_size is None and cfg.model.pretrained is None
    assert model_loader(cfg, VOCAB)(XLNetForSequenceClassification, num_labels=2).config.vocab_size == VOCAB
    cfg.model.config.vocab_size = 500  # an explicit size still wins (and is checked against the tokenizer)
    with pytest.raises(Exception, match="vocab size 500 differs from the tokenizer's 3000"):
        model_loader(cfg, VOCAB)(XLNetForSequenceClassification, num_labels=2)


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
    assert {"val/loss", "val/content_spread", "train/device/items_per_sec", "train/device/mfu"} <= columns, columns
    mfu = [float(r["train/device/mfu"]) for r in logged if r.get("train/device/mfu")]
    tokens = [float(r["train/device/items_per_sec"]) for r in logged if r.get("train/device/items_per_sec")]
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


def test_collapse_warning(chain):
    """The fixture's threshold lies above any spread: the run warned, once, and still finished. Its
    lr 1e-3 with 2 warm-up steps also draws the early-update warning (5.0x lr at step 3)."""
    assert chain["train_log"].count("the content stream has collapsed") == 1, chain["train_log"][-2000:]
    assert "its update at step 3 is 5.0x the peak lr 1.0e-03" in chain["train_log"], chain["train_log"][-2000:]
    assert (chain["run"] / "metrics.json").is_file()


def test_early_update_scale_is_what_adam_weight_decay_does():
    """The collapse's cause in numbers: AdamWeightDecay (no bias correction) under a constant
    gradient moves a weight by lr(t)·(1-β1^t)/√(1-β2^t) per step; `early_update_scale` predicts it."""
    from omegaconf import OmegaConf

    from cxlnet.confdir import CONF_DIR
    from cxlnet.optim import AdamWeightDecay
    from cxlnet.pretrain.monitor import early_update_scale
    from cxlnet.training import lr_lambda

    w = torch.nn.Parameter(torch.zeros(1))
    opt = AdamWeightDecay([w], lr=1.0, eps=0.0, weight_decay=0.0)
    factor = lr_lambda(30, 300, 0.001)
    moves = []
    for t in range(300):
        for group in opt.param_groups:
            group["lr"] = factor(t)
        before = float(w.detach())
        w.grad = torch.ones(1)
        opt.step()
        moves.append(before - float(w.detach()))
    scale, step = early_update_scale(30, 300, 0.001, (0.9, 0.999))
    assert max(moves) == pytest.approx(scale, rel=1e-5) and moves.index(max(moves)) + 1 == step
    assert scale > 5  # the old demo preset (1e-3, 30 warm-up steps): 5.5x lr at step 31
    demo = OmegaConf.load(Path(CONF_DIR) / "experiment" / "pretrain_demo.yaml")
    scale, _ = early_update_scale(demo.optimizer.warmup_steps, demo.train.max_steps, 0.001, (0.9, 0.999))
    assert scale * float(demo.optimizer.optim.lr) < 5e-4  # the demo's largest update stays below 5e-4


@pytest.mark.slow
def test_query_stream_learns_from_context():
    """Two-stream masks end to end: on sequences where every token follows from any other (an
    arithmetic progression mod V), the permutation LM must fall far below ln V (~4.1 nats),
    which it cannot do unless the query stream sees the non-target context."""
    import numpy as np

    from cxlnet.model import XLNetConfig, XLNetLMHeadModel
    from cxlnet.pretrain.examples import block_order, local_perm_mask
    from cxlnet.pretrain.module import lm_loss

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    V, B, L, P = 50, 8, 32, 6
    model = XLNetLMHeadModel(XLNetConfig.named("tiny", vocab_size=V + 10, dropout=0.0, dropatt=0.0))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(200):
        x = 10 + (rng.integers(0, V, (B, 1)) + np.arange(L)) % V
        masked = np.zeros((B, L), bool)
        for b in range(B):
            masked[b, rng.choice(L, P, replace=False)] = True
        perm, target = local_perm_mask(x, masked, block_order(np.argsort(rng.random((B, 16)), 1), L))
        rows, cols = np.nonzero(target)
        slots = (np.cumsum(target, 1) - 1)[rows, cols]
        mapping = torch.zeros(B, P, L)
        mapping[rows, slots, cols] = 1.0
        labels = torch.zeros(B, P, dtype=torch.long)
        labels[rows, slots] = torch.from_numpy(x[rows, cols])
        out = model(torch.from_numpy(x), perm_mask=torch.from_numpy(perm).float(), target_mapping=mapping)
        loss = lm_loss(out.logits, labels, torch.ones(B, P))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < 2.0


@pytest.mark.slow
def test_demo_pretraining_keeps_the_content_stream(tmp_path):
    """`make pretrain-demo` (8,000 pieces, the shipped corpus sample, experiment=pretrain_demo): the
    held-out loss falls and the content stream stays spread (the old lr 1e-3 / 30-step warm-up
    preset ended near 0.05 and fine-tuned to chance accuracy)."""
    common = [f"paths.output_dir={tmp_path}", "trainer.enable_progress_bar=false"]
    cxlnet("vocab", "vocab.vocab_size=8000", *common[:1], cwd=tmp_path)
    cxlnet("data", *common[:1], cwd=tmp_path)
    cxlnet("train", "experiment=pretrain_demo", *common, cwd=tmp_path)
    metrics = json.loads((tmp_path / "pretrain" / "pretrain-demo" / "metrics.json").read_text())["metrics"]
    assert metrics["val_loss"] < metrics["first_val_loss"] - 1.0
    assert metrics["content_spread"] > 0.5, metrics
