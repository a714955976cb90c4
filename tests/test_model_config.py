"""`XLNetConfig` against its anchors: hfl's config.json, transformers' defaults and the original's
RunConfig (which fields are run settings rather than architecture)."""
from __future__ import annotations

import json

import pytest

from cxlnet.errors import CxlnetError
from cxlnet.model.config import RUN_SETTINGS, XLNetConfig
from cxlnet.paths import sample_dir

HFL_CONFIG = sample_dir() / "pretrained" / "hfl-chinese-xlnet-base" / "config.json"
SIZES = dict(vocab_size=100, d_model=16, n_layer=2, n_head=2, d_head=8, d_inner=32)


def test_hfl_config_json_round_trips_key_for_key():
    original = json.loads(HFL_CONFIG.read_text(encoding="utf-8"))
    cfg = XLNetConfig.from_json(HFL_CONFIG)
    written = json.loads(cfg.to_json_string())
    assert cfg.to_json_string().endswith("}\n")
    # every key of hfl's file comes back with its value; ours adds only dropatt (= dropout)
    assert {k: written[k] for k in original} == original
    assert set(written) - set(original) == {"dropatt"} and written["dropatt"] == original["dropout"]
    assert "grad_checkpointing" not in written


def test_defaults_are_transformers_defaults_except_hfls_relu():
    transformers = pytest.importorskip("transformers")
    theirs = transformers.XLNetConfig().to_dict()
    ours = XLNetConfig(**SIZES)
    # (transformers 5 has no untie_r and defaults mem_len to 512; hfl's config.json says null, as ours)
    shared = ["attn_type", "reuse_len", "bi_data", "clamp_len", "same_length", "dropout",
              "layer_norm_eps", "initializer_range", "summary_type", "summary_use_proj", "summary_activation",
              "summary_last_dropout", "start_n_top", "end_n_top", "pad_token_id", "bos_token_id", "eos_token_id"]
    assert {k: getattr(ours, k) for k in shared} == {k: theirs[k] for k in shared}
    assert ours.ff_activation == "relu" and theirs["ff_activation"] == "gelu"  # hfl's Chinese XLNet uses relu
    assert ours.to_dict()["architectures"] == ["XLNetLMHeadModel"]
    assert ours.to_dict(["XLNetForQuestionAnswering"])["architectures"] == ["XLNetForQuestionAnswering"]


def test_dropatt_follows_dropout_unless_set():
    follows = XLNetConfig(**SIZES, dropout=0.1)
    assert follows.dropatt == 0.1 and follows.replace(dropout=0.3).dropatt == 0.3
    own = XLNetConfig(**SIZES, dropout=0.1, dropatt=0.2)
    assert own.replace(dropout=0.3).dropatt == 0.2


def test_run_settings_are_the_originals_run_config_fields():
    # xlnet.py RunConfig: dropout, dropatt, mem_len, reuse_len, bi_data, clamp_len, same_length (+ init, TPU flags);
    # run_classifier.py's flag summary_type (no weights of its own)
    assert {"dropout", "dropatt", "mem_len", "reuse_len", "bi_data", "clamp_len", "same_length",
            "summary_type"} <= set(RUN_SETTINGS)
    assert not {"d_model", "n_layer", "n_head", "d_head", "d_inner", "vocab_size", "untie_r", "ff_activation"} & set(
        RUN_SETTINGS)


@pytest.mark.parametrize("field,value,ok", [
    ("mem_len", 0, True), ("mem_len", -1, False), ("reuse_len", 0, True), ("reuse_len", 2.5, False),
    ("dropout", 0.0, True), ("dropout", 1.0, False), ("dropatt", 0.99, True), ("summary_last_dropout", -0.1, False),
    ("d_model", 15, False), ("attn_type", "uni", True), ("attn_type", "both", False),
    ("summary_type", "mean", True), ("summary_type", "first", True), ("summary_type", "attn", False),
])
def test_validation_bounds(field, value, ok):
    sizes = dict(SIZES, d_model=15, n_head=3, d_head=5) if field == "d_model" else SIZES  # odd d_model, n*d = d
    kwargs = {**sizes, field: value} if field != "d_model" else sizes
    if ok:
        assert getattr(XLNetConfig(**kwargs), field) == value
    else:
        with pytest.raises(CxlnetError, match=field if field != "d_model" else "even"):
            XLNetConfig(**kwargs)
