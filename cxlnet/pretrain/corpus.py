"""Raw pre-training corpus → compact, sharded token store (XLNet `data_utils._create_data`, §2.1).

Corpus format: UTF-8 text, one sentence per line, a blank line ends a document. Every non-blank line
is encoded independently with `encode_ids(preprocess_text(line))`; a running boolean `sent_id`
(starting True in every file) is flipped after each line, and a blank line emits `<eod>` glued to the
previous sentence (flip, emit, flip). Files are joined in the given order, negating a file's sent_ids
when its first value equals the previous file's last one (so a join is always a sentence boundary).

Store layout (`out_dir/`):

- `store.json` — manifest: format/version, vocab_size, dtype, tokenizer path + sha256, counts
  (files, lines, sentences, documents, tokens), `shards` (file names, tokens, documents each), the
  source files (path, bytes, sha256, lines, tokens).
- `shard-NNNNN.ids.npy` — token ids, `uint16` when the vocab has ≤ 65535 pieces, else `uint32`.
- `shard-NNNNN.sent.npy` — sent_id bits, `np.packbits` (big-endian bit order) of the bool stream.
- `start_pieces.npy` — bool[vocab_size], XLNet's `_is_start_piece` per id (span masking needs it;
  the reader then needs no SentencePiece).

The stream is cut into shards at document ends (after an `<eod>`), balanced by token count; if there
are too few documents it falls back to sentence boundaries. Shards are the unit of `num_task`/`task`
splits and of the per-pass file-order shuffle (they play the role of XLNet's input files).
Every file is written atomically; the manifest is written last.
"""
from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cxlnet.errors import CxlnetError, atomic_write_bytes, atomic_write_json, read_json
from cxlnet.text import EOD_ID, Tokenizer, is_start_piece

log = logging.getLogger(__name__)

STORE_FORMAT = "cxlnet-pretrain-store"
STORE_VERSION = 1
MANIFEST = "store.json"


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def read_corpus_lines(path: Path) -> list[str]:
    """Lines of a UTF-8 corpus file (split on `\\n`, CRLF accepted, no trailing empty line)."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise CxlnetError(f"{path}: cannot read corpus file ({err.strerror})") from None
    bom = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    try:
        text = data[bom:].decode("utf-8")
    except UnicodeDecodeError as err:
        at = bom + err.start  # the offset in the file, BOM included
        line = data[:at].count(b"\n") + 1
        raise CxlnetError(f"{path}:{line}: not valid UTF-8 (byte {data[at]:#04x} at offset {at})") from None
    lines = text.replace("\r\n", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


@dataclass
class _FileStream:
    ids: np.ndarray
    sent: np.ndarray
    n_lines: int
    n_sent: int
    doc_ends: np.ndarray  # token offsets just after each <eod>


def _encode_file(path: Path, tokenizer: Tokenizer) -> _FileStream | None:
    lines = read_corpus_lines(path)
    if not lines:
        return None
    blank = [not line.strip() for line in lines]
    encoded = iter(tokenizer.encode_many([line.strip() for line, b in zip(lines, blank) if not b]))
    pieces: list[list[int]] = []
    for b in blank:
        pieces.append([EOD_ID] if b else next(encoded))
    lens = np.fromiter((len(p) for p in pieces), dtype=np.int64, count=len(pieces))
    # sent_id before the line's own flip: line k (0-based) with b_k blank lines among 0..k gets
    # True xor (k + #blank in 0..k) odd  (each line flips once, a blank line flips once more first).
    nblank = np.cumsum(np.asarray(blank, dtype=np.int64))
    line_sent = ((np.arange(len(lines)) + nblank) % 2) == 0
    ids = np.fromiter((i for p in pieces for i in p), dtype=np.int64, count=int(lens.sum()))
    sent = np.repeat(line_sent, lens)
    ends = np.cumsum(lens)
    doc_ends = ends[np.asarray(blank, dtype=bool)]
    return _FileStream(ids, sent, len(lines), len(lines) - int(nblank[-1]), doc_ends)


def _cut_points(n_tokens: int, boundaries: np.ndarray, num_shards: int) -> list[int]:
    """Interior cut offsets (sorted, unique) nearest to the equal-token targets."""
    if num_shards <= 1 or boundaries.size == 0:
        return []
    targets = np.arange(1, num_shards) * n_tokens / num_shards
    pos = np.clip(np.searchsorted(boundaries, targets), 0, boundaries.size - 1)
    left = np.clip(pos - 1, 0, boundaries.size - 1)
    pick = np.where(np.abs(boundaries[left] - targets) <= np.abs(boundaries[pos] - targets), boundaries[left], boundaries[pos])
    cuts = sorted({int(c) for c in pick if 0 < c < n_tokens})
    return cuts


def continue_sent_ids(sent: np.ndarray, prev_last: bool | None) -> tuple[np.ndarray, bool]:
    """XLNet negates a file's sentence ids when its first one equals the previous file's last one,
    so the boundary between two concatenated files stays a sentence boundary."""
    if prev_last is not None and bool(sent[0]) == prev_last:
        sent = ~sent
    return sent, bool(sent[-1])


def build_store(
    corpus_files: list[str | Path],
    tokenizer: Tokenizer | str | Path,
    out_dir: str | Path,
    num_shards: int = 8,
) -> dict:
    """Encode the corpus once and write the sharded token store; return the manifest dict."""
    if not isinstance(tokenizer, Tokenizer):
        tokenizer = Tokenizer(tokenizer)
    if not corpus_files:
        raise CxlnetError("build_store: no corpus files given")
    if num_shards < 1:
        raise CxlnetError(f"build_store: num_shards must be >= 1, got {num_shards}")
    out_dir = Path(out_dir)
    vocab_size = tokenizer.vocab_size
    dtype = np.uint16 if vocab_size <= 65535 else np.uint32

    ids_parts, sent_parts, doc_end_parts, sources = [], [], [], []
    offset, prev_last = 0, None
    n_lines = n_sent = 0
    for path in map(Path, corpus_files):
        if not path.is_file():
            raise CxlnetError(f"{path}: corpus file not found")
        fs = _encode_file(path, tokenizer)
        info = {"path": str(path), "bytes": path.stat().st_size, "sha256": _sha256_file(path), "lines": 0, "tokens": 0}
        sources.append(info)
        if fs is None or fs.ids.size == 0:
            log.warning("%s: empty corpus file, skipped", path)
            continue
        info["lines"], info["tokens"] = fs.n_lines, int(fs.ids.size)
        if fs.doc_ends.size == 0:
            log.warning(
                "%s: no blank line (document break) found; the whole file is treated as one document", path
            )
        sent, prev_last = continue_sent_ids(fs.sent, prev_last)
        ids_parts.append(fs.ids)
        sent_parts.append(sent)
        doc_end_parts.append(fs.doc_ends + offset)
        offset += fs.ids.size
        n_lines += fs.n_lines
        n_sent += fs.n_sent
    if offset == 0:
        raise CxlnetError(f"empty corpus: no tokens in {', '.join(str(p) for p in corpus_files)}")
    ids = np.concatenate(ids_parts)
    sent = np.concatenate(sent_parts)
    if ids.max() >= vocab_size or ids.min() < 0:
        raise CxlnetError("build_store: token id out of the vocabulary range (tokenizer mismatch)")
    doc_ends = np.concatenate(doc_end_parts)
    file_ends = np.cumsum([p.size for p in ids_parts])
    n_docs = int(doc_ends.size) + int(sent.size > 0 and (doc_ends.size == 0 or doc_ends[-1] != ids.size))

    # shard boundaries: document ends (and file joins), else sentence boundaries
    doc_bounds = np.unique(np.concatenate([doc_ends, file_ends]))
    doc_bounds = doc_bounds[(doc_bounds > 0) & (doc_bounds < ids.size)]
    if doc_bounds.size >= num_shards - 1:
        cuts = _cut_points(ids.size, doc_bounds, num_shards)
    else:
        sent_bounds = np.flatnonzero(sent[1:] != sent[:-1]) + 1
        cuts = _cut_points(ids.size, sent_bounds, num_shards)
    if len(cuts) + 1 < num_shards:
        log.warning("corpus too small for %d shards: writing %d", num_shards, len(cuts) + 1)
    edges = [0, *cuts, int(ids.size)]

    out_dir.mkdir(parents=True, exist_ok=True)
    old = out_dir / MANIFEST
    if old.exists():
        old.unlink()  # a half-rewritten store must not look valid
    shards = []
    for k, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
        name = f"shard-{k:05d}"
        atomic_write_bytes(out_dir / f"{name}.ids.npy", _npy_bytes(ids[a:b].astype(dtype)))
        atomic_write_bytes(out_dir / f"{name}.sent.npy", _npy_bytes(np.packbits(sent[a:b])))
        n_doc_shard = int(((doc_ends > a) & (doc_ends <= b)).sum())
        shards.append({"ids": f"{name}.ids.npy", "sent": f"{name}.sent.npy", "tokens": b - a, "documents_ended": n_doc_shard})
    start = np.array([is_start_piece(tokenizer.id_to_piece(i)) for i in range(vocab_size)], dtype=bool)
    atomic_write_bytes(out_dir / "start_pieces.npy", _npy_bytes(start))
    manifest = {
        "format": STORE_FORMAT,
        "version": STORE_VERSION,
        "vocab_size": vocab_size,
        "dtype": np.dtype(dtype).name,
        "tokenizer": {"path": str(tokenizer.path), "sha256": _sha256_file(tokenizer.path), "lower": tokenizer.lower},
        "counts": {
            "files": sum(1 for s in sources if s["tokens"]),
            "lines": n_lines,
            "sentences": n_sent,
            "documents": n_docs,
            "tokens": int(ids.size),
        },
        "shards": shards,
        "sources": sources,
    }
    atomic_write_json(out_dir / MANIFEST, manifest)
    return manifest


@dataclass
class Shard:
    ids: np.ndarray  # store dtype (uint16 / uint32)
    sent: np.ndarray  # bool


class TokenStore:
    """Read side of the store: manifest, shards (ids + sent bits) and the start-piece table."""

    def __init__(self, path: str | Path):
        self.dir = Path(path)
        manifest_path = self.dir / MANIFEST
        if not manifest_path.is_file():
            raise CxlnetError(f"{self.dir}: not a token store ({MANIFEST} missing; run build_store first)")
        self.manifest = read_json(manifest_path)
        if self.manifest.get("format") != STORE_FORMAT or self.manifest.get("version") != STORE_VERSION:
            raise CxlnetError(f"{manifest_path}: unsupported store format {self.manifest.get('format')!r} "
                              f"version {self.manifest.get('version')!r}")
        self.vocab_size = int(self.manifest["vocab_size"])
        self._ids: dict[int, np.ndarray] = {}
        self._start: np.ndarray | None = None

    @property
    def num_shards(self) -> int:
        return len(self.manifest["shards"])

    @property
    def start_pieces(self) -> np.ndarray:
        if self._start is None:
            self._start = np.load(self.dir / "start_pieces.npy")
        return self._start

    def shard(self, k: int) -> Shard:
        """Shard k: its ids memory-mapped (so a data-loader worker holds no private copy of the
        store) and its sentence ids unpacked from their bit array."""
        info = self.manifest["shards"][k]
        try:
            if k not in self._ids:
                self._ids[k] = np.load(self.dir / info["ids"], mmap_mode="r")
            sent = np.unpackbits(np.load(self.dir / info["sent"]), count=int(info["tokens"])).astype(bool)
        except (OSError, ValueError) as err:
            raise CxlnetError(f"{self.dir}: shard {k} unreadable ({err})") from None
        ids = self._ids[k]
        if ids.size != int(info["tokens"]):
            raise CxlnetError(f"{self.dir / info['ids']}: {ids.size} tokens, manifest says {info['tokens']}")
        return Shard(ids, sent)
