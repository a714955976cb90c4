"""On-the-fly XLNet permutation-LM batches from a token store (data_utils.py §2.1–2.9, no records on disk).

Per pass `p` (0, 1, 2, ...): the selected shards are ordered by
`RandomState(100*task + p + 1_000_003*seed).permutation` (with `seed=0` exactly XLNet's
`np.random.seed(100*task + pass_id)`), joined with the sent_id negation at joins, batchified with the
bi_data row layout, and cut into windows `i = 0, R, 2R, ...`. Step `s` of a pass is the batch of the
windows at `i = s*R` for all rows, so row `r` of consecutive batches continues the same text stream
(the reuse half of step s+1 is the text right after step s's reuse half: the memory holds the true
preceding text). The pass ends at the first window where `_split_a_and_b` fails for any row (XLNet
drops that batch and stops), then pass p+1 starts (memory continuity breaks there, as in XLNet).

Randomness: every (pass, step) draws from its own generators
`default_rng(SeedSequence(seed, spawn_key=(task, pass, step, purpose)))` for the A/B split, the span
masks and the factorisation order, so a batch is a pure function of (seed, task, shards, config,
pass, step). No global RNG state is touched; passes differ; resuming at a global step costs only
computing the lengths of the earlier passes (a few ms each, cached), not regenerating batches.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from cxlnet.errors import CxlnetError
from cxlnet.pretrain.corpus import TokenStore
from cxlnet.pretrain.passview import PassText, RowBoundaries, SortedBoundaries
from cxlnet.text import CLS_ID, SEP_ID

_SPLIT, _MASK, _PERM = 0, 1, 2
MAX_EMPTY_PASSES = 20  # Chinese-XLNet's num_passes: this many empty passes in a row is an error


@dataclass(frozen=True)
class PretrainConfig:
    """Chinese-XLNet's pre-training data settings (defaults)."""

    bsz: int = 32
    seq_len: int = 512
    reuse_len: int = 256
    bi_data: bool = True
    num_core: int = 1
    mask_alpha: int = 6
    mask_beta: int = 1
    max_gram: int = 5
    num_predict: int = 85
    perm_size: int = 256
    seed: int = 0
    include_input_q: bool = True

    def validate(self) -> None:
        R, S = self.reuse_len, self.seq_len - self.reuse_len
        checks = [
            (self.bsz >= 1, f"bsz must be >= 1, got {self.bsz}"),
            (self.num_core >= 1, f"num_core must be >= 1, got {self.num_core}"),
            (self.bsz % self.num_core == 0, f"bsz {self.bsz} must be a multiple of num_core {self.num_core}"),
            (not self.bi_data or self.bsz % (2 * self.num_core) == 0,
             f"bi_data needs bsz ({self.bsz}) divisible by 2*num_core ({2 * self.num_core})"),
            (0 < self.reuse_len < self.seq_len - 3, f"need 0 < reuse_len ({R}) < seq_len - 3 ({self.seq_len - 3})"),
            (0 < self.perm_size <= min(R, S) and R % self.perm_size == 0 and S % self.perm_size == 0,
             f"perm_size {self.perm_size} must divide reuse_len {R} and seq_len - reuse_len {S}"),
            (self.num_predict >= 0 and self.num_predict - self.num_predict // 2 <= R and self.num_predict // 2 <= S,
             f"num_predict {self.num_predict} does not fit the halves {R}/{S}"),
            (self.mask_beta >= 1 and self.mask_alpha >= self.mask_beta,
             f"need mask_alpha ({self.mask_alpha}) >= mask_beta ({self.mask_beta}) >= 1"),
            (self.max_gram >= 1, f"max_gram must be >= 1, got {self.max_gram}"),
            (self.seed >= 0, f"seed must be >= 0, got {self.seed}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise CxlnetError(f"pre-training data config: {msg}")


# ---------------------------------------------------------------------------------------------
# building blocks (each mirrors one function of XLNet's data_utils.py)


def local_perm_mask(x: np.ndarray, is_masked: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`_local_perm` for a batch of halves: x, is_masked, order `[B, n]` → (perm_mask bool `[B, n, n]`,
    target_mask bool `[B, n]`). `order[b, i]` is the factorisation rank of token i; perm_mask[b,i,j]
    = 1 means i may NOT attend j."""
    func = (x == SEP_ID) | (x == CLS_ID)
    non_mask = ~is_masked & ~func
    target_tok = is_masked & ~func
    masked_or_func = is_masked | func
    rev = np.where(non_mask, -1, order)
    self_rev = np.where(target_tok, rev, rev + 1)
    perm = (self_rev[:, :, None] <= rev[:, None, :]) & masked_or_func[:, None, :]
    return perm, target_tok


def block_order(sigma: np.ndarray, n: int) -> np.ndarray:
    """Factorisation order of XLNet's blockwise shuffle: `order[b*P + k] = b*P + sigma[k]`; sigma `[B, P]`."""
    P = sigma.shape[-1]
    pos = np.arange(n)
    return (pos // P) * P + sigma[:, pos % P]


def split_a_and_b(bnd, data_len: int, begin: int, tot_len: int, rng: np.random.Generator):
    """`_split_a_and_b(extend_target=True)` on a row given its sentence boundaries `bnd` (the sorted
    indices k with sent[k] != sent[k-1], as an array or a `RowBoundaries`). Returns `(a_end,
    b_begin, b_end, label)` (A starts at `begin`) or None. Random draws: `random()` (only with cut
    points), `choice`, `randint` as XLNet."""
    if isinstance(bnd, np.ndarray):
        bnd = SortedBoundaries(bnd)
    if begin + tot_len >= data_len:
        return None
    cuts = bnd.within(begin + 1, begin + tot_len)
    end = bnd.first_at_or_after(begin + tot_len)
    end = data_len if end is None else end
    n_cut = cuts.size
    if n_cut == 0 or rng.random() < 0.5:
        label = 0
        a_end = end if n_cut == 0 else int(cuts[int(rng.integers(n_cut))])
        b_len = max(1, tot_len - (a_end - begin))
        b_begin = int(rng.integers(0, data_len - 1 - b_len + 1))
        b_end = b_begin + b_len
        start = bnd.last_at_or_before(b_begin)  # sentence start of b_begin
        b_begin = 0 if start is None else start
        if b_end < data_len - 1:  # extend to the end of b_end's sentence (at most data_len - 1)
            stop = bnd.first_at_or_after(b_end)
            b_end = min(data_len if stop is None else stop, data_len - 1)
    else:
        label = 1
        a_end = int(cuts[int(rng.integers(n_cut))])
        b_begin, b_end = a_end, end
    # trim the longer side one token at a time (ties trim B), in closed form
    a, b = a_end - begin, b_end - b_begin
    excess = a + b - tot_len
    if excess > 0:
        if a > b:
            t = min(excess, a - b)
            a -= t
        else:
            t = min(excess, b - a)
            b -= t
        excess -= t
        b -= (excess + 1) // 2
        a -= excess // 2
    a_end, b_end = begin + a, b_begin + b
    if a_end >= data_len or b_end >= data_len:
        return None
    return a_end, b_begin, b_end, label


def sample_mask(start: np.ndarray, goal: int, rng: np.random.Generator, *, alpha: int = 6, beta: int = 1,
                max_gram: int = 5) -> np.ndarray:
    """`_sample_mask` on one segment (already flipped when `reverse`), `start` = is-start-piece per
    token. Reproduces XLNet's bug: a span is exactly `n` pieces from a start piece. Single-segment
    reference; the batch generator uses the same algorithm with batched draws."""
    masks = _sample_masks(start[None], goal, rng, alpha, beta, max_gram)
    return masks[0]


def _ngram_cdf(max_gram: int) -> np.ndarray:
    p = 1.0 / np.arange(1, max_gram + 1)
    return np.cumsum(p / p.sum())


def _sample_masks(start: np.ndarray, goal: int, rng: np.random.Generator, alpha: int, beta: int,
                  max_gram: int) -> np.ndarray:
    """Span masks for `[B, L]` segments (each in sampling direction). Draw order: n-gram uniforms
    `[B, goal]`, context uniforms `[B, goal]`, then top-up keys `[B, L]`."""
    B, L = start.shape
    mask = np.zeros((B, L), dtype=bool)
    if goal == 0 or L == 0:
        return mask
    g = max(goal, 1)
    ngram = np.minimum(np.searchsorted(_ngram_cdf(max_gram), rng.random((B, g)), "right") + 1, max_gram).tolist()
    uctx = rng.random((B, g)).tolist()
    # next_start[b, i] = first j >= i with start[b, j], else L
    idx = np.where(start, np.arange(L), L)
    next_start = np.minimum.accumulate(idx[:, ::-1], axis=1)[:, ::-1].tolist()
    counts = np.zeros(B, dtype=np.int64)
    for b in range(B):
        ns, ng, uc, row = next_start[b], ngram[b], uctx[b], mask[b]
        cur = cnt = k = 0
        while cur < L and cnt < goal:
            n = min(ng[k], goal - cnt)
            ctx = n * alpha // beta
            l_ctx = int(uc[k] * ctx)
            k += 1
            beg = cur + l_ctx
            if beg >= L:
                break
            beg = ns[beg]
            if beg >= L:
                break
            end = beg + n  # XLNet's end scan tests seg[beg] (always a start piece): n pieces
            if end >= L:
                break
            row[beg:end] = True
            cnt += n
            cur = end + (ctx - l_ctx)
        counts[b] = cnt
    # top-up: XLNet draws uniform positions until `goal` are masked, i.e. a uniform random subset
    # of the unmasked positions of size goal - count (same distribution, drawn in one shot here)
    keys = rng.random((B, L))
    keys[mask] = 2.0
    ranks = np.empty((B, L), dtype=np.int64)
    np.put_along_axis(ranks, np.argsort(keys, axis=1), np.arange(L)[None].repeat(B, 0), axis=1)
    mask |= ranks < (goal - counts)[:, None]
    return mask


# ---------------------------------------------------------------------------------------------


@dataclass
class _PassData:
    """One pass in XLNet's create_tfrecords row layout, without copying the text: row r is forward
    row `src[r]` of the pass text, read backwards when `reverse[r]` (bi_data)."""

    pass_id: int
    text: PassText
    src: np.ndarray  # [bsz] forward row of each batch row
    reverse: np.ndarray  # [bsz] bool: backward (time-reversed) row
    bnd: list  # per row: its RowBoundaries, in the row's own direction
    steps: int

    @property
    def T(self) -> int:
        return self.text.T

    def window(self, r: int, lo: int, hi: int) -> np.ndarray:
        """Tokens [lo, hi) of batch row r, in the row's direction."""
        f = int(self.src[r])
        if not self.reverse[r]:
            return self.text.ids(f, lo, hi)
        return self.text.ids(f, self.T - hi, self.T - lo)[::-1]

    def columns(self, lo: int, hi: int) -> np.ndarray:
        """rows[:, lo:hi] as a [bsz, hi - lo] array."""
        return np.stack([self.window(r, lo, hi) for r in range(self.src.size)])


class PretrainStream:
    """Deterministic stream of XLNet pre-training batches from a token store.

    `shards`: explicit shard indices; else `shards[task::num_task]`. `num_passes`: None = endless.
    Batches are dicts of batch-major torch tensors (HF names): input_ids [B,T] int64 (= input_k),
    token_type_ids [B,T] int64 (seg_id 0/1/2), perm_mask [B,T,T] float32 (1 = may not attend),
    target_mapping [B,P,T] float32, target [B,P] int64, target_mask [B,P] float32, and (with
    include_input_q) input_q [B,T] float32; P = num_predict.
    """

    def __init__(self, store: TokenStore | str | Path, *, num_task: int = 1, task: int = 0,
                 shards: list[int] | None = None, num_passes: int | None = None, **config):
        self.store = store if isinstance(store, TokenStore) else TokenStore(store)
        self.cfg = PretrainConfig(**config)
        self.cfg.validate()
        if not 0 <= task < num_task:
            raise CxlnetError(f"task {task} out of range for num_task {num_task}")
        self.task, self.num_task = task, num_task
        n = self.store.num_shards
        self.shards = list(range(n))[task::num_task] if shards is None else [int(s) for s in shards]
        if not self.shards:
            raise CxlnetError(f"task {task}/{num_task}: no shard to read (the store has {n})")
        bad = [s for s in self.shards if not 0 <= s < n]
        if bad:
            raise CxlnetError(f"shard index {bad[0]} out of range (the store has {n})")
        self.num_passes = num_passes
        self._start_table = self.store.start_pieces
        self._pass: _PassData | None = None
        self._steps: dict[int, int] = {}
        self._pass_start: dict[int, int] = {0: 0}

    # --- pass layout ---------------------------------------------------------------------------

    def _rng(self, pass_id: int, step: int, purpose: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence(self.cfg.seed, spawn_key=(self.task, pass_id, step, purpose)))

    def shard_order(self, pass_id: int) -> list[int]:
        seed = (100 * self.task + pass_id + 1_000_003 * self.cfg.seed) % (2**32)
        perm = np.random.RandomState(seed).permutation(len(self.shards))
        return [self.shards[i] for i in perm]

    def _build_pass(self, pass_id: int) -> _PassData:
        cfg = self.cfg
        text = PassText(self.store, self.shard_order(pass_id), self._n_streams)
        if cfg.bi_data:
            # per core: its bsz/num_core/2 forward streams, then the same streams reversed
            half = cfg.bsz // cfg.num_core // 2
            core, within = np.divmod(np.arange(cfg.bsz), 2 * half)
            src, reverse = core * half + within % half, within >= half
        else:
            src, reverse = np.arange(cfg.bsz), np.zeros(cfg.bsz, dtype=bool)
        bnd = [RowBoundaries(text, int(f), bool(rev)) for f, rev in zip(src, reverse)]
        pd = _PassData(pass_id, text, src, reverse, bnd, 0)
        pd.steps = self._count_steps(pd)
        self._steps[pass_id] = pd.steps
        self.store.release()
        return pd

    def _count_steps(self, pd: _PassData) -> int:
        cfg = self.cfg
        R, tot = cfg.reuse_len, cfg.seq_len - cfg.reuse_len - 3
        n_win = self._window_count()
        # the split can fail (randomly) only once no boundary lies at or after begin + tot_len
        first_risky = n_win
        for b in pd.bnd:
            last = b.last_at_or_before(pd.T - 1)
            last = -1 if last is None else last
            # risky when last < s*R + R + tot  <=>  s > (last - R - tot) / R
            s0 = max(0, (last - R - tot) // R + 1) if last >= 0 else 0
            first_risky = min(first_risky, s0)
        for s in range(first_risky, n_win):
            if self._splits(pd, s) is None:
                return s
        return n_win

    def _splits(self, pd: _PassData, step: int):
        cfg = self.cfg
        rng = self._rng(pd.pass_id, step, _SPLIT)
        T = pd.T
        begin = step * cfg.reuse_len + cfg.reuse_len
        out = []
        for r in range(cfg.bsz):
            res = split_a_and_b(pd.bnd[r], T, begin, cfg.seq_len - cfg.reuse_len - 3, rng)
            if res is None:
                return None
            out.append(res)
        return out

    def _get_pass(self, pass_id: int) -> _PassData:
        if self._pass is None or self._pass.pass_id != pass_id:
            self._pass = self._build_pass(pass_id)
        return self._pass

    def steps_in_pass(self, pass_id: int) -> int:
        """Number of batches in pass `pass_id` (cached; builds the pass layout once)."""
        if pass_id not in self._steps:
            if self._pass is not None and self._pass.pass_id == pass_id:
                return self._pass.steps
            self._build_pass(pass_id)
        return self._steps[pass_id]

    def locate(self, global_step: int) -> tuple[int, int]:
        """(pass_id, step within the pass) of the batch with global index `global_step`.

        Walks pass lengths from the nearest known pass start (pass 0 starts at 0; `set_position`
        adds known starts, e.g. from a checkpoint, so a resume need not recount earlier passes)."""
        k = int(global_step)
        if k < 0:
            raise IndexError(f"negative global step {k}")
        p, g = max((p, g) for p, g in self._pass_start.items() if g <= k)
        empty = 0  # consecutive passes without a batch
        while True:
            if self.num_passes is not None and p >= self.num_passes:
                raise IndexError(f"global step {global_step} is past the end ({self.num_passes} passes)")
            n = self.steps_in_pass(p)
            # A pass can end at step 0 by chance (its first A/B split fails); XLNet writes an empty
            # pass and goes on, and so does this stream. Only a corpus too short for one window, or
            # one where pass after pass yields nothing, is an error.
            empty = empty + 1 if n == 0 else 0
            if n == 0 and (self._window_count() == 0 or empty == MAX_EMPTY_PASSES):
                raise CxlnetError(self._too_small_message(empty))
            if k - g < n:
                return p, k - g
            g += n
            p += 1
            self._pass_start[p] = g

    @property
    def _n_streams(self) -> int:
        """Forward text streams of a pass (bi_data: each row pair is one stream and its reversal)."""
        return self.cfg.bsz // 2 if self.cfg.bi_data else self.cfg.bsz

    def _stream_len(self) -> int:
        """Tokens per stream row T (the same in every pass: the shards are only reordered)."""
        tokens = sum(int(self.store.manifest["shards"][k]["tokens"]) for k in self.shards)
        return tokens // self._n_streams

    def _window_count(self) -> int:
        T, L = self._stream_len(), self.cfg.seq_len
        return (T - L) // self.cfg.reuse_len + 1 if T >= L else 0

    def _too_small_message(self, empty_passes: int) -> str:
        cfg = self.cfg
        if self._window_count() == 0:
            return (f"corpus too small: shards {self.shards} give {self._n_streams} streams of "
                    f"{self._stream_len()} tokens, fewer than one window of seq_len {cfg.seq_len} (bsz {cfg.bsz}); lower bsz or seq_len")
        return (f"no batch in {empty_passes} consecutive passes of shards {self.shards}: the A/B split fails at "
                f"the first window of some stream every time (a sentence runs to the end of its stream: put one "
                f"sentence per line, or lower bsz {cfg.bsz} / seq_len {cfg.seq_len})")

    def set_position(self, global_step: int, pass_id: int, step: int) -> None:
        """Declare that global batch `global_step` is (pass_id, step) — what `locate` returned when the
        checkpoint was written. Trusted, not re-verified (a wrong hint shifts the data position)."""
        if step < 0 or global_step - step < 0:
            raise CxlnetError(f"bad data position: global step {global_step}, pass {pass_id}, step {step}")
        self._pass_start[int(pass_id)] = int(global_step) - int(step)

    # --- batches -------------------------------------------------------------------------------

    def make_batch(self, pass_id: int, step: int) -> dict[str, torch.Tensor]:
        """The batch at (pass_id, step); step must be < steps_in_pass(pass_id)."""
        pd = self._get_pass(pass_id)
        if not 0 <= step < pd.steps:
            raise IndexError(f"step {step} out of range for pass {pass_id} ({pd.steps} steps)")
        cfg = self.cfg
        B, L, R = cfg.bsz, cfg.seq_len, cfg.reuse_len
        S = L - R
        i = step * R
        splits = self._splits(pd, step)
        assert splits is not None  # _count_steps guarantees it

        x = np.empty((B, L), dtype=np.int64)
        tgt = np.empty((B, L), dtype=np.int64)  # XLNet's next-token targets
        seg = np.empty((B, L), dtype=np.int64)
        x[:, :R] = pd.columns(i, i + R)
        tgt[:, :R] = pd.columns(i + 1, i + R + 1)
        begin = i + R
        for r, (a_end, b_begin, b_end, _label) in enumerate(splits):
            a_text, b_text = pd.window(r, begin, a_end + 1), pd.window(r, b_begin, b_end + 1)
            na, nb = a_end - begin, b_end - b_begin
            xr, tr = x[r, R:], tgt[r, R:]
            xr[:na] = a_text[:na]
            xr[na] = SEP_ID
            xr[na + 1: na + 1 + nb] = b_text[:nb]
            xr[na + 1 + nb:] = (SEP_ID, CLS_ID)
            tr[:na] = a_text[1:]
            tr[na: na + nb + 1] = b_text
            tr[na + nb + 1:] = CLS_ID
            seg[r, : R + na + 1] = 0
            seg[r, R + na + 1: L - 1] = 1
            seg[r, L - 1] = 2

        # span masks (sampled in forward text order for backward rows, then flipped back)
        mrng = self._rng(pass_id, step, _MASK)
        start = self._start_table[x]
        rev = pd.reverse[:, None]
        masks = []
        for lo, hi, goal in ((0, R, cfg.num_predict - cfg.num_predict // 2), (R, L, cfg.num_predict // 2)):
            st = start[:, lo:hi]
            st = np.where(rev, st[:, ::-1], st)
            m = _sample_masks(st, goal, mrng, cfg.mask_alpha, cfg.mask_beta, cfg.max_gram)
            masks.append(np.where(rev, m[:, ::-1], m))
        is_masked = np.concatenate(masks, axis=1)

        # factorisation order + perm mask per half
        prng = self._rng(pass_id, step, _PERM)
        perm_mask = np.zeros((B, L, L), dtype=np.float32)
        target_tok = np.empty((B, L), dtype=bool)
        new_target = np.empty((B, L), dtype=np.int64)
        for lo, hi in ((0, R), (R, L)):
            n = hi - lo
            sigma = np.argsort(prng.random((B, cfg.perm_size)), axis=1)
            pm, tt = local_perm_mask(x[:, lo:hi], is_masked[:, lo:hi], block_order(sigma, n))
            perm_mask[:, lo:hi, lo:hi] = pm
            target_tok[:, lo:hi] = tt
            new_target[:, lo] = x[:, lo]
            new_target[:, lo + 1: hi] = tgt[:, lo: hi - 1]
        perm_mask[:, :R, R:] = 1.0

        # num_predict padding
        P = cfg.num_predict
        bi, pos = np.nonzero(target_tok)
        slot = (np.cumsum(target_tok, axis=1) - 1)[bi, pos]
        target_mapping = np.zeros((B, P, L), dtype=np.float32)
        target_mapping[bi, slot, pos] = 1.0
        target = np.zeros((B, P), dtype=np.int64)
        target[bi, slot] = new_target[bi, pos]
        target_mask = np.zeros((B, P), dtype=np.float32)
        target_mask[bi, slot] = 1.0

        batch = {
            "input_ids": torch.from_numpy(x),
            "token_type_ids": torch.from_numpy(seg),
            "perm_mask": torch.from_numpy(perm_mask),
            "target_mapping": torch.from_numpy(target_mapping),
            "target": torch.from_numpy(target),
            "target_mask": torch.from_numpy(target_mask),
        }
        if cfg.include_input_q:
            batch["input_q"] = torch.from_numpy(target_tok.astype(np.float32))
        self.store.release()  # the windows are copied out: the loader's RSS stays one batch's pages
        return batch

    def iter_batches(self, start_step: int = 0, stop_step: int | None = None, stride: int = 1,
                     position: tuple[int, int] | None = None) -> Iterator[dict[str, torch.Tensor]]:
        """Batches with global indices start_step, start_step+stride, ... (< stop_step if given).

        Resume is exact and cheap: batch k depends only on (pass, step) = locate(k), never on the
        skipped batches. Without `position` the lengths of the earlier passes are recomputed
        (~10 ms per pass for a 1M-token store); with `position=(pass_id, step)` of start_step (saved
        from `locate` at checkpoint time) nothing before it is touched.
        """
        k = int(start_step)
        if position is not None:
            self.set_position(k, *position)
        while stop_step is None or k < stop_step:
            try:
                p, s = self.locate(k)
            except IndexError:
                return
            yield self.make_batch(p, s)
            k += stride

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return self.iter_batches()

    def describe(self) -> dict:
        return {"config": asdict(self.cfg), "task": self.task, "num_task": self.num_task,
                "shards": self.shards, "num_passes": self.num_passes, "store": str(self.store.dir)}


class PretrainDataset(torch.utils.data.IterableDataset):
    """`torch` IterableDataset over a PretrainStream; use with `DataLoader(ds, batch_size=None)`.

    With `num_workers = W > 0`, worker w yields global steps start_step + w, + w + W, ...; the
    DataLoader fetches from its workers round-robin, so the order is exactly start_step, +1, +2, ...
    """

    def __init__(self, store: TokenStore | str | Path, *, start_step: int = 0, stop_step: int | None = None,
                 position: tuple[int, int] | None = None, **stream_kwargs):
        super().__init__()
        self.position = position
        self.store_path = store.dir if isinstance(store, TokenStore) else Path(store)
        self.stream_kwargs = stream_kwargs
        self.start_step, self.stop_step = start_step, stop_step

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        w, W = (0, 1) if info is None else (info.id, info.num_workers)
        stream = PretrainStream(self.store_path, **self.stream_kwargs)
        if self.position is not None:
            stream.set_position(self.start_step, *self.position)
        return stream.iter_batches(self.start_step + w, self.stop_step, stride=W)


def estimate_steps_per_pass(num_tokens: int, bsz: int = 32, seq_len: int = 512, reuse_len: int = 256,
                            bi_data: bool = True) -> int:
    """Upper bound on batches per pass for a stream of `num_tokens` tokens."""
    T = num_tokens // (bsz // 2 if bi_data else bsz)
    return max(0, (T - seq_len) // reuse_len + 1) if T >= seq_len else 0


__all__ = ["PretrainConfig", "PretrainStream", "PretrainDataset", "local_perm_mask", "block_order",
           "split_a_and_b", "sample_mask", "estimate_steps_per_pass"]
