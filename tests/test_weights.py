"""Loading and saving weights: HF directories (safetensors / .bin), errors, TF checkpoints."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from cxlnet.errors import CxlnetError
from cxlnet.model import XLNet, XLNetConfig, XLNetForQuestionAnswering, XLNetForSequenceClassification, XLNetLMHeadModel
from cxlnet.model.weights import to_hf_state_dict

V = 50


def tiny(**overrides) -> XLNetConfig:
    return XLNetConfig.named("tiny", vocab_size=V, **overrides)


@pytest.fixture
def lm_dir(tmp_path):
    torch.manual_seed(0)
    model = XLNetLMHeadModel(tiny()).eval()
    model.save_pretrained(tmp_path / "lm")
    return model, tmp_path / "lm"


def same_output(a, b, ids=torch.arange(12).view(2, 6)) -> bool:
    with torch.no_grad():
        return torch.equal(a.eval()(ids).last_hidden_state, b.eval()(ids).last_hidden_state)


def rewrite(directory, edit) -> None:
    sd = load_file(directory / "model.safetensors")
    edit(sd)
    save_file(sd, directory / "model.safetensors")


def test_round_trip_and_prefix_free_keys(lm_dir):
    model, d = lm_dir
    assert sorted(p.name for p in d.iterdir()) == ["config.json", "model.safetensors"]
    again = XLNetLMHeadModel.from_pretrained(d)
    assert same_output(model, again)
    # keys without the `transformer.` prefix and an explicit (tied) lm_loss.weight are accepted
    def strip_prefix(sd):
        sd["lm_loss.weight"] = sd["transformer.word_embedding.weight"].clone()
        sd.update({k.removeprefix("transformer."): sd.pop(k) for k in list(sd)})

    rewrite(d, strip_prefix)
    assert same_output(model, XLNetLMHeadModel.from_pretrained(d))
    assert same_output(model.transformer, XLNet.from_pretrained(d))  # body from an LM checkpoint


def test_bin_is_loaded_with_weights_only(lm_dir, tmp_path):
    model, d = lm_dir
    (d / "model.safetensors").rename(tmp_path / "moved")
    torch.save(to_hf_state_dict(model), d / "pytorch_model.bin")
    assert same_output(model, XLNetLMHeadModel.from_pretrained(d))
    torch.save({"x": logging.getLogger("x")}, d / "pytorch_model.bin")  # arbitrary pickle: refused
    with pytest.raises(CxlnetError, match="refused: this PyTorch weights file holds Python code") as refused:
        XLNetLMHeadModel.from_pretrained(d)
    assert "weights_only" not in str(refused.value)  # never torch's advice to load it unsafely


def test_head_from_lm_checkpoint_starts_random(lm_dir, caplog):
    model, d = lm_dir
    with caplog.at_level(logging.INFO, logger="cxlnet.model.weights"):
        cls = XLNetForSequenceClassification.from_pretrained(d, num_labels=3, dropout=0.0)
        qa = XLNetForQuestionAnswering.from_pretrained(d)
    assert cls.config.dropout == 0.0 and cls.logits_proj.out_features == 3
    assert torch.equal(qa.transformer.word_embedding.weight, model.transformer.word_embedding.weight)
    assert "logits_proj" in caplog.text and "start_logits" in caplog.text
    cls.save_pretrained(d.parent / "cls")
    assert XLNetForSequenceClassification.from_pretrained(d.parent / "cls").num_labels == 3


def test_summary_type_applies_to_lm_weights_but_a_trained_summary_head_keeps_its_own(lm_dir, caplog):
    _, d = lm_dir
    assert XLNetForSequenceClassification.from_pretrained(d, summary_type="mean").config.summary_type == "mean"
    XLNetForSequenceClassification(tiny(summary_type="mean")).save_pretrained(d.parent / "fine-tuned")
    with caplog.at_level(logging.INFO, logger="cxlnet.model.weights"):
        cls = XLNetForSequenceClassification.from_pretrained(d.parent / "fine-tuned", summary_type="last")
    assert cls.config.summary_type == "mean" and cls.sequence_summary.summary_type == "mean"
    assert "summary_type 'mean', the one its summary head was trained with (not 'last')" in caplog.text


@pytest.mark.parametrize("summary_type, eval_length, warned", [("mean", 256, True), ("mean", 128, False),
                                                                ("last", 256, False)])
def test_eval_warns_when_a_mean_summary_sees_another_padding_length(tmp_path, caplog, summary_type, eval_length,
                                                                    warned):
    from omegaconf import OmegaConf

    from cxlnet.runs import warn_mean_summary_length

    run = tmp_path / "run"
    model = XLNetForSequenceClassification(tiny(summary_type=summary_type))
    model.save_pretrained(run / "model")
    OmegaConf.save(OmegaConf.create({"task": {"max_seq_length": 128}}), run / "config.yaml")
    cfg = OmegaConf.create({"model": {"pretrained": str(run)}, "task": {"max_seq_length": eval_length}})
    with caplog.at_level(logging.WARNING, logger="cxlnet.runs"):
        warn_mean_summary_length(cfg, model)
    assert ("fine-tuned at task.max_seq_length=128" in caplog.text) == warned
    assert ("pass task.max_seq_length=128" in caplog.text) == warned


def test_every_head_of_a_qa_checkpoint_is_dropped_by_other_models(tmp_path, caplog):
    """A fine-tuned span model's start and end heads load into a classifier or a body as
    the shared encoder only, each dropped head named in the log."""
    qa = XLNetForQuestionAnswering(tiny()).eval()
    qa.save_pretrained(tmp_path / "qa")
    with caplog.at_level(logging.INFO, logger="cxlnet.model.weights"):
        cls = XLNetForSequenceClassification.from_pretrained(tmp_path / "qa", num_labels=2)
        body = XLNet.from_pretrained(tmp_path / "qa")
    for model in (cls.transformer, body):
        assert torch.equal(model.word_embedding.weight, qa.transformer.word_embedding.weight)
    assert all(f"'{head}." in caplog.text for head in ("start_logits", "end_logits"))


@pytest.mark.parametrize("edit, words", [
    (lambda sd: sd.pop("transformer.layer.1.ff.layer_2.bias"), "missing key 'layer.1.ff.layer_2.bias'"),
    (lambda sd: sd.update({"transformer.layer.0.rel_attn.extra": torch.zeros(1)}), "unexpected key 'layer.0.rel_attn.extra'"),
    (lambda sd: sd.update({"decoder.weight": torch.zeros(1)}), "unexpected key 'decoder.weight'"),
    (lambda sd: sd.update({"lm_loss.bias": torch.zeros(V + 1)}), "key 'lm_loss.bias' has shape"),
    (lambda sd: sd.update({"transformer.layer.0.rel_attn.q": torch.zeros(64, 4, 8)}), "key 'layer.0.rel_attn.q' has shape"),
])
def test_bad_checkpoints_fail_with_one_line(lm_dir, edit, words):
    _, d = lm_dir
    rewrite(d, edit)
    with pytest.raises(CxlnetError, match=words) as err:
        XLNetLMHeadModel.from_pretrained(d)
    assert "\n" not in str(err.value) and str(d) in str(err.value)


def test_missing_paths(tmp_path):
    with pytest.raises(CxlnetError, match="no such file") as err:
        XLNet.from_pretrained(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(err.value)
    (tmp_path / "config.json").write_text(tiny().to_json_string())
    with pytest.raises(CxlnetError, match="no model.safetensors or pytorch_model.bin"):
        XLNet.from_pretrained(tmp_path)


def test_untie_r_false_round_trip(tmp_path):
    torch.manual_seed(0)
    model = XLNet(tiny(untie_r=False))
    assert model.r_w_bias.shape == (1, 4, 16)
    model.save_pretrained(tmp_path)
    assert same_output(model, XLNet.from_pretrained(tmp_path))
    rewrite(tmp_path, lambda sd: sd["layer.1.rel_attn.r_w_bias"].add_(1.0))
    with pytest.raises(CxlnetError, match="untie_r is false"):
        XLNet.from_pretrained(tmp_path)


# ----------------------------------------------------------------------------- TF checkpoints
def hf_to_tf(sd: dict[str, torch.Tensor], cfg: XLNetConfig, task: str = "csc") -> dict:
    """Inverse of spec §8.2/§8.3 for building a test checkpoint (untie_r=True)."""
    out, T = {}, "model/transformer/"
    stack = lambda n: torch.stack([sd[f"transformer.layer.{i}.rel_attn.{n}"] for i in range(cfg.n_layer)])  # noqa: E731
    for n in ("r_w_bias", "r_r_bias", "r_s_bias", "seg_embed"):
        out[T + n] = stack(n)
    out[T + "word_embedding/lookup_table"] = sd["transformer.word_embedding.weight"]
    out[T + "mask_emb/mask_emb"] = sd["transformer.mask_emb"]
    for i in range(cfg.n_layer):
        p, q = f"transformer.layer.{i}.", f"{T}layer_{i}/"
        for n in "qkvor":
            out[f"{q}rel_attn/{n}/kernel"] = sd[f"{p}rel_attn.{n}"]
        for scope, hf in (("rel_attn", "rel_attn.layer_norm"), ("ff", "ff.layer_norm")):
            out[f"{q}{scope}/LayerNorm/gamma"], out[f"{q}{scope}/LayerNorm/beta"] = sd[p + hf + ".weight"], sd[p + hf + ".bias"]
        for n in ("layer_1", "layer_2"):
            out[f"{q}ff/{n}/kernel"], out[f"{q}ff/{n}/bias"] = sd[f"{p}ff.{n}.weight"].t(), sd[f"{p}ff.{n}.bias"]
    out["model/sequnece_summary/summary/kernel"] = sd["sequence_summary.summary.weight"].t()
    out["model/sequnece_summary/summary/bias"] = sd["sequence_summary.summary.bias"]
    out[f"model/classification_{task}/logit/kernel"] = sd["logits_proj.weight"].t()
    out[f"model/classification_{task}/logit/bias"] = sd["logits_proj.bias"]
    out["global_step"] = torch.tensor(7)
    out[T + "word_embedding/lookup_table/adam_m"] = torch.zeros(V, cfg.d_model)
    return {k: v.contiguous().numpy() for k, v in out.items()}


@pytest.mark.slow
def test_tf_checkpoint_loads(tmp_path):
    """A checkpoint freshly written by TensorFlow: the pure-numpy reader returns exactly what
    `tf.train.load_checkpoint` does for every variable, and `from_pretrained` gives the same model."""
    tf = pytest.importorskip("tensorflow")
    import json

    import numpy as np

    from cxlnet.model.tf_checkpoint import (TFCheckpointReader, _block, _block_entries, _varint, list_variables,
                                            read_tf_checkpoint)

    def same_as_tf(prefix, skipped=()):
        reader = tf.train.load_checkpoint(str(prefix))
        dtypes = reader.get_variable_to_dtype_map()
        ours = read_tf_checkpoint(prefix)
        assert sorted(ours) == sorted(set(dtypes) - set(skipped))
        assert list_variables(prefix) == sorted((n, list(s)) for n, s in tf.train.list_variables(str(prefix)))
        for name in ours:
            want = reader.get_tensor(name)
            if dtypes[name] == tf.bfloat16:
                want = want.astype(np.float32)
            assert ours[name].dtype == want.dtype and ours[name].shape == want.shape, name
            np.testing.assert_array_equal(ours[name], want, err_msg=name)

    torch.manual_seed(0)
    cfg = tiny()
    model = XLNetForSequenceClassification(cfg, num_labels=2).eval()
    arrays = hf_to_tf(to_hf_state_dict(model), cfg)
    with tf.Graph().as_default():
        variables = [tf.compat.v1.get_variable(name, initializer=a) for name, a in arrays.items()]
        saver = tf.compat.v1.train.Saver(variables)
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            saver.save(sess, str(tmp_path / "xlnet_model.ckpt"), write_meta_graph=False)
    same_as_tf(tmp_path / "xlnet_model.ckpt")
    (tmp_path / "xlnet_config.json").write_text(json.dumps(
        {"d_head": 16, "d_inner": 128, "d_model": 64, "ff_activation": "relu", "n_head": 4, "n_layer": 2,
         "n_token": V, "untie_r": True}))
    loaded = XLNetForSequenceClassification.from_pretrained(tmp_path)
    ids = torch.arange(12).view(2, 6)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, loaded.eval()(ids).logits)

    # Every dtype, a multi-megabyte tensor (the chunked crc32c) and enough variables that the
    # index spans several table blocks (TF's block size is 256 KiB).
    rng = np.random.default_rng(0)
    big = rng.standard_normal((1000, 1537)).astype(np.float32)
    tensors = {"big/float32": big, "big/bfloat16": tf.cast(big, tf.bfloat16), "big/float16": big.astype(np.float16),
               "f64": rng.standard_normal((3, 4)), "i32": rng.integers(-9, 9, (5,), dtype=np.int32),
               "i64": np.arange(-3, 3, dtype=np.int64), "u8": np.arange(7, dtype=np.uint8),
               "b": np.array([True, False]),
               "scalar": np.float32(-2.5), "empty": np.zeros((0, 3), np.float32), "s": tf.constant([b"x", b"yz"])}
    for i in range(6000):
        tensors[f"many/{i:05d}/{'w' * 40}"] = np.full((i % 3 + 1,), i, np.float32)
    prefix = tmp_path / "many" / "bundle.ckpt"
    tf.raw_ops.SaveV2(prefix=str(prefix), tensor_names=list(tensors), shape_and_slices=[""] * len(tensors),
                      tensors=[tf.convert_to_tensor(t) for t in tensors.values()])
    index = Path(f"{prefix}.index").read_bytes()
    _, pos = _varint(index[-48:], 0)  # footer: metaindex handle, then the index block's handle
    _, pos = _varint(index[-48:], pos)
    index_offset, pos = _varint(index[-48:], pos)
    index_size, _ = _varint(index[-48:], pos)
    assert len(_block_entries(_block(index, index_offset, index_size))) >= 2  # several data blocks
    same_as_tf(prefix, skipped={"s"})
    assert TFCheckpointReader(prefix).entries["big/float32"].size == big.nbytes
