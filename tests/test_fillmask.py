"""Weight sanity: the provenance report of a `model.pretrained` load and `cxlnet predict
task=fillmask` on a tiny XLNet trained here to memorise one sentence with the permutation LM."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
from rich.console import Console

from cxlnet import cli
from cxlnet.fillmask import encode_masked, fill_masks
from cxlnet.model import XLNetConfig, XLNetForSequenceClassification, XLNetLMHeadModel
from cxlnet.model.provenance import report
from cxlnet.model.weights import to_hf_state_dict
from cxlnet.paths import sample_dir
from cxlnet.text import CLS_ID, MASK_ID, SEP_ID, Tokenizer

HFL = sample_dir() / "pretrained" / "hfl-chinese-xlnet-base" / "spiece.model"
TF_TINY = Path(__file__).parent / "data" / "tf_tiny" / "xlnet"
SENTENCE = "哈尔滨是黑龙江省的省会，冰雪节闻名中外。"
# hfl's pieces: ▁ 哈尔滨 是 黑龙江省 的 省会 , 冰 雪 节 闻名 中 外 。
SMALL = dict(d_model=32, n_head=2, d_head=16, d_inner=64, dropout=0.0)


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer(HFL)


def memorise(tokenizer: Tokenizer, steps: int = 100, batch: int = 8, max_targets: int = 4) -> XLNetLMHeadModel:
    """Permutation-LM training on one sentence: each row hides a random set of 1..4 pieces from
    every position (perm_mask) and predicts them through the query stream (target_mapping)."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    ids = tokenizer.encode(SENTENCE)
    n, L = len(ids), len(ids) + 2
    model = XLNetLMHeadModel(XLNetConfig.named("tiny", vocab_size=tokenizer.vocab_size, **SMALL))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    inputs = torch.tensor([ids + [SEP_ID, CLS_ID]]).expand(batch, -1)
    segments = torch.tensor([[0] * (L - 1) + [2]]).expand(batch, -1)
    for _ in range(steps):
        perm = torch.zeros(batch, L, L)
        mapping = torch.zeros(batch, max_targets, L)
        labels = torch.full((batch, max_targets), -100)
        for b in range(batch):
            k = int(torch.randint(1, max_targets + 1, (1,), generator=gen))
            hidden = torch.randperm(n, generator=gen)[:k]
            perm[b, :, hidden] = 1.0
            mapping[b, torch.arange(k), hidden] = 1.0
            labels[b, :k] = inputs[0, hidden]
        loss = model(inputs, token_type_ids=segments, perm_mask=perm, target_mapping=mapping, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def memorised(tokenizer, tmp_path_factory) -> tuple[XLNetLMHeadModel, Path]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: more threads only add overhead
    try:
        model = memorise(tokenizer)
    finally:
        torch.set_num_threads(threads)
    directory = tmp_path_factory.mktemp("memorised") / "model"
    model.save_pretrained(directory)
    return model, directory


def masked_text(tokenizer: Tokenizer, hide: range) -> tuple[str, list[str]]:
    """SENTENCE with the pieces at `hide` replaced by one <mask> each; the hidden pieces."""
    pieces = tokenizer.pieces(SENTENCE)
    shown = ["<mask>" if i in hide else p for i, p in enumerate(pieces)]
    return "".join(shown).replace("▁", " ").strip(), [pieces[i] for i in hide]


def test_masked_text_encodes_to_the_sentence_pieces(tokenizer):
    for hide in (range(3, 4), range(5, 10), range(1, 3), range(12, 14)):
        text, _ = masked_text(tokenizer, hide)
        enc = encode_masked(tokenizer, text)
        expected = tokenizer.encode(SENTENCE)
        assert enc.masked == list(hide)
        assert enc.ids == [MASK_ID if i in hide else t for i, t in enumerate(expected)]


@pytest.mark.parametrize("order", ["left_to_right", "joint"])
def test_fill_mask_predicts_the_memorised_pieces(memorised, tokenizer, order):
    model, _ = memorised
    for hide in (range(3, 4), range(7, 10), range(1, 3)):  # 黑龙江省 / 冰雪节 / 哈尔滨是
        text, hidden = masked_text(tokenizer, hide)
        result = fill_masks(model, tokenizer, text, order=order, top_k=3)
        assert [m["piece"] for m in result["masks"]] == hidden, (text, result)
        assert all(m["prob"] > 0.5 and len(m["top"]) == 3 for m in result["masks"])
        assert result["filled"] == tokenizer.sp.decode_pieces(tokenizer.pieces(SENTENCE))


def test_untrained_model_does_not_fill_the_sentence(tokenizer):
    """The check can fail: random weights do not recover the memorised pieces."""
    torch.manual_seed(1)
    model = XLNetLMHeadModel(XLNetConfig.named("tiny", vocab_size=tokenizer.vocab_size, **SMALL)).eval()
    text, hidden = masked_text(tokenizer, range(7, 10))
    assert [m["piece"] for m in fill_masks(model, tokenizer, text)["masks"]] != hidden


def test_provenance_of_a_written_checkpoint(tmp_path):
    torch.manual_seed(0)
    lm = XLNetLMHeadModel(XLNetConfig.named("tiny", vocab_size=50, ff_activation="gelu", mem_len=16))
    lm.save_pretrained(tmp_path / "hf")
    model = XLNetForSequenceClassification.from_pretrained(tmp_path / "hf", num_labels=3, dropout=0.0)
    s = model.load_summary
    assert s.format == "HF safetensors" and s.weights == tmp_path / "hf" / "model.safetensors"
    assert s.stored["ff_activation"] == "gelu" and s.stored["mem_len"] == 16 and s.stored["dropout"] == 0.1
    assert s.used["dropout"] == 0.0 and s.used["vocab_size"] == 50 and s.used["n_layer"] == 2
    n_file = len(to_hf_state_dict(lm))
    assert s.tensors_in_file == n_file and s.tensors_loaded == n_file - 1  # all but lm_loss.bias
    assert s.parameters_loaded == sum(p.numel() for p in model.transformer.parameters())
    assert s.heads == {"logits_proj": "initialised fresh", "sequence_summary": "initialised fresh",
                       "lm_loss": "in the file, not used (this model has no such head)"}

    chosen = XLNetConfig.named("tiny", vocab_size=50).to_dict()  # relu, mem_len null
    console = Console(record=True, width=140)
    console.print(report(s, str(tmp_path / "hf"), "weights directory", chosen, "tiny"))
    text = console.export_text()
    assert "HF safetensors" in text and f"{s.parameters_loaded:,} parameters" in text
    assert "differs from model=tiny: ff_activation, mem_len, dropout" not in text  # dropout: stored 0.1 = preset
    assert "differs from model=tiny: ff_activation, mem_len" in text
    assert "overridden" in text and "initialised fresh" in text

    # the same weights as pytorch_model.bin; the LM head loads
    (tmp_path / "hf" / "model.safetensors").unlink()
    torch.save(to_hf_state_dict(lm), tmp_path / "hf" / "pytorch_model.bin")
    again = XLNetLMHeadModel.from_pretrained(tmp_path / "hf").load_summary
    assert again.format == "pytorch_model.bin" and again.heads == {"lm_loss": "loaded"}
    assert again.parameters_loaded == sum(p.numel() for p in lm.parameters())


def test_provenance_of_an_hfl_tf_checkpoint():
    s = XLNetLMHeadModel.from_pretrained(TF_TINY).load_summary
    assert s.format == "hfl TF checkpoint" and s.weights == TF_TINY / "xlnet_model.ckpt"
    assert s.stored["vocab_size"] == 24 and s.stored["d_model"] == 16 and s.stored["mem_len"] is None


def test_cli_fillmask_prints_report_and_predictions(memorised, tokenizer, tmp_path, capsys, monkeypatch):
    _, directory = memorised
    text, hidden = masked_text(tokenizer, range(7, 10))
    out = tmp_path / "filled.jsonl"
    monkeypatch.setenv("COLUMNS", "160")
    monkeypatch.setenv("CXLNET_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["cxlnet"])
    args = ["predict", "task=fillmask", "model=tiny", f"model.pretrained={directory}",
            f"model.spiece_model={HFL}", f"predict.text={text}", f"predict.output={out}"]
    capsys.readouterr()
    try:  # model=tiny is not these weights' architecture: the report says how, and the run is refused
        rc = cli.main(args)
    except SystemExit as exit_:
        rc = exit_.code
    finally:
        os.environ.pop(cli.ENV_COMMAND, None)
    captured = capsys.readouterr()
    assert rc == 2 and "but model=tiny is" in captured.err and not out.exists()
    assert "HF safetensors" in captured.out and "differs from model=tiny: d_model, n_head, d_inner" in captured.out
    same_size = [f"model.config.{k}={SMALL[k]}" for k in ("d_model", "n_head", "d_inner")]
    try:
        rc = cli.main(args + same_size)
    finally:
        os.environ.pop(cli.ENV_COMMAND, None)
    stdout = capsys.readouterr().out
    assert rc == 0
    assert "HF safetensors" in stdout
    assert "lm_loss" in stdout and "loaded" in stdout and f"weights directory or TF checkpoint ({directory})" in stdout
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert [m["piece"] for m in row["masks"]] == hidden and row["order"] == "left_to_right"
    record = json.loads((tmp_path / "filled.jsonl.run_record.json").read_text())
    assert record["tokenizer"]["path"] == str(HFL)
