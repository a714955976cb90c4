"""CMRC 2018 / DRCD through the real CLI: tiny-model fine-tune, eval, predict, bad input."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf
from test_finetune_cli import cxlnet, one_line_error

from cxlnet.errors import read_json
from cxlnet.paths import sample_dir
from cxlnet.span.examples import first_questions

TINY = ["experiment=demo_cmrc2018", "task.max_steps=3", "task.max_train_examples=24", "task.max_eval_examples=30",
        "task.max_seq_length=128", "task.doc_stride=64", "trainer.enable_progress_bar=false"]


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    run = tmp_path_factory.mktemp("span") / "run"
    cxlnet("finetune", *TINY, f"hydra.run.dir={run}", cwd=run.parent)
    return run


def test_finetune_writes_predictions_nbest_and_metrics(finetuned):
    metrics = json.loads((finetuned / "metrics.json").read_text())["metrics"]
    assert set(metrics) == {"dev/em", "dev/f1"}
    predictions = json.loads((finetuned / "predictions.json").read_text())
    nbest = json.loads((finetuned / "nbest.json").read_text())
    dev = json.loads((sample_dir() / "cmrc2018" / "dev.json").read_text())
    first_ids = [q["id"] for a in dev["data"] for p in a["paragraphs"] for q in p["qas"]][:30]
    assert list(predictions) == first_ids and set(nbest) == set(first_ids)
    for qid, entries in nbest.items():
        assert entries[0]["text"] == predictions[qid]
        assert 1 <= len(entries) <= 5 and abs(sum(e["probability"] for e in entries) - 1) < 1e-4


def official_scores(gold: dict, predictions_file, tmp_path) -> dict:
    """`python -m cxlnet.span.metric GOLD PREDICTIONS`: the official-format scoring of a written file."""
    gold_file = tmp_path / "gold.json"
    gold_file.write_text(json.dumps(gold, ensure_ascii=False), encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "cxlnet.span.metric", str(gold_file), str(predictions_file)],
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


def test_dev_metrics_are_the_official_scores_of_the_written_predictions(finetuned, tmp_path):
    metrics = json.loads((finetuned / "metrics.json").read_text())["metrics"]
    gold = first_questions(read_json(sample_dir() / "cmrc2018" / "dev.json"), 30)  # task.max_eval_examples
    scores = official_scores(gold, finetuned / "predictions.json", tmp_path)
    assert scores["TOTAL"] == 30 and scores["SKIP"] == 0
    assert float(scores["F1"]) > 0.0  # spans overlap the answers: an all-empty prediction set would score 0
    assert metrics["dev/f1"] == pytest.approx(float(scores["F1"]), abs=1e-3)
    assert metrics["dev/em"] == pytest.approx(float(scores["EM"]), abs=1e-3)


def test_predictions_are_the_ones_decoded_from_the_models_logits(finetuned):
    """Re-run the saved model on the dev windows and decode: the written predictions come out."""
    from cxlnet.model import XLNetForQuestionAnswering
    from cxlnet.span.data import EVAL_KEYS, SpanSplit
    from cxlnet.span.decode import RESULT_KEYS, decode
    from cxlnet.span.features import SpanConfig
    from cxlnet.text import Tokenizer

    task = OmegaConf.load(finetuned / "config.yaml").task
    tokenizer = Tokenizer(sample_dir() / "pretrained" / "hfl-chinese-xlnet-base" / "spiece.model")
    split = SpanSplit(sample_dir() / "cmrc2018" / "dev.json", tokenizer,
                      SpanConfig(task.max_seq_length, task.doc_stride, task.max_query_length), False,
                      task.max_eval_examples)
    model = XLNetForQuestionAnswering.from_pretrained(finetuned / "model").eval()
    input_ids, segment_ids, input_mask, p_mask, _ = split.dataset(EVAL_KEYS).tensors
    with torch.no_grad():
        out = model(input_ids=input_ids, token_type_ids=segment_ids, input_mask=input_mask, p_mask=p_mask)
    results = {k: getattr(out, k).numpy() for k in RESULT_KEYS}
    predictions, nbest = decode(split.examples, split.features, results, n_best_size=task.n_best_size,
                                max_answer_length=task.max_answer_length, start_n_top=model.config.start_n_top,
                                end_n_top=model.config.end_n_top)
    written = json.loads((finetuned / "predictions.json").read_text())
    assert predictions == written and sum(bool(t) for t in written.values()) >= 15
    written_nbest = json.loads((finetuned / "nbest.json").read_text())
    assert {q: [e["text"] for e in v] for q, v in nbest.items()} == {
        q: [e["text"] for e in v] for q, v in written_nbest.items()}


def test_eval_scores_a_test_file_with_the_finetuned_model(finetuned, tmp_path):
    gold = sample_dir() / "drcd" / "dev.json"
    run = tmp_path / "eval"
    cxlnet("eval", "model=tiny", "task=drcd", f"model.pretrained={finetuned}", "task.dev_file=null",
           f"task.test_file={gold}", "task.max_seq_length=128", "task.doc_stride=64", f"hydra.run.dir={run}",
           "trainer.enable_progress_bar=false", cwd=tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    assert set(metrics) == {"test/em", "test/f1"}
    predictions = json.loads((run / "test_predictions.json").read_text())
    n_questions = sum(len(p["qas"]) for a in json.loads(gold.read_text())["data"] for p in a["paragraphs"])
    assert len(predictions) == n_questions
    test_nbest = json.loads((run / "test_nbest.json").read_text())
    assert set(test_nbest) == set(predictions) and not (run / "predictions.json").exists()
    scores = official_scores(read_json(gold), run / "test_predictions.json", tmp_path)
    assert scores["TOTAL"] == n_questions and float(scores["F1"]) > 0.0
    assert metrics["test/f1"] == pytest.approx(float(scores["F1"]), abs=1e-3)
    assert metrics["test/em"] == pytest.approx(float(scores["EM"]), abs=1e-3)


def test_predict_answers_from_the_command_line_and_jsonl(finetuned, tmp_path):
    context = "北京是中华人民共和国的首都，位于华北平原。"
    proc = cxlnet("predict", "model=tiny", "task=cmrc2018", "task.max_seq_length=128", f"model.pretrained={finetuned}",
                  "predict.question=北京是哪个国家的首都？", f"predict.context={context}", cwd=tmp_path)
    assert "北京是哪个国家的首都？" in proc.stdout
    jsonl = tmp_path / "qs.jsonl"
    questions = [{"id": "q1", "question": "北京位于哪里？", "context": context},
                 {"id": 5, "question": "首都是哪里？", "context": context},  # a number: kept as "5"
                 {"question": "北京是什么？", "context": context}]  # no id: its line number
    jsonl.write_text("".join(json.dumps(q, ensure_ascii=False) + "\n" for q in questions))
    out = tmp_path / "answers.jsonl"
    cxlnet("predict", "model=tiny", "task=cmrc2018", "task.max_seq_length=128", f"model.pretrained={finetuned}",
           f"predict.input={jsonl}", f"predict.output={out}", cwd=tmp_path)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["q1", "5", "3"]
    for row in rows:
        assert row["answer"] in context and 0 < row["score"] <= 1
    assert any(row["answer"] for row in rows)  # the decoder gives spans, not only the empty fallback


@pytest.mark.parametrize("case", ["malformed", "no_id", "no_pretrained", "empty_contexts", "bad_stride"])
def test_span_bad_input_is_one_line(tmp_path, case):
    bad = tmp_path / "train.json"
    bad.write_text({"malformed": '{"data": [\n  {"paragraphs": oops}]}',
                    "no_id": json.dumps({"data": [{"paragraphs": [{"context": "abc", "qas": [
                        {"question": "q", "answers": [{"text": "a", "answer_start": 0}]}]}]}]}),
                    "empty_contexts": json.dumps({"data": [{"paragraphs": [{"context": " ", "qas": [
                        {"id": "a", "question": "q", "answers": [{"text": "a", "answer_start": 0}]}]}]}]}),
                    }.get(case, "{}"))
    command = "eval" if case == "no_pretrained" else "finetune"
    extra = ["task.doc_stride=0"] if case == "bad_stride" else []
    proc = cxlnet(command, *TINY, f"task.train_file={bad}", *extra, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path,
                  check=False)
    expected = {"malformed": f"{bad}:2:18: malformed JSON", "no_id": "question 0: question has no 'id'",
                "no_pretrained": "needs model.pretrained=", "empty_contexts": f"{bad}: no question gives a feature",
                "bad_stride": "task.doc_stride=0: expected a positive integer"}[case]
    assert expected in one_line_error(proc)
