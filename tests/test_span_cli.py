"""CMRC 2018 / DRCD through the real CLI: tiny-model fine-tune, eval, predict, bad input."""
from __future__ import annotations

import json

import pytest
from test_finetune_cli import cxlnet, one_line_error

from cxlnet.paths import sample_dir

TINY = ["experiment=demo_cmrc2018", "task.max_steps=3", "task.max_train_examples=24", "task.max_eval_examples=30",
        "task.max_seq_length=128", "task.doc_stride=64", "trainer.enable_progress_bar=false"]


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    run = tmp_path_factory.mktemp("span") / "run"
    cxlnet("finetune", *TINY, f"hydra.run.dir={run}", cwd=run.parent)
    return run


def test_finetune_writes_predictions_nbest_and_metrics(finetuned):
    metrics = json.loads((finetuned / "metrics.json").read_text())["metrics"]
    assert set(metrics) == {"dev/em", "dev/f1"} and 0.0 <= metrics["dev/f1"] <= 100.0
    predictions = json.loads((finetuned / "predictions.json").read_text())
    nbest = json.loads((finetuned / "nbest.json").read_text())
    dev = json.loads((sample_dir() / "cmrc2018" / "dev.json").read_text())
    first_ids = [q["id"] for a in dev["data"] for p in a["paragraphs"] for q in p["qas"]][:30]
    assert list(predictions) == first_ids and set(nbest) == set(first_ids)
    for qid, entries in nbest.items():
        assert entries[0]["text"] == predictions[qid]
        assert 1 <= len(entries) <= 5 and abs(sum(e["probability"] for e in entries) - 1) < 1e-4


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
