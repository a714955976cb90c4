"""Reading SQuAD-format span-extraction data (CMRC 2018, DRCD) into examples.

Mirrors `read_squad_examples` of XLNet's `run_squad.py` / Chinese-XLNet's `run_cmrc_drcd.py`:
the context is kept RAW (never normalised), the training answer is the first answer, all answers
are kept for evaluation. On top of the original we repair the data quirks listed in
`shared/data/SOURCES.md`:

* 33 CMRC answers carry `answer_start` in UTF-16 code units (astral characters such as `𫚭`
  count twice). When `context[s:s+len(text)] != text` we convert the offset from UTF-16 units to
  code points and keep the fix only if the text then matches exactly (counted: `utf16_fixed`).
* `answer_start == -1` (193 free-form CMRC dev answers) and answers whose text is not at their
  offset are kept for evaluation but the question is not trainable when its FIRST answer is one
  of them (counted: `start_minus_one`, `answer_not_found`, `untrainable`).
* A paragraph with an empty (or all-whitespace) context cannot be aligned or answered: it is
  skipped with a one-line warning and its questions are counted in `empty_context_questions`
  (they are not in the returned list; the metric then counts them as missing predictions).
* A question without `id` is an error (`CxlnetError` naming file, article, paragraph, question).
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cxlnet.errors import CxlnetError, read_json

log = logging.getLogger(__name__)


@dataclass
class SpanExample:
    """One question. `start`/`answer_text` are the training answer (first answer, offset fixed);
    `start == -1` means the question is not trainable (see `SpanExample.trainable`)."""

    qid: str
    question: str
    context: str  # raw, un-normalised paragraph text
    answers: list[dict]  # every answer: {"text": str, "answer_start": int} (offsets fixed, -1 kept)
    start: int = -1
    answer_text: str = ""
    para_id: int = 0  # index of the paragraph in the file: questions sharing it are tokenised once
    is_impossible: bool = False

    @property
    def trainable(self) -> bool:
        return self.start >= 0 and not self.is_impossible

    @property
    def answer_texts(self) -> list[str]:
        return [a["text"] for a in self.answers]


@dataclass
class ReadStats:
    """Counts gathered while reading one file (also logged)."""

    path: str = ""
    articles: int = 0
    paragraphs: int = 0
    questions: int = 0
    answers: int = 0
    utf16_fixed: int = 0  # answers whose UTF-16 offset was converted to code points
    start_minus_one: int = 0  # answers with answer_start == -1 (kept for eval)
    answer_not_found: int = 0  # answers whose text is not at their (fixed) offset (kept for eval)
    no_answer: int = 0  # questions without any answer
    untrainable: int = 0  # questions whose first answer is unusable for training
    empty_context_paragraphs: int = 0
    empty_context_questions: int = 0
    impossible: int = 0  # answers with an empty text or an offset no context can have (kept for eval)
    utf16_fixed_ids: list[str] = field(default_factory=list)
    impossible_answers: list[str] = field(default_factory=list)  # "<question id> answer <n> (...)"

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("utf16_fixed_ids")
        d.pop("impossible_answers")
        return d


def utf16_to_codepoint(text: str, offset: int) -> int | None:
    """Code-point index of the char at UTF-16 unit `offset` in `text` (None if it splits a pair)."""
    u = 0
    for i, ch in enumerate(text):
        if u == offset:
            return i
        if u > offset:
            return None
        u += 2 if ord(ch) > 0xFFFF else 1
    return len(text) if u == offset else None


def fix_answer_start(context: str, text: str, start: int) -> tuple[int, str]:
    """Return (start, status) with status 'ok', 'utf16' (offset converted), 'minus_one',
    'impossible' (an empty text, or an offset below -1 or that puts the text past the context's
    end even in UTF-16 units) or 'not_found'."""
    if start is None or start == -1:
        return -1, "minus_one"
    if start < -1 or not text.strip() or start + len(text) > len(context.encode("utf-16-le")) // 2:
        return start, "impossible"
    if context[start : start + len(text)] == text:
        return start, "ok"
    if any(ord(c) > 0xFFFF for c in context[: start + 1]):
        fixed = utf16_to_codepoint(context, start)
        if fixed is not None and context[fixed : fixed + len(text)] == text:
            return fixed, "utf16"
    return start, "not_found"


def _need(obj: Any, key: str, where: str, kind: type | tuple = str):
    if not isinstance(obj, dict) or key not in obj:
        raise CxlnetError(f"{where}: missing '{key}'")
    val = obj[key]
    if not isinstance(val, kind):
        raise CxlnetError(f"{where}: '{key}' should be {getattr(kind, '__name__', kind)}, got {type(val).__name__}")
    return val


def parse_squad(data: Any, source: str = "<json>") -> tuple[list[SpanExample], ReadStats]:
    """Turn a loaded SQuAD-format object into examples (see module docstring for the rules)."""
    stats = ReadStats(path=source)
    articles = _need(data, "data", source, list)
    examples: list[SpanExample] = []
    seen: set[str] = set()
    para_id = -1
    for a, article in enumerate(articles):
        stats.articles += 1
        for p, para in enumerate(_need(article, "paragraphs", f"{source}: article {a}", list)):
            para_id += 1
            where_p = f"{source}: article {a} paragraph {p}"
            stats.paragraphs += 1
            context = _need(para, "context", where_p)
            qas = _need(para, "qas", where_p, list)
            for q, qa in enumerate(qas):
                where_q = f"{where_p} question {q}"
                if not isinstance(qa, dict) or "id" not in qa:
                    raise CxlnetError(f"{where_q}: question has no 'id'")
                qid = str(qa["id"])
                if qid in seen:
                    raise CxlnetError(f"{where_q}: duplicate question id {qid!r}")
                seen.add(qid)
            if not context.strip():
                stats.empty_context_paragraphs += 1
                stats.empty_context_questions += len(qas)
                log.warning("%s: empty context, its %d question(s) skipped", where_p, len(qas))
                continue
            for q, qa in enumerate(qas):
                where_q = f"{where_p} question {q} ({qa['id']})"
                stats.questions += 1
                question = _need(qa, "question", where_q)
                raw_answers = qa.get("answers") or []
                if not isinstance(raw_answers, list):
                    raise CxlnetError(f"{where_q}: 'answers' should be a list")
                answers = []
                statuses = []
                for n, ans in enumerate(raw_answers):
                    text = _need(ans, "text", f"{where_q} answer {n}")
                    start = ans.get("answer_start", -1)
                    if not isinstance(start, int):
                        raise CxlnetError(f"{where_q} answer {n}: 'answer_start' should be int")
                    start, status = fix_answer_start(context, text, start)
                    stats.answers += 1
                    if status == "utf16":
                        stats.utf16_fixed += 1
                        stats.utf16_fixed_ids.append(str(qa["id"]))
                    elif status == "minus_one":
                        stats.start_minus_one += 1
                    elif status == "not_found":
                        stats.answer_not_found += 1
                    elif status == "impossible":
                        stats.impossible += 1
                        stats.impossible_answers.append(
                            f"{qa['id']} answer {n} (answer_start {start}, {len(text)}-char text, "
                            f"{len(context)}-char context)")
                    answers.append({"text": text, "answer_start": start})
                    statuses.append(status)
                ex = SpanExample(
                    qid=str(qa["id"]), question=question, context=context, answers=answers,
                    para_id=para_id, is_impossible=bool(qa.get("is_impossible", False)),
                )
                if not answers:
                    stats.no_answer += 1
                if answers and statuses[0] in ("ok", "utf16"):
                    ex.start, ex.answer_text = answers[0]["answer_start"], answers[0]["text"]
                elif not ex.is_impossible:
                    stats.untrainable += 1
                examples.append(ex)
    log.info(
        "%s: %d questions in %d paragraphs; %d UTF-16 offsets fixed, %d answers with start -1, "
        "%d answers not found at their offset, %d questions untrainable, %d empty contexts skipped",
        source, stats.questions, stats.paragraphs, stats.utf16_fixed, stats.start_minus_one,
        stats.answer_not_found, stats.untrainable, stats.empty_context_paragraphs,
    )
    if stats.impossible:
        shown = stats.impossible_answers[:10]
        more = f" and {stats.impossible - len(shown)} more" if stats.impossible > len(shown) else ""
        log.warning("%s: %d answers with an impossible offset or text, kept for evaluation only: %s%s",
                    source, stats.impossible, "; ".join(shown), more)
    return examples, stats


def first_questions(data: dict, n: int) -> dict:
    """The SQuAD-format `data` cut after its first `n` questions in file order (empty-context ones
    included), for scoring a slice of a file the way the whole file would be scored."""
    articles, left = [], n
    for article in data["data"]:
        paragraphs = []
        for para in article["paragraphs"]:
            if left <= 0:
                break
            paragraphs.append({**para, "qas": para["qas"][:left]})
            left -= len(paragraphs[-1]["qas"])
        if paragraphs:
            articles.append({**article, "paragraphs": paragraphs})
    return {**data, "data": articles}


def read_examples(path: str | Path) -> tuple[list[SpanExample], ReadStats]:
    """Read a SQuAD-format JSON file (CMRC 2018, DRCD) into examples plus counts."""
    return parse_squad(read_json(path), str(path))
