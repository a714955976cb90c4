"""`cxlnet vocab inspect`: pieces, ids and character offsets on hfl's vocabulary."""
from __future__ import annotations

import pytest
from rich.console import Console

from cxlnet import cli
from cxlnet.paths import sample_dir
from cxlnet.text import Tokenizer
from cxlnet.vocab_inspect import PieceSpan, main, piece_spans, preprocess_with_origin

HFL = sample_dir() / "pretrained" / "hfl-chinese-xlnet-base" / "spiece.model"
TEXT = "我爱北京天安门，2000,年 Hello  World１２ ５,０００,０００元"


@pytest.fixture(scope="module")
def hfl() -> Tokenizer:
    return Tokenizer(HFL)


def test_pieces_ids_and_offsets_on_hfl_vocabulary(hfl):
    spans = piece_spans(hfl, TEXT)
    # ids checked against hfl's spiece.model (sentencepiece 0.2.3); offsets index the ORIGINAL
    # text: full-width `，` and `１２` are one character each although the model sees `,` and `12`.
    assert spans[:10] == [
        PieceSpan("▁我", 7397, 0, 1), PieceSpan("爱", 1323, 1, 2), PieceSpan("北京", 528, 2, 4),
        PieceSpan("天", 118, 4, 5), PieceSpan("安", 145, 5, 6), PieceSpan("门", 342, 6, 7),
        PieceSpan(",", 17, 7, 8), PieceSpan("2000", 881, 8, 12), PieceSpan(",", 17, 12, 13),
        PieceSpan("年", 22, 13, 14),
    ]
    assert spans[10:] == [
        PieceSpan("▁", 19, 14, 15), PieceSpan("Hel", 14732, 15, 18), PieceSpan("lo", 2644, 18, 20),
        PieceSpan("▁", 19, 20, 21), PieceSpan("World", 14153, 22, 27),  # two spaces: the model sees one
        PieceSpan("12", 90, 27, 29), PieceSpan("▁", 19, 29, 30),
        # XLNet's digit-comma rule cuts SentencePiece's `5,000,` into `5,000` and `,`
        PieceSpan("5,000", 6534, 30, 35), PieceSpan(",", 17, 35, 36), PieceSpan("000", 3547, 36, 39),
        PieceSpan("元", 218, 39, 40),
    ]
    assert [s.piece for s in spans] == hfl.pieces(TEXT) and [s.id for s in spans] == hfl.encode(TEXT)


def test_offsets_survive_accents_quotes_and_leading_space(hfl):
    text = "  cafe\u0301 ``x''"  # a decomposed accent: e + U+0301
    prepped, origin = preprocess_with_origin(text)
    assert prepped == 'cafe "x"'
    assert origin == [(2, 3), (3, 4), (4, 5), (5, 7), (7, 8), (8, 10), (10, 11), (11, 13)]
    spans = piece_spans(hfl, text)
    assert "".join(text[s.start:s.end] for s in spans).replace(" ", "") == "cafe\u0301``x''"
    assert all(0 <= s.start <= s.end <= len(text) for s in spans)


def test_cli_prints_the_table_and_refuses_a_missing_model(tmp_path, capsys):
    console = Console(record=True, width=120)
    assert main(["北京欢迎你"], console=console) == 0
    out = console.export_text()
    assert "北京" in out and "528" in out and str(HFL) in out.replace("\n", "")
    assert cli.main(["vocab", "inspect", "x", "--model", str(tmp_path / "none.model")]) == 2
    assert "cxlnet vocab: error:" in capsys.readouterr().err
