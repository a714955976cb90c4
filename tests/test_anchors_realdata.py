"""The real-data alignment checks of the `fulldata` tests, on the real text shipped in the sample
(CMRC 2018 / DRCD slices, hfl's vocabulary), so the default suite runs them everywhere: the oracle
round trip (a perfect model's outputs decode to exactly the labelled token span wherever a window
allows it) and the banded LCS against the original's full-table LCS on real paragraphs."""
from __future__ import annotations

import pytest
from test_span_decode import oracle_report
from test_span_features import _check_against_reference, _codes

from cxlnet.errors import read_json
from cxlnet.paths import sample_dir
from cxlnet.text import Tokenizer, encode_pieces, preprocess_text

# deterministic for the shipped sample and hfl's spiece.model
EXPECTED = {
    "cmrc2018/dev.json": ({"exact": 345, "piece_wider": 19}, 95.05),
    "cmrc2018/trial.json": ({"exact": 106, "last_paragraph_token": 6, "piece_wider_em": 3, "piece_wider": 2}, 93.16),
    "drcd/dev.json": ({"exact": 56, "piece_wider": 2, "piece_wider_em": 1}, 96.61),
}


@pytest.fixture(scope="module")
def hfl_tok():
    return Tokenizer(sample_dir() / "pretrained" / "hfl-chinese-xlnet-base" / "spiece.model")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_oracle_round_trip_on_the_shipped_sample(hfl_tok, name):
    cats, metric, stats = oracle_report(sample_dir() / name, hfl_tok)
    assert stats.mismatch_paragraphs == 0
    expected_cats, expected_em = EXPECTED[name]
    assert dict(cats) == expected_cats
    assert round(metric["em"], 2) == expected_em and metric["total"] == sum(expected_cats.values())


def test_banded_lcs_equals_original_on_shipped_paragraphs(hfl_tok):
    data = read_json(sample_dir() / "cmrc2018" / "dev.json")
    ctxs = [p["context"] for a in data["data"] for p in a["paragraphs"]]
    special = [c for c in ctxs if any(ch in c for ch in "\u3000\u00a0\u200b\n…")]
    ctxs = sorted(ctxs, key=len)[:2] + special[:4] + ctxs[:: max(1, len(ctxs) // 4)][:4]
    pairs = [_codes(c, "".join(encode_pieces(hfl_tok.sp, preprocess_text(c))).replace("▁", " ")) for c in ctxs]
    assert len(pairs) >= 6
    _check_against_reference(pairs)
