"""Reading SQuAD-format files: offsets, quirks, counts and one-line errors."""
from __future__ import annotations

import json
import logging

import pytest

from cxlnet.errors import CxlnetError
from cxlnet.span.examples import (SpanExample, first_questions, fix_answer_start, parse_squad, read_examples,
                                    utf16_to_codepoint)


def _squad(context, qas):
    return {"version": "v1.0", "data": [{"title": "t", "paragraphs": [{"context": context, "qas": qas}]}]}


def _write(tmp_path, obj, name="d.json"):
    path = tmp_path / name
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


def test_basic_reading_keeps_raw_context_and_all_answers(tmp_path):
    ctx = " 中国\u3000ＡＢ…人民 "
    path = _write(tmp_path, _squad(ctx, [{"id": "q1", "question": "问？", "answers": [
        {"text": "ＡＢ", "answer_start": 4}, {"text": "人民", "answer_start": 7}, {"text": "别的", "answer_start": -1}]}]))
    (ex,), st = read_examples(path)
    assert ex.context == ctx and ex.qid == "q1" and ex.question == "问？"
    assert ex.answer_texts == ["ＡＢ", "人民", "别的"]
    assert (ex.start, ex.answer_text) == (4, "ＡＢ") and ex.trainable
    assert st.start_minus_one == 1 and st.answers == 3 and st.untrainable == 0


def test_utf16_offsets_are_fixed_and_counted(caplog):
    ctx = "𫚭鱼是一种鱼，𠀀在这里。"  # two astral chars
    # '在这里' is at code point 8 but UTF-16 unit 9 (the first astral char counts twice before it... and the second)
    start16 = len(ctx[: ctx.index("在这里")].encode("utf-16-le")) // 2
    assert start16 == ctx.index("在这里") + 2
    with caplog.at_level(logging.INFO):
        (ex,), st = parse_squad(_squad(ctx, [{"id": "a", "question": "q", "answers": [{"text": "在这里", "answer_start": start16}]}]))
    assert st.utf16_fixed == 1 and ex.start == ctx.index("在这里") and ex.trainable
    assert "1 UTF-16 offsets fixed" in caplog.text
    assert utf16_to_codepoint(ctx, 1) is None  # inside a surrogate pair
    assert fix_answer_start(ctx, "鱼", 2) == (1, "utf16")
    assert fix_answer_start(ctx, "鱼", 1) == (1, "ok")


def test_answers_not_found_or_minus_one_are_untrainable_but_kept():
    (a, b), st = parse_squad(_squad("中国人民", [
        {"id": "a", "question": "q", "answers": [{"text": "美国", "answer_start": 0}]},
        {"id": "b", "question": "q", "answers": [{"text": "39764.0", "answer_start": -1}, {"text": "人民", "answer_start": 2}]},
    ]))
    assert not a.trainable and not b.trainable
    assert st.answer_not_found == 1 and st.start_minus_one == 1 and st.untrainable == 2
    assert b.answer_texts == ["39764.0", "人民"]


def test_malformed_json_reports_line_and_column(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"data": [\n  {"paragraphs": [}\n]}', encoding="utf-8")
    with pytest.raises(CxlnetError, match=r"bad\.json:2:19: malformed JSON"):
        read_examples(path)


def test_missing_id_names_file_article_paragraph_and_question(tmp_path):
    obj = _squad("中国", [{"id": "ok", "question": "q", "answers": []}, {"question": "q2", "answers": []}])
    path = _write(tmp_path, obj, "noid.json")
    with pytest.raises(CxlnetError) as err:
        read_examples(path)
    msg = str(err.value)
    assert "noid.json" in msg and "article 0 paragraph 0 question 1" in msg and "no 'id'" in msg
    assert "\n" not in msg


def test_missing_context_is_one_line_error(tmp_path):
    obj = {"data": [{"paragraphs": [{"qas": []}]}]}
    with pytest.raises(CxlnetError, match=r"x\.json: article 0 paragraph 0: missing 'context'"):
        read_examples(_write(tmp_path, obj, "x.json"))


def test_empty_context_skipped_and_counted(caplog):
    data = {"data": [{"paragraphs": [
        {"context": " \u3000 ", "qas": [{"id": "e1", "question": "q", "answers": []}, {"id": "e2", "question": "q", "answers": []}]},
        {"context": "中国", "qas": [{"id": "k", "question": "q", "answers": [{"text": "中国", "answer_start": 0}]}]},
    ]}]}
    with caplog.at_level(logging.WARNING):
        exs, st = parse_squad(data, "f.json")
    assert [e.qid for e in exs] == ["k"]
    assert st.empty_context_paragraphs == 1 and st.empty_context_questions == 2
    assert "f.json: article 0 paragraph 0: empty context, its 2 question(s) skipped" in caplog.text


def test_duplicate_id_is_an_error():
    with pytest.raises(CxlnetError, match="duplicate question id 'a'"):
        parse_squad(_squad("中国", [{"id": "a", "question": "q"}, {"id": "a", "question": "q"}]))


def test_paragraph_ids_are_shared_by_questions():
    data = {"data": [{"paragraphs": [
        {"context": "甲乙", "qas": [{"id": "1", "question": "q", "answers": []}, {"id": "2", "question": "q", "answers": []}]},
        {"context": "丙丁", "qas": [{"id": "3", "question": "q", "answers": []}]},
    ]}]}
    exs, st = parse_squad(data)
    assert [e.para_id for e in exs] == [0, 0, 1] and st.no_answer == 3


@pytest.mark.fulldata
def test_utf16_fixes_on_real_files(full_data_dir):
    """Exactly the 33 answers of SOURCES.md: 21 train, 7 dev, 5 trial; DRCD needs none."""
    expected = {"cmrc2018/train.json": 21, "cmrc2018/dev.json": 7, "cmrc2018/trial.json": 5, "drcd/dev.json": 0}
    for name, n in expected.items():
        exs, st = read_examples(full_data_dir / name)
        assert st.utf16_fixed == n, name
        assert st.answer_not_found == 0 and st.untrainable == 0
        for ex in exs:
            for a in ex.answers:
                if a["answer_start"] >= 0:
                    assert ex.context[a["answer_start"] : a["answer_start"] + len(a["text"])] == a["text"]
        if name == "cmrc2018/trial.json":
            assert "TRIAL_210_QUERY_0" in st.utf16_fixed_ids or any(i.startswith("TRIAL_210") for i in st.utf16_fixed_ids)
        if name == "cmrc2018/dev.json":
            assert st.start_minus_one == 193 and st.questions == 3219 and st.answers == 9657


def test_every_count_of_a_file_and_the_impossible_answers_warning(caplog):
    """A file whose every count is known by hand: 3 paragraphs (one empty), 12 impossible answers
    (10 listed, "and 2 more"), a UTF-16 offset, a -1, a text not at its offset, a question with none."""
    impossible = [{"text": "很长的答案", "answer_start": 100 + k} for k in range(11)] + [{"text": " ", "answer_start": 0}]
    data = {"data": [
        {"paragraphs": [
            {"context": "北京是中国的首都。", "qas": [
                {"id": "ok", "question": "q", "answers": [{"text": "北京", "answer_start": 0}]},
                {"id": "minus", "question": "q", "answers": [{"text": "中国", "answer_start": -1}]},
                {"id": "lost", "question": "q", "answers": [{"text": "首都", "answer_start": 0}]},
                {"id": "none", "question": "q", "answers": []}]},
            {"context": "", "qas": [{"id": "empty", "question": "q", "answers": []}]}]},
        {"paragraphs": [
            {"context": "𠀀abc", "qas": [
                {"id": "astral", "question": "q", "answers": [{"text": "abc", "answer_start": 2}]},
                {"id": "bad", "question": "q", "answers": impossible}]}]}]}
    with caplog.at_level(logging.INFO):
        examples, st = parse_squad(data, "f.json")
    assert st.as_dict() == dict(
        path="f.json", articles=2, paragraphs=3, questions=6, answers=16, utf16_fixed=1, start_minus_one=1,
        answer_not_found=1, no_answer=1, untrainable=4, empty_context_paragraphs=1, empty_context_questions=1,
        impossible=12)
    assert [e.qid for e in examples if e.trainable] == ["ok", "astral"]
    assert "f.json: 12 answers with an impossible offset or text" in caplog.text and caplog.text.count(
        "answer_start 10") == 10 and "and 2 more" in caplog.text
    assert "f.json article 1 paragraph 0 question 1 (bad) answer 11" not in caplog.text  # ids, not locations
    assert SpanExample("q", "q", "c", []).is_impossible is False


@pytest.mark.parametrize("context,text,start,expected", [
    ("中国人民", "人民", -1, (-1, "minus_one")), ("中国人民", "人民", None, (-1, "minus_one")),
    ("中国人民", "人民", -2, (-2, "impossible")), ("中国人民", "", 0, (0, "impossible")),
    ("𠀀中国人民", "美国", 1, (1, "not_found")),  # an astral char before: the UTF-16 reading does not match either
    ("𠀀中国人民", "人民", 4, (3, "utf16")),
])
def test_fix_answer_start_statuses(context, text, start, expected):
    assert fix_answer_start(context, text, start) == expected


def test_first_questions_cuts_in_file_order():
    data = {"version": "v", "data": [
        {"title": "a", "paragraphs": [{"context": "x", "qas": [{"id": "1"}, {"id": "2"}]},
                                      {"context": "y", "qas": [{"id": "3"}, {"id": "4"}, {"id": "5"}]}]},
        {"title": "b", "paragraphs": [{"context": "z", "qas": [{"id": "6"}]}]}]}
    cut = first_questions(data, 4)
    assert cut["version"] == "v" and [a["title"] for a in cut["data"]] == ["a"]
    assert [[q["id"] for q in p["qas"]] for p in cut["data"][0]["paragraphs"]] == [["1", "2"], ["3", "4"]]
    assert sum(len(p["qas"]) for a in first_questions(data, 6)["data"] for p in a["paragraphs"]) == 6
