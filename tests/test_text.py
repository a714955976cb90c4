"""XLNet's text preprocessing (prepro_utils.py): NFKD normalisation, the digit-comma rule of
`encode_pieces`, and the start pieces of span masking."""
from __future__ import annotations

import io

import pytest
import sentencepiece as spm

from cxlnet.text import encode_pieces, is_start_piece, preprocess_text


@pytest.mark.parametrize("raw, expected", [
    ("，１２３…", ",123..."),  # full-width comma and digits to ASCII, the ellipsis to three dots
    ("！？：；（）％～－", "!?:;()%~-"),
    ("。、“”《》「·—", "。、“”《》「·—"),  # unchanged
    ("①²", "12"), ("㎡", "m2"), ("½", "1⁄2"), ("が", "か"), ("é", "e"), ("︰", ".."),
    ("  北京\u3000 上海\n", "北京 上海"),  # whitespace runs (U+3000 too) collapse, ends stripped
    ("``引号''", '"引号"'),
])
def test_preprocess_text_matches_xlnet(raw, expected):
    assert preprocess_text(raw) == expected


def test_preprocess_text_options():
    assert preprocess_text("  A  B ", remove_space=False) == "  A  B "
    assert preprocess_text("Éa", lower=True) == "ea"
    assert preprocess_text("é", keep_accents=True) == "é"


@pytest.fixture(scope="module")
def digit_comma_sp():
    """A small SentencePiece model that holds the piece `1990,` (a user-defined symbol), as
    vocabularies trained on text with numbers do."""
    lines = [f"{w}生于1990,卒于{y}年。" for w in ("他", "她", "王", "李") for y in range(1900, 2000)]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=model, vocab_size=40,
                                   model_type="unigram", character_coverage=1.0, hard_vocab_limit=False,
                                   user_defined_symbols=["1990,"], minloglevel=2)
    return spm.SentencePieceProcessor(model_proto=model.getvalue())


@pytest.mark.parametrize("text", ["他生于1990,卒", "1990,卒"])
def test_digit_comma_rule_splits_the_comma_off(digit_comma_sp, text):
    raw = digit_comma_sp.encode(text, out_type=str)
    assert "1990," in raw
    pieces = encode_pieces(digit_comma_sp, text)
    assert "1990," not in pieces and "," in pieces
    comma = pieces.index(",")
    assert pieces[comma - 1].endswith("0")
    # Only the `▁` that re-encoding adds in front of the number is dropped: same text.
    assert "".join(pieces) == "".join(raw)


def test_start_pieces_are_xlnets():
    # Any piece starting with `<` counts (the original tests startswith("<"), so `<` alone too).
    for piece in ("▁北京", "▁", "<sep>", "<cls>", "<eod>", "<", ",", ".", "(", "!", "?", "-", '"'):
        assert is_start_piece(piece), piece
    for piece in ("北京", "的", "'", "=", ">", "，", "。", "1990,"):
        assert not is_start_piece(piece), piece
