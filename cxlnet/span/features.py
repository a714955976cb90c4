"""Examples → fixed-shape features for span extraction, exactly as XLNet's `run_squad.py`
(inherited unchanged by Chinese-XLNet's `run_cmrc_drcd.py`), spec §5.2–5.7.

Per paragraph (tokenised ONCE and shared by all its questions):
  pieces = encode_pieces(preprocess_text(context)); tok_cat = ''.join(pieces) with '▁' → ' ';
  a banded LCS aligns the RAW context chars with tok_cat chars (a raw char matches when its own
  per-char `preprocess_text(c, remove_space=False)` equals the tok_cat char, so whitespace,
  full-width forms and 1→1 NFKD changes align and multi-char NFKD expansions such as `…`→`...`
  are bridged by `_convert_index`); `max_dist = |N-M|+5`, doubled once when the score is ≤ 0.8·N;
  a final score < 0.8·N (or no match at all) is a MISMATCH and the paragraph's questions get no
  features (training: lost; evaluation: predicted "").
Per question: query ids truncated to `max_query_length`, doc-stride windows, layout
  paragraph <sep> question <sep> <cls> pad(id 0), segments P=0 Q=1 CLS=2 PAD=3,
  p_mask (0 = may be an answer: paragraph tokens and CLS), input_mask (1 = padding), labels.

Speed: the LCS DP is vectorised over a batch of paragraphs at once (one numpy step per row i,
over all paragraphs and all band columns j), which gives bit-identical f/g tables to the original
cell-by-cell loop (the left dependency inside a row is a running maximum). The back-pointer
tie-breaking is reproduced exactly: up (g=0) first, left (g=1) only if strictly greater, diagonal
(g=2) only if strictly greater than both.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cxlnet.errors import CxlnetError
from cxlnet.span.examples import SpanExample, read_examples
from cxlnet.text import CLS_ID, SEP_ID, SPIECE_UNDERLINE, encode_pieces, preprocess_text

log = logging.getLogger(__name__)

SEG_ID_P, SEG_ID_Q, SEG_ID_CLS, SEG_ID_PAD = 0, 1, 2, 3
PAD_TOKEN_ID = 0  # the original pads QA features with id 0 (<unk>), not <pad>
UNIQUE_ID_START = 1_000_000_000


@dataclass
class SpanConfig:
    max_seq_length: int = 512
    doc_stride: int = 128
    max_query_length: int = 64
    uncased: bool = False  # hfl: always False

    def __post_init__(self) -> None:
        # Windows must advance and hold at least one question and one paragraph token beside the
        # 3 special tokens (per question the room left for the paragraph is checked when converting).
        if self.max_query_length < 1 or self.doc_stride < 1 or self.max_seq_length < 5:
            raise CxlnetError(f"task: need max_query_length >= 1, doc_stride >= 1 and max_seq_length >= 5 "
                              f"(got {self.max_query_length}, {self.doc_stride}, {self.max_seq_length})")


# --------------------------------------------------------------------------------------------
# _convert_index


def convert_index(index: Sequence[int | None], pos: int, M: int | None = None, is_start: bool = True) -> int:
    """The original `_convert_index` (with Chinese-XLNet's clamp of `pos`); `index` uses None
    (or any negative number) for unset positions."""
    arr = np.asarray([-1 if v is None else v for v in index], dtype=np.int64)
    return int(convert_index_many(arr, np.asarray([pos]), M, is_start)[0])


def convert_index_many(index: np.ndarray, pos: np.ndarray, M: int | None = None, is_start: bool = True) -> np.ndarray:
    """Vectorised `_convert_index` over many positions; `index` is an int array with -1 = unset."""
    n = len(index)
    pos = np.minimum(np.asarray(pos, dtype=np.int64), n - 1)
    is_set = index >= 0
    ar = np.arange(n)
    # front: last set position <= p (the scan stops at 0); rear: first set position >= p (stops at n-1)
    front_all = np.maximum.accumulate(np.where(is_set, ar, -1))
    front_all = np.where(front_all < 0, 0, front_all)
    rear_all = np.minimum.accumulate(np.where(is_set, ar, n)[::-1])[::-1]
    rear_all = np.where(rear_all >= n, n - 1, rear_all)
    front_v = index[front_all[pos]]
    rear_v = index[rear_all[pos]]
    if np.any((front_v < 0) & (rear_v < 0)):
        raise ValueError("convert_index: no aligned position on either side")
    gap = rear_v > front_v + 1
    if is_start:
        both = np.where(gap, front_v + 1, rear_v)
        no_left = np.where(rear_v >= 1, 0, rear_v)
        no_right = np.where(front_v < M - 1, front_v + 1, front_v) if M is not None else front_v
    else:
        both = np.where(gap, rear_v - 1, front_v)
        no_left = np.where(rear_v >= 1, rear_v - 1, rear_v)
        no_right = np.where(front_v < M - 1, M - 1, front_v) if M is not None else front_v
    out = np.where(front_v < 0, no_left, np.where(rear_v < 0, no_right, both))
    return np.where(index[pos] >= 0, index[pos], out)


# --------------------------------------------------------------------------------------------
# banded LCS


@lru_cache(maxsize=None)
def _char_code(ch: str, lower: bool = False) -> int:
    """Code of `preprocess_text(ch, remove_space=False)` if it is one char, else -1 (never matches)."""
    out = preprocess_text(ch, lower=lower, remove_space=False)
    return ord(out) if len(out) == 1 else -1


def _lcs_chunk(a_codes: list[np.ndarray], b_codes: list[np.ndarray], max_dists: list[int]):
    """Run the original banded LCS for several (a, b) pairs at once.

    Returns per pair (orig_to_chartok int32[N] (-1 unset), chartok_to_orig int32[M], score)."""
    P = len(a_codes)
    Ns = np.array([len(a) for a in a_codes])
    Ms = np.array([len(b) for b in b_codes])
    mds = np.array(max_dists)
    Nmax = int(Ns.max())
    W = int(2 * mds.max())
    width = Nmax + W
    A = np.full((P, Nmax), -3, dtype=np.int32)
    T = np.full((P, width), -2, dtype=np.int32)
    V = np.zeros((P, width), dtype=bool)
    for p in range(P):
        A[p, : Ns[p]] = a_codes[p]
        md = mds[p]
        seg = b_codes[p][: max(0, width - md)]
        T[p, md : md + len(seg)] = seg
        V[p, md : md + len(seg)] = True
    kvalid = np.arange(W)[None, :] < (2 * mds)[:, None]
    G = np.full((P, Nmax, W), -1, dtype=np.int8)
    fprev = np.zeros((P, W), dtype=np.int32)
    up = np.zeros((P, W), dtype=np.int32)
    left = np.zeros((P, W), dtype=np.int32)
    fend = np.zeros(P, dtype=np.int32)
    k_end = (Ms - 1) - (Ns - 1) + mds
    rows_ending = {}
    for p in range(P):
        rows_ending.setdefault(int(Ns[p]) - 1, []).append(p)
    two, one = np.int8(2), np.int8(1)
    for i in range(Nmax):
        valid = V[:, i : i + W] & kvalid
        match = (T[:, i : i + W] == A[:, i : i + 1]) & valid
        up[:, :-1] = fprev[:, 1:]
        d = np.where(match, fprev + 1, 0)
        f = np.maximum.accumulate(np.maximum(up, d), axis=1)
        left[:, 1:] = f[:, :-1]
        best = np.maximum(up, left)
        g = np.where(match & (d > best), two, np.where(left > up, one, np.int8(0 if i > 0 else -1)))
        G[:, i] = np.where(valid, g, np.int8(-1))
        fprev = np.where(valid, f, 0)
        for p in rows_ending.get(i, ()):
            fend[p] = fprev[p, k_end[p]]
    out = []
    for p in range(P):
        n, m, md = int(Ns[p]), int(Ms[p]), int(mds[p])
        g = G[p, :n].tolist()
        o2c = [-1] * n
        c2o = [-1] * m
        i, j = n - 1, m - 1
        while i >= 0 and j >= 0:
            k = j - i + md
            if k < 0 or k >= W:
                break
            v = g[i][k]
            if v == 2:
                o2c[i] = j
                c2o[j] = i
                i -= 1
                j -= 1
            elif v == 1:
                j -= 1
            elif v == 0:
                i -= 1
            else:
                break
        out.append((np.array(o2c, dtype=np.int32), np.array(c2o, dtype=np.int32), int(fend[p])))
    return out


def banded_lcs(pairs: list[tuple[np.ndarray, np.ndarray]], max_dists: list[int] | None = None,
               cells_per_chunk: int = 24_000_000):
    """Original banded LCS for many (raw-char codes, tok_cat codes) pairs, with the doubling retry.

    Returns per pair (orig_to_chartok, chartok_to_orig, score, max_dist_used)."""
    if max_dists is None:
        max_dists = [abs(len(a) - len(b)) + 5 for a, b in pairs]
    results: list[Any] = [None] * len(pairs)

    def run(idx: list[int], mds: dict[int, int]):
        order = sorted(idx, key=lambda q: (2 * mds[q], len(pairs[q][0])))
        chunk: list[int] = []

        def flush():
            res = _lcs_chunk([pairs[q][0] for q in chunk], [pairs[q][1] for q in chunk], [mds[q] for q in chunk])
            for q, r in zip(chunk, res):
                results[q] = (*r, mds[q])

        n_max = md_max = 0
        for q in order:  # chunks of similar band width, bounded memory for the back-pointers
            n_q, md_q = len(pairs[q][0]), mds[q]
            cells = (len(chunk) + 1) * max(n_max, n_q) * 2 * max(md_max, md_q)
            if chunk and (cells > cells_per_chunk or md_q > 2 * mds[chunk[0]] + 8):
                flush()
                chunk, n_max, md_max = [], 0, 0
            chunk.append(q)
            n_max, md_max = max(n_max, n_q), max(md_max, md_q)
        if chunk:
            flush()

    idx = [q for q, (a, b) in enumerate(pairs) if len(a) and len(b)]
    for q, (a, b) in enumerate(pairs):
        if not (len(a) and len(b)):
            results[q] = (np.full(len(a), -1, np.int32), np.full(len(b), -1, np.int32), 0, 0)
    mds = {q: int(max_dists[q]) for q in idx}
    run(idx, mds)
    retry = [q for q in idx if not results[q][2] > 0.8 * len(pairs[q][0])]
    if retry:
        run(retry, {q: 2 * mds[q] for q in retry})
    return results


# --------------------------------------------------------------------------------------------
# paragraphs


@dataclass
class ParagraphTokens:
    """A tokenised and aligned paragraph (shared by all questions on it)."""

    pieces: list[str]
    ids: np.ndarray  # int32 [T]
    orig_to_chartok: np.ndarray  # int32 [N], -1 = unaligned raw char
    chartok_to_tok: np.ndarray  # int32 [Mc]
    tok_start_to_orig: np.ndarray  # int32 [T] (inclusive raw-char start of each token)
    tok_end_to_orig: np.ndarray  # int32 [T] (inclusive raw-char end)
    score: int
    mismatch: bool


def tokenize_paragraphs(contexts: list[str], tokenizer) -> list[ParagraphTokens]:
    """Tokenise and align each paragraph (spec §5.2 steps 2–8)."""
    sp = tokenizer.sp
    lower = bool(getattr(tokenizer, "lower", False))
    piece_lists, pairs, aux = [], [], []
    for text in contexts:
        pieces = encode_pieces(sp, preprocess_text(text, lower=lower))
        toks = [p.replace(SPIECE_UNDERLINE, " ") for p in pieces]
        lens = np.fromiter((len(t) for t in toks), dtype=np.int64, count=len(toks))
        tok_cat = "".join(toks)
        chartok_to_tok = np.repeat(np.arange(len(toks), dtype=np.int32), lens)
        ends = np.cumsum(lens) - 1
        starts = ends - lens + 1
        a = np.fromiter((_char_code(c, lower) for c in text), dtype=np.int32, count=len(text))
        b = np.fromiter((ord(c) for c in tok_cat), dtype=np.int32, count=len(tok_cat))
        piece_lists.append(pieces)
        pairs.append((a, b))
        aux.append((chartok_to_tok, starts, ends))
    aligned = banded_lcs(pairs)
    out = []
    for text, pieces, (a, b), (c2t, starts, ends), (o2c, c2o, score, _) in zip(contexts, piece_lists, pairs, aux, aligned):
        n = len(text)
        mismatch = bool(not np.any(o2c >= 0) or score < 0.8 * n)
        ids = np.fromiter((sp.piece_to_id(p) for p in pieces), dtype=np.int32, count=len(pieces))
        if mismatch:
            ts = te = np.zeros(0, np.int32)
        else:
            ts = convert_index_many(c2o, starts, n, is_start=True).astype(np.int32)
            te = convert_index_many(c2o, ends, n, is_start=False).astype(np.int32)
        out.append(ParagraphTokens(pieces, ids, o2c, c2t, ts, te, score, mismatch))
    return out


def answer_token_span(ex: SpanExample, para: ParagraphTokens) -> tuple[int, int] | None:
    """Inclusive paragraph-token span of the training answer (spec §5.4; `_convert_index`
    without `M`, as in the original), or None where the original's assertion start <= end fails
    (an answer made only of characters that the normalisation drops, e.g. a lone combining mark)."""
    end_char = ex.start + len(ex.answer_text) - 1
    o2c = para.orig_to_chartok
    cs = int(o2c[ex.start]) if ex.start < len(o2c) and o2c[ex.start] >= 0 else \
        int(convert_index_many(o2c, np.array([ex.start]), None, True)[0])
    ce = int(o2c[end_char]) if end_char < len(o2c) and o2c[end_char] >= 0 else \
        int(convert_index_many(o2c, np.array([end_char]), None, False)[0])
    tok_s, tok_e = int(para.chartok_to_tok[cs]), int(para.chartok_to_tok[ce])
    return (tok_s, tok_e) if tok_s <= tok_e else None


# --------------------------------------------------------------------------------------------
# windows


def doc_spans(n_tokens: int, max_tokens_for_doc: int, doc_stride: int) -> list[tuple[int, int]]:
    """The original sliding windows: list of (start, length)."""
    if max_tokens_for_doc < 1 or doc_stride < 1:
        raise ValueError(f"doc_spans: window length {max_tokens_for_doc} and stride {doc_stride} must be >= 1")
    spans = []
    start = 0
    while start < n_tokens:
        length = min(n_tokens - start, max_tokens_for_doc)
        spans.append((start, length))
        if start + length == n_tokens:
            break
        start += min(length, doc_stride)
    return spans


def max_context_masks(spans: list[tuple[int, int]]) -> list[np.ndarray]:
    """`_check_is_max_context` for every token of every span (first span wins ties)."""
    if len(spans) == 1:
        return [np.ones(spans[0][1], dtype=bool)]
    n = spans[-1][0] + spans[-1][1]
    pos = np.arange(n)
    scores = np.full((len(spans), n), -np.inf)
    for s, (start, length) in enumerate(spans):
        end = start + length - 1
        inside = (pos >= start) & (pos <= end)
        sc = np.minimum(pos - start, end - pos) + 0.01 * length
        scores[s] = np.where(inside, sc, -np.inf)
    best = np.argmax(scores, axis=0)  # first maximum = first span with the best score
    return [best[start : start + length] == s for s, (start, length) in enumerate(spans)]


# --------------------------------------------------------------------------------------------
# features


@dataclass
class FeatureStats:
    paragraphs: int = 0
    mismatch_paragraphs: int = 0
    mismatch_questions: int = 0  # questions without features because their paragraph mismatched
    questions_truncated: int = 0  # questions longer than max_query_length (truncated)
    untrainable_skipped: int = 0  # training: questions skipped (no usable first answer)
    unmappable_answers: int = 0  # first answers with no token span (training: skipped; eval: no label)
    impossible_questions: int = 0  # training: is_impossible questions, every window labelled at <cls>
    features: int = 0
    out_of_window_features: int = 0  # training: windows labelled at <cls>
    seconds: float = 0.0
    read: dict = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SpanFeatures:
    """Static-shape features, row f = one window of one question.

    Masks are stored compactly as uint8 (1 = padding / not an answer position); `as_tensors`
    gives the dtypes the model wants (long ids, float masks)."""

    input_ids: np.ndarray  # int32 [F, L]
    segment_ids: np.ndarray  # int8 [F, L]: P=0, Q=1, CLS=2, PAD=3
    input_mask: np.ndarray  # uint8 [F, L]: 0 real token (incl. CLS), 1 padding
    p_mask: np.ndarray  # uint8 [F, L]: 0 paragraph token or CLS, 1 elsewhere
    cls_index: np.ndarray  # int32 [F]
    start_positions: np.ndarray  # int32 [F] label (cls_index when out of window / no answer)
    end_positions: np.ndarray  # int32 [F]
    is_impossible: np.ndarray  # bool [F]: answer not inside this window (or no trainable answer)
    paragraph_len: np.ndarray  # int32 [F]
    doc_span_start: np.ndarray  # int32 [F]: token offset of the window in the paragraph
    example_index: np.ndarray  # int32 [F]: index into the examples list
    unique_ids: np.ndarray  # int64 [F]: 1_000_000_000 + running number
    tok_start_to_orig: np.ndarray  # int32 [F, L]: raw-char start of window token t (-1 beyond P)
    tok_end_to_orig: np.ndarray  # int32 [F, L]: raw-char end (inclusive) of window token t
    token_is_max_context: np.ndarray  # bool [F, L]

    def __len__(self) -> int:
        return len(self.input_ids)

    def as_tensors(self, index=None) -> dict:
        """Torch tensors for the model (optionally a subset of rows)."""
        import torch

        sl = slice(None) if index is None else index
        return {
            "input_ids": torch.as_tensor(self.input_ids[sl]).long(),
            "segment_ids": torch.as_tensor(self.segment_ids[sl]).long(),
            "input_mask": torch.as_tensor(self.input_mask[sl]).float(),
            "p_mask": torch.as_tensor(self.p_mask[sl]).float(),
            "cls_index": torch.as_tensor(self.cls_index[sl]).long(),
            "start_positions": torch.as_tensor(self.start_positions[sl]).long(),
            "end_positions": torch.as_tensor(self.end_positions[sl]).long(),
            "feature_index": torch.as_tensor(np.arange(len(self))[sl]).long(),
        }


def convert_examples(examples: list[SpanExample], tokenizer, cfg: SpanConfig | None = None,
                     is_training: bool = False, stats: FeatureStats | None = None,
                     paragraphs: dict | None = None) -> tuple[SpanFeatures, FeatureStats]:
    """Features for `examples` (spec §5.2–5.7). Each distinct paragraph is tokenised once.

    With `is_training`, questions without a usable first answer are skipped (counted); labels are
    also filled for evaluation examples whose first answer is usable (handy for oracle checks)."""
    cfg = cfg or SpanConfig()
    stats = stats or FeatureStats()
    t0 = time.perf_counter()
    L = cfg.max_seq_length
    # -- paragraphs, keyed by (para_id, context) so mixed lists stay correct
    keys: dict[tuple[int, str], int] = {}
    contexts = []
    for ex in examples:
        key = (ex.para_id, ex.context)
        if key not in keys:
            keys[key] = len(contexts)
            contexts.append(ex.context)
    paras = tokenize_paragraphs(contexts, tokenizer)
    if paragraphs is not None:
        paragraphs.update({k: paras[v] for k, v in keys.items()})
    stats.paragraphs += len(paras)
    mism = [i for i, p in enumerate(paras) if p.mismatch]
    stats.mismatch_paragraphs += len(mism)
    for i in mism:
        log.warning("MISMATCH: paragraph %r... cannot be aligned with its pieces (score %d of %d chars)",
                    contexts[i][:30], paras[i].score, len(contexts[i]))

    # -- pass 1: per question, query ids, spans and labels
    plan = []  # (example_index, para, query_ids, spans, masks, tok_start, tok_end)
    span_cache: dict[tuple[int, int], tuple[list, list]] = {}
    n_feat = 0
    for e, ex in enumerate(examples):
        para = paras[keys[(ex.para_id, ex.context)]]
        if para.mismatch:
            stats.mismatch_questions += 1
            continue
        if is_training and not ex.trainable and not ex.is_impossible:
            stats.untrainable_skipped += 1
            continue
        span = answer_token_span(ex, para) if ex.trainable else None
        if ex.trainable and span is None:
            stats.unmappable_answers += 1
            if is_training:
                continue
        if is_training and ex.is_impossible:  # the original labels every window at <cls>
            stats.impossible_questions += 1
        q_ids = tokenizer.encode(ex.question)
        if len(q_ids) > cfg.max_query_length:
            stats.questions_truncated += 1
            q_ids = q_ids[: cfg.max_query_length]
        tok_s, tok_e = span or (-1, -1)
        if L - len(q_ids) - 3 < 1:
            raise CxlnetError(f"question {ex.qid}: {len(q_ids)} query tokens leave no room for the paragraph in "
                              f"max_seq_length {L}; lower task.max_query_length ({cfg.max_query_length})")
        key = (len(para.ids), len(q_ids))
        if key not in span_cache:
            spans = doc_spans(len(para.ids), L - len(q_ids) - 3, cfg.doc_stride)
            span_cache[key] = (spans, max_context_masks(spans))
        spans, masks = span_cache[key]
        plan.append((e, para, q_ids, spans, masks, tok_s, tok_e))
        n_feat += len(spans)

    # -- pass 2: fill the arrays
    F = n_feat
    input_ids = np.zeros((F, L), np.int32)
    segment_ids = np.full((F, L), SEG_ID_PAD, np.int8)
    input_mask = np.ones((F, L), np.uint8)
    p_mask = np.ones((F, L), np.uint8)
    cls_index = np.zeros(F, np.int32)
    start_pos = np.zeros(F, np.int32)
    end_pos = np.zeros(F, np.int32)
    impossible = np.zeros(F, bool)
    para_len = np.zeros(F, np.int32)
    span_start = np.zeros(F, np.int32)
    ex_index = np.zeros(F, np.int32)
    ts2o = np.full((F, L), -1, np.int32)
    te2o = np.full((F, L), -1, np.int32)
    maxctx = np.zeros((F, L), bool)
    f = 0
    for e, para, q_ids, spans, masks, tok_s, tok_e in plan:
        nq = len(q_ids)
        for (start, length), mask in zip(spans, masks):
            P = length
            row = input_ids[f]
            row[:P] = para.ids[start : start + P]
            row[P] = SEP_ID
            row[P + 1 : P + 1 + nq] = q_ids
            row[P + 1 + nq] = SEP_ID
            cls = P + nq + 2
            row[cls] = CLS_ID
            segment_ids[f, : P + 1] = SEG_ID_P
            segment_ids[f, P + 1 : cls] = SEG_ID_Q
            segment_ids[f, cls] = SEG_ID_CLS
            input_mask[f, : cls + 1] = 0
            p_mask[f, :P] = 0
            p_mask[f, cls] = 0
            cls_index[f] = cls
            para_len[f] = P
            span_start[f] = start
            ex_index[f] = e
            ts2o[f, :P] = para.tok_start_to_orig[start : start + P]
            te2o[f, :P] = para.tok_end_to_orig[start : start + P]
            maxctx[f, :P] = mask
            if tok_s >= 0 and tok_s >= start and tok_e <= start + P - 1:
                start_pos[f] = tok_s - start  # doc offset 0: the paragraph comes first
                end_pos[f] = tok_e - start
            else:
                start_pos[f] = end_pos[f] = cls
                impossible[f] = True
                if is_training:
                    stats.out_of_window_features += 1
            f += 1
    feats = SpanFeatures(
        input_ids=input_ids, segment_ids=segment_ids, input_mask=input_mask, p_mask=p_mask,
        cls_index=cls_index, start_positions=start_pos, end_positions=end_pos, is_impossible=impossible,
        paragraph_len=para_len, doc_span_start=span_start, example_index=ex_index,
        unique_ids=UNIQUE_ID_START + np.arange(F, dtype=np.int64),
        tok_start_to_orig=ts2o, tok_end_to_orig=te2o, token_is_max_context=maxctx,
    )
    stats.features += F
    stats.seconds += time.perf_counter() - t0
    log.info(
        "%d features from %d questions (%d paragraphs, %d MISMATCH paragraphs / %d questions, "
        "%d questions truncated to %d query tokens, %d untrainable skipped, %d answers without a token span, "
        "%d impossible questions, %d out-of-window windows) in %.1f s",
        F, len(plan), stats.paragraphs, stats.mismatch_paragraphs, stats.mismatch_questions,
        stats.questions_truncated, cfg.max_query_length, stats.untrainable_skipped, stats.unmappable_answers,
        stats.impossible_questions, stats.out_of_window_features, stats.seconds,
    )
    return feats, stats


def convert_file(path: str | Path, tokenizer, cfg: SpanConfig | None = None, is_training: bool = False
                 ) -> tuple[list[SpanExample], SpanFeatures, FeatureStats]:
    """Read a SQuAD-format file and convert it: (examples, features, stats incl. reading counts)."""
    examples, read_stats = read_examples(path)
    stats = FeatureStats(read=read_stats.as_dict())
    feats, stats = convert_examples(examples, tokenizer, cfg, is_training, stats)
    return examples, feats, stats
