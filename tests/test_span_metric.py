"""The official CMRC 2018 / DRCD metric, one hand-worked case per rule (spec §7, §10)."""
from __future__ import annotations

import json

import pytest

from cxlnet.span.examples import parse_squad
from cxlnet.span.metric import (
    SP_CHARS, calc_em_score, calc_f1_score, evaluate, evaluate_files, find_lcs, main, mixed_segmentation,
    remove_punctuation,
)


def test_sp_list_is_the_original_33_entries():
    assert len(SP_CHARS) == 33 and "……" in SP_CHARS and "\\" in SP_CHARS and "`" in SP_CHARS


def test_mixed_segmentation_spec_vector():
    assert mixed_segmentation("2018年FIFA世界杯", True) == ["2018", "年", "fifa", "世", "界", "杯"]


def test_punctuation_kept_as_segments_without_rm_punc():
    assert mixed_segmentation("《三国》", False) == ["《", "三", "国", "》"]
    assert mixed_segmentation("《三国》", True) == ["三", "国"]
    assert mixed_segmentation("a-b", False) == ["a", "-", "b"]  # '-' is in SP: a single segment


def test_cjk_range_only_4e00_9fa5_other_scripts_go_to_the_buffer():
    # U+3400 (CJK Ext-A), kana and U+9FA6 are outside [\u4e00-\u9fa5]: buffered with neighbours
    assert mixed_segmentation("㐀あ中", True) == ["㐀あ", "中"]
    assert mixed_segmentation("\u9fa6\u9fa5", True) == ["\u9fa6", "\u9fa5"]
    assert mixed_segmentation("ｆｕｌｌ中", True) == ["ｆｕｌｌ", "中"]  # full-width: buffer (lowercased)


def test_buffer_is_word_tokenised():
    assert mixed_segmentation("hello world中", True) == ["hello", "world", "中"]
    assert mixed_segmentation('say "hi" 1,000 dollars.', True) == ["say", "``", "hi", "''", "1,000", "dollars", "."]
    assert mixed_segmentation("don't(x)", True) == ["do", "n't", "(", "x", ")"]


def test_lowercase_and_strip():
    assert remove_punctuation("  FIFA  ") == "fifa"
    assert calc_em_score(["FIFA"], "fifa ") == 1


def test_remove_punctuation_per_char_and_ellipsis_quirk():
    assert remove_punctuation("《三国》，。") == "三国"
    assert remove_punctuation("a-b:c_d*e^f/g\\h~i`j+k=l") == "abcdefghijkl"
    assert remove_punctuation("好……") == "好……"  # '……' is one two-char entry: never matches per char
    assert remove_punctuation("好…") == "好…"
    assert remove_punctuation("好‘") == "好‘" and remove_punctuation("好’") == "好"
    assert remove_punctuation("a,b.c?") == "a,b.c?"  # ASCII , . ? are not in the list
    assert remove_punctuation("a b") == "a b"  # inner spaces are kept


def test_em_rules():
    assert calc_em_score(["三国"], "《三国》") == 1
    assert calc_em_score(["hello world"], "helloworld") == 0  # spaces matter for EM
    assert calc_em_score(["北京", "北京大学"], "北京大学") == 1  # any reference
    assert calc_em_score(["好"], "好……") == 0


def test_f1_rules():
    assert calc_f1_score(["北京大学"], "北京") == pytest.approx(2 * (1 * 0.5) / 1.5)
    assert round(calc_f1_score(["北京大学"], "北京"), 3) == 0.667
    assert calc_f1_score(["北京大学", "北京"], "北京") == 1.0  # max over references
    assert calc_f1_score(["北京"], "上海") == 0.0
    assert calc_f1_score(["北京"], "") == 0.0
    assert calc_f1_score(["hello world"], "helloworld") == 0.0  # different word segments
    assert calc_f1_score(["三国"], "《三国》") == 1.0  # punctuation removed before segmenting


def test_lcs_is_contiguous_substring_not_subsequence():
    assert find_lcs(list("abcd"), list("abxcd"))[1] == 2
    assert find_lcs(list("北京大学"), list("北大"))[1] == 1
    assert calc_f1_score(["北京大学"], "北大") == pytest.approx(2 * (1 / 2) * (1 / 4) / (1 / 2 + 1 / 4))


def test_evaluate_totals_and_missing_predictions():
    gold = {"data": [{"paragraphs": [{"context": "北京大学在北京", "qas": [
        {"id": "a", "question": "q", "answers": [{"text": "北京大学", "answer_start": 0}]},
        {"id": "b", "question": "q", "answers": [{"text": "北京", "answer_start": 5}, {"text": "北京市", "answer_start": -1}]},
        {"id": "c", "question": "q", "answers": [{"text": "北京", "answer_start": 5}]},
    ]}]}]}
    res = evaluate(gold, {"a": "北京大学", "b": "北京"})
    assert res["total"] == 3 and res["skip"] == 1
    assert res["em"] == pytest.approx(200 / 3) and res["f1"] == pytest.approx(200 / 3)
    assert res["average"] == pytest.approx(200 / 3)
    res2 = evaluate(gold, {"a": "北京", "b": "北京", "c": "北京"})
    assert res2["em"] == pytest.approx(200 / 3) and res2["f1"] == pytest.approx(100 * (2 / 3 + 2) / 3)
    exs, _ = parse_squad(gold)
    assert evaluate(exs, {"a": "北京", "b": "北京", "c": "北京"}) == res2


def test_evaluate_files_and_cli(tmp_path, capsys):
    gold = {"data": [{"paragraphs": [{"context": "北京", "qas": [
        {"id": "a", "question": "q", "answers": [{"text": "北京", "answer_start": 0}]}]}]}]}
    g, p = tmp_path / "g.json", tmp_path / "p.json"
    g.write_text(json.dumps(gold), encoding="utf-8")
    p.write_text(json.dumps({"a": "北京"}), encoding="utf-8")
    out = evaluate_files(g, p)
    assert out["EM"] == "100.000" and out["F1"] == "100.000" and out["TOTAL"] == 1 and out["SKIP"] == 0
    assert main([str(g), str(p)]) == 0 and '"AVERAGE": "100.000"' in capsys.readouterr().out
    p.write_text("[1,", encoding="utf-8")
    assert main([str(g), str(p)]) == 1 and "p.json:1:4" in capsys.readouterr().err
