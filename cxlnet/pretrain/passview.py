"""A pass's text as views of the memory-mapped token store (nothing copies the corpus tokens).

XLNet joins a pass's input files (here: the store's shards, in the pass's shuffled order) into one
stream, negating a file's sentence ids where they would continue the previous file's last sentence,
and cuts the stream into `nf` rows of `T` tokens (`batchify`). `PassText` is that stream without the
join: the shard order is an index array and a row window is gathered from the shards' memory maps
on demand. Sentence boundaries (k with sent[k] != sent[k-1] inside a row) are found by scanning
the packed sentence bits near the asked position, so memory does not depend on the store's size.
"""
from __future__ import annotations

import numpy as np

from cxlnet.pretrain.corpus import TokenStore
from cxlnet.pretrain.encode import negate_at_join

_SCAN = 512  # tokens first scanned for a boundary (doubled until one is found)


class PassText:
    """The concatenated shards of a pass (`order`: shard indices), cut into `nf` rows of T tokens."""

    def __init__(self, store: TokenStore, order: list[int], nf: int):
        self.shards = [store.shard(k) for k in order if store.shard(k).size]
        sizes = np.array([s.size for s in self.shards], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(sizes)])
        self.flips, prev = [], None
        for s in self.shards:
            first, last = s.sent_window(0, 1)[0], s.sent_window(s.size - 1, s.size)[0]
            flip = negate_at_join(first, prev)
            self.flips.append(flip)
            prev = bool(last) ^ flip
        self.nf = nf
        self.T = int(self.starts[-1]) // nf

    def _pieces(self, lo: int, hi: int):
        j = int(np.searchsorted(self.starts, lo, "right")) - 1
        while lo < hi:
            a, b = int(self.starts[j]), int(self.starts[j + 1])
            end = min(hi, b)
            yield j, lo - a, end - a
            lo, j = end, j + 1

    def ids(self, f: int, lo: int, hi: int) -> np.ndarray:
        """Tokens [lo, hi) of forward row f (a small copy of just that window)."""
        base = f * self.T
        got = [self.shards[j].ids[a:b] for j, a, b in self._pieces(base + lo, base + hi)]
        return np.concatenate(got) if len(got) != 1 else np.asarray(got[0])

    def sent(self, f: int, lo: int, hi: int) -> np.ndarray:
        """Sentence ids [lo, hi) of forward row f, with the join negations applied."""
        base = f * self.T
        got = [self.shards[j].sent_window(a, b) ^ self.flips[j] for j, a, b in self._pieces(base + lo, base + hi)]
        return np.concatenate(got) if got else np.zeros(0, dtype=bool)

    def changes(self, f: int, lo: int, hi: int) -> np.ndarray:
        """Sentence boundaries k of forward row f with lo <= k < hi (1 <= k <= T - 1)."""
        lo, hi = max(lo, 1), min(hi, self.T)
        if lo >= hi:
            return np.zeros(0, dtype=np.int64)
        s = self.sent(f, lo - 1, hi)
        return np.flatnonzero(s[1:] != s[:-1]) + lo


class SortedBoundaries:
    """A row's sentence boundaries given as a sorted index array (the reference form)."""

    def __init__(self, bnd: np.ndarray):
        self.bnd = np.asarray(bnd)

    def within(self, lo: int, hi: int) -> np.ndarray:
        return self.bnd[np.searchsorted(self.bnd, lo, "left"): np.searchsorted(self.bnd, hi, "left")]

    def first_at_or_after(self, p: int) -> int | None:
        k = int(np.searchsorted(self.bnd, p, "left"))
        return int(self.bnd[k]) if k < self.bnd.size else None

    def last_at_or_before(self, p: int) -> int | None:
        j = int(np.searchsorted(self.bnd, p, "right")) - 1
        return int(self.bnd[j]) if j >= 0 else None


class RowBoundaries:
    """The sentence boundaries of one batch row: forward row f of a PassText, read backwards when
    `reverse` (a forward boundary k is the backward row's boundary T - k). Same queries as
    SortedBoundaries, answered by scanning the sentence bits near the position."""

    def __init__(self, text: PassText, f: int, reverse: bool):
        self.text, self.f, self.reverse, self.T = text, f, reverse, text.T

    def _within(self, lo: int, hi: int) -> np.ndarray:
        return self.text.changes(self.f, lo, hi)

    def _next(self, p: int) -> int | None:
        lo, width = max(p, 1), _SCAN
        while lo < self.T:
            hi = min(self.T, lo + width)
            found = self._within(lo, hi)
            if found.size:
                return int(found[0])
            lo, width = hi, width * 2
        return None

    def _prev(self, p: int) -> int | None:
        hi, width = min(p, self.T - 1) + 1, _SCAN
        while hi > 1:
            lo = max(1, hi - width)
            found = self._within(lo, hi)
            if found.size:
                return int(found[-1])
            hi, width = lo, width * 2
        return None

    def within(self, lo: int, hi: int) -> np.ndarray:
        if not self.reverse:
            return self._within(lo, hi)
        return self.T - self._within(self.T - hi + 1, self.T - lo + 1)[::-1]

    def first_at_or_after(self, p: int) -> int | None:
        if not self.reverse:
            return self._next(p)
        k = self._prev(self.T - p)
        return None if k is None else self.T - k

    def last_at_or_before(self, p: int) -> int | None:
        if not self.reverse:
            return self._prev(p)
        k = self._next(self.T - p)
        return None if k is None else self.T - k
