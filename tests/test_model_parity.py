"""Weight-copy parity with `transformers`' XLNet on tiny random configs, in both directions:
an HF-saved directory loaded by our `from_pretrained`, and our `save_pretrained` loaded by HF."""
from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from cxlnet.model import XLNet, XLNetConfig, XLNetForSequenceClassification, XLNetLMHeadModel  # noqa: E402

TOL = 1e-5
V, L, P = 50, 9, 3
OURS = {"base": XLNet, "lm": XLNetLMHeadModel, "cls": XLNetForSequenceClassification}
HF = {"base": "XLNetModel", "lm": "XLNetLMHeadModel", "cls": "XLNetForSequenceClassification"}

# name: (model kind, config overrides, input features)
CASES = {
    "plain": ("base", {}, {"pad", "seg"}),
    "lm_two_stream": ("lm", {}, {"pad", "seg", "perm"}),
    "mems": ("base", {"mem_len": 6, "reuse_len": 5}, {"seg", "perm", "chunks"}),
    "bi_data": ("lm", {"bi_data": True}, {"pad", "seg", "perm"}),
    "tied_r": ("base", {"untie_r": False}, {"pad", "seg"}),
    "uni": ("base", {"attn_type": "uni", "mem_len": 4}, {"seg", "chunks"}),  # HF: no masks with uni
    "uni_same_length": ("base", {"attn_type": "uni", "same_length": True, "mem_len": 4}, {"chunks"}),
    "clamp_gelu": ("lm", {"clamp_len": 3, "ff_activation": "gelu"}, {"pad", "seg"}),
    "cls": ("cls", {}, {"pad", "seg"}),
}


def make_inputs(features: set[str], batch: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = {"input_ids": torch.randint(0, V, (batch, L), generator=g)}
    if "seg" in features:
        x["token_type_ids"] = torch.randint(0, 3, (batch, L), generator=g)
    if "pad" in features:
        mask = torch.ones(batch, L)
        mask[0, :3] = 0  # left padding, as in classification features
        x["attention_mask"] = mask
    if "perm" in features:
        order = torch.stack([torch.randperm(L, generator=g) for _ in range(batch)])  # (B, L)
        x["perm_mask"] = (order[:, None, :] >= order[:, :, None]).float()  # i may not see j unless j comes earlier
        tm = torch.zeros(batch, P, L)
        for b in range(batch):
            pos = torch.randperm(L, generator=g)[: P - 1]
            tm[b, torch.arange(P - 1), pos] = 1.0  # last slot stays a zero (padded) row
        x["target_mapping"] = tm
    return x


def hf_config(cfg: XLNetConfig, kind: str):
    d = cfg.to_dict()
    if kind == "cls":
        d["num_labels"] = 3
    return transformers.XLNetConfig(**d)


def build_pair(kind: str, overrides: dict, direction: str, tmp_path):
    """(ours, hf) models with identical weights, in eval mode, via a saved directory."""
    cfg = XLNetConfig.named("tiny", vocab_size=V, **overrides)
    hf_cls = getattr(transformers, HF[kind])
    extra = {"num_labels": 3} if kind == "cls" else {}
    torch.manual_seed(0)
    if direction == "hf->ours":
        hf = hf_cls(hf_config(cfg, kind))
        if not cfg.untie_r:  # HF keeps per-layer biases regardless; tie them as a real untie_r=False model has
            body = hf.transformer if kind != "base" else hf
            with torch.no_grad():
                for layer in body.layer[1:]:
                    for n in ("r_w_bias", "r_r_bias", "r_s_bias"):
                        getattr(layer.rel_attn, n).copy_(getattr(body.layer[0].rel_attn, n))
        hf.save_pretrained(tmp_path)
        ours = OURS[kind].from_pretrained(tmp_path)
        assert getattr(ours, "num_labels", 3) == 3
    else:
        ours = OURS[kind](cfg, **extra)
        ours.save_pretrained(tmp_path)
        hf, info = hf_cls.from_pretrained(tmp_path, output_loading_info=True)
        assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    return ours.eval(), hf.eval()


def outputs(model, inputs, is_hf: bool):
    out = model(**inputs)
    main = getattr(out, "logits", None)
    if main is None:
        main = out.last_hidden_state
    mems = out.mems
    if is_hf and mems is not None:
        mems = [m.transpose(0, 1) for m in mems]  # HF memory is time-major
    return main, mems


@pytest.mark.parametrize("direction", ["hf->ours", "ours->hf"])
@pytest.mark.parametrize("case", list(CASES))
def test_parity(case, direction, tmp_path):
    kind, overrides, features = CASES[case]
    ours, hf = build_pair(kind, overrides, direction, tmp_path)
    batch = 4 if overrides.get("bi_data") else 2
    chunks = [make_inputs(features, batch, seed) for seed in range(2 if "chunks" in features else 1)]
    our_mems = hf_mems = None
    with torch.no_grad():
        for x in chunks:
            a, new_ours = outputs(ours, {**x, "mems": our_mems}, is_hf=False)
            b, new_hf = outputs(hf, {**x, "mems": None if hf_mems is None else [m.transpose(0, 1) for m in hf_mems]},
                                is_hf=True)
            assert a.shape == b.shape
            assert (a - b).abs().max().item() <= TOL, (a - b).abs().max().item()
            if "mem_len" in overrides:
                assert len(new_ours) == len(new_hf)
                for m1, m2 in zip(new_ours, new_hf):
                    assert m1.shape == m2.shape and (m1 - m2).abs().max().item() <= TOL
            our_mems, hf_mems = new_ours, new_hf
