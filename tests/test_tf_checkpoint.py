"""The pure-numpy TF V2 checkpoint reader, on the committed fixture (tests/data/tf_tiny, written by
tools/make_tf_checkpoint_fixture.py with TensorFlow; `expected.npz` is what TF read back).
No TensorFlow is needed here; tests/test_weights.py's slow test compares against TF directly."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cxlnet.errors import CxlnetError
from cxlnet.model import XLNet, XLNetForSequenceClassification
from cxlnet.model.tf_checkpoint import TFCheckpointReader, crc32c, list_variables, mask_crc, read_tf_checkpoint
from cxlnet.model.weights import read_tf_checkpoint as weights_read_tf_checkpoint

DATA = Path(__file__).parent / "data" / "tf_tiny"
XLNET, DTYPES = DATA / "xlnet", DATA / "dtypes"
XLNET_PREFIX, DTYPES_PREFIX = XLNET / "xlnet_model.ckpt", DTYPES / "dtypes.ckpt"
DATA_SUFFIX = ".data-00000-of-00001"
T = "model/transformer/"


def expected(directory: Path) -> dict[str, np.ndarray]:
    with np.load(directory / "expected.npz") as npz:
        return {k: npz[k] for k in npz.files}


def copy_checkpoint(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# ----------------------------------------------------------------------------- crc32c
def test_crc32c_known_values():
    assert crc32c(b"") == 0
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    assert crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720 B.4
    assert crc32c(bytes(range(32))) == 0x46DD794E
    assert mask_crc(0) == 0xA282EAD8


@pytest.mark.parametrize("n", [65535, 65536, 65537, 200_003, 1 << 20])
def test_crc32c_chunked_path_matches_bytewise(n):
    data = np.random.default_rng(n).integers(0, 256, n, dtype=np.uint8)
    bytewise = 0xFFFFFFFF
    table = [0] * 256
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table[i] = c
    for b in data.tobytes():
        bytewise = table[(bytewise ^ b) & 0xFF] ^ (bytewise >> 8)
    assert crc32c(data.tobytes()) == bytewise ^ 0xFFFFFFFF
    assert crc32c(data) == bytewise ^ 0xFFFFFFFF


# ----------------------------------------------------------------------------- reading the fixture
@pytest.mark.parametrize("directory", [XLNET, DTYPES], ids=["xlnet", "dtypes"])
def test_reads_what_tensorflow_read(directory):
    got, want = read_tf_checkpoint(directory), expected(directory)
    assert sorted(got) == sorted(want)
    for name, value in want.items():
        assert got[name].dtype == value.dtype, name
        assert got[name].shape == value.shape, name
        np.testing.assert_array_equal(got[name], value, err_msg=name)
        assert got[name].flags.writeable


def test_dtypes_and_shapes():
    got = read_tf_checkpoint(DTYPES_PREFIX)
    dtypes = {k[len("dtypes/"):]: (v.dtype, v.shape) for k, v in got.items() if k.startswith("dtypes/")}
    assert dtypes == {
        "float32": (np.float32, (3, 5)), "float64": (np.float64, (2, 3)), "float16": (np.float16, (2, 5)),
        "bfloat16": (np.float32, (3, 5)),  # widened
        "int32": (np.int32, (4, 2)), "int64": (np.int64, (3,)), "int8": (np.int8, (5,)),
        "uint8": (np.uint8, (2, 2, 2)), "bool": (np.bool_, (7,)), "scalar": (np.float32, ()),
        "empty": (np.float32, (0, 4)),
    }
    assert got["dtypes/scalar"] == np.float32(3.25)
    # bfloat16 keeps the top 16 bits of the float32 (TF rounds to nearest even when casting)
    f32 = got["dtypes/float32"] * 100
    assert np.all(np.abs(got["dtypes/bfloat16"] - f32) <= np.abs(f32) * 2.0 ** -8)
    assert sum(k.startswith("many/") for k in got) == 150


def test_string_and_partitioned_are_skipped_or_refused(caplog):
    with caplog.at_level(logging.INFO, logger="cxlnet.model.tf_checkpoint"):
        got = read_tf_checkpoint(DTYPES)
    assert not any(k.startswith("skipped/") for k in got)
    assert "'skipped/string' (dtype string)" in caplog.text
    assert "'skipped/partitioned' (partitioned)" in caplog.text
    reader = TFCheckpointReader(DTYPES)
    with pytest.raises(CxlnetError, match=r"'skipped/string' has dtype string, which cannot be read without"):
        reader.read_tensor("skipped/string")
    with pytest.raises(CxlnetError, match=r"'skipped/partitioned' is partitioned"):
        reader.read_tensor("skipped/partitioned")
    with pytest.raises(CxlnetError, match=r"no variable 'nope'"):
        reader.read_tensor("nope")


def test_list_variables():
    listed = list_variables(DTYPES)
    names = [n for n, _ in listed]
    assert names == sorted(names) and len(names) == 163
    shapes = dict(listed)
    assert shapes["dtypes/scalar"] == [] and shapes["dtypes/empty"] == [0, 4]
    assert shapes["skipped/partitioned"] == [3, 5] and shapes["skipped/string"] == [2]
    xl = dict(list_variables(XLNET_PREFIX))
    assert xl[T + "seg_embed"] == [2, 2, 2, 8] and xl["global_step"] == []


@pytest.mark.parametrize("form", ["dir", "prefix", "index", "data"])
def test_path_forms(form):
    path = {"dir": XLNET, "prefix": XLNET_PREFIX, "index": Path(f"{XLNET_PREFIX}.index"),
            "data": Path(f"{XLNET_PREFIX}{DATA_SUFFIX}")}[form]
    got = read_tf_checkpoint(path)
    assert sorted(got) == sorted(expected(XLNET))


def test_weights_module_uses_the_pure_reader():
    got = weights_read_tf_checkpoint(XLNET_PREFIX)
    np.testing.assert_array_equal(got[T + "r_w_bias"], expected(XLNET)[T + "r_w_bias"])


# ----------------------------------------------------------------------------- damaged files
def test_flipped_data_byte_is_a_checksum_error(tmp_path):
    ckpt = copy_checkpoint(XLNET, tmp_path / "ckpt")
    data = Path(f"{ckpt / 'xlnet_model.ckpt'}{DATA_SUFFIX}")
    entry = TFCheckpointReader(ckpt).entries[T + "seg_embed"]
    raw = bytearray(data.read_bytes())
    raw[entry.offset + 5] ^= 0x10
    data.write_bytes(bytes(raw))
    with pytest.raises(CxlnetError, match=r"data-00000-of-00001: checksum mismatch for variable "
                                          r"'model/transformer/seg_embed' \(corrupt data file\)") as err:
        read_tf_checkpoint(ckpt)
    assert "\n" not in str(err.value)
    # the other variables still read, and verify=False reads the damaged one as is
    reader = TFCheckpointReader(ckpt)
    reader.read_tensor(T + "r_w_bias")
    assert read_tf_checkpoint(ckpt, verify=False)[T + "seg_embed"].shape == (2, 2, 2, 8)
    # ... and from_pretrained reports the same one line
    with pytest.raises(CxlnetError, match="checksum mismatch"):
        XLNetForSequenceClassification.from_pretrained(ckpt)


def test_truncated_data_file(tmp_path):
    ckpt = copy_checkpoint(XLNET, tmp_path / "ckpt")
    data = Path(f"{ckpt / 'xlnet_model.ckpt'}{DATA_SUFFIX}")
    data.write_bytes(data.read_bytes()[:1000])
    with pytest.raises(CxlnetError, match=r"data-00000-of-00001: truncated: variable '.*' needs bytes"):
        read_tf_checkpoint(ckpt)


def test_missing_data_file(tmp_path):
    ckpt = copy_checkpoint(XLNET, tmp_path / "ckpt")
    Path(f"{ckpt / 'xlnet_model.ckpt'}{DATA_SUFFIX}").unlink()
    with pytest.raises(CxlnetError, match=r"data-00000-of-00001: no such file \(data shard of "):
        read_tf_checkpoint(ckpt)


@pytest.mark.parametrize("cut, words", [
    (0, "shorter than the 48-byte table footer"),
    (30, "shorter than the 48-byte table footer"),
    (-1, "bad table magic number"),
    (-48, "bad table magic number"),
])
def test_truncated_index(tmp_path, cut, words):
    ckpt = copy_checkpoint(XLNET, tmp_path / "ckpt")
    index = ckpt / "xlnet_model.ckpt.index"
    raw = index.read_bytes()
    index.write_bytes(raw[:cut] if cut >= 0 else raw[:len(raw) + cut])
    with pytest.raises(CxlnetError, match=rf"xlnet_model\.ckpt\.index: corrupt TF checkpoint index: .*{words}") as err:
        read_tf_checkpoint(ckpt)
    assert "\n" not in str(err.value)


def test_flipped_index_byte_is_a_block_checksum_error(tmp_path):
    ckpt = copy_checkpoint(XLNET, tmp_path / "ckpt")
    index = ckpt / "xlnet_model.ckpt.index"
    raw = bytearray(index.read_bytes())
    raw[20] ^= 0x01  # inside the first (data) block
    index.write_bytes(bytes(raw))
    with pytest.raises(CxlnetError, match=r"corrupt TF checkpoint index: block at offset 0: checksum mismatch"):
        read_tf_checkpoint(ckpt)


def test_missing_paths(tmp_path):
    with pytest.raises(CxlnetError, match=r"nope\.index: no such file"):
        read_tf_checkpoint(tmp_path / "nope")
    with pytest.raises(CxlnetError, match=r"no TF checkpoint \(\*\.index\) in this directory"):
        read_tf_checkpoint(tmp_path)


# ----------------------------------------------------------------------------- end to end
def test_from_pretrained_places_every_tensor():
    """hfl layout -> our parameters, checked tensor by tensor against the TF values (spec §8.2)."""
    npz = expected(XLNET)
    model = XLNetForSequenceClassification.from_pretrained(XLNET)
    cfg = model.config
    assert (cfg.vocab_size, cfg.d_model, cfg.n_layer, cfg.n_head, cfg.d_head, cfg.d_inner) == (24, 16, 2, 2, 8, 32)
    d, hd = cfg.d_model, cfg.n_head * cfg.d_head
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    eq = np.testing.assert_array_equal
    eq(sd["transformer.word_embedding.weight"], npz[T + "word_embedding/lookup_table"])
    eq(sd["transformer.mask_emb"], npz[T + "mask_emb/mask_emb"])
    for b in ("r_w_bias", "r_r_bias", "r_s_bias"):
        eq(sd[f"transformer.{b}"], npz[T + b])  # untie_r: stacked (n_layer, H, Dh)
    for i in range(cfg.n_layer):
        p, q = f"transformer.layer.{i}.", f"{T}layer_{i}/"
        kernel = lambda n: npz[f"{q}rel_attn/{n}/kernel"].reshape(d, hd)  # noqa: E731
        eq(sd[p + "rel_attn.qkv.weight"], np.concatenate([kernel(n).T for n in "qkv"]))
        eq(sd[p + "rel_attn.r.weight"], kernel("r").T)
        eq(sd[p + "rel_attn.o.weight"], kernel("o"))
        eq(sd[p + "rel_attn.seg_embed"], npz[T + "seg_embed"][i])
        for scope in ("rel_attn", "ff"):
            eq(sd[f"{p}{scope}.layer_norm.weight"], npz[f"{q}{scope}/LayerNorm/gamma"])
            eq(sd[f"{p}{scope}.layer_norm.bias"], npz[f"{q}{scope}/LayerNorm/beta"])
        for n in ("layer_1", "layer_2"):
            eq(sd[f"{p}ff.{n}.weight"], npz[f"{q}ff/{n}/kernel"].T)
            eq(sd[f"{p}ff.{n}.bias"], npz[f"{q}ff/{n}/bias"])
    eq(sd["sequence_summary.summary.weight"], npz["model/sequnece_summary/summary/kernel"].T)
    eq(sd["sequence_summary.summary.bias"], npz["model/sequnece_summary/summary/bias"])
    eq(sd["logits_proj.weight"], npz["model/classification_chnsenticorp/logit/kernel"].T)
    eq(sd["logits_proj.bias"], npz["model/classification_chnsenticorp/logit/bias"])


def _inputs():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 24, (2, 7), generator=g)
    seg = torch.randint(0, 3, (2, 7), generator=g)
    mask = torch.ones(2, 7)
    mask[0, :2] = 0
    return {"input_ids": ids, "token_type_ids": seg, "attention_mask": mask}


def test_from_pretrained_forward_matches_transformers():
    """Our model loaded from the TF fixture vs `transformers`' model given the same numbers
    through a mapping written here from spec §8.2 (independent of weights.py's)."""
    transformers = pytest.importorskip("transformers")
    npz = expected(XLNET)
    ours = XLNetForSequenceClassification.from_pretrained(XLNET).eval()
    hf = transformers.XLNetForSequenceClassification(
        transformers.XLNetConfig(**ours.config.to_dict(), num_labels=2)).eval()
    hf_sd = {"transformer.word_embedding.weight": npz[T + "word_embedding/lookup_table"],
             "transformer.mask_emb": npz[T + "mask_emb/mask_emb"],
             "sequence_summary.summary.weight": npz["model/sequnece_summary/summary/kernel"].T,
             "sequence_summary.summary.bias": npz["model/sequnece_summary/summary/bias"],
             "logits_proj.weight": npz["model/classification_chnsenticorp/logit/kernel"].T,
             "logits_proj.bias": npz["model/classification_chnsenticorp/logit/bias"]}
    for i in range(2):
        p, q = f"transformer.layer.{i}.", f"{T}layer_{i}/"
        for n in "qkvor":
            hf_sd[f"{p}rel_attn.{n}"] = npz[f"{q}rel_attn/{n}/kernel"]
        for n in ("r_w_bias", "r_r_bias", "r_s_bias", "seg_embed"):
            hf_sd[f"{p}rel_attn.{n}"] = npz[T + n][i]
        for scope in ("rel_attn", "ff"):
            hf_sd[f"{p}{scope}.layer_norm.weight"] = npz[f"{q}{scope}/LayerNorm/gamma"]
            hf_sd[f"{p}{scope}.layer_norm.bias"] = npz[f"{q}{scope}/LayerNorm/beta"]
        for n in ("layer_1", "layer_2"):
            hf_sd[f"{p}ff.{n}.weight"] = npz[f"{q}ff/{n}/kernel"].T
            hf_sd[f"{p}ff.{n}.bias"] = npz[f"{q}ff/{n}/bias"]
    hf.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in hf_sd.items()}, strict=True)
    x = _inputs()
    with torch.no_grad():
        a, b = ours(**x).logits, hf(**x).logits
    assert (a - b).abs().max().item() <= 1e-5, (a, b)


def test_body_from_the_same_checkpoint(caplog):
    """XLNet (no head) from a fine-tuned TF checkpoint: head variables are dropped with a log line
    and the body's output equals the classifier's body output."""
    with caplog.at_level(logging.INFO):
        body = XLNet.from_pretrained(XLNET).eval()
    assert "sequence_summary" in caplog.text or "logits_proj" in caplog.text
    cls = XLNetForSequenceClassification.from_pretrained(XLNET).eval()
    x = _inputs()
    with torch.no_grad():
        assert torch.equal(body(**x).last_hidden_state, cls.transformer(**x).last_hidden_state)


@pytest.mark.parametrize("activation,expected", [("gelu", "gelu_new"), ("relu", "relu")])
def test_the_originals_gelu_is_the_tanh_approximation(tmp_path, activation, expected):
    """xlnet_config.json's `gelu` is the original TF code's tanh approximation (HF: `gelu_new`)."""
    import json
    import shutil

    ckpt = tmp_path / "xlnet"
    shutil.copytree(XLNET, ckpt)
    cfg = json.loads((ckpt / "xlnet_config.json").read_text())
    (ckpt / "xlnet_config.json").write_text(json.dumps({**cfg, "ff_activation": activation}))
    assert XLNet.from_pretrained(ckpt).config.ff_activation == expected
    assert XLNet.from_pretrained(ckpt / "xlnet_model.ckpt.index").config.ff_activation == expected
    assert XLNet.from_pretrained(ckpt / "xlnet_model.ckpt").config.ff_activation == expected  # the TF prefix
