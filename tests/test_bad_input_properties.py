"""Property tests of the readers of user files: whatever the bytes, a reader either returns what it
promises or raises our one-line `CxlnetError` naming the file; never another exception."""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cxlnet.classify.data import read_tsv
from cxlnet.errors import CxlnetError
from cxlnet.paths import sample_dir
from cxlnet.span.examples import parse_squad, read_examples

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def scratch():
    root = Path(tempfile.mkdtemp(prefix="cxlnet-properties-"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


def one_line_error(err: CxlnetError, path: Path | str) -> None:
    text = str(err)
    assert "\n" not in text and str(path) in text, text


# ------------------------------------------------------------------------------- TSV
TSV_LINE = st.tuples(
    st.sampled_from(["0", "1", "2", "label", "", " 1", "1 ", "-1", "١"]),
    st.sampled_from(["\t", "", " ", "\t\t"]),
    st.text(max_size=20),
).map("".join)
TSV_FILE = st.one_of(
    st.binary(max_size=200),
    st.lists(TSV_LINE, max_size=8).map(lambda lines: "\n".join(lines).encode("utf-8")),
    st.tuples(st.lists(TSV_LINE, max_size=4), st.binary(max_size=8)).map(
        lambda t: "\r\n".join(t[0]).encode("utf-8") + t[1]),
)


@SETTINGS
@given(data=TSV_FILE)
def test_tsv_reader_parses_or_names_the_line(scratch, data):
    path = scratch / "data.tsv"
    path.write_bytes(data)
    try:
        examples = read_tsv(path, num_labels=2)
    except CxlnetError as err:
        one_line_error(err, path)
        return
    assert examples and all(e.label in (0, 1) and isinstance(e.text, str) for e in examples)


# ------------------------------------------------------------------------- SQuAD JSON
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 10**6) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=12,
)
ANY = JSON | st.just("甲乙丙")


def squad_like():
    """Mostly well-formed SQuAD objects with wrong types, missing keys and odd offsets mixed in."""
    answer = st.fixed_dictionaries({"text": ANY | st.sampled_from(["乙", "", "丙丁", "𫚭"])},
                                   optional={"answer_start": st.integers(-5, 40) | ANY})
    qa = st.fixed_dictionaries({"question": ANY | st.just("什么？")},
                               optional={"id": ANY | st.text(max_size=3), "answers": st.lists(answer | ANY, max_size=3) | ANY,
                                         "is_impossible": ANY})
    para = st.fixed_dictionaries({"context": ANY | st.sampled_from(["甲乙丙丁", "", "  ", "𫚭甲乙"]),
                                  "qas": st.lists(qa | ANY, max_size=3) | ANY})
    article = st.fixed_dictionaries({"paragraphs": st.lists(para | ANY, max_size=3) | ANY})
    return st.fixed_dictionaries({"data": st.lists(article | ANY, max_size=3) | ANY}) | JSON


@SETTINGS
@given(obj=squad_like())
def test_squad_parser_parses_or_names_the_record(obj):
    try:
        examples, stats = parse_squad(obj, source="file.json")
    except CxlnetError as err:
        one_line_error(err, "file.json")
        return
    assert stats.questions >= len(examples)
    for ex in examples:
        assert isinstance(ex.context, str) and isinstance(ex.question, str)
        if ex.trainable:
            assert ex.context[ex.start:ex.start + len(ex.answer_text)] == ex.answer_text


@SETTINGS
@given(data=st.one_of(st.binary(max_size=120), squad_like().map(lambda o: json.dumps(o, ensure_ascii=False).encode())))
def test_squad_file_reader_parses_or_names_the_file(scratch, data):
    path = scratch / "squad.json"
    path.write_bytes(data)
    try:
        read_examples(path)
    except CxlnetError as err:
        one_line_error(err, path)


# ----------------------------------------------------------------------------- corpus
@pytest.fixture(scope="module")
def tokenizer():
    from cxlnet.text import Tokenizer

    return Tokenizer(sample_dir() / "pretrained" / "hfl-chinese-xlnet-base" / "spiece.model")


CORPUS_FILE = st.one_of(
    st.binary(max_size=150),
    st.lists(st.sampled_from(["", "第一句。", "  ", "\ufeffBOM", "a\r", "𫚭", "\x00", "<eod>"]) | st.text(max_size=10),
             max_size=8).map(lambda lines: "\n".join(lines).encode("utf-8")),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=CORPUS_FILE)
def test_corpus_reader_builds_a_store_or_names_the_file(scratch, tokenizer, data):
    from cxlnet.pretrain.corpus import TokenStore, build_store

    path = scratch / "corpus.txt"
    path.write_bytes(data)
    out = scratch / "store"
    shutil.rmtree(out, ignore_errors=True)
    try:
        manifest = build_store([path], tokenizer, out, num_shards=2)
    except CxlnetError as err:
        one_line_error(err, path)
        return
    assert TokenStore(out).manifest["counts"] == manifest["counts"]
