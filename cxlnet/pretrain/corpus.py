"""Raw pre-training corpus → compact, sharded token store (XLNet `data_utils._create_data`, §2.1).

Corpus format: UTF-8 text (plain or `.gz`), one sentence per line, a blank line ends a document.
Every non-blank line is encoded independently with `encode_ids(preprocess_text(line))`; a running
boolean `sent_id` (starting True in every file) is flipped after each line, and a blank line emits
`<eod>` glued to the previous sentence (flip, emit, flip). Files are joined in the given order,
negating a file's sent_ids when its first value equals the previous file's last one (so a join is
always a sentence boundary). The encoding streams and runs in worker processes (`encode.py`).

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

Safety: a store is assembled in `.<name>.partial/` beside `out_dir` and renamed into place only when
complete; an existing store is refused unless `if_exists` is `overwrite` or `append` (appending adds
shards of the new text, continuing the sentence ids as if the files had been given together). A run
that fails or is interrupted leaves its encoded parts in the `.partial` directory and the next run
with the same inputs resumes from them.

Slices (XLNet's `num_task`/`task` of `create_pretraining_data`): slice `task` of `num_task` encodes
the files `files[task::num_task]` into `out_dir/task-TTTTT-of-NNNNN/`, one machine each; a
`TokenStore` opened on `out_dir` reads all the slices as one store (their shards in slice order).
"""
from __future__ import annotations

import glob
import io
import logging
import mmap
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from cxlnet.errors import CxlnetError, atomic_write_bytes, atomic_write_json, read_json
from cxlnet.pretrain.encode import PartLayout, encode_parts, sha256_file, store_dtype, write_shard
from cxlnet.text import Tokenizer, is_start_piece

log = logging.getLogger(__name__)

STORE_FORMAT = "cxlnet-pretrain-store"
STORE_VERSION = 1
MANIFEST = "store.json"


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


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


IF_EXISTS = ("refuse", "overwrite", "append")
SLICE_PATTERN = re.compile(r"task-(\d{5})-of-(\d{5})")


def slice_name(task: int, num_task: int) -> str:
    return f"task-{task:05d}-of-{num_task:05d}"


def expand_corpus(entries: list[str], resolve: Callable[[str], Path] = Path) -> list[Path]:
    """Corpus files from paths and glob patterns (`*`, `?`, `[...]`, `**`; each pattern's matches
    sorted, as XLNet's `input_glob`), in the order given. Plain paths go through `resolve`."""
    files: list[Path] = []
    for entry in map(str, entries):
        if glob.has_magic(entry):
            matches = sorted(p for p in glob.glob(os.path.expanduser(entry), recursive=True) if Path(p).is_file())
            if not matches:
                raise CxlnetError(f"data.corpus: {entry!r} matches no file")
            files += map(Path, matches)
        else:
            files.append(resolve(entry))
    return files


def build_store(
    corpus_files: list[str | Path],
    tokenizer: Tokenizer | str | Path,
    out_dir: str | Path,
    num_shards: int = 8,
    *,
    num_workers: int = 0,
    part_bytes: int = 4 << 20,
    if_exists: str = "refuse",
    num_task: int = 1,
    task: int = 0,
) -> dict:
    """Encode the corpus (in `num_workers` processes; 0: in this one) and write the sharded token
    store; return the manifest dict. With `num_task > 1` this writes slice `task` of the files into
    `out_dir/task-TTTTT-of-NNNNN/`."""
    if not isinstance(tokenizer, Tokenizer):
        tokenizer = Tokenizer(tokenizer)
    files = [Path(p) for p in corpus_files]
    if not files:
        raise CxlnetError("build_store: no corpus files given")
    checks = [(num_shards >= 1, f"num_shards must be >= 1, got {num_shards}"),
              (num_workers >= 0, f"num_workers must be >= 0, got {num_workers}"),
              (part_bytes >= 1, f"part_bytes must be >= 1, got {part_bytes}"),
              (if_exists in IF_EXISTS, f"if_exists must be one of {', '.join(IF_EXISTS)}, got {if_exists!r}"),
              (0 <= task < num_task, f"task {task} out of range for num_task {num_task}")]
    for ok, msg in checks:
        if not ok:
            raise CxlnetError(f"build_store: {msg}")
    for path in files:
        if not path.is_file():
            raise CxlnetError(f"{path}: corpus file not found")
    out_dir = Path(out_dir)
    if num_task > 1:
        files = files[task::num_task]
        if not files:
            raise CxlnetError(f"task {task} of {num_task}: no corpus file in this slice ({len(corpus_files)} files)")
        out_dir = out_dir / slice_name(task, num_task)
    old = _existing_store(out_dir, if_exists)
    if old is not None and old.manifest["tokenizer"]["sha256"] != sha256_file(tokenizer.path):
        raise CxlnetError(f"{out_dir}: the store was written with another tokenizer "
                          f"({old.manifest['tokenizer']['path']}); append needs the same one")
    staging = out_dir.parent / f".{out_dir.name}.partial"
    records, sources = encode_parts(files, tokenizer, staging / "parts", part_bytes, num_workers)
    prev_last = old.last_sentence_bit() if old is not None else None
    layout = PartLayout(staging / "parts", records, sources, prev_last)
    if layout.tokens == 0 or layout.sentences == 0:
        raise CxlnetError(f"empty corpus: no text line in {', '.join(str(p) for p in files)}")
    target = staging / "store"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    manifest = _write_store(layout, sources, tokenizer, target, num_shards, old)
    _move_into_place(target, out_dir)
    shutil.rmtree(staging, ignore_errors=True)
    return manifest


def _existing_store(out_dir: Path, if_exists: str) -> TokenStore | None:
    """The store to append to (None: write a new one); refuses to touch what it must not."""
    if not out_dir.exists():
        return None
    if not out_dir.is_dir():
        raise CxlnetError(f"{out_dir}: exists and is not a directory; choose another data.out_dir")
    if not (out_dir / MANIFEST).is_file():
        if any(out_dir.iterdir()):
            raise CxlnetError(f"{out_dir}: exists, is not empty and is not a token store; choose another data.out_dir")
        return None
    if if_exists == "refuse":
        tokens = read_json(out_dir / MANIFEST).get("counts", {}).get("tokens", "?")
        raise CxlnetError(f"{out_dir}: a token store ({tokens} tokens) is already there; set data.if_exists=overwrite "
                          f"to replace it or data.if_exists=append to add the corpus to it")
    return TokenStore(out_dir) if if_exists == "append" else None


def _write_store(layout: PartLayout, sources: list[dict], tokenizer: Tokenizer, target: Path, num_shards: int,
                 old: TokenStore | None) -> dict:
    n = layout.tokens
    # shard boundaries: document ends (and file joins), else sentence boundaries
    doc_bounds = np.unique(np.concatenate([layout.doc_ends, layout.file_ends]))
    doc_bounds = doc_bounds[(doc_bounds > 0) & (doc_bounds < n)]
    if doc_bounds.size < num_shards - 1:
        targets = np.arange(1, num_shards) * n / num_shards
        doc_bounds = layout.sentence_boundary_candidates(targets)
    cuts = _cut_points(n, doc_bounds, num_shards)
    if len(cuts) + 1 < num_shards:
        log.warning("corpus too small for %d shards: writing %d", num_shards, len(cuts) + 1)
    edges = [0, *cuts, n]
    shards = [] if old is None else _link_shards(old, target)
    dtype = store_dtype(tokenizer.vocab_size)
    for a, b in zip(edges[:-1], edges[1:]):
        name = f"shard-{len(shards):05d}"
        write_shard(layout, a, b, target / f"{name}.ids.npy", target / f"{name}.sent.npy", dtype)
        n_docs = int(((layout.doc_ends > a) & (layout.doc_ends <= b)).sum())
        shards.append({"ids": f"{name}.ids.npy", "sent": f"{name}.sent.npy", "tokens": b - a, "documents_ended": n_docs})
    start = np.array([is_start_piece(tokenizer.id_to_piece(i)) for i in range(tokenizer.vocab_size)], dtype=bool)
    atomic_write_bytes(target / "start_pieces.npy", _npy_bytes(start))
    before = {"files": 0, "lines": 0, "sentences": 0, "tokens": 0} if old is None else old.manifest["counts"]
    ends_in_eod = layout.doc_ends.size > 0 and layout.doc_ends[-1] == n
    manifest = {
        "format": STORE_FORMAT,
        "version": STORE_VERSION,
        "vocab_size": tokenizer.vocab_size,
        "dtype": dtype.name,
        "tokenizer": {"path": str(tokenizer.path), "sha256": sha256_file(tokenizer.path), "lower": tokenizer.lower},
        "counts": {
            "files": before["files"] + sum(1 for s in sources if s["tokens"]),
            "lines": before["lines"] + layout.lines,
            "sentences": before["sentences"] + layout.sentences,
            # a document still open at the end of the text is one more
            "documents": sum(s["documents_ended"] for s in shards) + int(not ends_in_eod),
            "tokens": before["tokens"] + n,
        },
        "shards": shards,
        "sources": ([] if old is None else old.manifest["sources"]) + sources,
    }
    atomic_write_json(target / MANIFEST, manifest)
    return manifest


def _link_shards(old: TokenStore, target: Path) -> list[dict]:
    """The existing store's shards, hard-linked (else copied) into the new store."""
    for info in old.manifest["shards"]:
        for key in ("ids", "sent"):
            try:
                os.link(old.dir / info[key], target / info[key])
            except OSError:
                shutil.copy2(old.dir / info[key], target / info[key])
    return [dict(info) for info in old.manifest["shards"]]


def _move_into_place(target: Path, out_dir: Path) -> None:
    """Rename the complete store to its final name (the old one, if any, is set aside first and
    removed after)."""
    if out_dir.exists() and not (out_dir / MANIFEST).is_file():
        out_dir.rmdir()  # an empty directory (checked by _existing_store)
    old = None
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.replaced-{os.getpid()}"
        os.replace(out_dir, old)
    os.replace(target, out_dir)
    if old is not None:
        shutil.rmtree(old)


@dataclass
class Shard:
    ids: np.ndarray  # store dtype (uint16 / uint32), memory-mapped
    sent_bits: np.ndarray  # uint8, np.packbits of the sent_id bools, memory-mapped
    maps: tuple = ()  # the memory maps under both

    def release(self) -> None:
        """Unmap the pages read so far (they stay in the page cache): without this, every page a
        batch touched (with the kernel's fault-around, 64 KB per random read) would count in this
        process's RSS, which would then grow with the store up to its size."""
        for m in self.maps:
            if hasattr(m, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
                m.madvise(mmap.MADV_DONTNEED)

    @property
    def size(self) -> int:
        return self.ids.size

    @property
    def sent(self) -> np.ndarray:
        """The whole shard's sent_ids as bools (a copy; the loader reads `sent_bits` windows)."""
        return np.unpackbits(self.sent_bits, count=self.ids.size).astype(bool)

    def sent_window(self, lo: int, hi: int) -> np.ndarray:
        """sent_ids [lo, hi) as bools, unpacked from the bytes that hold them only."""
        bits = np.unpackbits(self.sent_bits[lo // 8: (hi + 7) // 8])
        return bits[lo % 8: lo % 8 + hi - lo].astype(bool)


class TokenStore:
    """Read side of the store: manifest, shards (ids + sent bits) and the start-piece table.

    `path` is a store, or a directory of slice stores (`task-TTTTT-of-NNNNN/`, from `cxlnet data
    data.num_task=N data.task=T` on N machines), read as one store: the slices' shards in order."""

    def __init__(self, path: str | Path):
        self.dir = Path(path)
        manifest_path = self.dir / MANIFEST
        if manifest_path.is_file():
            self.manifest = _read_manifest(manifest_path)
        elif self.dir.is_dir() and any(SLICE_PATTERN.fullmatch(p.name) for p in self.dir.iterdir()):
            self.manifest = _union_manifest(self.dir)
        else:
            raise CxlnetError(f"{self.dir}: not a token store ({MANIFEST} missing; run `cxlnet data` first)")
        self.vocab_size = int(self.manifest["vocab_size"])
        self._shards: dict[int, Shard] = {}
        self._start: np.ndarray | None = None

    @property
    def num_shards(self) -> int:
        return len(self.manifest["shards"])

    @property
    def start_pieces(self) -> np.ndarray:
        if self._start is None:
            self._start = np.load(self.dir / self.manifest.get("start_pieces", "start_pieces.npy"))
        return self._start

    def shard(self, k: int) -> Shard:
        """Shard k, memory-mapped (ids and packed sentence bits): a data-loader worker holds no
        private copy of the store, and memory does not grow with the store's size."""
        if k not in self._shards:
            info = self.manifest["shards"][k]
            try:
                (ids, ids_map), (sent, sent_map) = _map_npy(self.dir / info["ids"]), _map_npy(self.dir / info["sent"])
                shard = Shard(ids, sent, (ids_map, sent_map))
            except (OSError, ValueError) as err:
                raise CxlnetError(f"{self.dir}: shard {k} unreadable ({err})") from None
            if shard.ids.size != int(info["tokens"]) or shard.sent_bits.size != (shard.ids.size + 7) // 8:
                raise CxlnetError(f"{self.dir / info['ids']}: {shard.ids.size} tokens, manifest says {info['tokens']}")
            self._shards[k] = shard
        return self._shards[k]

    def release(self) -> None:
        """Unmap the store pages read so far (see `Shard.release`)."""
        for shard in self._shards.values():
            shard.release()

    def last_sentence_bit(self) -> bool:
        last = next(self.shard(k) for k in reversed(range(self.num_shards)) if self.shard(k).size)
        return bool(last.sent_window(last.size - 1, last.size)[0])


def _map_npy(path: Path) -> tuple[np.ndarray, mmap.mmap]:
    """A 1-D `.npy` file as a read-only array over its memory map, and the map."""
    with path.open("rb") as fh:
        version = np.lib.format.read_magic(fh)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _fortran, dtype = read_header(fh)
        offset = fh.tell()
        mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    if len(shape) != 1:
        raise ValueError(f"{path.name}: shape {shape}, expected 1-D")
    return np.frombuffer(mapped, dtype=dtype, count=shape[0], offset=offset), mapped


def _read_manifest(path: Path) -> dict:
    manifest = read_json(path)
    if manifest.get("format") != STORE_FORMAT or manifest.get("version") != STORE_VERSION:
        raise CxlnetError(f"{path}: unsupported store format {manifest.get('format')!r} "
                          f"version {manifest.get('version')!r}")
    return manifest


def _union_manifest(root: Path) -> dict:
    """One manifest for the slice stores under `root`: all slices present, same tokenizer."""
    found = {}
    for p in sorted(root.iterdir()):
        m = SLICE_PATTERN.fullmatch(p.name)
        if m and (p / MANIFEST).is_file():
            found[p.name] = (int(m.group(1)), int(m.group(2)))
    totals = {n for _, n in found.values()}
    if len(totals) != 1:
        raise CxlnetError(f"{root}: slices of different num_task ({', '.join(sorted(found))}); keep one run's slices")
    num_task = totals.pop()
    missing = sorted(set(range(num_task)) - {t for t, _ in found.values()})
    if missing:
        raise CxlnetError(f"{root}: slice(s) {', '.join(map(str, missing))} of {num_task} missing or unfinished "
                          f"(run `cxlnet data data.num_task={num_task} data.task=T` for each)")
    names = [slice_name(t, num_task) for t in range(num_task)]
    parts = [_read_manifest(root / name / MANIFEST) for name in names]
    first = parts[0]
    for name, m in zip(names, parts):
        if m["tokenizer"]["sha256"] != first["tokenizer"]["sha256"] or m["dtype"] != first["dtype"]:
            raise CxlnetError(f"{root / name}: written with another tokenizer than {names[0]}; slices must share one")
    counts = {k: sum(m["counts"][k] for m in parts) for k in first["counts"]}
    shards = [{**info, "ids": f"{name}/{info['ids']}", "sent": f"{name}/{info['sent']}"}
              for name, m in zip(names, parts) for info in m["shards"]]
    return {**first, "counts": counts, "shards": shards, "sources": [s for m in parts for s in m["sources"]],
            "slices": names, "start_pieces": f"{names[0]}/start_pieces.npy"}
