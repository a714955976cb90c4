"""Classification numbers with a known answer: a trivially separable synthetic set through the real
CLI (`finetune`, `eval` on the same dev set with its labels flipped, `predict`), and the feature
layout of XLNet's `classifier_utils.convert_single_example`, checked position by position."""
from __future__ import annotations

import json
import random

import pytest
import torch
from test_finetune_cli import cxlnet

from cxlnet.classify.data import Example, encode_examples, read_tsv
from cxlnet.errors import CxlnetError
from cxlnet.paths import sample_dir
from cxlnet.text import CLS_ID, SEP_ID, Tokenizer

POSITIVE, NEGATIVE = ("好", "很好", "棒", "喜欢", "满意"), ("差", "很差", "烂", "讨厌", "失望")


def synthetic_rows(n: int, seed: int) -> list[tuple[int, str]]:
    """Label 1: only positive words, label 0: only negative ones; alternating labels."""
    rng = random.Random(seed)
    return [(i % 2, "".join(rng.choice(POSITIVE if i % 2 else NEGATIVE) for _ in range(rng.randint(2, 5))))
            for i in range(n)]


def write_tsv(path, rows):
    path.write_text("label\ttext_a\n" + "".join(f"{y}\t{t}\n" for y, t in rows), encoding="utf-8")


def test_separable_set_is_learned_flipped_labels_score_the_complement_and_predict_agrees(tmp_path):
    train, dev = synthetic_rows(64, seed=0), synthetic_rows(40, seed=1)
    write_tsv(tmp_path / "train.tsv", train)
    write_tsv(tmp_path / "dev.tsv", dev)
    write_tsv(tmp_path / "flipped.tsv", [(1 - y, t) for y, t in dev])
    run = tmp_path / "run"
    common = ["task.max_seq_length=12", "trainer.enable_progress_bar=false"]
    cxlnet("finetune", "experiment=demo", *common, f"task.train_file={tmp_path / 'train.tsv'}",
           f"task.dev_file={tmp_path / 'dev.tsv'}", "task.batch_size=8", "task.epochs=3", "optimizer.optim.lr=3e-3",
           f"hydra.run.dir={run}", cwd=tmp_path)
    dev_acc = json.loads((run / "metrics.json").read_text())["metrics"]["dev/acc"]
    assert dev_acc >= 95.0, dev_acc  # 50 is chance; the words alone give the label

    flipped_run = tmp_path / "eval-flipped"
    cxlnet("eval", "model=tiny", "task=chnsenticorp", *common, f"model.pretrained={run}",
           f"task.dev_file={tmp_path / 'flipped.tsv'}", f"hydra.run.dir={flipped_run}", cwd=tmp_path)
    flipped_acc = json.loads((flipped_run / "metrics.json").read_text())["metrics"]["dev/acc"]
    assert flipped_acc == pytest.approx(100.0 - dev_acc, abs=1e-3)

    jsonl = tmp_path / "texts.jsonl"
    jsonl.write_text("".join(json.dumps({"id": f"d{i}", "text": t}, ensure_ascii=False) + "\n"
                             for i, (_, t) in enumerate(dev)), encoding="utf-8")
    out = tmp_path / "labels.jsonl"
    cxlnet("predict", "model=tiny", "task=chnsenticorp", *common, f"model.pretrained={run}",
           f"predict.input={jsonl}", f"predict.output={out}", cwd=tmp_path)
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows] == [f"d{i}" for i in range(len(dev))]
    agree = sum(r["label"] == y for r, (y, _) in zip(rows, dev))
    assert 100.0 * agree / len(dev) == pytest.approx(dev_acc, abs=1e-3)  # predict = what eval counted
    assert all(0.5 <= r["score"] <= 1.0 for r in rows)


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer(sample_dir() / "pretrained" / "hfl-chinese-xlnet-base" / "spiece.model")


def test_feature_layout_left_pads_and_ends_with_sep_cls(tokenizer):
    short, long = "这家酒店很好", "房间很大，早餐丰富，服务也非常周到，下次还会再来住的。" * 3
    data = encode_examples([Example(2, 1, short), Example(3, 0, long)], tokenizer, max_seq_length=16)
    input_ids, segs, mask, labels, index = data.tensors
    ids = tokenizer.encode(short)
    n = len(ids) + 2
    assert 2 < n < 16
    pad = 16 - n
    # row 0: padding first (id 0, segment 4 = SEG_ID_PAD, mask 1), then text <sep> <cls>
    assert input_ids[0].tolist() == [0] * pad + ids + [SEP_ID, CLS_ID]
    assert segs[0].tolist() == [4] * pad + [0] * (n - 1) + [2]
    assert mask[0].tolist() == [1.0] * pad + [0.0] * n
    # row 1: truncated to max_seq_length - 2 pieces, no padding
    assert input_ids[1].tolist() == tokenizer.encode(long)[:14] + [SEP_ID, CLS_ID]
    assert segs[1].tolist() == [0] * 15 + [2] and mask[1].sum() == 0
    assert labels.tolist() == [1, 0] and index.tolist() == [0, 1]


def test_read_tsv_labels_and_line_numbers(tmp_path):
    path = tmp_path / "x.tsv"
    path.write_text("label\ttext_a\n1\tgood\n\n0\tbad\n", encoding="utf-8")
    assert [(e.line, e.label, e.text) for e in read_tsv(path)] == [(2, 1, "good"), (4, 0, "bad")]
    path.write_text("label\ttext_a\n1\tgood\n2\tthird class\n", encoding="utf-8")
    with pytest.raises(CxlnetError, match=r"x.tsv:3: label '2' is not one of 0, 1"):
        read_tsv(path)  # two labels unless the task says otherwise
    assert [e.label for e in read_tsv(path, num_labels=3)] == [1, 2]


def test_data_module_encodes_each_given_split_once(tmp_path, tokenizer):
    from omegaconf import OmegaConf

    from cxlnet.classify.data import ClassificationData

    train, dev = tmp_path / "train.tsv", tmp_path / "dev.tsv"
    train.write_text("label\ttext_a\n" + "".join(f"{k % 2}\t评论{k}\n" for k in range(10)), encoding="utf-8")
    dev.write_text("1\t没有表头的第一行\n0\t第二行\n", encoding="utf-8")  # no header: line 1 is an example
    cfg = OmegaConf.create({"num_labels": 2, "max_train_examples": 6, "max_seq_length": 16, "batch_size": 4,
                            "eval_batch_size": 4})
    data = ClassificationData({"train": train, "dev": dev, "test": None}, tokenizer, cfg, num_workers=0, seed=0)
    data.setup("fit")
    assert set(data.splits) == {"train", "dev"}  # no test file: no test split
    assert len(data.splits["train"]) == 6 and len(data.splits["dev"]) == 2
    assert data.splits["dev"].tensors[3].tolist() == [1, 0]
    expected = encode_examples(read_tsv(dev), tokenizer, 16)
    assert all(torch.equal(a, b) for a, b in zip(data.splits["dev"].tensors, expected.tensors))
    first = data.splits["train"]
    data.setup("validate")  # a second setup keeps the encoded splits
    assert data.splits["train"] is first


def test_bad_utf8_names_the_line_and_column(tmp_path):
    path = tmp_path / "bad.tsv"
    path.write_bytes("label\ttext_a\n1\tgood\n0\tab".encode() + b"\xff\n")
    with pytest.raises(CxlnetError, match=r"bad.tsv:3: not valid UTF-8 \(byte 0xff at column 5\)"):
        read_tsv(path)
    path.write_text("label\ttext_a\n", encoding="utf-8")
    with pytest.raises(CxlnetError, match=r"bad.tsv: no examples$"):
        read_tsv(path)
