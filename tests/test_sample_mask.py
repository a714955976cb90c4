"""Span masking against a literal port of the original's `data_utils._sample_mask` (zihangdai/xlnet),
on many seeds, batched as the batch generator calls it.

The port keeps the original's code line for line; only its source of randomness is passed in
(`rand` instead of the global `np.random`, `is_start` instead of `_is_start_piece(sp.IdToPiece())`).
`rand` answers the original's three draws from the uniforms cxlnet draws, in cxlnet's order: the
n-gram length by inverting the CDF as `np.random.choice(p=...)` does, the left context as
`int(u * ctx_size)`, and the top-up positions as the unmasked positions in the order of cxlnet's
top-up keys (the original's rejection loop keeps the first unmasked ones it draws, so any order
of distinct uniform positions is a valid realisation of its `randint` stream)."""
from __future__ import annotations

import numpy as np
import pytest

from cxlnet.pretrain.examples import _sample_masks, sample_mask

MASK_ALPHA, MASK_BETA = 6, 1  # FLAGS.mask_alpha, FLAGS.mask_beta


class FLAGS:
    mask_alpha, mask_beta = MASK_ALPHA, MASK_BETA


def _sample_mask(rand, is_start, seg, reverse=False, max_gram=5, goal_num_predict=None):
    """Sample `goal_num_predict` tokens for partial prediction.
    About `mask_beta` tokens are chosen in a context of `mask_alpha` tokens."""

    seg_len = len(seg)
    mask = np.array([False] * seg_len, dtype=bool)

    num_predict = 0

    ngrams = np.arange(1, max_gram + 1, dtype=np.int64)
    pvals = 1. / np.arange(1, max_gram + 1)
    pvals /= pvals.sum(keepdims=True)

    if reverse:
        seg = np.flip(seg, 0)

    cur_len = 0
    while cur_len < seg_len:
        if goal_num_predict is not None and num_predict >= goal_num_predict: break

        n = rand.choice(ngrams, p=pvals)
        if goal_num_predict is not None:
            n = min(n, goal_num_predict - num_predict)
        ctx_size = (n * FLAGS.mask_alpha) // FLAGS.mask_beta
        l_ctx = rand.choice(ctx_size)
        r_ctx = ctx_size - l_ctx

        # Find the start position of a complete token
        beg = cur_len + l_ctx
        while beg < seg_len and not is_start(seg[beg].item()):
            beg += 1
        if beg >= seg_len:
            break

        # Find the end position of the n-gram (start pos of the n+1-th gram)
        end = beg + 1
        cnt_ngram = 1
        while end < seg_len:
            if is_start(seg[beg].item()):
                cnt_ngram += 1
                if cnt_ngram > n:
                    break
            end += 1
        if end >= seg_len:
            break

        # Update
        mask[beg:end] = True
        num_predict += end - beg

        cur_len = end + r_ctx

    while goal_num_predict is not None and num_predict < goal_num_predict:
        i = rand.randint(seg_len)
        if not mask[i]:
            mask[i] = True
            num_predict += 1

    if reverse:
        mask = np.flip(mask, 0)

    return mask


class Rand:
    """The original's `np.random` draws, answered from one row of cxlnet's uniforms."""

    def __init__(self, u_ngram, u_ctx, topup_keys):
        self.u_ngram, self.u_ctx = iter(u_ngram), iter(u_ctx)
        self.topup_order = iter(np.argsort(topup_keys, kind="stable").tolist())

    def choice(self, a, p=None):
        if p is None:  # np.random.choice(ctx_size): a uniform integer in [0, ctx_size)
            return int(next(self.u_ctx) * a)
        cdf = p.cumsum()
        cdf /= cdf[-1]
        return a[int(cdf.searchsorted(next(self.u_ngram), side="right"))]

    def randint(self, n):
        return next(self.topup_order)


def random_case(seed: int):
    g = np.random.default_rng(10_000 + seed)
    B, L = int(g.integers(1, 5)), int(g.integers(8, 160))
    density = g.choice([0.05, 0.3, 0.7, 1.0])
    ids = g.integers(0, 1000, (B, L))
    starts = g.random(1000) < density  # the start-piece flag of every vocabulary id
    goal = int(g.integers(0, L // 3 + 2))
    return ids, starts, goal, bool(g.random() < 0.5), int(g.choice([1, 3, 5]))


@pytest.mark.parametrize("block", range(4))
def test_span_masks_equal_the_original_sample_mask(block):
    checked = spans_seen = 0
    for seed in range(block * 100, block * 100 + 100):
        ids, starts, goal, reverse, max_gram = random_case(seed)
        B, L = ids.shape
        # cxlnet gets each row in sampling direction (flipped when reverse), as make_batch passes it
        rows = ids[:, ::-1] if reverse else ids
        masks = _sample_masks(starts[rows], goal, np.random.default_rng(seed), MASK_ALPHA, MASK_BETA, max_gram)
        if reverse:
            masks = masks[:, ::-1]
        # the same uniforms, in cxlnet's draw order
        draws = np.random.default_rng(seed)
        g = max(goal, 1)
        u_ngram, u_ctx, keys = draws.random((B, g)), draws.random((B, g)), draws.random((B, L))
        for b in range(B):
            ref = _sample_mask(Rand(u_ngram[b], u_ctx[b], keys[b]), lambda i: bool(starts[i]), ids[b], reverse,
                               max_gram, goal)
            assert np.array_equal(masks[b], ref), (seed, b)
            assert ref.sum() == min(goal, L)
            spans_seen += int(goal > 0 and (np.diff(ref.astype(int)) == 1).any())
            checked += 1
    assert checked > 150 and spans_seen > 50


def test_single_segment_entry_point_is_the_batched_one():
    ids, starts, goal, _, max_gram = random_case(7)
    batched = _sample_masks(starts[ids[:1]], goal, np.random.default_rng(1), MASK_ALPHA, MASK_BETA, 5)[0]
    assert np.array_equal(sample_mask(starts[ids[0]], goal, np.random.default_rng(1)), batched)
