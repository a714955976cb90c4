"""The XLNet body and heads on their own: config, QA head, training behaviour, compile, dtypes."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cxlnet.errors import CxlnetError
from cxlnet.paths import sample_dir
from cxlnet.model import (
    XLNet,
    XLNetConfig,
    XLNetForQuestionAnswering,
    XLNetForSequenceClassification,
    XLNetLMHeadModel,
)

V = 50
HFL_CONFIG = sample_dir() / "pretrained" / "hfl-chinese-xlnet-base" / "config.json"  # hfl's file, as shipped


def tiny(**overrides) -> XLNetConfig:
    return XLNetConfig.named("tiny", vocab_size=V, **overrides)


def two_stream_batch(B=2, L=8, P=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, V, (B, L), generator=g)
    order = torch.stack([torch.randperm(L, generator=g) for _ in range(B)])
    perm_mask = (order[:, None, :] >= order[:, :, None]).float()
    pos = torch.stack([torch.randperm(L, generator=g)[:P] for _ in range(B)])  # (B, P)
    target_mapping = torch.nn.functional.one_hot(pos, L).float()
    labels = ids.gather(1, pos)
    return dict(input_ids=ids, perm_mask=perm_mask, target_mapping=target_mapping,
                token_type_ids=(torch.arange(L) >= L // 2).long().expand(B, L)), labels


# ----------------------------------------------------------------------------- config
def test_config_reads_hfl_file_and_round_trips(tmp_path):
    cfg = XLNetConfig.from_json(HFL_CONFIG)
    assert (cfg.n_layer, cfg.d_model, cfg.pad_token_id, cfg.mem_len, cfg.dropatt) == (12, 768, 5, None, 0.1)
    assert cfg == XLNetConfig.named("base", vocab_size=32000).replace(extra=cfg.extra)
    d = cfg.to_dict()
    assert d["model_type"] == "xlnet" and d["architectures"] == ["XLNetLMHeadModel"] and "grad_checkpointing" not in d
    assert XLNetConfig.from_dict(d) == cfg
    assert XLNetConfig.named("mid", vocab_size=32000).n_layer == 24


@pytest.mark.parametrize("overrides, words", [
    ({"d_head": 8}, r"n_head \* d_head"),
    ({"ff_activation": "swish"}, "ff_activation"),
    ({"attn_type": "both"}, "attn_type"),
    ({"n_layr": 3}, "did you mean 'n_layer'"),
])
def test_config_errors_are_one_line(overrides, words):
    with pytest.raises(CxlnetError, match=words) as err:
        tiny(**overrides)
    assert "\n" not in str(err.value)


def test_forward_input_errors():
    m = XLNet(tiny(bi_data=True)).eval()
    with pytest.raises(ValueError, match="even batch"):
        m(torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="either attention_mask"):
        m(torch.zeros(2, 4, dtype=torch.long), attention_mask=torch.ones(2, 4), input_mask=torch.zeros(2, 4))


def test_param_counts_match_hfl():
    with torch.device("meta"):  # no memory, no init cost
        counts = {n: sum(p.numel() for p in XLNetLMHeadModel(XLNetConfig.named(n, vocab_size=32000)).parameters())
                  for n in ("base", "mid")}
    assert counts == {"base": 116_750_336, "mid": 208_891_904}


# ----------------------------------------------------------------------------- body behaviour
def test_masks_memory_and_segments():
    torch.manual_seed(0)
    m = XLNet(tiny(mem_len=5, reuse_len=3)).eval()
    ids = torch.randint(0, V, (2, 6))
    pad = torch.tensor([[1, 1, 0, 0, 0, 0], [0] * 6])
    with torch.no_grad():
        a = m(ids, input_mask=pad)
        b = m(ids, attention_mask=1 - pad)
        assert torch.equal(a.last_hidden_state, b.last_hidden_state)
        # padding keys are invisible: changing a padded token changes nothing for real tokens
        ids2 = ids.clone()
        ids2[0, 0] = (ids[0, 0] + 1) % V
        c = m(ids2, attention_mask=1 - pad)
        assert torch.allclose(c.last_hidden_state[0, 2:], a.last_hidden_state[0, 2:], atol=1e-6)
        assert len(a.mems) == 2 and a.mems[0].shape == (2, 3, 64)  # reuse_len positions
        d = m(ids, mems=a.mems)
        assert d.mems[0].shape == (2, 5, 64)  # last mem_len of [3 old; 3 new]
    assert XLNet(tiny()).eval()(ids).mems is None  # mem_len None: no memory, as in the original


def test_query_stream_does_not_see_its_own_token():
    torch.manual_seed(0)
    m = XLNet(tiny()).eval()
    x, _ = two_stream_batch(B=1)
    pos = x["target_mapping"][0].argmax(-1)
    ids2 = x["input_ids"].clone()
    ids2[0, pos[0]] = (ids2[0, pos[0]] + 1) % V
    with torch.no_grad():
        a = m(**x).last_hidden_state
        b = m(**{**x, "input_ids": ids2}).last_hidden_state
    assert a.shape == (1, 3, 64)
    assert torch.allclose(a[0, 0], b[0, 0], atol=1e-6)  # target 0 cannot see its own content


def test_bf16_forward_with_padding_is_finite():
    torch.manual_seed(0)
    m = XLNetLMHeadModel(tiny()).to(torch.bfloat16).eval()
    x, _ = two_stream_batch()
    x["attention_mask"] = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1], [1] * 8])
    with torch.no_grad():
        out = m(**x)
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.logits).all()


@pytest.mark.parametrize("overrides, inputs", [
    ({}, {"pad", "seg"}),
    ({"mem_len": 4, "bi_data": True}, {"seg", "perm", "mems"}),
    ({"attn_type": "uni"}, {"seg"}),
])
def test_sdpa_path_matches_the_cpu_path(overrides, inputs, monkeypatch):
    """The GPU kernel path (SDPA with the position/segment/mask bias) run on the CPU: same outputs
    and gradients as the written-out CPU path, and finite under bf16 autocast."""
    from cxlnet.model.model import RelativeAttention

    torch.manual_seed(0)
    m = XLNetLMHeadModel(tiny(dropout=0.0, **overrides)).train()  # train mode: SDPA gets dropout_p 0
    x, labels = two_stream_batch(B=4)
    if "perm" not in inputs:
        x = {k: v for k, v in x.items() if k not in ("perm_mask", "target_mapping")}
        labels = x["input_ids"]
    if "seg" not in inputs:
        del x["token_type_ids"]
    if "pad" in inputs:
        x["attention_mask"] = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1]] + [[1] * 8] * 3)
    if "mems" in inputs:
        x["mems"] = [torch.randn(4, 4, 64) for _ in range(2)]
    results = {}
    for use_sdpa in (False, True):
        monkeypatch.setattr(RelativeAttention, "use_sdpa", use_sdpa)
        m.zero_grad()
        out = m(**x, labels=labels)
        out.loss.backward()
        results[use_sdpa] = out.logits.detach(), {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
    (a, grads_a), (b, grads_b) = results[False], results[True]
    assert (a - b).abs().max() < 1e-5
    assert grads_a.keys() == grads_b.keys() and len(grads_a) >= 10
    for n, g in grads_a.items():
        assert torch.allclose(g, grads_b[n], atol=1e-5), n
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        low = m(**x).logits
    assert low.dtype == torch.bfloat16 and torch.isfinite(low).all()
    assert (low.float() - a).abs().max() < 0.1 * a.abs().max()


# ----------------------------------------------------------------------------- training
def test_two_stream_lm_loss_falls():
    torch.manual_seed(0)
    m = XLNetLMHeadModel(tiny(dropout=0.0))
    x, labels = two_stream_batch(B=4)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        loss = m(**x, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_grad_checkpointing_gives_identical_gradients():
    x, labels = two_stream_batch()
    grads = []
    for ckpt in (False, True):
        torch.manual_seed(0)
        m = XLNetLMHeadModel(tiny(grad_checkpointing=ckpt, mem_len=4)).train()  # dropout active
        torch.manual_seed(1)
        m(**x, labels=labels).loss.backward()
        grads.append({n: p.grad for n, p in m.named_parameters()})
    for n, g in grads[0].items():
        assert torch.equal(g, grads[1][n]), n


def test_torch_compile_matches_eager():
    torch.manual_seed(0)
    m = XLNet(tiny(mem_len=4)).eval()
    x, _ = two_stream_batch()
    x["attention_mask"] = torch.ones(2, 8)
    compiled = torch.compile(m, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        ref, out = m(**x), compiled(**x)
    assert torch.allclose(ref.last_hidden_state, out.last_hidden_state, atol=1e-6)


@pytest.mark.slow
def test_inductor_training_step_matches_eager():
    """The real compiler (inductor, C++ on the CPU): a two-stream training step with memory gives
    the eager loss and gradients. Slow: compiling forward + backward takes minutes on 2 cores."""
    x, labels = two_stream_batch()
    results = []
    for compiled in (False, True):
        torch.manual_seed(0)
        m = XLNetLMHeadModel(tiny(mem_len=4, dropout=0.0))
        run = torch.compile(m, fullgraph=True) if compiled else m
        loss = run(**x, labels=labels).loss
        loss.backward()
        results.append((loss.detach(), {n: p.grad for n, p in m.named_parameters() if p.grad is not None}))
    (eager_loss, eager_grads), (loss, grads) = results
    assert torch.allclose(loss, eager_loss, atol=1e-5)
    assert grads.keys() == eager_grads.keys()
    for n, g in grads.items():
        assert torch.allclose(g, eager_grads[n], atol=1e-4), n


def test_classification_head_loss():
    torch.manual_seed(0)
    m = XLNetForSequenceClassification(tiny(), num_labels=3).eval()
    out = m(torch.randint(0, V, (2, 5)), labels=torch.tensor([0, 2]))
    assert out.logits.shape == (2, 3)
    assert torch.allclose(out.loss, torch.nn.functional.cross_entropy(out.logits, torch.tensor([0, 2])))


# ----------------------------------------------------------------------------- QA head
@pytest.fixture(scope="module")
def qa():
    torch.manual_seed(0)
    m = XLNetForQuestionAnswering(tiny(start_n_top=3, end_n_top=2)).eval()
    ids = torch.randint(0, V, (2, 10))
    p_mask = torch.zeros(2, 10)
    p_mask[:, 6:] = 1  # question / CLS / padding cannot be answers
    p_mask[1, 0] = 1
    return m, ids, p_mask


def test_qa_beam_shapes_mask_and_tf_layout(qa):
    m, ids, p_mask = qa
    with torch.no_grad():
        out = m(ids, p_mask=p_mask)
        h = out.last_hidden_state
        assert out.start_top_index.shape == out.start_top_log_probs.shape == (2, 3)
        assert out.end_top_index.shape == out.end_top_log_probs.shape == (2, 6)
        for idx in (out.start_top_index, out.end_top_index):
            assert not p_mask.gather(1, idx).bool().any()
        for b in range(2):
            for k in range(3):
                s = out.start_top_index[b, k]
                e = m.end_logits(h[b:b + 1], h[b:b + 1, s][:, None]).squeeze()  # (L,)
                logp = e.masked_fill(p_mask[b].bool(), float("-inf")).log_softmax(-1)
                top = logp.topk(2)
                sl = slice(k * 2, k * 2 + 2)  # TF layout: k * end_n_top + j
                assert torch.equal(out.end_top_index[b, sl], top.indices)
                assert torch.allclose(out.end_top_log_probs[b, sl], top.values, atol=1e-6)


def test_qa_training_loss_uses_gold_start(qa):
    m, ids, p_mask = qa
    start, end = torch.tensor([1, 2]), torch.tensor([3, 5])
    out = m(ids, p_mask=p_mask, start_positions=start, end_positions=end)
    h = out.last_hidden_state
    masked = lambda z: z.masked_fill(p_mask.bool(), float("-inf")).log_softmax(-1)  # noqa: E731
    start_logp = masked(m.start_logits(h))
    end_logp = masked(torch.stack([m.end_logits(h[b:b + 1], h[b:b + 1, start[b]][:, None]).squeeze() for b in range(2)]))
    expect = (-start_logp[[0, 1], start].mean() - end_logp[[0, 1], end].mean()) / 2
    assert torch.isfinite(out.loss) and torch.allclose(out.loss, expect, atol=1e-6)
    out.loss.backward()
    assert m.end_logits.dense_0.weight.grad.abs().sum() > 0


def test_cpu_dropout_keeps_with_the_rounded_rate_and_its_exact_scale():
    """The CPU dropout rounds p to a multiple of 2^-15 and scales kept elements by 2^15/(2^15 - drop)
    (0.1 -> 1.111145), not F.dropout's 1/(1-p) = 1.111111; elements are kept independently."""
    from cxlnet.model.model import Dropout

    torch.manual_seed(0)
    x = torch.ones(400, 500)
    y = Dropout(0.1).train()(x)
    kept = y[y != 0]
    drop = round(0.1 * 2 ** 15)
    assert torch.all(kept == 2 ** 15 / (2 ** 15 - drop)) and kept[0] != 1 / 0.9
    assert abs(kept.numel() / x.numel() - 0.9) < 0.004  # 200k draws: 5 sigma is 0.0034
    assert torch.equal(Dropout(0.1).eval()(x), x)
