"""Pre-training data: corpus → token store → on-the-fly permutation-LM batches (spec §2)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from cxlnet.errors import CxlnetError
from cxlnet.pretrain.corpus import TokenStore, build_store
from cxlnet.pretrain.examples import (
    PretrainDataset,
    PretrainStream,
    block_order,
    local_perm_mask,
    sample_mask,
    split_a_and_b,
)
from cxlnet.paths import sample_dir
from cxlnet.text import CLS_ID, EOD_ID, SEP_ID, Tokenizer

REPO = Path(__file__).resolve().parents[1]
# Real corpus text (one sentence per line, blank line between documents) and hfl's vocabulary,
# both from the sample shipped inside the package.
CORPUS_SAMPLE = sample_dir() / "corpus" / "zh-hans.txt"
SPIECE = sample_dir() / "pretrained" / "hfl-chinese-xlnet-base" / "spiece.model"

SMALL = dict(bsz=4, seq_len=64, reuse_len=32, perm_size=16, num_predict=12)


def corpus_slice(dest: Path, n_docs: int, skip_docs: int = 0) -> Path:
    """Copy documents [skip_docs, skip_docs + n_docs) of CORPUS_SAMPLE (blank-line separated) to dest."""
    docs = CORPUS_SAMPLE.read_text(encoding="utf-8").split("\n\n")
    dest.write_text("\n\n".join(docs[skip_docs: skip_docs + n_docs]).strip("\n") + "\n", encoding="utf-8")
    return dest


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer(SPIECE)


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory, tok) -> Path:
    tmp = tmp_path_factory.mktemp("store")
    files = [corpus_slice(tmp / "a.txt", 120), corpus_slice(tmp / "b.txt", 80, skip_docs=120)]
    build_store(files, tok, tmp / "store", num_shards=4)
    return tmp / "store"


@pytest.fixture(scope="module")
def small_store_dir(tmp_path_factory, tok) -> Path:
    tmp = tmp_path_factory.mktemp("small")
    build_store([corpus_slice(tmp / "a.txt", 12)], tok, tmp / "store", num_shards=3)
    return tmp / "store"


# --- corpus → store ----------------------------------------------------------------------------


def reference_corpus(paths, tok):
    """XLNet's _create_data loop (use_eod, from_raw_text), files joined in order with negation."""
    all_ids, all_sent, prev = [], [], None
    for path in paths:
        ids, sents, sent_id = [], [], True
        for line in Path(path).read_text(encoding="utf-8").split("\n")[:-1]:
            if not line.strip():
                sent_id = not sent_id
                cur = [EOD_ID]
            else:
                cur = tok.encode(line.strip())
            ids.extend(cur)
            sents.extend([sent_id] * len(cur))
            sent_id = not sent_id
        sents = np.array(sents)
        if prev is not None and sents[0] == prev:
            sents = ~sents
        prev = sents[-1]
        all_ids.append(np.array(ids))
        all_sent.append(sents)
    return np.concatenate(all_ids), np.concatenate(all_sent)


def test_store_matches_reference(store_dir, tok):
    store = TokenStore(store_dir)
    man = json.loads((store_dir / "store.json").read_text())
    ids = np.concatenate([store.shard(k).ids for k in range(store.num_shards)])
    sent = np.concatenate([store.shard(k).sent for k in range(store.num_shards)])
    ref_ids, ref_sent = reference_corpus([s["path"] for s in man["sources"]], tok)
    assert np.array_equal(ids, ref_ids)
    assert np.array_equal(sent, ref_sent)
    assert man["vocab_size"] == 32000 and man["dtype"] == "uint16"
    assert np.load(store_dir / "shard-00000.ids.npy").dtype == np.uint16
    assert man["counts"]["tokens"] == ids.size == sum(s["tokens"] for s in man["shards"])
    assert store.num_shards == 4
    # shards end at document ends (after an <eod>) except the last
    for k in range(store.num_shards - 1):
        assert store.shard(k).ids[-1] == EOD_ID
    # <eod> carries the same sent_id as the sentence before it
    eods = np.flatnonzero(ids == EOD_ID)
    eods = eods[eods > 0]
    assert np.array_equal(sent[eods], sent[eods - 1])
    assert store.start_pieces.shape == (32000,) and store.start_pieces[SEP_ID] and not store.start_pieces[18]


def test_digit_comma_rule_in_store(tmp_path, tok):
    path = tmp_path / "c.txt"
    path.write_text("他生于1990，卒于2000，享年10岁。\n另一句。\n\n第二篇文档。\n", encoding="utf-8")
    build_store([path], tok, tmp_path / "s", num_shards=1)
    ids = TokenStore(tmp_path / "s").shard(0).ids.tolist()
    want = tok.encode("他生于1990，卒于2000，享年10岁。") + tok.encode("另一句。") + [EOD_ID] + tok.encode("第二篇文档。")
    assert ids == want


def test_task_shard_split(store_dir):
    a = PretrainStream(store_dir, num_task=2, task=0, **SMALL)
    b = PretrainStream(store_dir, num_task=2, task=1, **SMALL)
    assert a.shards == [0, 2] and b.shards == [1, 3]
    with pytest.raises(CxlnetError, match="no shard"):
        PretrainStream(store_dir, num_task=8, task=5, **SMALL)


def test_empty_corpus(tmp_path, tok):
    (tmp_path / "e.txt").write_text("", encoding="utf-8")
    with pytest.raises(CxlnetError, match="empty corpus"):
        build_store([tmp_path / "e.txt"], tok, tmp_path / "s")


def test_no_blank_lines_warns(tmp_path, tok, caplog):
    path = tmp_path / "one.txt"
    path.write_text("第一句。\n第二句。\n第三句。\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        man = build_store([path], tok, tmp_path / "s", num_shards=1)
    assert "no blank line" in caplog.text and "one.txt" in caplog.text
    assert man["counts"]["documents"] == 1 and man["counts"]["sentences"] == 3


@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"])
def test_non_utf8_names_file_line_and_offset(tmp_path, tok, bom):
    path = tmp_path / "bad.txt"
    good = bom + "第一句。\n\n第二句。\n".encode()
    path.write_bytes(good + b"\xff\xfe broken\n")
    with pytest.raises(CxlnetError, match=rf"bad\.txt:4: not valid UTF-8 \(byte 0xff at offset {len(good)}\)"):
        build_store([path], tok, tmp_path / "s")


def test_store_missing(tmp_path):
    with pytest.raises(CxlnetError, match="not a token store"):
        TokenStore(tmp_path)


# --- building blocks -----------------------------------------------------------------------------


def test_local_perm_worked_vector():
    x = np.array([[20, 21, SEP_ID, 22, 23, CLS_ID]])
    is_masked = np.array([[0, 1, 1, 1, 0, 0]], dtype=bool)
    order = np.array([[3, 0, 5, 1, 4, 2]])
    perm, target = local_perm_mask(x, is_masked, order)
    assert target[0].astype(int).tolist() == [0, 1, 0, 1, 0, 0]
    assert perm[0].astype(int).tolist() == [
        [0, 1, 1, 1, 0, 1], [0, 1, 1, 1, 0, 1], [0, 0, 0, 0, 0, 0],
        [0, 0, 1, 1, 0, 1], [0, 1, 1, 1, 0, 1], [0, 0, 1, 0, 0, 0],
    ]


def test_block_order_is_tf_blockwise_shuffle():
    sigma = np.array([[2, 0, 3, 1]])
    # tf: reshape [n/P, P] -> transpose -> shuffle rows -> transpose -> flatten
    idx = np.arange(8).reshape(-1, 4).T[sigma[0]].T.reshape(-1)
    assert block_order(sigma, 8)[0].tolist() == idx.tolist() == [2, 0, 3, 1, 6, 4, 7, 5]


def reference_split(data, sent_ids, begin_idx, tot_len, rng):
    """XLNet's _split_a_and_b(extend_target=True), loops as written, random.* mapped onto rng."""
    data_len = data.shape[0]
    if begin_idx + tot_len >= data_len:
        return None
    end_idx, cut_points = begin_idx + 1, []
    while end_idx < data_len:
        if sent_ids[end_idx] != sent_ids[end_idx - 1]:
            if end_idx - begin_idx >= tot_len:
                break
            cut_points.append(end_idx)
        end_idx += 1
    a_begin = begin_idx
    if len(cut_points) == 0 or rng.random() < 0.5:
        label = 0
        a_end = end_idx if len(cut_points) == 0 else cut_points[int(rng.integers(len(cut_points)))]
        b_len = max(1, tot_len - (a_end - a_begin))
        b_begin = int(rng.integers(0, data_len - 1 - b_len + 1))
        b_end = b_begin + b_len
        while b_begin > 0 and sent_ids[b_begin - 1] == sent_ids[b_begin]:
            b_begin -= 1
        while b_end < data_len - 1 and sent_ids[b_end - 1] == sent_ids[b_end]:
            b_end += 1
    else:
        label = 1
        a_end = cut_points[int(rng.integers(len(cut_points)))]
        b_begin, b_end = a_end, end_idx
    while a_end - a_begin + b_end - b_begin > tot_len:
        if a_end - a_begin > b_end - b_begin:
            a_end -= 1
        else:
            b_end -= 1
    if a_end >= data_len or b_end >= data_len:
        return None
    return a_end, b_begin, b_end, label


def test_split_matches_reference_loop():
    gen = np.random.default_rng(0)
    checked = 0
    for trial in range(400):
        n = int(gen.integers(40, 200))
        # sentences of random length (some long, some 1 token)
        lens = gen.choice([1, 2, 5, 9, 30, 80], size=n)
        sent = np.repeat(np.arange(n) % 2 == 0, lens)[:n]
        bnd = np.flatnonzero(sent[1:] != sent[:-1]) + 1
        begin, tot = int(gen.integers(0, n)), int(gen.integers(3, 40))
        a = split_a_and_b(bnd, n, begin, tot, np.random.default_rng(trial))
        b = reference_split(np.zeros(n), sent, begin, tot, np.random.default_rng(trial))
        assert a == b, (trial, a, b)
        checked += a is not None
    assert checked > 200


def test_sample_mask_count_and_reverse():
    gen = np.random.default_rng(1)
    start = gen.random(256) < 0.1
    for goal in (0, 1, 43):
        m = sample_mask(start, goal, np.random.default_rng(goal))
        assert m.sum() == goal
    # sparse start pieces: XLNet's bug makes a span exactly n pieces (<= max_gram 5) from a start
    # piece, instead of n whole words (which here would run up to the next start piece, 50 later)
    start = np.zeros(256, dtype=bool)
    start[::50] = True
    m = sample_mask(start, 43, np.random.default_rng(3))
    assert m.sum() == 43
    runs = [len(r) for r in np.split(np.arange(256)[m], np.flatnonzero(np.diff(np.arange(256)[m]) > 1) + 1)]
    span_starts = [i for i in np.flatnonzero(start) if m[i]]
    assert span_starts and max(runs) <= 6


# --- batches -------------------------------------------------------------------------------------


def check_batch(batch, cfg):
    B, L, R, P = cfg["bsz"], cfg["seq_len"], cfg["reuse_len"], cfg["num_predict"]
    x = batch["input_ids"].numpy()
    seg = batch["token_type_ids"].numpy()
    pm = batch["perm_mask"].numpy()
    tmap = batch["target_mapping"].numpy()
    tgt = batch["target"].numpy()
    tmask = batch["target_mask"].numpy()
    q = batch["input_q"].numpy().astype(bool)
    assert x.shape == seg.shape == q.shape == (B, L) and x.dtype == np.int64
    assert pm.shape == (B, L, L) and pm.dtype == np.float32
    assert tmap.shape == (B, P, L) and tgt.shape == tmask.shape == (B, P)
    func = (x == SEP_ID) | (x == CLS_ID)
    n_real = 0
    for b in range(B):
        # layout: ... SEP CLS at the end, seg 0 ... 0 1 ... 1 2 with the 0→1 switch after the first SEP
        assert x[b, -1] == CLS_ID and x[b, -2] == SEP_ID and seg[b, -1] == 2
        assert (seg[b, :R] == 0).all() and (np.diff(seg[b]) >= 0).all()
        sep1 = R + int(np.flatnonzero(x[b, R:] == SEP_ID)[0])
        assert sep1 < L - 2 and (seg[b, : sep1 + 1] == 0).all() and (seg[b, sep1 + 1: L - 1] == 1).all()
        # targets
        a = int(tmask[b].sum())
        n_real += a
        assert 1 <= a <= P and (tmask[b, :a] == 1).all() and (tmask[b, a:] == 0).all()
        pos = np.flatnonzero(q[b])
        assert pos.size == a
        assert np.array_equal(tmap[b, :a].argmax(1), pos) and (tmap[b, :a].sum(1) == 1).all()
        assert (tmap[b, a:] == 0).all() and (tgt[b, a:] == 0).all()
        assert not func[b, pos].any()
        assert np.array_equal(tgt[b, :a], x[b, pos])
        # perm mask
        assert (pm[b, :R, R:] == 1).all() and (pm[b, R:, :R] == 0).all()
        assert (pm[b, pos, pos] == 1).all()  # a target never sees itself
        for lo, hi in ((0, R), (R, L)):
            blk = pm[b, lo:hi, lo:hi].astype(bool)
            tq = q[b, lo:hi]
            free = ~tq & ~func[b, lo:hi]
            # tokens that are neither targets nor functional: free tokens see each other
            assert not blk[np.ix_(free, free)].any()
            # nobody is blocked from a free token
            assert not blk[:, free].any()
            # targets are totally ordered: for i != j exactly one direction is blocked
            t = blk[np.ix_(tq, tq)]
            assert (t | t.T | np.eye(t.shape[0], dtype=bool)).all() and not (t & t.T & ~np.eye(t.shape[0], dtype=bool)).any()
    return n_real


def test_batch_invariants_many(store_dir):
    cfg = dict(SMALL, bsz=8)
    st = PretrainStream(store_dir, **cfg)
    n_real = n_batches = 0
    for k, batch in enumerate(st.iter_batches(0, 40)):
        n_real += check_batch(batch, dict(cfg, **{"include_input_q": True}))
        n_batches += 1
    assert n_batches == 40
    # few slots go to masked SEP/CLS: nearly all num_predict slots are real
    assert n_real / (40 * 8 * 12) > 0.9


def test_default_config_batch(store_dir):
    st = PretrainStream(store_dir)  # Chinese-XLNet defaults: 32 x 512, reuse 256, perm 256, 85 predictions
    assert st.steps_in_pass(0) >= 2
    batch = st.make_batch(0, 1)
    cfg = dict(bsz=32, seq_len=512, reuse_len=256, num_predict=85)
    check_batch(batch, cfg)
    assert batch["target_mask"].sum(1).float().mean() > 80


def test_rows_layout_bi_data_and_reuse_continuity(store_dir):
    cfg = dict(SMALL, bsz=8)
    st = PretrainStream(store_dir, **cfg)
    B, L, R = 8, 64, 32
    # the pass stream = shards in the pass's order, sent_ids negated at joins
    data = np.concatenate([st.store.shard(k).ids for k in st.shard_order(0)])
    T = data.size // (B // 2)
    fwd = data[: T * B // 2].reshape(B // 2, T)
    batches = list(st.iter_batches(0, 6))
    for s, batch in enumerate(batches):
        x = batch["input_ids"].numpy()
        for r in range(B // 2):
            assert np.array_equal(x[r, :R], fwd[r, s * R: s * R + R])  # forward rows
            assert np.array_equal(x[B // 2 + r, :R], fwd[r, ::-1][s * R: s * R + R])  # reversed
    for s in range(5):
        a, b = batches[s]["input_ids"].numpy(), batches[s + 1]["input_ids"].numpy()
        # next window's reuse part = the text right after this window's reuse part = A's start
        assert np.array_equal(b[:, 0], a[:, R])
        # label-1 or label-0 alike: A is the continuation of the reuse half
        for r in range(B):
            na = int(np.flatnonzero(a[r, R:] == SEP_ID)[0])
            assert np.array_equal(a[r, R: R + min(na, R)], b[r, : min(na, R)])


def test_num_core_layout(store_dir):
    st = PretrainStream(store_dir, num_core=2, **dict(SMALL, bsz=8))
    x = st.make_batch(0, 0)["input_ids"].numpy()
    data = np.concatenate([st.store.shard(k).ids for k in st.shard_order(0)])
    T = data.size // 4
    fwd = data[: 4 * T].reshape(4, T)
    # core c owns rows [4c, 4c+4): 2 forward streams then the same 2 reversed
    order = [(0, False), (1, False), (0, True), (1, True), (2, False), (3, False), (2, True), (3, True)]
    for r, (f, rev) in enumerate(order):
        row = fwd[f, ::-1] if rev else fwd[f]
        assert np.array_equal(x[r, :32], row[:32])


def test_determinism_passes_seeds_and_resume(small_store_dir):
    st = PretrainStream(small_store_dir, **SMALL)
    n0 = st.steps_in_pass(0)
    assert 2 <= n0 < 200
    seq = list(st.iter_batches(0, n0 + 3))  # crosses into pass 1
    again = PretrainStream(small_store_dir, **SMALL)
    for k in (0, 1, n0 - 1, n0, n0 + 2):  # resume anywhere, incl. across the pass boundary
        got = next(again.iter_batches(start_step=k))
        assert all(torch.equal(got[key], seq[k][key]) for key in got)
    assert st.locate(n0) == (1, 0)
    # resume from a saved (pass, step) position: earlier passes are not recounted
    hinted = PretrainStream(small_store_dir, **SMALL)
    got = next(hinted.iter_batches(start_step=n0 + 2, position=(1, 2)))
    assert 0 not in hinted._steps and torch.equal(got["perm_mask"], seq[n0 + 2]["perm_mask"])
    assert hinted.locate(n0 + 1) == (1, 1)
    other_seed = next(PretrainStream(small_store_dir, seed=1, **SMALL).iter_batches())
    assert not torch.equal(other_seed["perm_mask"], seq[0]["perm_mask"])
    assert not torch.equal(seq[n0]["input_ids"], seq[0]["input_ids"])  # pass 1 starts afresh


def test_different_pass_different_masks_same_text(small_store_dir):
    # one shard → the file order is the same in every pass, so the windows coincide
    st = PretrainStream(small_store_dir, shards=[0], **SMALL)
    assert st.shard_order(0) == st.shard_order(1)
    a, b = st.make_batch(0, 0), st.make_batch(1, 0)
    assert torch.equal(a["input_ids"][:, :32], b["input_ids"][:, :32])
    assert not torch.equal(a["input_q"], b["input_q"])
    assert not torch.equal(a["perm_mask"], b["perm_mask"])


def test_num_passes_ends_iteration(small_store_dir):
    st = PretrainStream(small_store_dir, num_passes=1, **SMALL)
    assert len(list(st.iter_batches())) == st.steps_in_pass(0)


def test_dataloader_workers_keep_order(small_store_dir):
    ds = PretrainDataset(small_store_dir, start_step=3, stop_step=9, **SMALL)
    st = PretrainStream(small_store_dir, **SMALL)
    want = list(st.iter_batches(3, 9))
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
    got = list(loader)
    assert len(got) == 6
    for g, w in zip(got, want):
        assert torch.equal(g["input_ids"], w["input_ids"]) and torch.equal(g["perm_mask"], w["perm_mask"])


def test_corpus_too_small_for_batch(small_store_dir):
    st = PretrainStream(small_store_dir, bsz=64, seq_len=512, reuse_len=256)
    with pytest.raises(CxlnetError, match="corpus too small"):
        next(st.iter_batches())


def test_bad_config(small_store_dir):
    with pytest.raises(CxlnetError, match="bi_data"):
        PretrainStream(small_store_dir, **dict(SMALL, bsz=6), num_core=2)
    with pytest.raises(CxlnetError, match="perm_size"):
        PretrainStream(small_store_dir, **dict(SMALL, perm_size=24))


def test_no_bi_data_layout(store_dir):
    cfg = dict(SMALL, bsz=4, bi_data=False)
    st = PretrainStream(store_dir, **cfg)
    data = np.concatenate([st.store.shard(k).ids for k in st.shard_order(0)])
    T = data.size // 4
    x = st.make_batch(0, 2)["input_ids"].numpy()
    for r in range(4):
        assert np.array_equal(x[r, :32], data[r * T + 64: r * T + 96])
    check_batch(st.make_batch(0, 2), dict(cfg, include_input_q=True))


def test_shard_order_is_xlnets_file_order(store_dir):
    """Seed 0 orders the files of pass p exactly as XLNet: np.random.seed(100 * task + p), permutation."""
    for task, num_task in ((0, 1), (1, 2)):
        st = PretrainStream(store_dir, num_task=num_task, task=task, **SMALL)
        for p in range(4):
            perm = np.random.RandomState(100 * task + p).permutation(len(st.shards))
            assert st.shard_order(p) == [st.shards[i] for i in perm]
    assert PretrainStream(store_dir, seed=1, **SMALL).shard_order(0) != PretrainStream(store_dir, **SMALL).shard_order(0) \
        or PretrainStream(store_dir, seed=1, **SMALL).shard_order(1) != PretrainStream(store_dir, **SMALL).shard_order(1)


def test_sentence_boundaries_survive_shard_joins(tmp_path, tok):
    """Joining shards negates a shard's sentence ids when they would continue the previous shard's
    last sentence (XLNet's file joins), so every join is a sentence boundary of the pass stream."""
    # One document (no blank line): the shards are cut at sentence boundaries, so their first
    # sentence ids differ and some joins need the negation.
    text = corpus_slice(tmp_path / "a.txt", 60).read_text(encoding="utf-8").replace("\n\n", "\n")
    (tmp_path / "a.txt").write_text(text, encoding="utf-8")
    build_store([tmp_path / "a.txt"], tok, tmp_path / "store", num_shards=5)
    st = PretrainStream(tmp_path / "store", **dict(SMALL, bsz=2, bi_data=False))
    negated = 0
    for p in range(4):
        sents, joins, prev = [], [], None
        for k in st.shard_order(p):
            sent = st.store.shard(k).sent
            if prev is not None and bool(sent[0]) == prev:
                sent, negated = ~sent, negated + 1
            joins.append(sum(s.size for s in sents))
            sents.append(sent)
            prev = bool(sent[-1])
        stream = np.concatenate(sents)
        T = stream.size // 2
        want = [np.flatnonzero(row[1:] != row[:-1]) + 1 for row in stream[: 2 * T].reshape(2, T)]
        got = [b.within(0, T) for b in st._get_pass(p).bnd]  # every boundary of each row
        assert all(np.array_equal(g, w) for g, w in zip(got, want)), p
        for j in joins[1:]:
            r, c = divmod(j, T)
            assert r >= 2 or c == 0 or c in set(got[r].tolist())  # the join is a boundary
    assert negated > 0  # some join needed the negation, so the check above can fail


def test_backward_rows_sample_spans_in_text_order(store_dir):
    """bi_data: backward rows are the forward text reversed, and XLNet samples their span masks on
    the re-reversed (text-order) segment. So in a forward row a multi-token masked run starts at a
    start piece (`▁`, punctuation, <sep>/<cls>), in a backward row it ends at one."""
    # few predictions per token (10 of 128), so random top-up tokens rarely touch a span
    st = PretrainStream(store_dir, bsz=8, seq_len=128, reuse_len=64, perm_size=32, num_predict=10)
    starts_at = {False: [], True: []}
    ends_at = {False: [], True: []}
    for step in range(40):
        batch = st.make_batch(0, step)
        x, q = batch["input_ids"].numpy(), batch["input_q"].numpy() > 0
        start = st._start_table[x]
        for r in range(8):
            backward = bool(st._get_pass(0).reverse[r])
            pos = np.flatnonzero(q[r])
            for run in np.split(pos, np.flatnonzero(np.diff(pos) > 1) + 1):
                if run.size >= 2:
                    starts_at[backward].append(start[r, run[0]])
                    ends_at[backward].append(start[r, run[-1]])
    assert len(starts_at[False]) > 200 and len(starts_at[True]) > 200
    assert np.mean(starts_at[False]) > 0.9 and np.mean(ends_at[False]) < 0.3
    assert np.mean(ends_at[True]) > 0.9 and np.mean(starts_at[True]) < 0.3


@pytest.fixture
def long_line_store(tmp_path, tok) -> Path:
    """Documents of one long line each: the A/B split of a pass's first window often fails."""
    docs = CORPUS_SAMPLE.read_text(encoding="utf-8").split("\n\n")[:12]
    (tmp_path / "long.txt").write_text("\n\n".join("".join(d.split("\n")) for d in docs) + "\n", encoding="utf-8")
    build_store([tmp_path / "long.txt"], tok, tmp_path / "store", num_shards=1)
    return tmp_path / "store"


LONG_LINES = dict(bsz=64, seq_len=128, reuse_len=64, perm_size=64, num_predict=10)


def test_a_pass_without_batches_is_skipped(long_line_store):
    """XLNet writes a pass whose first split fails as an empty pass and goes on; so does the stream."""
    st = PretrainStream(long_line_store, **LONG_LINES)
    steps = [st.steps_in_pass(p) for p in range(12)]
    assert 0 in steps[1:] and sum(steps) >= 2, steps
    batches = list(st.iter_batches(0, sum(steps)))
    assert len(batches) == sum(steps)
    nonempty = [p for p, n in enumerate(steps) if n]
    assert st.locate(sum(steps) - 1) == (nonempty[-1], steps[nonempty[-1]] - 1)


def test_many_empty_passes_in_a_row_are_an_error(long_line_store, monkeypatch):
    import cxlnet.pretrain.examples as examples

    st = PretrainStream(long_line_store, **LONG_LINES)
    steps = [st.steps_in_pass(p) for p in range(12)]
    run = max(len(r) for r in "".join("0" if n == 0 else "1" for n in steps).split("1"))
    assert run >= 2, steps
    monkeypatch.setattr(examples, "MAX_EMPTY_PASSES", run)
    with pytest.raises(CxlnetError, match=f"no batch in {run} consecutive passes"):
        list(st.iter_batches(0, sum(steps) + 1))
