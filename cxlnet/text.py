"""Text preprocessing and SentencePiece tokenisation exactly as XLNet's `prepro_utils.py` does it.

Every pipeline (pre-training corpus, ChnSentiCorp, CMRC/DRCD questions and paragraphs) goes through
`preprocess_text` (whitespace collapse + NFKD accent stripping, so `，` becomes `,` and `１` becomes `1`)
and then `encode_pieces` (SentencePiece plus XLNet's digit-comma rule). We call `sentencepiece`
directly: transformers' fast XLNet tokenizer inserts extra `▁` pieces after user-defined symbols.
"""
from __future__ import annotations

import hashlib
import re
import sys
import unicodedata
from functools import cache, cached_property
from itertools import chain
from pathlib import Path

import numpy as np

from cxlnet.errors import CxlnetError, atomic_write_bytes

SPIECE_UNDERLINE = "▁"
SPIECE_FILE = "spiece.model"  # a tokenizer saved beside weights (`model.spiece_model=auto` finds it)

# XLNet's fixed layout of special ids (data_utils.special_symbols); hfl's vocab follows it.
SPECIAL_PIECES = ("<unk>", "<s>", "</s>", "<cls>", "<sep>", "<pad>", "<mask>", "<eod>", "<eop>")
UNK_ID, BOS_ID, EOS_ID, CLS_ID, SEP_ID, PAD_ID, MASK_ID, EOD_ID, EOP_ID = range(len(SPECIAL_PIECES))


def preprocess_text(text: str, lower: bool = False, remove_space: bool = True, keep_accents: bool = False) -> str:
    """XLNet's `preprocess_text`: collapse whitespace, normalise quotes, NFKD-strip accents, optional lower."""
    out = " ".join(text.strip().split()) if remove_space else text
    out = out.replace("``", '"').replace("''", '"')
    if not keep_accents:
        out = unicodedata.normalize("NFKD", out)
        out = "".join(c for c in out if not unicodedata.combining(c))
    return out.lower() if lower else out


@cache
def _combining_candidates() -> re.Pattern:
    """A few wide code-point ranges that hold every character with a non-zero canonical combining
    class (what `preprocess_text` drops after NFKD). A short class scans a text block at C speed;
    each match is then checked exactly (`_drop_combining`)."""
    marks = [c for c in range(sys.maxunicode + 1) if unicodedata.combining(chr(c))]
    ranges, lo = [], marks[0]
    for prev, cur in zip(marks, marks[1:] + [sys.maxunicode + 1024]):
        if cur - prev > 256:  # merging nearer ranges keeps the class short (fast) and CJK outside it
            ranges.append(f"{re.escape(chr(lo))}-{re.escape(chr(prev))}")
            lo = cur
    return re.compile("[" + "".join(ranges) + "]")


def _drop_combining(match: re.Match) -> str:
    return "" if unicodedata.combining(match.group()) else match.group()


def preprocess_many(texts: list[str], lower: bool = False) -> list[str]:
    """`preprocess_text` of many texts, equal text by text: whitespace is collapsed per text, then
    quotes, NFKD, accent stripping and lowercasing run once over the texts joined by `\\n` (none of
    them crosses or creates a newline: a newline is a starter, and no character decomposes to one)."""
    if not texts:
        return []
    joined = "\n".join(" ".join(t.split()) for t in texts).replace("``", '"').replace("''", '"')
    joined = _combining_candidates().sub(_drop_combining, unicodedata.normalize("NFKD", joined))
    return (joined.lower() if lower else joined).split("\n")


def _flatten(lists: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(all ids in one int64 array, the length of each list)."""
    lens = np.fromiter(map(len, lists), dtype=np.int64, count=len(lists))
    return np.fromiter(chain.from_iterable(lists), dtype=np.int64, count=int(lens.sum())), lens


def encode_pieces(sp, text: str) -> list[str]:
    """SentencePiece pieces with XLNet's digit-comma rule: `2000,` is split into `2000` and `,`."""
    pieces = sp.encode_as_pieces(text)
    out: list[str] = []
    for piece in pieces:
        if len(piece) > 1 and piece[-1] == "," and piece[-2].isdigit():
            cur = sp.encode_as_pieces(piece[:-1].replace(SPIECE_UNDERLINE, ""))
            if piece[0] != SPIECE_UNDERLINE and cur[0][0] == SPIECE_UNDERLINE:
                cur = cur[1:] if len(cur[0]) == 1 else [cur[0][1:], *cur[1:]]
            out.extend(cur)
            out.append(piece[-1])
        else:
            out.append(piece)
    return out


class Tokenizer:
    """A SentencePiece model checked against XLNet's special-id layout, with XLNet's preprocessing."""

    def __init__(self, path: str | Path, lower: bool = False, num_threads: int = -1):
        import sentencepiece as spm

        self.path = Path(path)
        self.num_threads = num_threads  # of a batched SentencePiece call (-1: its default, all cores)
        if not self.path.is_file():
            raise CxlnetError(f"{self.path}: SentencePiece model not found")
        try:
            self.sp = spm.SentencePieceProcessor(model_file=str(self.path))
        except (OSError, RuntimeError) as err:
            raise CxlnetError(f"{self.path}: not a SentencePiece model ({err})") from None
        self.lower = lower
        for expected_id, piece in enumerate(SPECIAL_PIECES):
            got = self.sp.piece_to_id(piece) if expected_id < self.sp.get_piece_size() else None
            if got != expected_id:
                raise CxlnetError(
                    f"{self.path}: special token {piece} has id {got}, XLNet's layout needs {expected_id} "
                    f"({' '.join(SPECIAL_PIECES)} = 0..{len(SPECIAL_PIECES) - 1})"
                )

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def pieces(self, text: str) -> list[str]:
        return encode_pieces(self.sp, preprocess_text(text, lower=self.lower))

    def encode(self, text: str) -> list[int]:
        return [self.sp.piece_to_id(p) for p in self.pieces(text)]

    def encode_many(self, texts: list[str]) -> list[list[int]]:
        """`encode` for many texts: one batched SentencePiece call, with the digit-comma rule
        re-applied (through `encode_pieces`) only to the texts that got a `<digit>,` piece."""
        return self._encode(texts)[0]

    def encode_flat(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """`encode_many` as (every id in one int64 array, the number of ids of each text)."""
        return self._encode(texts)[1:]

    def _encode(self, texts: list[str]) -> tuple[list[list[int]], np.ndarray, np.ndarray]:
        prepped = preprocess_many(texts, lower=self.lower)
        out = self.sp.encode(prepped, out_type=int, num_threads=self.num_threads)
        flat, lens = _flatten(out)
        hit = self._digit_comma[flat]
        if hit.any():
            for k in np.unique(np.repeat(np.arange(len(out)), lens)[hit]).tolist():
                out[k] = [self.sp.piece_to_id(p) for p in encode_pieces(self.sp, prepped[k])]
            flat, lens = _flatten(out)
        return out, flat, lens

    @cached_property
    def _digit_comma(self) -> np.ndarray:
        """Per piece id: does the piece end in a digit followed by `,` (the rule's trigger)?"""
        pieces = (self.sp.id_to_piece(i) for i in range(self.vocab_size))
        return np.fromiter((len(p) > 1 and p[-1] == "," and p[-2].isdigit() for p in pieces), dtype=bool,
                           count=self.vocab_size)

    def piece_to_id(self, piece: str) -> int:
        return self.sp.piece_to_id(piece)

    def id_to_piece(self, idx: int) -> str:
        return self.sp.id_to_piece(idx)

    @cached_property
    def start_piece_ids(self) -> frozenset[int]:
        """Ids of pieces where a masked span may start (XLNet's `_is_start_piece`)."""
        return frozenset(i for i in range(self.vocab_size) if is_start_piece(self.sp.id_to_piece(i)))


_START_PUNCT = set('!"#$%&()*+,-./:;?@[\\]^_`{|}~')


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_tokenizer(tokenizer: "Tokenizer | Path", directory: str | Path) -> Path:
    """Write the SentencePiece model as `<directory>/spiece.model` (atomically)."""
    src = tokenizer.path if isinstance(tokenizer, Tokenizer) else Path(tokenizer)
    return atomic_write_bytes(Path(directory) / SPIECE_FILE, src.read_bytes())


def is_start_piece(piece: str) -> bool:
    """XLNet's span masking may start at word starts, special tokens and single ASCII punctuation."""
    return piece.startswith(SPIECE_UNDERLINE) or piece.startswith("<") or piece in _START_PUNCT
