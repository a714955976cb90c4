"""Vocabulary training with Chinese-XLNet's spm settings and XLNet's special-id layout."""
from __future__ import annotations

from pathlib import Path

import pytest

from cxlnet.errors import CxlnetError
from cxlnet.pretrain.vocab import CONTROL_SYMBOLS, USER_DEFINED_SYMBOLS, train_vocab
from cxlnet.text import SPECIAL_PIECES, Tokenizer

from test_pretrain_data import corpus_slice


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return corpus_slice(tmp_path_factory.mktemp("vocab") / "slice.txt", 120)


def test_train_small_vocab_layout(corpus, tmp_path):
    model = train_vocab([corpus], tmp_path / "sp", vocab_size=4000, num_threads=1)
    assert model == tmp_path / "sp.model" and (tmp_path / "sp.vocab").is_file()
    tok = Tokenizer(model)  # validates <unk> <s> </s> <cls> <sep> <pad> <mask> <eod> <eop> = 0..8
    assert tok.vocab_size == 4000
    assert [tok.id_to_piece(i) for i in range(9)] == list(SPECIAL_PIECES)
    assert [tok.id_to_piece(i) for i in range(8, 8 + len(USER_DEFINED_SYMBOLS))] == USER_DEFINED_SYMBOLS
    assert CONTROL_SYMBOLS == ["<cls>", "<sep>", "<pad>", "<mask>", "<eod>"]
    # user-defined symbols are never split, control symbols are never produced from text
    assert "<eop>" in tok.pieces("第一段<eop>第二段") and "<sep>" not in tok.pieces("a<sep>b")
    vocab_lines = (tmp_path / "sp.vocab").read_text(encoding="utf-8").splitlines()
    assert len(vocab_lines) == 4000 and vocab_lines[3].split("\t")[0] == "<cls>"
    # deterministic for a seed (the .model also records the temporary input path, so compare pieces)
    train_vocab([corpus], tmp_path / "sp2", vocab_size=4000, num_threads=1)
    assert (tmp_path / "sp2.vocab").read_bytes() == (tmp_path / "sp.vocab").read_bytes()


def test_vocab_too_large_reports_largest_size(corpus, tmp_path):
    with pytest.raises(CxlnetError, match=r"the largest size that works is (\d+)") as err:
        train_vocab([corpus], tmp_path / "big", vocab_size=50000, num_threads=1)
    assert not (tmp_path / "big.model").exists()
    largest = int(err.value.args[0].rsplit(" ", 1)[1])
    assert 4000 < largest < 50000


def test_vocab_smaller_than_charset(corpus, tmp_path):
    with pytest.raises(CxlnetError, match="character_coverage"):
        train_vocab([corpus], tmp_path / "tiny", vocab_size=500, num_threads=1)


def test_wrong_layout_rejected_by_tokenizer(corpus, tmp_path):
    # without XLNet's control symbols the ids do not follow the layout: refused before writing ...
    with pytest.raises(CxlnetError, match="special token <cls> has id"):
        train_vocab([corpus], tmp_path / "plain", vocab_size=4000, num_threads=1, control_symbols=[],
                    user_defined_symbols=[])
    assert not (tmp_path / "plain.model").exists()
    # ... and a model written anyway is rejected by Tokenizer
    model = train_vocab([corpus], tmp_path / "plain", vocab_size=4000, num_threads=1, control_symbols=[],
                        user_defined_symbols=[], check_layout=False)
    with pytest.raises(CxlnetError, match="XLNet's layout needs 3"):
        Tokenizer(model)


def test_empty_and_non_utf8_input(tmp_path):
    (tmp_path / "e.txt").write_text("\n\n", encoding="utf-8")
    with pytest.raises(CxlnetError, match="no non-blank line"):
        train_vocab([tmp_path / "e.txt"], tmp_path / "e")
    (tmp_path / "b.txt").write_bytes(b"ok\n\xc3\x28\n")
    with pytest.raises(CxlnetError, match=r"b\.txt:2: not valid UTF-8"):
        train_vocab([tmp_path / "b.txt"], tmp_path / "b")
