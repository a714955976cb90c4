"""XLNet's text preprocessing (prepro_utils.py): NFKD normalisation, the digit-comma rule of
`encode_pieces`, and the start pieces of span masking."""
from __future__ import annotations

import io

import pytest
import sentencepiece as spm

from cxlnet.text import Tokenizer, encode_pieces, is_start_piece, preprocess_text


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
def digit_comma_tok(tmp_path_factory) -> Tokenizer:
    """A small SentencePiece model in XLNet's id layout that holds the piece `1990,` (a
    user-defined symbol here), as vocabularies trained on text with numbers do."""
    lines = [f"{w}生于1990,卒于{y}年。" for w in ("他", "她", "王", "李") for y in range(1900, 2000)]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=model, vocab_size=50,
                                   model_type="unigram", character_coverage=1.0, hard_vocab_limit=False,
                                   control_symbols=["<cls>", "<sep>", "<pad>", "<mask>", "<eod>"],
                                   user_defined_symbols=["<eop>", "1990,"], minloglevel=2)
    path = tmp_path_factory.mktemp("spm") / "digit-comma.model"
    path.write_bytes(model.getvalue())
    return Tokenizer(path)


@pytest.fixture(scope="module")
def digit_comma_sp(digit_comma_tok):
    return digit_comma_tok.sp


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


def test_batched_encoding_is_the_per_text_encoding(digit_comma_tok):
    texts = ["他生于1990,卒于1999年。", "1990,", "王生于１９９０，卒。", "  ", "李卒于1950年。"]
    assert digit_comma_tok.encode_many(texts) == [digit_comma_tok.encode(t) for t in texts]
    assert "1990," not in [digit_comma_tok.id_to_piece(i) for i in digit_comma_tok.encode_many(texts)[0]]
