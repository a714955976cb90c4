"""Streaming, parallel corpus encoding for `build_store`: text -> encoded parts on disk -> shards.

Every input file is read in blocks of whole lines (`part_bytes` each; `.gz` files are decompressed
on the fly). A block is one *part*: a worker process (with its own SentencePiece) encodes it exactly
as XLNet's `_create_data` loop does and writes the part beside the store (raw token ids, sentence
bits, document ends, then a small JSON record; each file atomically). The main process only reads,
dispatches and collects, with at most two blocks per worker in flight, so memory does not grow with
the corpus. A part whose record exists and matches (same file size and mtime, same block, same
tokenizer) is not encoded again: an interrupted run resumes where it stopped, part by part.

A part's sentence ids are computed as if it started its file (`sent_id = True`); `PartLayout`
flips them by the parity of the lines and blank lines before the part (XLNet's running `sent_id`)
and by the file-join negation, so the shards come out exactly as one pass over the text gives them.
"""
from __future__ import annotations

import gzip
import hashlib
import logging
import multiprocessing
import os
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

from cxlnet.errors import CxlnetError, atomic_write_bytes, atomic_write_json, atomic_write_with, read_json
from cxlnet.text import EOD_ID, Tokenizer

log = logging.getLogger(__name__)

BOM = b"\xef\xbb\xbf"
COPY_TOKENS = 1 << 22  # tokens per read/write when parts are copied into shards (bounds the memory)


def negate_at_join(first: bool, prev_last: bool | None) -> bool:
    """XLNet negates a file's sentence ids when its first one equals the previous file's last one,
    so the boundary between two concatenated files stays a sentence boundary."""
    return prev_last is not None and bool(first) == prev_last


def store_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 65535 else np.uint32)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_fingerprint(path: Path) -> dict:
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


# ------------------------------------------------------------------------------------- reading
def iter_blocks(path: Path, part_bytes: int, digest=None) -> Iterator[tuple[int, int, bytes]]:
    """(byte offset, line number of the first line, block) of consecutive whole-line blocks of about
    `part_bytes` (a block ends after a `\\n`, or at the end of the file). `digest` is updated with
    the file's bytes as they are read (plain files only: a `.gz` file is hashed by the caller)."""
    opener = gzip.open if path.suffix == ".gz" else open
    offset = line0 = 0
    carry = b""
    try:
        with opener(path, "rb") as fh:
            while buf := fh.read(part_bytes):
                if digest is not None:
                    digest.update(buf)
                data = carry + buf
                cut = data.rfind(b"\n") + 1
                if cut == 0:  # no line end yet: keep reading
                    carry = data
                    continue
                block, carry = data[:cut], data[cut:]
                yield offset, line0, block
                offset += len(block)
                line0 += block.count(b"\n")
    except (OSError, EOFError) as err:  # gzip.BadGzipFile is an OSError
        raise CxlnetError(f"{path}: cannot read corpus file ({getattr(err, 'strerror', None) or err})") from None
    if carry:
        yield offset, line0, carry


def block_lines(path: str, offset: int, line0: int, block: bytes) -> list[str]:
    """The lines of a block: UTF-8 (a BOM at the start of the file is dropped), CRLF accepted, split
    on `\\n` without the empty string after the last one. A bad byte is reported with its line and
    offset in the file."""
    bom = 3 if offset == 0 and block.startswith(BOM) else 0
    try:
        text = block[bom:].decode("utf-8")
    except UnicodeDecodeError as err:
        at = bom + err.start
        line = line0 + block[:at].count(b"\n") + 1
        raise CxlnetError(f"{path}:{line}: not valid UTF-8 (byte {block[at]:#04x} at offset {offset + at})") from None
    lines = text.replace("\r\n", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


# ------------------------------------------------------------------------------------- encoding
@dataclass(frozen=True)
class PartFiles:
    """The files of one encoded part in the work directory."""

    stem: Path

    @property
    def ids(self) -> Path:
        return self.stem.with_name(self.stem.name + ".ids")  # raw token ids, store dtype

    @property
    def sent(self) -> Path:
        return self.stem.with_name(self.stem.name + ".sent")  # raw uint8 0/1, file-start parity

    @property
    def docs(self) -> Path:
        return self.stem.with_name(self.stem.name + ".docs")  # raw int64: offsets just after each <eod>

    @property
    def record(self) -> Path:
        return self.stem.with_name(self.stem.name + ".json")  # written last: the part is complete


_TOKENIZER: Tokenizer | None = None


def _init_worker(spiece: str, lower: bool) -> None:
    global _TOKENIZER
    # one SentencePiece thread per worker: the workers are the parallelism
    _TOKENIZER = Tokenizer(spiece, lower=lower, num_threads=1)


def encode_block(lines: list[str], tokenizer: Tokenizer, dtype: np.dtype):
    """XLNet's corpus loop on lines that start a file: (ids, sent bool, doc_ends, blank count).
    A blank line is one `<eod>`; line k (0-based) with b blank lines among lines 0..k has
    sent_id True xor (k + b) odd (each line flips it once, a blank line once more first)."""
    blank = np.fromiter((not line.strip() for line in lines), dtype=bool, count=len(lines))
    flat, text_lens = tokenizer.encode_flat([line.strip() for line, b in zip(lines, blank) if not b])
    if flat.size and flat.max() >= tokenizer.vocab_size:
        raise CxlnetError(f"{tokenizer.path}: token id out of the vocabulary range (tokenizer mismatch)")
    lens = np.ones(len(lines), dtype=np.int64)
    lens[~blank] = text_lens
    ends = np.cumsum(lens)
    ids = np.full(int(ends[-1]) if lines else 0, EOD_ID, dtype=dtype)
    is_text = np.ones(ids.size, dtype=bool)
    is_text[ends[blank] - 1] = False
    ids[is_text] = flat
    nblank = np.cumsum(blank)
    sent = np.repeat(((np.arange(len(lines)) + nblank) % 2) == 0, lens)
    return ids, sent, ends[blank], int(nblank[-1]) if lines else 0


def _encode_part(path: str, stem: str, offset: int, line0: int, block: bytes, key: dict) -> dict:
    tokenizer = _TOKENIZER
    lines = block_lines(path, offset, line0, block)
    ids, sent, doc_ends, n_blank = encode_block(lines, tokenizer, store_dtype(tokenizer.vocab_size))
    files = PartFiles(Path(stem))
    atomic_write_bytes(files.ids, ids.tobytes())
    atomic_write_bytes(files.sent, sent.astype(np.uint8).tobytes())
    atomic_write_bytes(files.docs, doc_ends.astype(np.int64).tobytes())
    record = {**key, "stem": files.stem.name, "lines": len(lines), "blank": n_blank, "tokens": int(ids.size), "docs": int(doc_ends.size),
              "first": bool(sent[0]) if sent.size else None, "last": bool(sent[-1]) if sent.size else None}
    atomic_write_json(files.record, record)
    return record


def encode_parts(files: list[Path], tokenizer: Tokenizer, work: Path, part_bytes: int,
                 num_workers: int) -> tuple[list[list[dict]], list[dict]]:
    """Encode every file into parts under `work` (reusing complete, matching parts). Returns the
    part records per file, in order, and the source records (path, bytes, sha256)."""
    work.mkdir(parents=True, exist_ok=True)
    tok_key = {"tokenizer": sha256_file(tokenizer.path), "lower": tokenizer.lower}
    pool = None
    if num_workers > 0:
        # fork where there is one: a spawned worker would re-import the caller's main module (and
        # torch through cxlnet.pretrain); a worker builds its own SentencePiece either way
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        pool = ProcessPoolExecutor(num_workers, mp_context=multiprocessing.get_context(method),
                                   initializer=_init_worker, initargs=(str(tokenizer.path), tokenizer.lower))
    else:
        _init_worker(str(tokenizer.path), tokenizer.lower)
    in_flight: deque[Future] = deque()
    per_file: list[list[dict | Future]] = []
    sources, reused = [], 0
    try:
        for path in files:
            digest = None if path.suffix == ".gz" else hashlib.sha256()  # a .gz file: its bytes, hashed after
            fp = file_fingerprint(path)
            name = hashlib.sha1(fp["path"].encode()).hexdigest()[:16]
            parts: list[dict | Future] = []
            for k, (offset, line0, block) in enumerate(iter_blocks(path, part_bytes, digest)):
                key = {**tok_key, "source": fp, "part": k, "offset": offset, "bytes": len(block), "line0": line0}
                stem = work / f"{name}-{k:06d}"
                done = _complete_record(PartFiles(stem), key)
                if done is not None:
                    parts.append(done)
                    reused += 1
                elif pool is None:
                    parts.append(_encode_part(str(path), str(stem), offset, line0, block, key))
                else:
                    parts.append(pool.submit(_encode_part, str(path), str(stem), offset, line0, block, key))
                    in_flight.append(parts[-1])
                    while len(in_flight) > 2 * num_workers:
                        in_flight.popleft().result()  # waits, and raises a worker's error early
            per_file.append(parts)
            sha = sha256_file(path) if digest is None else digest.hexdigest()
            sources.append({"path": str(path), "bytes": fp["size"], "sha256": sha})
        records = [[p.result() if isinstance(p, Future) else p for p in parts] for parts in per_file]
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    if reused:
        log.info("resumed: %d encoded parts reused from %s", reused, work)
    return records, sources


def _complete_record(files: PartFiles, key: dict) -> dict | None:
    """The part's record when the part is complete and was encoded from this very block."""
    if not files.record.is_file():
        return None
    try:
        record = read_json(files.record)
    except CxlnetError:
        return None
    if any(record.get(k) != v for k, v in key.items()):
        return None
    return record


# ------------------------------------------------------------------------------------- assembly
@dataclass
class Part:
    files: PartFiles
    start: int  # offset of its first token in the corpus stream
    tokens: int
    flip: bool  # xor for its stored sentence bits


class PartLayout:
    """The corpus stream as the concatenation of its parts: offsets, sentence-id flips, document ends."""

    def __init__(self, work: Path, records: list[list[dict]], sources: list[dict], prev_last: bool | None = None):
        """`prev_last`: the last sentence id of the text this one continues (appending to a store)."""
        self.parts: list[Part] = []
        self.file_ends: list[int] = []
        self.lines = self.sentences = 0
        offset = 0
        for file_records, source in zip(records, sources):
            tokens = sum(r["tokens"] for r in file_records)
            source.update(lines=0, tokens=0)
            if tokens == 0:
                log.warning("%s: empty corpus file, skipped", source["path"])
                continue
            if sum(r["docs"] for r in file_records) == 0:
                log.warning("%s: no blank line (document break) found; the whole file is treated as one "
                            "document", source["path"])
            # parity flip of each part: lines and blank lines before it in its file
            before, parity = 0, []
            for r in file_records:
                parity.append(before % 2 == 1)
                before += r["lines"] + r["blank"]
            with_tokens = [(r, p) for r, p in zip(file_records, parity) if r["tokens"]]
            first = with_tokens[0][0]["first"] ^ with_tokens[0][1]
            file_flip = negate_at_join(first, prev_last)
            for r, p in with_tokens:
                self.parts.append(Part(PartFiles(work / r["stem"]), offset, r["tokens"], p ^ file_flip))
                offset += r["tokens"]
            prev_last = with_tokens[-1][0]["last"] ^ with_tokens[-1][1] ^ file_flip
            self.file_ends.append(offset)
            lines = sum(r["lines"] for r in file_records)
            source.update(lines=lines, tokens=tokens)
            self.lines += lines
            self.sentences += lines - sum(r["blank"] for r in file_records)
        self.tokens = offset
        self.doc_ends = np.concatenate(
            [np.fromfile(p.files.docs, dtype=np.int64) + p.start for p in self.parts] or [np.zeros(0, np.int64)])

    def sentence_bits(self, part: Part, lo: int = 0, hi: int | None = None) -> np.ndarray:
        """Sentence ids (bool) of tokens [lo, hi) of a part, flipped into the corpus stream."""
        hi = part.tokens if hi is None else hi
        bits = np.fromfile(part.files.sent, dtype=np.uint8, count=hi - lo, offset=lo).astype(bool)
        return ~bits if part.flip else bits

    def sentence_boundary_candidates(self, targets: np.ndarray) -> np.ndarray:
        """For each target offset, the nearest sentence boundaries (k with sent[k] != sent[k-1]) on
        either side, read part by part: what the nearest-boundary cut needs, without holding every
        boundary of a large corpus."""
        out, prev = [], None
        for part in self.parts:
            bits = self.sentence_bits(part)
            local = np.flatnonzero(bits[1:] != bits[:-1]) + 1 + part.start
            if prev is not None and prev != bits[0]:
                local = np.concatenate([[part.start], local])
            prev = bool(bits[-1])
            if local.size:
                at = np.searchsorted(local, targets)
                out.append(local[np.clip(at, 0, local.size - 1)])
                out.append(local[np.clip(at - 1, 0, local.size - 1)])
        return np.unique(np.concatenate(out)) if out else np.zeros(0, np.int64)

    def pieces(self, a: int, b: int) -> Iterator[tuple[Part, int, int]]:
        """(part, lo, hi): the parts' token ranges that make up corpus tokens [a, b), in order."""
        for part in self.parts:
            lo, hi = max(a, part.start), min(b, part.start + part.tokens)
            if lo < hi:
                yield part, lo - part.start, hi - part.start


def _write_npy_header(fh: BinaryIO, dtype: np.dtype, n: int) -> None:
    # the header `np.save` writes for a 1-D array of n items, so the file is the same byte for byte
    np.lib.format.write_array_header_1_0(
        fh, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (n,)})


def write_shard(layout: PartLayout, a: int, b: int, ids_path: Path, sent_path: Path, dtype: np.dtype) -> None:
    """Shard = corpus tokens [a, b): ids as `.npy` of the store dtype, sentence bits `np.packbits`."""
    def write_ids(fh: BinaryIO) -> None:
        _write_npy_header(fh, dtype, b - a)
        for part, lo, hi in layout.pieces(a, b):
            for s in range(lo, hi, COPY_TOKENS):
                n = min(COPY_TOKENS, hi - s)
                fh.write(np.fromfile(part.files.ids, dtype=dtype, count=n, offset=s * dtype.itemsize).tobytes())

    def write_sent(fh: BinaryIO) -> None:
        _write_npy_header(fh, np.dtype(np.uint8), (b - a + 7) // 8)
        carry = np.zeros(0, dtype=bool)  # bits not yet packed (fewer than 8)
        for part, lo, hi in layout.pieces(a, b):
            for s in range(lo, hi, COPY_TOKENS):
                bits = np.concatenate([carry, layout.sentence_bits(part, s, min(hi, s + COPY_TOKENS))])
                whole = bits.size // 8 * 8
                fh.write(np.packbits(bits[:whole]).tobytes())
                carry = bits[whole:]
        if carry.size:
            fh.write(np.packbits(carry).tobytes())

    atomic_write_with(ids_path, write_ids)
    atomic_write_with(sent_path, write_sent)


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
