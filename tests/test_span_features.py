"""Alignment, windows and features (spec §5.2–5.7)."""
from __future__ import annotations

import io
import random

import numpy as np
import pytest

from cxlnet.span.examples import SpanExample, parse_squad
from cxlnet.span.features import (
    SEG_ID_CLS, SEG_ID_P, SEG_ID_PAD, SEG_ID_Q, UNIQUE_ID_START, SpanConfig, _char_code, banded_lcs,
    convert_examples, convert_index, convert_index_many, doc_spans, max_context_masks, tokenize_paragraphs,
)
from cxlnet.text import CLS_ID, SEP_ID, Tokenizer


# ------------------------------------------------------------------ helpers (also used by test_span_decode)
# A tiny SentencePiece model with XLNet's special-id layout, and literal ports of the original loops.
_CHARS = ("的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后"
          "多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好应开它合还因"
          "由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此变条只没结解问")


def train_tiny_spm(path) -> None:
    import sentencepiece as spm

    rnd = random.Random(0)
    lines = []
    for _ in range(1500):
        s = "".join(rnd.choice(_CHARS) for _ in range(rnd.randint(5, 40)))
        if rnd.random() < 0.3:
            s += " " + rnd.choice(["FIFA", "Jean-Phillippe", "2018", "1,000", "abc", "hello world"]) + rnd.choice(_CHARS) + "，。"
        lines.append(s)
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=buf, vocab_size=400, model_type="unigram",
        character_coverage=1.0, control_symbols=["<cls>", "<sep>", "<pad>", "<mask>", "<eod>"],
        user_defined_symbols=["<eop>"], minloglevel=2,
    )
    with open(path, "wb") as fh:
        fh.write(buf.getvalue())


def reference_convert_index(index, pos, M=None, is_start=True):
    """Literal port of Chinese-XLNet's `_convert_index`."""
    if pos >= len(index):
        pos = len(index) - 1
    if index[pos] is not None:
        return index[pos]
    N = len(index)
    rear = pos
    while rear < N - 1 and index[rear] is None:
        rear += 1
    front = pos
    while front > 0 and index[front] is None:
        front -= 1
    assert index[front] is not None or index[rear] is not None
    if index[front] is None:
        if index[rear] >= 1:
            return 0 if is_start else index[rear] - 1
        return index[rear]
    if index[rear] is None:
        if M is not None and index[front] < M - 1:
            return index[front] + 1 if is_start else M - 1
        return index[front]
    if is_start:
        return index[front] + 1 if index[rear] > index[front] + 1 else index[rear]
    return index[rear] - 1 if index[rear] > index[front] + 1 else index[front]


def reference_lcs(a: list[int], b: list[int]):
    """Literal port of the original banded LCS + retry + backtrack on code lists (a raw-char
    code of -1 never matches). Returns (orig_to_chartok, chartok_to_orig, score) with -1 = None."""
    n, m = len(a), len(b)
    f = np.zeros((n + 1, m + 1), dtype=np.float32)
    g: dict = {}

    def lcs_match(max_dist):
        f.fill(0)
        g.clear()
        for i in range(n):
            for j in range(i - max_dist, i + max_dist):
                if j >= m or j < 0:
                    continue
                if i > 0:
                    g[(i, j)] = 0
                    f[i, j] = f[i - 1, j]
                if j > 0 and f[i, j - 1] > f[i, j]:
                    g[(i, j)] = 1
                    f[i, j] = f[i, j - 1]
                f_prev = f[i - 1, j - 1] if i > 0 and j > 0 else 0
                if a[i] == b[j] and a[i] >= 0 and f_prev + 1 > f[i, j]:
                    g[(i, j)] = 2
                    f[i, j] = f_prev + 1

    max_dist = abs(n - m) + 5
    for _ in range(2):
        lcs_match(max_dist)
        if f[n - 1, m - 1] > 0.8 * n:
            break
        max_dist *= 2
    o2c = [-1] * n
    c2o = [-1] * m
    i, j = n - 1, m - 1
    while i >= 0 and j >= 0:
        if (i, j) not in g:
            break
        if g[(i, j)] == 2:
            o2c[i] = j
            c2o[j] = i
            i, j = i - 1, j - 1
        elif g[(i, j)] == 1:
            j = j - 1
        else:
            i = i - 1
    return o2c, c2o, int(f[n - 1, m - 1])


@pytest.fixture(scope="module")
def tiny_tok(tmp_path_factory):
    path = tmp_path_factory.mktemp("spm") / "tiny.model"
    train_tiny_spm(path)
    return Tokenizer(path)


# ------------------------------------------------------------------ _convert_index


def test_convert_index_spec_vectors():
    index = [None, 0, None, None, 3, None]
    assert convert_index(index, 0, is_start=True) == 0
    assert convert_index(index, 2, is_start=True) == 1
    assert convert_index(index, 2, is_start=False) == 2
    assert convert_index(index, 5, M=5, is_start=True) == 4
    assert convert_index(index, 5, M=5, is_start=False) == 4
    assert convert_index(index, 99, M=5, is_start=False) == 4  # Chinese-XLNet's clamp
    assert convert_index([None, 2, 3], 0, is_start=True) == 0
    assert convert_index([None, 2, 3], 0, is_start=False) == 1
    assert convert_index([4, None, None], 2, M=9, is_start=False) == 8
    assert convert_index([4, None, None], 2, M=5, is_start=True) == 4


def test_convert_index_matches_literal_port_on_random_arrays():
    rnd = random.Random(1)
    for _ in range(300):
        n = rnd.randint(1, 12)
        vals = sorted(rnd.sample(range(20), n))
        index = [v if rnd.random() < 0.5 else None for v in vals]
        if all(v is None for v in index):
            index[rnd.randrange(n)] = vals[0]
        arr = np.array([-1 if v is None else v for v in index])
        M = rnd.choice([None, 20, 25])
        pos = np.arange(n + 2)
        for is_start in (True, False):
            got = convert_index_many(arr, pos, M, is_start).tolist()
            want = [reference_convert_index(index, int(p), M, is_start) for p in pos]
            assert got == want, (index, M, is_start)


# ------------------------------------------------------------------ banded LCS


def _codes(raw: str, tok_cat: str):
    return (np.array([_char_code(c) for c in raw], dtype=np.int32), np.array([ord(c) for c in tok_cat], dtype=np.int32))


def _check_against_reference(pairs):
    got = banded_lcs(pairs)
    for (a, b), (o2c, c2o, score, _) in zip(pairs, got):
        ro, rc, rs = reference_lcs(a.tolist(), b.tolist())
        assert score == rs
        assert o2c.tolist() == ro
        assert c2o.tolist() == rc


def test_banded_lcs_equals_cell_by_cell_original_on_synthetic_pairs():
    rnd = random.Random(0)
    pairs = []
    alphabet = "abcde 。，,.…"
    for _ in range(60):  # random pairs: exercise tie-breaking, borders and both retry paths
        a = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(1, 50)))
        b = "".join(rnd.choice("abcde ,.") for _ in range(rnd.randint(1, 50)))
        pairs.append(_codes(a, b))
    s = "".join(rnd.choice("abcdefghij") for _ in range(60))
    pairs.append(_codes("q" * 8 + s, s + "r" * 8))  # needs the doubled band to reach 0.8·N
    pairs.append(_codes("x", "x"))
    pairs.append(_codes("全角１２３ＡＢ\u3000…好", "全角123AB ...好"))
    _check_against_reference(pairs)
    res = banded_lcs([pairs[-3]])[0]
    assert res[3] == 2 * (abs(68 - 68) + 5)  # the retry ran with the doubled band
    assert res[2] == 60


@pytest.mark.fulldata
def test_banded_lcs_equals_original_on_real_paragraphs(full_data_dir):
    """Real paragraphs incl. whitespace variants, full-width chars and NFKD expansions."""
    from cxlnet.errors import read_json
    from cxlnet.text import encode_pieces, preprocess_text

    tok = Tokenizer(full_data_dir / "pretrained" / "hfl-chinese-xlnet-base" / "spiece.model")
    data = read_json(full_data_dir / "cmrc2018" / "dev.json")
    ctxs = [p["context"] for a in data["data"] for p in a["paragraphs"]]
    special = [c for c in ctxs if any(ch in c for ch in "\u3000\u00a0\u200b\n…")]
    ctxs = sorted(ctxs, key=len)[:3] + special[:8] + ctxs[:: max(1, len(ctxs) // 6)][:6]
    pairs = []
    for c in ctxs:
        tok_cat = "".join(encode_pieces(tok.sp, preprocess_text(c))).replace("▁", " ")
        pairs.append(_codes(c, tok_cat))
    _check_against_reference(pairs)


# ------------------------------------------------------------------ alignment robustness


def test_alignment_survives_whitespace_fullwidth_and_nfkd(tiny_tok):
    ctx = "  中国\u3000人民\u00a0大学\u200b是 一所\n学校１２３ＡＢ…好的地方。  "
    para = tokenize_paragraphs([ctx], tiny_tok)[0]
    assert not para.mismatch
    # every token maps back to a raw-char range whose normalised text is the token text
    from cxlnet.text import preprocess_text

    for piece, s, e in zip(para.pieces, para.tok_start_to_orig, para.tok_end_to_orig):
        raw = preprocess_text(ctx[s : e + 1]).replace(" ", "").replace("\u200b", "")
        assert raw == piece.replace("▁", ""), (piece, ctx[s : e + 1])
    for answer in ("人民", "大学", "１２３", "ＡＢ", "好的地方", "一所"):
        start = ctx.index(answer)
        ex = SpanExample("q", "问题", ctx, [{"text": answer, "answer_start": start}], start, answer)
        feats, _ = convert_examples([ex], tiny_tok, is_training=True)
        s, e = feats.start_positions[0], feats.end_positions[0]
        text = ctx[feats.tok_start_to_orig[0, s] : feats.tok_end_to_orig[0, e] + 1].strip()
        assert answer in text


def test_mismatch_is_counted_and_question_skipped(tiny_tok):
    ctx = "a" + "\u0301" * 30 + "好的"  # combining accents vanish under NFKD: < 0.8·N chars align
    ex = SpanExample("q", "问题", ctx, [{"text": "好的", "answer_start": 31}], 31, "好的")
    feats, st = convert_examples([ex], tiny_tok, is_training=True)
    assert len(feats) == 0 and st.mismatch_paragraphs == 1 and st.mismatch_questions == 1


def test_mismatch_threshold_is_eighty_percent_of_the_raw_chars(tiny_tok):
    """`㎡` becomes `m2` under NFKD, so it never aligns char for char: a paragraph with 30% of them
    aligns ~70% of its characters (a MISMATCH), one with 10% ~90% (aligned)."""
    rnd = random.Random(1)

    def paragraph(share):
        return "".join("㎡" if rnd.random() < share else rnd.choice(_CHARS) for _ in range(200))

    for share, mismatch in ((0.3, True), (0.1, False)):
        (para,) = tokenize_paragraphs([paragraph(share)], tiny_tok)
        assert 0.55 * 200 < para.score < 0.95 * 200
        assert para.mismatch == mismatch, (share, para.score)


def test_answer_without_a_token_span_is_counted(tiny_tok):
    """An answer made only of a character NFKD removes (a lone combining mark) maps to no token
    span (the original asserts): skipped and counted in training, no label in evaluation."""
    data = {"data": [{"paragraphs": [{"context": "北京和\u0301上海都是大城市", "qas": [
        {"id": "q", "question": "什么？", "answers": [{"text": "\u0301", "answer_start": 3}]}]}]}]}
    exs, _ = parse_squad(data)
    feats, st = convert_examples(exs, tiny_tok, is_training=True)
    assert len(feats) == 0 and st.unmappable_answers == 1
    feats, st = convert_examples(exs, tiny_tok, is_training=False)
    assert len(feats) == 1 and st.unmappable_answers == 1 and feats.is_impossible[0]


def test_impossible_questions_train_on_cls(tiny_tok):
    """SQuAD 2.0's `is_impossible`: the original trains every window of the question at <cls>."""
    data = {"data": [{"paragraphs": [{"context": "中国人民大学", "qas": [
        {"id": "q", "question": "问", "answers": [], "is_impossible": True}]}]}]}
    feats, st = convert_examples(parse_squad(data)[0], tiny_tok, is_training=True)
    assert len(feats) == 1 and st.impossible_questions == 1 and st.untrainable_skipped == 0
    assert feats.start_positions[0] == feats.end_positions[0] == feats.cls_index[0] and feats.is_impossible[0]


def test_bad_window_settings_are_errors_not_hangs(tiny_tok):
    from cxlnet.errors import CxlnetError

    with pytest.raises(CxlnetError, match="doc_stride >= 1"):
        SpanConfig(doc_stride=0)
    with pytest.raises(ValueError):
        doc_spans(10, 0, 4)
    ex = SpanExample("long-q", "，".join(map(str, range(40))), "中国人民大学", [], -1, "")
    with pytest.raises(CxlnetError, match="question long-q: .* query tokens leave no room"):
        convert_examples([ex], tiny_tok, SpanConfig(max_seq_length=64, max_query_length=64))


# ------------------------------------------------------------------ windows and layout


def test_max_context_ties_and_the_length_term():
    """`_check_is_max_context`: score min(left, right) + 0.01 * span length; the first span wins ties."""
    # token 5: span (0, 9) scores min(5, 3) + 0.09, span (2, 11) min(3, 7) + 0.11: the longer one
    first, second = max_context_masks([(0, 9), (2, 11)])
    assert not first[5] and second[5 - 2]
    # token 5: spans (0, 10) and (1, 10) both score min(5, 4) = min(4, 5) = 4 + 0.1: the first keeps it
    first, second = max_context_masks([(0, 10), (1, 10)])
    assert first[5] and not second[5 - 1]


def test_doc_spans_and_max_context():
    spans = doc_spans(10, 4, 2)
    assert spans == [(0, 4), (2, 4), (4, 4), (6, 4)]
    masks = max_context_masks(spans)
    owner = {}
    for s, ((start, length), m) in enumerate(zip(spans, masks)):
        for t in range(length):
            if m[t]:
                assert start + t not in owner
                owner[start + t] = s
    assert sorted(owner) == list(range(10))  # every token has exactly one max-context window
    # token 3: span0 score min(3,0)+.04=0.04, span1 min(1,2)+.04=1.04, span2 n/a -> span 1
    assert owner[3] == 1 and owner[0] == 0 and owner[9] == 3
    assert doc_spans(3, 4, 2) == [(0, 3)]
    assert doc_spans(5, 4, 8) == [(0, 4), (4, 1)]  # stride larger than the window


def test_feature_layout_windows_and_labels_on_long_paragraph(tiny_tok):
    rnd = random.Random(3)
    chars = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工"
    ctx = "".join(rnd.choice(chars) for _ in range(400))
    answers = [(10, 4), (200, 6), (395, 5)]
    exs = []
    for k, (s, n) in enumerate(answers):
        exs.append(SpanExample(f"q{k}", "中国的人", ctx, [{"text": ctx[s : s + n], "answer_start": s}], s, ctx[s : s + n]))
    cfg = SpanConfig(max_seq_length=64, doc_stride=16, max_query_length=64)
    feats, st = convert_examples(exs, tiny_tok, cfg, is_training=True)
    q_ids = tiny_tok.encode("中国的人")
    n_tok = len(tiny_tok.pieces(ctx))
    spans = doc_spans(n_tok, 64 - len(q_ids) - 3, 16)
    assert len(feats) == 3 * len(spans) > 3
    # every window but the last holds exactly max_seq_length - question - 3 paragraph tokens
    assert feats.paragraph_len[: len(spans) - 1].tolist() == [64 - len(q_ids) - 3] * (len(spans) - 1)
    assert feats.input_ids.shape == (len(feats), 64) and feats.input_ids.dtype == np.int32
    assert feats.unique_ids.tolist() == list(range(UNIQUE_ID_START, UNIQUE_ID_START + len(feats)))
    para_ids = tiny_tok.encode(ctx)
    n_in_window = 0
    for f in range(len(feats)):
        P, nq = int(feats.paragraph_len[f]), len(q_ids)
        start = int(feats.doc_span_start[f])
        row = feats.input_ids[f].tolist()
        cls = P + nq + 2
        assert row[:P] == para_ids[start : start + P]
        assert row[P] == SEP_ID and row[P + 1 : P + 1 + nq] == q_ids and row[P + 1 + nq] == SEP_ID
        assert row[cls] == CLS_ID and feats.cls_index[f] == cls and all(x == 0 for x in row[cls + 1 :])
        seg = feats.segment_ids[f].tolist()
        assert seg[: P + 1] == [SEG_ID_P] * (P + 1) and seg[P + 1 : cls] == [SEG_ID_Q] * (nq + 1)
        assert seg[cls] == SEG_ID_CLS and set(seg[cls + 1 :]) <= {SEG_ID_PAD}
        pm = feats.p_mask[f].tolist()
        assert pm[:P] == [0] * P and pm[cls] == 0 and sum(pm) == 64 - P - 1
        im = feats.input_mask[f].tolist()
        assert im[: cls + 1] == [0] * (cls + 1) and set(im[cls + 1 :]) <= {1}
        assert (feats.tok_start_to_orig[f, P:] == -1).all() and (feats.tok_start_to_orig[f, :P] >= 0).all()
        # labels: inside the window -> relative positions, else <cls>
        ex = exs[feats.example_index[f]]
        s_lab, e_lab = int(feats.start_positions[f]), int(feats.end_positions[f])
        if feats.is_impossible[f]:
            assert s_lab == e_lab == cls
        else:
            n_in_window += 1
            text = ctx[feats.tok_start_to_orig[f, s_lab] : feats.tok_end_to_orig[f, e_lab] + 1]
            assert ex.answer_text in text
    assert st.out_of_window_features == len(feats) - n_in_window
    assert n_in_window >= 3
    # max context: per example, every paragraph token is max-context in exactly one window
    for e in range(3):
        rows = np.flatnonzero(feats.example_index == e)
        count = np.zeros(n_tok, int)
        for f in rows:
            P, start = feats.paragraph_len[f], feats.doc_span_start[f]
            count[start : start + P] += feats.token_is_max_context[f, :P]
        assert (count == 1).all()
    t = feats.as_tensors()
    assert t["input_ids"].dtype.is_floating_point is False and t["p_mask"].dtype.is_floating_point


def test_long_question_truncated_and_counted(tiny_tok):
    ex = SpanExample("q", "中国" * 80, "中国人民大学", [{"text": "人民", "answer_start": 2}], 2, "人民")
    feats, st = convert_examples([ex], tiny_tok, SpanConfig(max_query_length=64), is_training=True)
    assert st.questions_truncated == 1
    assert int((feats.segment_ids[0] == SEG_ID_Q).sum()) == 64 + 1  # 64 query ids + the second <sep>


def test_untrainable_skipped_in_training_kept_in_eval(tiny_tok):
    data = {"data": [{"paragraphs": [{"context": "中国人民大学", "qas": [
        {"id": "a", "question": "问", "answers": [{"text": "不在", "answer_start": -1}]},
        {"id": "b", "question": "问", "answers": [{"text": "人民", "answer_start": 2}]},
    ]}]}]}
    exs, _ = parse_squad(data)
    feats, st = convert_examples(exs, tiny_tok, is_training=True)
    assert st.untrainable_skipped == 1 and len(feats) == 1
    feats, st = convert_examples(exs, tiny_tok, is_training=False)
    assert st.untrainable_skipped == 0 and len(feats) == 2 and feats.is_impossible[0]


@pytest.mark.fulldata
def test_convert_full_cmrc_train_counts(full_data_dir):
    from cxlnet.span.features import convert_file

    tok = Tokenizer(full_data_dir / "pretrained" / "hfl-chinese-xlnet-base" / "spiece.model")
    examples, feats, st = convert_file(full_data_dir / "cmrc2018" / "train.json", tok, is_training=True)
    assert st.read["questions"] == 10142 and st.read["utf16_fixed"] == 21
    assert st.mismatch_paragraphs == 0 and st.untrainable_skipped == 0
    assert len(feats) == st.features > 10142
    assert feats.input_ids.shape == (len(feats), 512)


def test_feature_counts_accumulate_over_questions(tiny_tok):
    """Two questions longer than max_query_length, one short; `stats.features` is the rows made."""
    ctx = "中国的人在这里工作。" * 3
    long_q = "中国的人" * 10
    exs = [SpanExample(f"q{k}", q, ctx, [{"text": "在这里", "answer_start": 4}], 4, "在这里")
           for k, q in enumerate([long_q, "中国", long_q])]
    cfg = SpanConfig(max_seq_length=48, doc_stride=8, max_query_length=8)
    feats, st = convert_examples(exs, tiny_tok, cfg, is_training=True)
    assert st.questions_truncated == 2 and st.features == len(feats) >= 3
    # the answer starting at a paragraph's first character maps to the first token
    first = SpanExample("f", "中国", ctx, [{"text": ctx[:2], "answer_start": 0}], 0, ctx[:2])
    f1, _ = convert_examples([first], tiny_tok, cfg, is_training=True)
    s = int(f1.start_positions[0])
    assert f1.tok_start_to_orig[0, s] == 0 and ctx[: f1.tok_end_to_orig[0, int(f1.end_positions[0])] + 1].startswith(ctx[:2])
