"""`cxlnet vocab inspect "TEXT"`: how a SentencePiece vocabulary cuts a text, piece by piece.

    cxlnet vocab inspect "哈工大讯飞联合实验室发布了中文XLNet"            # hfl's vocabulary (default)
    cxlnet vocab inspect "..." --model runs/pretrain/vocab/spiece.model

Each row is a piece as the model sees it (after XLNet's preprocessing and digit-comma rule, exactly
`cxlnet.text.Tokenizer.pieces`), its id, and the character offsets [start, end) of the original text
it covers. Chinese text is cut into words *and* characters, not one piece per character as in
BERT's vocabulary; `▁` marks a piece that starts a word (after a space or at the start).
"""
from __future__ import annotations

import argparse
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from cxlnet.errors import CxlnetError
from cxlnet.text import SPIECE_UNDERLINE, Tokenizer, preprocess_text

DEFAULT_MODEL = "pretrained/hfl-chinese-xlnet-base/spiece.model"  # resolved through the data directory


@dataclass(frozen=True)
class PieceSpan:
    piece: str
    id: int
    start: int  # character offsets into the original text; start == end for a piece with no surface
    end: int


def preprocess_with_origin(text: str, lower: bool = False) -> tuple[str, list[tuple[int, int]]]:
    """`preprocess_text(text)` and, for each of its characters, the range [start, end) of original
    characters it stands for (a whitespace run collapses onto its first character, ``` `` ``` onto
    both backquotes, a dropped accent onto the letter before it)."""
    chars: list[tuple[str, int, int]] = []
    for i, c in enumerate(text):  # strip + collapse whitespace runs, as " ".join(text.strip().split())
        if not c.isspace():
            chars.append((c, i, i + 1))
        elif chars and not chars[-1][0].isspace():
            chars.append((" ", i, i + 1))
    if chars and chars[-1][0] == " ":
        chars.pop()
    for pair in ("``", "''"):  # str.replace, left to right, one pair after the other
        out, k = [], 0
        while k < len(chars):
            if "".join(c for c, _, _ in chars[k:k + 2]) == pair:
                out.append(('"', chars[k][1], chars[k + 1][2]))
                k += 2
            else:
                out.append(chars[k])
                k += 1
        chars = out
    # NFKD one character at a time, then dropping combining marks, equals NFKD of the whole string
    # followed by the same drop: canonical reordering only moves the marks that are dropped.
    result: list[tuple[str, int, int]] = []
    for c, a, b in chars:
        for d in unicodedata.normalize("NFKD", c):
            if not unicodedata.combining(d):
                result.append((d, a, b))
            elif result:  # a dropped mark still belongs to the letter before it
                result[-1] = (result[-1][0], result[-1][1], b)
    if lower:
        result = [(low, a, b) for c, a, b in result for low in c.lower()]
    prepped = "".join(c for c, _, _ in result)
    if prepped != preprocess_text(text, lower=lower):
        raise CxlnetError("cannot align offsets: preprocessing changed the text in an unexpected way")
    return prepped, [(a, b) for _, a, b in result]


def piece_spans(tokenizer: Tokenizer, text: str) -> list[PieceSpan]:
    """The tokenizer's pieces of `text` with ids and character offsets into `text`."""
    prepped, origin = preprocess_with_origin(text, tokenizer.lower)
    raw = tokenizer.sp.encode(prepped, return_type="proto").pieces
    data = prepped.encode("utf-8")
    char_at = {}  # byte offset -> character offset in `prepped`
    pos = 0
    for k, c in enumerate(prepped):
        char_at[pos] = k
        pos += len(c.encode("utf-8"))
    char_at[pos] = len(prepped)
    assert pos == len(data)

    def to_original(b: int, e: int) -> tuple[int, int]:
        s, t = char_at[b], char_at[e]
        if s == t:
            at = origin[s][0] if s < len(origin) else len(text)
            return at, at
        return origin[s][0], origin[t - 1][1]

    final = tokenizer.pieces(text)
    spans: list[PieceSpan] = []
    k = 0
    for p in raw:
        # The digit-comma rule may cut one raw piece into several final ones; they cover the raw
        # piece's surface in order, one character per character of their text.
        covered, group = p.piece.replace(SPIECE_UNDERLINE, ""), []
        while k < len(final) and (not group or len("".join(group).replace(SPIECE_UNDERLINE, "")) < len(covered)):
            group.append(final[k])
            k += 1
        start_char, end_char = char_at[p.begin], char_at[p.end]
        width = end_char - start_char
        lead = max(0, width - len(covered))  # the space a `▁` stands for belongs to the first piece
        offset = start_char
        for j, piece in enumerate(group):
            n = len(piece.replace(SPIECE_UNDERLINE, "")) + (lead if j == 0 else 0)
            if j == len(group) - 1:
                n = width - (offset - start_char)
            b = len(prepped[:offset].encode("utf-8"))
            e = len(prepped[:offset + n].encode("utf-8"))
            spans.append(PieceSpan(piece, tokenizer.piece_to_id(piece), *to_original(b, e)))
            offset += n
    if [s.piece for s in spans] != final:
        raise CxlnetError("cannot align offsets with the pieces of this text")
    return spans


def render(spans: list[PieceSpan], text: str, model: Path, vocab_size: int):
    from rich.table import Table

    table = Table(title=f"{len(spans)} pieces", caption=f"{model} ({vocab_size} pieces)", title_justify="left",
                  caption_justify="left")
    for column, justify in (("#", "right"), ("piece", "left"), ("id", "right"), ("start", "right"),
                            ("end", "right"), ("text", "left")):
        table.add_column(column, justify=justify)
    for n, s in enumerate(spans):
        table.add_row(str(n), s.piece, str(s.id), str(s.start), str(s.end), repr(text[s.start:s.end]))
    return table


def main(argv: list[str], console=None) -> int:
    from rich.console import Console

    from cxlnet.paths import resolve_data_file

    parser = argparse.ArgumentParser(
        prog="cxlnet vocab inspect",
        description="Show the SentencePiece pieces, ids and character offsets of a text.")
    parser.add_argument("text", help="the text to cut into pieces (quote it)")
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help="a spiece.model (default: hfl's, %(default)s, through the data directory)")
    parser.add_argument("--lower", action="store_true", help="lower-case first (for an uncased vocabulary)")
    args = parser.parse_args(argv)
    path = resolve_data_file(None, args.model)
    tokenizer = Tokenizer(path, lower=args.lower)
    spans = piece_spans(tokenizer, args.text)
    (console or Console()).print(render(spans, args.text, path, tokenizer.vocab_size))
    return 0
