"""Regenerate tests/data/tf_tiny/ with TensorFlow (the tests themselves never need TF).

    python tools/make_tf_checkpoint_fixture.py [OUT_DIR]     # default: tests/data/tf_tiny

Writes two TF V2 checkpoints, each with an `expected.npz` of what `tf.train.load_checkpoint`
reads back (bfloat16 widened to float32; string and partitioned variables left out):

  xlnet/   hfl's layout (spec §8.2/§8.3) for a tiny XLNet sequence classifier: `xlnet_config.json`
           in the original's key names, `xlnet_model.ckpt.{index,data-00000-of-00001}` written by a
           TF1 Saver as hfl's were, plus `global_step` and one Adam slot (both skipped by loaders).
  dtypes/  `dtypes.ckpt`, written by the raw SaveV2 op: one variable per supported dtype, a
           scalar, an empty tensor, 150 small variables (so the index spans several blocks), a
           string tensor and a partitioned (sliced) variable, which the pure reader skips.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

REPO = Path(__file__).resolve().parents[1]
CONFIG = {"d_head": 8, "d_inner": 32, "d_model": 16, "ff_activation": "relu", "n_head": 2, "n_layer": 2,
          "n_token": 24, "untie_r": True}
NUM_LABELS = 2


def xlnet_variables(rng: np.random.Generator) -> dict[str, np.ndarray]:
    c = CONFIG
    d, H, Dh, F, n, V = c["d_model"], c["n_head"], c["d_head"], c["d_inner"], c["n_layer"], c["n_token"]
    r = lambda *shape: rng.standard_normal(shape).astype(np.float32) * 0.5  # noqa: E731
    T = "model/transformer/"
    out = {T + "word_embedding/lookup_table": r(V, d), T + "mask_emb/mask_emb": r(1, 1, d),
           T + "r_w_bias": r(n, H, Dh), T + "r_r_bias": r(n, H, Dh), T + "r_s_bias": r(n, H, Dh),
           T + "seg_embed": r(n, 2, H, Dh)}
    for i in range(n):
        q = f"{T}layer_{i}/"
        for k in "qkvor":
            out[f"{q}rel_attn/{k}/kernel"] = r(d, H, Dh)
        for scope in ("rel_attn", "ff"):
            out[f"{q}{scope}/LayerNorm/gamma"] = 1.0 + r(d)
            out[f"{q}{scope}/LayerNorm/beta"] = r(d)
        out[f"{q}ff/layer_1/kernel"], out[f"{q}ff/layer_1/bias"] = r(d, F), r(F)
        out[f"{q}ff/layer_2/kernel"], out[f"{q}ff/layer_2/bias"] = r(F, d), r(d)
    out["model/sequnece_summary/summary/kernel"], out["model/sequnece_summary/summary/bias"] = r(d, d), r(d)
    out["model/classification_chnsenticorp/logit/kernel"] = r(d, NUM_LABELS)
    out["model/classification_chnsenticorp/logit/bias"] = r(NUM_LABELS)
    out["global_step"] = np.array(1234, dtype=np.int64)
    out[T + "mask_emb/mask_emb/adam_m"] = np.zeros((1, 1, d), np.float32)
    return out


def write_with_saver(prefix: Path, arrays: dict[str, np.ndarray]) -> None:
    with tf.Graph().as_default():
        variables = [tf.compat.v1.get_variable(name, initializer=a) for name, a in arrays.items()]
        saver = tf.compat.v1.train.Saver(variables)
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            saver.save(sess, str(prefix), write_meta_graph=False)


def dtype_tensors(rng: np.random.Generator) -> tuple[list[str], list[str], list[tf.Tensor]]:
    names, slices, tensors = [], [], []

    def add(name: str, t, slice_spec: str = "") -> None:
        names.append(name)
        slices.append(slice_spec)
        tensors.append(tf.convert_to_tensor(t))

    f = rng.standard_normal((3, 5)).astype(np.float32)
    add("dtypes/float32", f)
    add("dtypes/float64", rng.standard_normal((2, 3)))
    add("dtypes/float16", tf.constant(f[:2], dtype=tf.float16))
    add("dtypes/bfloat16", tf.cast(tf.constant(f * 100), tf.bfloat16))
    add("dtypes/int32", rng.integers(-2**31, 2**31 - 1, (4, 2), dtype=np.int32))
    add("dtypes/int64", rng.integers(-2**63, 2**63 - 1, (3,), dtype=np.int64))
    add("dtypes/int8", rng.integers(-128, 127, (5,), dtype=np.int8))
    add("dtypes/uint8", rng.integers(0, 255, (2, 2, 2), dtype=np.uint8))
    add("dtypes/bool", rng.random((7,)) > 0.5)
    add("dtypes/scalar", np.float32(3.25))
    add("dtypes/empty", np.zeros((0, 4), np.float32))
    for i in range(150):
        add(f"many/variable_with_a_longish_name_{i:03d}", np.arange(i % 5 + 1, dtype=np.float32) + i)
    add("skipped/string", tf.constant([b"ab", b"cde"]))
    add("skipped/partitioned", f[:2], "3 5 0,2:-")  # rows 0..1 of a [3, 5] variable
    return names, slices, tensors


def write_expected(prefix: Path, out: Path) -> None:
    reader = tf.train.load_checkpoint(str(prefix))
    expected = {}
    for name, dtype in reader.get_variable_to_dtype_map().items():
        if dtype == tf.string or name.startswith("skipped/"):
            continue
        value = reader.get_tensor(name)
        expected[name] = value.astype(np.float32) if dtype == tf.bfloat16 else value
    np.savez(out, **expected)


def main(out: Path) -> None:
    rng = np.random.default_rng(20240611)
    if out.exists():
        shutil.rmtree(out)
    (out / "xlnet").mkdir(parents=True)
    (out / "dtypes").mkdir()

    arrays = xlnet_variables(rng)
    write_with_saver(out / "xlnet" / "xlnet_model.ckpt", arrays)
    (out / "xlnet" / "xlnet_config.json").write_text(json.dumps(CONFIG, indent=2) + "\n")
    write_expected(out / "xlnet" / "xlnet_model.ckpt", out / "xlnet" / "expected.npz")

    names, slices, tensors = dtype_tensors(rng)
    tf.raw_ops.SaveV2(prefix=str(out / "dtypes" / "dtypes.ckpt"), tensor_names=names,
                      shape_and_slices=slices, tensors=tensors)
    write_expected(out / "dtypes" / "dtypes.ckpt", out / "dtypes" / "expected.npz")

    for stray in out.rglob("checkpoint"):  # the Saver's bookkeeping file; not needed
        stray.unlink()
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {out} ({total} bytes)")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "tests" / "data" / "tf_tiny")
