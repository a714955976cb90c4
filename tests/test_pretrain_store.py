"""The token store at scale: streaming parallel encoding, safe and resumable writes, slices, and a
loader that reads a pass as views of the memory-mapped store.

`tests/golden/store_sample.json` holds the sha256 of every store file written by the single-process,
whole-file encoder this one replaced (commit 07bc1e3, `build_store` of that commit) for the inputs
of `equivalence_inputs` (hfl's vocabulary, the shipped corpus sample): the streaming encoder must
write the same files byte for byte, however the text is cut into parts and workers.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import logging
import mmap
import os
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import cxlnet.pretrain.encode as encode
from cxlnet import cli
from cxlnet.errors import CxlnetError
from cxlnet.paths import sample_dir
from cxlnet.pretrain.corpus import TokenStore, build_store, expand_corpus
from cxlnet.pretrain.examples import PretrainStream
from cxlnet.text import Tokenizer, preprocess_many, preprocess_text

GOLDEN = Path(__file__).parent / "golden" / "store_sample.json"
CORPUS = sample_dir() / "corpus" / "zh-hans.txt"
SPIECE = sample_dir() / "pretrained" / "hfl-chinese-xlnet-base" / "spiece.model"
SMALL = dict(bsz=4, seq_len=64, reuse_len=32, perm_size=16, num_predict=12)
DOCS = CORPUS.read_text(encoding="utf-8").split("\n\n")


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer(SPIECE)


def equivalence_inputs(tmp: Path) -> list[Path]:
    """Plain LF text; BOM + CRLF; a single document (no blank line) that starts with a blank line
    and has no final newline."""
    a = tmp / "a.txt"
    a.write_text("\n\n".join(DOCS[:100]).strip("\n") + "\n", encoding="utf-8")
    b = tmp / "b.txt"
    b.write_bytes(b"\xef\xbb\xbf" + ("\n\n".join(DOCS[100:160]).strip("\n") + "\n").replace("\n", "\r\n").encode())
    c = tmp / "c.txt"
    c.write_text("\n" + "\n".join(DOCS[160:190]).replace("\n\n", "\n").strip("\n"), encoding="utf-8")
    return [a, b, c]


def store_digest(d: Path, manifest: dict) -> dict:
    return {"files": {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.glob("*.npy"))},
            "counts": manifest["counts"], "shards": manifest["shards"],
            "sources": [{k: v for k, v in s.items() if k != "path"} for s in manifest["sources"]]}


def stream_of(store: TokenStore) -> tuple[np.ndarray, np.ndarray]:
    ids = np.concatenate([store.shard(k).ids for k in range(store.num_shards)])
    sent = np.concatenate([store.shard(k).sent for k in range(store.num_shards)])
    return ids, sent


def docs_file(path: Path, lo: int, hi: int) -> Path:
    path.write_text("\n\n".join(DOCS[lo:hi]).strip("\n") + "\n", encoding="utf-8")
    return path


# --- same store as the encoder it replaced --------------------------------------------------------


@pytest.mark.parametrize("key,which,num_shards", [("abc4", slice(None), 4), ("abc7", slice(None), 7),
                                                  ("c5", slice(2, None), 5)])
def test_same_store_as_the_whole_file_encoder(tmp_path, tok, key, which, num_shards):
    files = equivalence_inputs(tmp_path)[which]
    golden = json.loads(GOLDEN.read_text())[key]
    # in-process with parts of ~20 KB (lines, documents and files cross part ends), and 2 workers
    for workers, part_bytes in ((0, 20000), (2, 9000)):
        out = tmp_path / f"store-{workers}"
        man = build_store(files, tok, out, num_shards=num_shards, num_workers=workers, part_bytes=part_bytes)
        assert store_digest(out, man) == golden, (workers, part_bytes)


def test_gzip_and_glob_inputs_give_the_same_store(tmp_path, tok):
    plain = [docs_file(tmp_path / "x1.txt", 0, 40), docs_file(tmp_path / "x2.txt", 40, 70)]
    (tmp_path / "gz").mkdir()
    for p in plain:
        (tmp_path / "gz" / (p.name + ".gz")).write_bytes(gzip.compress(p.read_bytes()))
    files = expand_corpus([str(tmp_path / "gz" / "*.txt.gz")])
    assert [f.name for f in files] == ["x1.txt.gz", "x2.txt.gz"]
    a = build_store(plain, tok, tmp_path / "plain", num_shards=3, part_bytes=4000)
    b = build_store(files, tok, tmp_path / "gzip", num_shards=3, part_bytes=4000)
    assert [s["sha256"] for s in b["sources"]] == [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]
    assert store_digest(tmp_path / "plain", a)["files"] == store_digest(tmp_path / "gzip", b)["files"]
    with pytest.raises(CxlnetError, match="matches no file"):
        expand_corpus([str(tmp_path / "nothing-*.txt")])


def test_batched_preprocess_equals_per_text():
    lines = CORPUS.read_text(encoding="utf-8").split("\n")
    tricky = ["a ¨b", "  x\u3000y\xa0z ", "``q''", "Café naïve", "１２３，４５", "", "İstanbul", "\u0301start",
              "e\u0301\u0323", "a\tb", "ﬁ ligature", "한국어", "\u302a\u3099"]
    for lower in (False, True):
        assert preprocess_many(tricky + lines, lower) == [preprocess_text(t, lower) for t in tricky + lines]


# --- safety ---------------------------------------------------------------------------------------


def test_existing_store_is_refused_unless_overwrite(tmp_path, tok):
    out = tmp_path / "store"
    build_store([docs_file(tmp_path / "a.txt", 0, 20)], tok, out, num_shards=2)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    b = docs_file(tmp_path / "b.txt", 20, 50)
    with pytest.raises(CxlnetError, match="a token store .* is already there; set data.if_exists=overwrite"):
        build_store([b], tok, out, num_shards=2)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    man = build_store([b], tok, out, num_shards=2, if_exists="overwrite")
    assert man["sources"][0]["path"] == str(b) and TokenStore(out).manifest == man
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt", "store"]  # nothing left beside
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(CxlnetError, match="not empty and is not a token store"):
        build_store([b], tok, tmp_path / "other", if_exists="overwrite")


def test_cli_refusal_is_one_line(tmp_path, capsys):
    args = ["data", f"data.corpus=[{docs_file(tmp_path / 'a.txt', 0, 10)}]", f"data.spiece_model={SPIECE}",
            f"data.out_dir={tmp_path / 'store'}", f"paths.output_dir={tmp_path}", "data.num_shards=2",
            "data.num_workers=0"]

    def run(*extra):
        argv0 = sys.argv[:]
        try:
            rc = cli.main([*args, *extra])
        except SystemExit as exit_:
            rc = exit_.code
        finally:
            sys.argv = argv0
            os.environ.pop(cli.ENV_COMMAND, None)
        return rc, capsys.readouterr().err

    assert run()[0] == 0
    rc, err = run()
    assert rc != 0 and "Traceback" not in err
    assert f"cxlnet data: error: {tmp_path / 'store'}: a token store" in err
    assert run("data.if_exists=overwrite")[0] == 0
    rc, err = run("data.if_exists=maybe")
    assert rc != 0 and "data.if_exists=maybe: must be one of refuse, overwrite, append" in err


def test_failed_run_leaves_the_old_store_and_no_new_one(tmp_path, tok):
    good = docs_file(tmp_path / "good.txt", 0, 30)
    bad = tmp_path / "bad.txt"
    bad.write_bytes("第一句。\n\n".encode() * 200 + b"\xff broken\n")
    out = tmp_path / "store"
    build_store([good], tok, out, num_shards=2)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    for target, mode in ((out, "overwrite"), (tmp_path / "fresh", "refuse")):
        with pytest.raises(CxlnetError, match=r"bad\.txt:401: not valid UTF-8"):
            build_store([good, bad], tok, target, num_shards=2, part_bytes=1000, num_workers=2, if_exists=mode)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # old store untouched
    assert not (tmp_path / "fresh").exists()  # never a half store under the final name
    assert (tmp_path / ".fresh.partial" / "parts").is_dir()  # the encoded parts wait for a rerun


def test_interrupted_encode_resumes_part_by_part(tmp_path, tok, monkeypatch, caplog):
    files = [docs_file(tmp_path / f"f{i}.txt", 30 * i, 30 * i + 30) for i in range(3)]
    fresh = build_store(files, tok, tmp_path / "fresh", num_shards=3, part_bytes=8000)
    real, calls = encode._encode_part, []

    def dies_after_five(*args):
        if len(calls) == 5:
            raise KeyboardInterrupt  # Ctrl-C (or a kill) in the middle of the corpus
        calls.append(args[1])
        return real(*args)

    monkeypatch.setattr(encode, "_encode_part", dies_after_five)
    with pytest.raises(KeyboardInterrupt):
        build_store(files, tok, tmp_path / "store", num_shards=3, part_bytes=8000)
    assert not (tmp_path / "store").exists()
    assert len(list((tmp_path / ".store.partial" / "parts").glob("*.json"))) == 5
    first_run, calls = calls, []
    monkeypatch.setattr(encode, "_encode_part", lambda *a: calls.append(a[1]) or real(*a))
    with caplog.at_level(logging.INFO):
        man = build_store(files, tok, tmp_path / "store", num_shards=3, part_bytes=8000)
    assert "resumed: 5 encoded parts reused" in caplog.text
    total = sum(len(list(encode.iter_blocks(f, 8000))) for f in files)
    assert total > 8 and len(calls) == total - 5 and not set(calls) & set(first_run)
    assert store_digest(tmp_path / "store", man)["files"] == store_digest(tmp_path / "fresh", fresh)["files"]
    assert not (tmp_path / ".store.partial").exists()


def test_changed_input_file_is_encoded_again(tmp_path, tok, monkeypatch):
    a, b = docs_file(tmp_path / "a.txt", 0, 20), tmp_path / "b.txt"
    b.write_bytes(b"\xff\n")
    with pytest.raises(CxlnetError, match="not valid UTF-8"):
        build_store([a, b], tok, tmp_path / "store", num_shards=2)
    docs_file(b, 20, 40)  # fixed: its parts no longer match and are encoded; a's are reused
    calls = []
    real = encode._encode_part
    monkeypatch.setattr(encode, "_encode_part", lambda *args: calls.append(args[0]) or real(*args))
    man = build_store([a, b], tok, tmp_path / "store", num_shards=2)
    assert set(calls) == {str(b)}
    ids, _ = stream_of(TokenStore(tmp_path / "store"))
    want = build_store([a, b], tok, tmp_path / "want", num_shards=2)
    assert np.array_equal(ids, stream_of(TokenStore(tmp_path / "want"))[0]) and man["counts"] == want["counts"]


def test_append_continues_the_stream(tmp_path, tok):
    a, b = docs_file(tmp_path / "a.txt", 0, 40), docs_file(tmp_path / "b.txt", 40, 70)
    build_store([a], tok, tmp_path / "store", num_shards=2)
    man = build_store([b], tok, tmp_path / "store", num_shards=3, if_exists="append")
    both = build_store([a, b], tok, tmp_path / "both", num_shards=5)
    got, want = stream_of(TokenStore(tmp_path / "store")), stream_of(TokenStore(tmp_path / "both"))
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
    assert man["counts"] == both["counts"] and len(man["shards"]) == 5
    assert [s["path"] for s in man["sources"]] == [str(a), str(b)]
    other = Tokenizer(sample_dir() / "pretrained" / "hfl-chinese-xlnet-base" / "spiece.model", lower=True)
    assert other.path == tok.path  # same file, so appending with it is allowed ...
    with pytest.raises(CxlnetError, match="already there"):
        build_store([b], tok, tmp_path / "store")  # ... but never without asking


# --- slices ---------------------------------------------------------------------------------------


def test_slices_are_read_as_one_store(tmp_path, tok):
    files = [docs_file(tmp_path / f"f{i}.txt", 25 * i, 25 * i + 25) for i in range(5)]
    root = tmp_path / "store"
    for task in (2, 0):
        build_store(files, tok, root, num_shards=2, num_task=3, task=task)
    with pytest.raises(CxlnetError, match="slice\\(s\\) 1 of 3 missing"):
        TokenStore(root)
    build_store(files, tok, root, num_shards=2, num_task=3, task=1)
    union = TokenStore(root)
    assert union.manifest["slices"] == [f"task-0000{t}-of-00003" for t in range(3)]
    # slice t holds files[t::3]; the union is the slices' shards in order
    order = [files[i] for t in range(3) for i in range(5)[t::3]]
    assert [s["path"] for s in union.manifest["sources"]] == [str(p) for p in order]
    ids, _ = stream_of(union)
    parts = [stream_of(TokenStore(root / f"task-0000{t}-of-00003"))[0] for t in range(3)]
    assert np.array_equal(ids, np.concatenate(parts))
    assert union.manifest["counts"]["tokens"] == ids.size and union.num_shards == 6
    assert np.array_equal(union.start_pieces, TokenStore(root / "task-00000-of-00003").start_pieces)
    st = PretrainStream(root, **SMALL)
    assert st.steps_in_pass(0) > 0 and st.make_batch(0, 0)["input_ids"].shape == (4, 64)
    with pytest.raises(CxlnetError, match="no corpus file in this slice"):
        build_store(files[:2], tok, tmp_path / "s2", num_task=3, task=2)


# --- the loader holds no copy of the corpus -------------------------------------------------------


def test_a_pass_reads_views_of_the_store(tmp_path, tok):
    build_store(equivalence_inputs(tmp_path), tok, tmp_path / "store", num_shards=4)
    st = PretrainStream(tmp_path / "store", **SMALL)
    token_bytes = sum(st.store.shard(k).ids.nbytes for k in range(st.store.num_shards))
    st.make_batch(0, 1)  # first calls: imports and caches, not the pass
    tracemalloc.start()
    steps = st.steps_in_pass(1)  # builds pass 1's layout and finds its end
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert steps > 100
    # a concatenated pass (ids 2 bytes/token + sentence ids) would alone be ~3x the token bytes
    assert peak < token_bytes / 4, (peak, token_bytes)
    assert all(isinstance(a.base.obj, mmap.mmap) for s in st._pass.text.shards for a in (s.ids, s.sent_bits))


def test_row_boundaries_answer_like_the_sorted_array(tmp_path, tok):
    """Each row's boundaries, found by scanning the packed bits near a position (backward rows
    mirrored), answer every query as the sorted array of the whole row would, edges included."""
    from cxlnet.pretrain.examples import split_a_and_b
    from cxlnet.pretrain.passview import SortedBoundaries

    build_store(equivalence_inputs(tmp_path), tok, tmp_path / "store", num_shards=4)
    st = PretrainStream(tmp_path / "store", **SMALL)  # bi_data: rows 0-1 forward, 2-3 the same reversed
    pd = st._get_pass(0)
    sents, prev = [], None
    for k in st.shard_order(0):
        sent = st.store.shard(k).sent
        if prev is not None and bool(sent[0]) == prev:
            sent = ~sent
        sents.append(sent)
        prev = bool(sent[-1])
    T = pd.T
    rows = np.concatenate(sents)[: 2 * T].reshape(2, T)
    fwd = [np.flatnonzero(row[1:] != row[:-1]) + 1 for row in rows]
    gen = np.random.default_rng(0)
    for r in range(4):
        f, reverse = int(pd.src[r]), bool(pd.reverse[r])
        ref = SortedBoundaries(T - fwd[f][::-1] if reverse else fwd[f])
        got = pd.bnd[r]
        near = np.concatenate([ref.bnd[:15], ref.bnd[-15:]])
        points = np.concatenate([[0, 1, 2, T - 2, T - 1, T], near - 1, near, near + 1, gen.integers(0, T, 40)])
        for p in points.tolist():
            assert got.first_at_or_after(p) == ref.first_at_or_after(p), (r, p)
            assert got.last_at_or_before(p) == ref.last_at_or_before(p), (r, p)
            for width in (1, 300):
                assert np.array_equal(got.within(p, p + width), ref.within(p, p + width)), (r, p, width)
        for trial in range(40):
            begin = int(gen.integers(0, T))
            assert split_a_and_b(got, T, begin, 29, np.random.default_rng(trial)) == \
                split_a_and_b(ref.bnd, T, begin, 29, np.random.default_rng(trial))
