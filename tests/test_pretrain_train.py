"""`cxlnet vocab | data | train | export` end to end on a slice of the shipped corpus (CPU, tiny model).

Golden loss curve: `tests/golden/pretrain_tiny.json` holds the first 20 losses of a fixed tiny run
(first 800 lines of the shipped corpus, hfl's spiece.model, see GOLDEN_OVERRIDES). It is compared
with a relative tolerance of 1e-4. Regenerate it deliberately (after an intended change of the
model, data pipeline or optimizer) with

    CXLNET_REGEN_GOLDEN=1 .venv/bin/pytest tests/test_pretrain_train.py -k golden
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from conftest import cli_env, cxlnet_inproc, cxlnet_subprocess
from cxlnet.confdir import conf_dir
from cxlnet.paths import sample_dir
from cxlnet.pretrain.commands import read_losses

GOLDEN = Path(__file__).parent / "golden" / "pretrain_tiny.json"
HFL_SPIECE = sample_dir() / "pretrained" / "hfl-chinese-xlnet-base" / "spiece.model"
CORPUS = sample_dir() / "corpus" / "zh-hans.txt"
STEPS = 20
GOLDEN_OVERRIDES = [
    "experiment=pretrain_demo", "logger=none", "trainer.enable_progress_bar=false", "seed=0",
    "data.bsz=4", "data.seq_len=32", "data.reuse_len=16", "data.perm_size=16", "data.num_predict=6",
    "mem_len=16", "optimizer.optim.lr=1e-3", "optimizer.warmup_steps=5", f"train.max_steps={STEPS}", "train.save_steps=5",
    "data.num_workers=0",
]


def cxlnet_proc(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    # one thread: the float reduction order (and so the golden curve) does not depend on the core count
    return cxlnet_subprocess(*args, cwd=cwd, check=check, env=cli_env(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1"))


def error_line(rc: int, err: str) -> str:
    assert rc != 0
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip() and "[INFO]" not in ln and "[WARNING]" not in ln]
    assert any("error" in ln.lower() for ln in lines), err
    return "\n".join(lines)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> dict:
    """A token store of the first 800 corpus lines (hfl's vocabulary), built through `cxlnet data`."""
    root = tmp_path_factory.mktemp("pretrain")
    lines = CORPUS.read_text(encoding="utf-8").splitlines(keepends=True)[:800]
    corpus = root / "slice.txt"
    corpus.write_text("".join(lines), encoding="utf-8")
    store = root / "store"
    cxlnet_proc("data", f"data.corpus=[{corpus}]", f"data.spiece_model={HFL_SPIECE}", f"data.out_dir={store}",
                "data.num_shards=2", f"paths.output_dir={root / 'runs'}", cwd=root)
    assert (store / "store.json").is_file()
    return {"root": root, "store": store, "runs": root / "runs"}


def train_args(work: dict, run_name: str, *extra: str) -> list[str]:
    return ["train", *GOLDEN_OVERRIDES, f"data.store={work['store']}", f"paths.output_dir={work['runs']}",
            f"run_name={run_name}", *extra]


@pytest.fixture(scope="module")
def straight(work) -> Path:
    """20 steps in one go."""
    cxlnet_proc(*train_args(work, "straight"), cwd=work["root"])
    return work["runs"] / "pretrain" / "straight"


def losses_of(run: Path) -> list[float]:
    rows = read_losses(run / "losses.tsv")
    assert [s for s, _, _ in rows] == list(range(len(rows)))
    return [loss for _, loss, _ in rows]


def test_golden_loss_curve(straight):
    losses = losses_of(straight)
    assert len(losses) == STEPS
    if os.environ.get("CXLNET_REGEN_GOLDEN"):
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(json.dumps({
            "description": "cxlnet train, tiny XLNet, first 800 lines of cxlnet/sample/corpus/zh-hans.txt, "
                           "hfl spiece.model; see tests/test_pretrain_train.py",
            "overrides": GOLDEN_OVERRIDES, "torch": torch.__version__, "losses": losses}, indent=1) + "\n")
        pytest.skip(f"regenerated {GOLDEN}")
    golden = json.loads(GOLDEN.read_text())
    assert golden["overrides"] == GOLDEN_OVERRIDES, "the golden config changed: regenerate deliberately"
    assert losses == pytest.approx(golden["losses"], rel=1e-4)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5  # the LM loss falls
    metrics = json.loads((straight / "metrics.json").read_text())
    assert metrics["steps"] == STEPS and metrics["metrics"]["first_loss"] == pytest.approx(losses[0], abs=1e-4)
    assert {p.name for p in (straight / "checkpoints").glob("*.ckpt")} >= {"last.ckpt", "step-00000020.ckpt"}


def test_resume_continues_the_same_loss_curve(work, straight):
    """Stopped at step 13, resumed from the in-loop step-10 checkpoint for 5 steps to 15, then from last.ckpt to 20:
    data position, optimizer + LR state, RNG and memories restored -> the straight run's curve."""
    args = train_args(work, "resumed")
    run = work["runs"] / "pretrain" / "resumed"
    cxlnet_proc(*args, "train.stop_after=13", cwd=work["root"])
    assert not (run / "metrics.json").exists() and not (run / "model").exists()
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 13
    mems = ckpt["cxlnet_pretrain"]["mems"][0]
    assert len(mems) == 2 and mems[0].shape == (4, 16, 64) and mems[0].abs().sum() > 0
    # train.stop_after counts this invocation's steps: from step 10, 5 more
    cxlnet_proc(*args, f"train.ckpt_path={run / 'checkpoints' / 'step-00000010.ckpt'}", "train.stop_after=5",
                cwd=work["root"])
    assert len(losses_of(run)) == 15
    cxlnet_proc(*args, cwd=work["root"])  # the same command again: resumes from last.ckpt
    assert losses_of(run) == pytest.approx(losses_of(straight), rel=1e-6, abs=1e-7)
    again = cxlnet_proc(*args, cwd=work["root"], check=False)
    assert again.returncode != 0 and "already finished" in again.stderr


def test_resume_with_other_data_or_settings_is_refused(work):
    """The checkpoint records what fixes the stream and the training settings; resuming it on other
    data or with another optimizer setting is one clear line."""
    args = train_args(work, "other-data")
    cxlnet_proc(*args, "train.stop_after=2", cwd=work["root"])
    proc = cxlnet_proc(*args, "data.num_predict=5", cwd=work["root"], check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "trained on other data (num_predict 6 -> 5)" in proc.stderr, proc.stderr
    proc = cxlnet_proc(*args, "optimizer.optim.lr=2e-3", cwd=work["root"], check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "trained with other settings (optimizer.optim.lr 0.001 -> 0.002)" in proc.stderr, proc.stderr


@pytest.mark.slow
def test_ddp_resume_restores_every_ranks_memory(work):
    """Two CPU processes (DDP over gloo), one row slice and one memory each: a run stopped after 3
    steps and resumed gives the straight run's loss curve, so rank 1's memory was saved too."""
    ddp = ["hardware.devices=2", "hardware.strategy=ddp", "train.max_steps=6"]
    cxlnet_proc(*train_args(work, "ddp-straight", *ddp), cwd=work["root"])
    args = train_args(work, "ddp-resumed", *ddp)
    cxlnet_proc(*args, "train.stop_after=3", cwd=work["root"])
    ckpt = torch.load(work["runs"] / "pretrain" / "ddp-resumed" / "checkpoints" / "last.ckpt", map_location="cpu",
                      weights_only=True)
    assert sorted(ckpt["cxlnet_pretrain"]["mems"]) == [0, 1]
    cxlnet_proc(*args, cwd=work["root"])
    straight = losses_of(work["runs"] / "pretrain" / "ddp-straight")
    assert len(straight) == 6
    assert losses_of(work["runs"] / "pretrain" / "ddp-resumed") == pytest.approx(straight, rel=1e-6, abs=1e-7)


def test_export_loads_in_transformers(work, straight, capsys):
    transformers = pytest.importorskip("transformers")
    out = work["root"] / "exported"
    rc, err = cxlnet_inproc(capsys, "export", str(straight), str(out))
    assert rc == 0, err
    hf, info = transformers.XLNetLMHeadModel.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    from cxlnet.model import XLNetLMHeadModel

    ours = XLNetLMHeadModel.from_pretrained(straight / "model").eval()
    hf.eval()
    ids = torch.tensor([[20, 30, 40, 50, 4, 3]])
    with torch.no_grad():
        assert torch.allclose(hf(ids).logits, ours(ids).logits, atol=1e-4)
    assert (straight / "model" / "spiece.model").is_file()
    card = (out / "README.md").read_text(encoding="utf-8")
    last10 = json.loads((straight / "metrics.json").read_text())["metrics"]["last10_loss"]
    assert "model-index:" in card and "type: fill-mask" in card and f"value: {round(last10, 4)}" in card
    rec = json.loads((straight / "run_record.json").read_text())  # the run record of a pre-training run
    assert {"store/store.json", "store/shard-00000.ids.npy", "store/shard-00001.sent.npy"} <= set(rec["data"])
    assert rec["tokenizer"]["sha256"] == json.loads((work["store"] / "store.json").read_text())["tokenizer"]["sha256"]


def test_unigram_prior_is_the_smoothed_frequency_of_the_training_shards(work):
    import numpy as np

    from cxlnet.pretrain.commands import unigram_log_prior
    from cxlnet.pretrain.corpus import TokenStore

    ids = np.load(work["store"] / "shard-00000.ids.npy").astype(np.int64)  # shard 1 is held out: not counted
    counts = np.bincount(ids, minlength=32000)
    prior = unigram_log_prior(TokenStore(work["store"]), [0], 32000)
    assert prior.shape == (32000,) and float(prior.exp().sum()) == pytest.approx(1.0, abs=1e-5)
    assert prior.numpy() == pytest.approx(np.log((counts + 1) / (counts.sum() + 32000)), abs=1e-6)


def test_unigram_bias_init_starts_at_the_unigram_loss(work, straight):
    """`train.lm_bias_init=unigram`: the first loss is about the targets' unigram cross-entropy
    (a few nats), not ln(vocab) = 10.37 of the zero bias (the tied logits start near zero)."""
    args = [a for a in train_args(work, "unigram", "train.lm_bias_init=unigram") if not a.startswith("train.max_steps")]
    cxlnet_proc(*args, "train.max_steps=2", cwd=work["root"])
    zero_first, unigram_first = losses_of(straight)[0], losses_of(work["runs"] / "pretrain" / "unigram")[0]
    assert zero_first == pytest.approx(10.37, abs=0.15)
    assert unigram_first < zero_first - 2.0


def test_finetune_loads_run_dir_and_checkpoint(work, straight, monkeypatch, tmp_path):
    from omegaconf import OmegaConf

    from cxlnet.model import XLNetForSequenceClassification, XLNetLMHeadModel
    from cxlnet.runs import model_loader

    monkeypatch.setenv("CXLNET_CACHE_DIR", str(tmp_path / "cache"))
    exported = XLNetLMHeadModel.from_pretrained(straight / "model")
    for pretrained in (straight, straight / "checkpoints" / "last.ckpt", straight / "checkpoints" / "step-00000010.ckpt"):
        cfg = OmegaConf.create({"model": OmegaConf.load(conf_dir() / "model" / "tiny.yaml")})
        cfg.model.pretrained, cfg.model.spiece_model = str(pretrained), str(HFL_SPIECE)
        model = model_loader(cfg, 32000)(XLNetForSequenceClassification, num_labels=2)
        same = torch.equal(model.transformer.word_embedding.weight, exported.transformer.word_embedding.weight)
        assert same == (pretrained.suffix != ".ckpt" or pretrained.name == "last.ckpt"), pretrained
        assert model.config.mem_len is None and not model.config.bi_data


def test_vocab_command_and_too_large(work, capsys, tmp_path):
    rc, err = cxlnet_inproc(capsys, "vocab", f"vocab.inputs=[{work['root'] / 'slice.txt'}]", "vocab.vocab_size=3000",
                            f"vocab.output={tmp_path / 'sp'}", f"paths.output_dir={tmp_path}", "vocab.num_threads=1")
    assert rc == 0, err
    from cxlnet.text import Tokenizer

    assert Tokenizer(tmp_path / "sp.model").vocab_size == 3000
    rc, err = cxlnet_inproc(capsys, "vocab", f"vocab.inputs=[{work['root'] / 'slice.txt'}]",
                            f"vocab.output={tmp_path / 'big'}", f"paths.output_dir={tmp_path}", "vocab.num_threads=1")
    assert "the largest size that works is" in error_line(rc, err)


def test_vocab_and_data_bad_input(work, capsys, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    bad = tmp_path / "bad.txt"
    bad.write_bytes("第一行。\n第二行。\n".encode() + b"\xff\xfe broken\n")
    common = [f"paths.output_dir={tmp_path}"]
    rc, err = cxlnet_inproc(capsys, "vocab", f"vocab.inputs=[{empty}]", f"vocab.output={tmp_path / 'v'}", *common)
    assert "no non-blank line" in error_line(rc, err)
    data = ["data", f"data.spiece_model={HFL_SPIECE}", f"data.out_dir={tmp_path / 'store'}", *common]
    rc, err = cxlnet_inproc(capsys, *data, f"data.corpus=[{empty}]")
    assert "empty corpus" in error_line(rc, err)
    rc, err = cxlnet_inproc(capsys, *data, f"data.corpus=[{bad}]")
    assert f"{bad}:3: not valid UTF-8" in error_line(rc, err)
    rc, err = cxlnet_inproc(capsys, *data, f"data.corpus=[{tmp_path / 'missing.txt'}]")
    assert "missing.txt" in error_line(rc, err)


def test_data_without_document_breaks_warns(capsys, tmp_path, caplog):
    flat = tmp_path / "flat.txt"
    flat.write_text("".join(ln for ln in CORPUS.read_text(encoding="utf-8").splitlines(keepends=True)[:60]
                            if ln.strip()), encoding="utf-8")
    rc, err = cxlnet_inproc(capsys, "data", f"data.corpus=[{flat}]", f"data.spiece_model={HFL_SPIECE}",
                            f"data.out_dir={tmp_path / 'store'}", f"paths.output_dir={tmp_path}")
    assert rc == 0, err
    assert "no blank line" in err + caplog.text
    assert (tmp_path / "store" / "store.json").is_file()


def test_data_rejects_vocab_with_wrong_special_ids(work, capsys, tmp_path):
    from cxlnet.pretrain.vocab import train_vocab

    plain = train_vocab([work["root"] / "slice.txt"], tmp_path / "plain", vocab_size=3000, num_threads=1,
                        control_symbols=[], user_defined_symbols=[], check_layout=False)
    rc, err = cxlnet_inproc(capsys, "data", f"data.corpus=[{work['root'] / 'slice.txt'}]",
                            f"data.spiece_model={plain}", f"data.out_dir={tmp_path / 'store'}",
                            f"paths.output_dir={tmp_path}")
    assert "plain.model" in error_line(rc, err)


def test_train_bad_input(work, capsys, tmp_path):
    from cxlnet.model import XLNetConfig, XLNetLMHeadModel

    small = tmp_path / "small-vocab"
    XLNetLMHeadModel(XLNetConfig.named("tiny", vocab_size=100)).save_pretrained(small)
    base = [*GOLDEN_OVERRIDES, f"paths.output_dir={tmp_path / 'runs'}", "train.max_steps=1"]
    rc, err = cxlnet_inproc(capsys, "train", *base, f"data.store={work['store']}", f"model.pretrained={small}")
    message = error_line(rc, err)
    assert "vocab size 100 differs from the tokenizer's 32000" in message, message
    rc, err = cxlnet_inproc(capsys, "train", *base, f"data.store={tmp_path / 'nostore'}")
    assert "nostore" in error_line(rc, err)
    # raised inside a data-loader worker process: still the one line, not the worker's traceback
    rc, err = cxlnet_inproc(capsys, "train", *base, f"data.store={work['store']}", "data.num_workers=1",
                            "data.bsz=512", "data.seq_len=512", "data.reuse_len=256", "data.perm_size=256",
                            "run_name=worker-error")
    message = error_line(rc, err)
    assert "corpus too small" in message and "DataLoader worker" not in message, message
    rc, err = cxlnet_inproc(capsys, "export", str(tmp_path), str(tmp_path / "out"))
    assert "checkpoints/last.ckpt" in error_line(rc, err)


def test_checkpoint_writes_are_atomic(tmp_path, monkeypatch):
    """A checkpoint write that dies half-way leaves the previous checkpoint intact and no stray file."""
    from cxlnet.pretrain.commands import atomic_checkpoint_io

    io = atomic_checkpoint_io("cpu")
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"step": 1, "w": torch.ones(3)}, path)
    real_save = torch.save

    def dies_half_way(obj, f, *args, **kwargs):
        real_save({"step": "partial"}, f, *args, **kwargs)
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint({"step": 2, "w": torch.zeros(3)}, path)
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.load(path, weights_only=True)["step"] == 1
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]


def test_adam_weight_decay_matches_xlnet_formula():
    from cxlnet.optim import AdamWeightDecay

    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = AdamWeightDecay([{"params": [p], "weight_decay": 0.01}], lr=0.1, eps=1e-6)
    m = v = torch.zeros(2)
    theta = p.detach().clone()
    for g in (torch.tensor([0.5, -1.0]), torch.tensor([0.2, 0.3])):
        p.grad = g.clone()
        opt.step()
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        theta = theta - 0.1 * (m / (v.sqrt() + 1e-6) + 0.01 * theta)  # no bias correction
        assert torch.allclose(p.detach(), theta, atol=1e-7)


@pytest.mark.slow
def test_accumulation_resume_and_slices(work):
    """Gradient accumulation (2 micro-batches = row slices, one memory each) also resumes exactly."""
    args = train_args(work, "acc", "hardware.micro_batch_size=2", "train.max_steps=8")
    cxlnet_proc(*args, cwd=work["root"])
    acc = work["runs"] / "pretrain" / "acc"
    args2 = train_args(work, "acc2", "hardware.micro_batch_size=2", "train.max_steps=8")
    cxlnet_proc(*args2, "train.stop_after=3", cwd=work["root"])
    ckpt = torch.load(work["runs"] / "pretrain" / "acc2" / "checkpoints" / "last.ckpt", map_location="cpu",
                      weights_only=True)
    assert sorted(ckpt["cxlnet_pretrain"]["mems"]) == [0, 1]
    cxlnet_proc(*args2, cwd=work["root"])
    assert losses_of(work["runs"] / "pretrain" / "acc2") == pytest.approx(losses_of(acc), rel=1e-6, abs=1e-7)


@pytest.mark.parametrize("preset", ["pretrain_mid", "pretrain_mid_gpu", "pretrain_demo"])
def test_experiment_presets_compose(preset):
    from hydra import compose, initialize_config_dir

    from cxlnet.confdir import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"experiment={preset}"])
    d, opt = cfg.data, cfg.optimizer
    if preset == "pretrain_demo":
        assert cfg.model.name == "tiny" and cfg.hardware.accelerator == "cpu" and d.bsz == 8
        return
    assert (d.bsz, d.seq_len, d.reuse_len, cfg.mem_len, d.perm_size, d.num_predict) == (32, 512, 256, 384, 256, 85)
    assert (d.mask_alpha, d.mask_beta, d.bi_data, cfg.model.config.n_layer) == (6, 1, True, 24)
    assert (opt.optim._target_, opt.optim.lr, opt.optim.eps, opt.optim.weight_decay) == (
        "cxlnet.optim.AdamWeightDecay", 1e-4, 1e-6, 0.01)
    assert (opt.warmup_steps, opt.min_lr_ratio, cfg.train.max_steps, cfg.trainer.gradient_clip_val) == (
        20000, 0.001, 2_000_000, 1.0)
    assert (cfg.model.config.dropout, cfg.model.config.dropatt) == (0.1, 0.1)
    if preset == "pretrain_mid":
        assert cfg.hardware.accelerator == "tpu" and cfg.hardware.micro_batch_size is None  # 32 = 8 cores x 4
    else:
        assert cfg.hardware.precision == "bf16-mixed" and cfg.hardware.micro_batch_size == 8  # 32 = 1 GPU x 8 x 4
