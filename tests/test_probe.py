"""tools/probe.py: linear probes of frozen features, on a task whose label is one piece's presence."""
from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import pytest
import torch

from cxlnet.model import XLNetConfig, XLNetForSequenceClassification

ROOT = Path(__file__).resolve().parents[1]
SPIECE = ROOT / "cxlnet" / "sample" / "pretrained" / "hfl-chinese-xlnet-base" / "spiece.model"
spec = importlib.util.spec_from_file_location("probe", ROOT / "tools" / "probe.py")
probe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(probe)


def write_task(path: Path, n: int, seed: int) -> None:
    """label 1 iff the text holds 好; the other characters are drawn from the same filler for both labels."""
    rng = random.Random(seed)
    filler = "的是在有和这个们中来上大为时国到说以要就出会可也你对生能而子那得于着下自之年过发后作里"
    lines = ["label\ttext_a"]
    for i in range(n):
        text = [rng.choice(filler) for _ in range(rng.randint(8, 20))]
        if i % 2:
            text.insert(rng.randrange(len(text)), "好")
        lines.append(f"{i % 2}\t{''.join(text)}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    d = tmp_path_factory.mktemp("probe")
    write_task(d / "train.tsv", 200, 0)
    write_task(d / "eval.tsv", 100, 1)
    return d


def test_the_mean_of_embeddings_finds_the_piece_and_cls_alone_cannot(task):
    rows = probe.probe("random:tiny", str(task / "train.tsv"), str(task / "eval.tsv"), spiece=str(SPIECE),
                       max_seq_length=32)
    assert [name for name, *_ in rows] == ["embeddings", "layer 1", "layer 2"]
    embeddings_cls, embeddings_mean = rows[0][1:]
    assert embeddings_mean >= 90.0  # a bag of random embeddings: presence of one piece is linear in it
    assert embeddings_cls == 50.0   # <cls>'s own embedding is the same in every row: chance (half the labels)
    assert all(0.0 <= acc <= 100.0 for _, *accs in rows for acc in accs)


def test_saved_weights_probe_as_the_model_they_came_from(task, tmp_path):
    torch.manual_seed(0)
    net = XLNetForSequenceClassification(XLNetConfig.named("tiny", vocab_size=32000))
    net.save_pretrained(tmp_path / "weights")
    args = (str(task / "train.tsv"), str(task / "eval.tsv"))
    assert probe.probe(str(tmp_path / "weights"), *args, spiece=str(SPIECE), max_seq_length=32) == probe.probe(
        "random:tiny", *args, spiece=str(SPIECE), max_seq_length=32, seed=0)


def test_bad_input_is_one_line(task, tmp_path, capsys):
    argv = ["random:tiny", "--train", str(task / "train.tsv"), "--eval", str(tmp_path / "missing.tsv"),
            "--spiece", str(SPIECE)]
    assert probe.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.tsv: data file not found" in err
    assert probe.main(["random:tiny", "--train", "a", "--eval", "b"]) == 2
    assert "needs --spiece" in capsys.readouterr().err
