"""Weights in and out: Hugging Face directories (read and write) and hfl's original TF checkpoints.

Our internal names differ from Hugging Face's in three places, converted here both ways:
  * `layer.{i}.rel_attn.qkv.weight` (3*H*Dh, d)  <->  `layer.{i}.rel_attn.{q,k,v}` (d, H, Dh) each
  * `layer.{i}.rel_attn.{r,o}.weight` (Linear layout)  <->  `layer.{i}.rel_attn.{r,o}` (d, H, Dh)
  * `r_{w,r,s}_bias` stacked (n_layer or 1, H, Dh) on the body  <->  per layer in
    `layer.{i}.rel_attn.r_{w,r,s}_bias` (HF keeps one copy per layer even when untie_r is false).
Everything else (FFN, LayerNorms, heads) has HF's names already. The tied LM output weight is
never stored by us; `lm_loss.weight` in a checkpoint is accepted and dropped (re-tied).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from cxlnet.errors import CxlnetError, atomic_write_bytes, atomic_write_json, load_tensors
from cxlnet.model.config import XLNetConfig
from cxlnet.model.provenance import TF_FORMAT, hf_format, summarise_load

log = logging.getLogger(__name__)

_BIASES = ("r_w_bias", "r_r_bias", "r_s_bias")
_SAME_NAME = ("seg_embed", "layer_norm.weight", "layer_norm.bias")
_FF = ("layer_1.weight", "layer_1.bias", "layer_2.weight", "layer_2.bias", "layer_norm.weight", "layer_norm.bias")
# Head parameter groups HF may have; a model without the group drops them (with a log line).
_HEAD_PREFIXES = ("lm_loss.", "sequence_summary.", "logits_proj.", "start_logits.", "end_logits.", "answer_class.")
_CORE_ROOTS = ("word_embedding.", "mask_emb", "layer.")


# ---------------------------------------------------------------------------- name conversion
def core_to_hf(sd: dict[str, Tensor], cfg: XLNetConfig) -> dict[str, Tensor]:
    """Our body state dict (no prefix) -> HF XLNetModel state dict."""
    d, H, Dh = cfg.d_model, cfg.n_head, cfg.d_head
    out = {"word_embedding.weight": sd["word_embedding.weight"], "mask_emb": sd["mask_emb"]}
    for i in range(cfg.n_layer):
        a, p = f"layer.{i}.rel_attn.", f"layer.{i}."
        for name, w in zip("qkv", sd[a + "qkv.weight"].chunk(3, dim=0)):
            out[a + name] = w.t().reshape(d, H, Dh)
        out[a + "r"] = sd[a + "r.weight"].t().reshape(d, H, Dh)
        out[a + "o"] = sd[a + "o.weight"].reshape(d, H, Dh)
        for b in _BIASES:
            out[a + b] = sd[b][i if cfg.untie_r else 0]
        for n in _SAME_NAME:
            out[a + n] = sd[a + n]
        for n in _FF:
            out[p + "ff." + n] = sd[p + "ff." + n]
    return out


def hf_to_core(hf: dict[str, Tensor], cfg: XLNetConfig, source: str) -> dict[str, Tensor]:
    """HF XLNetModel keys (no prefix; consumed from `hf`) -> our body state dict. Raises one line
    naming the first missing key; leftover core-looking keys are reported by the caller."""
    d, H, Dh = cfg.d_model, cfg.n_head, cfg.d_head

    def take(key: str, shape: tuple[int, ...]) -> Tensor:
        if key not in hf:
            raise CxlnetError(f"{source}: missing key {key!r}")
        t = hf.pop(key)
        if tuple(t.shape) != shape:
            raise CxlnetError(f"{source}: key {key!r} has shape {tuple(t.shape)}, the model needs {shape}")
        return t

    out = {"word_embedding.weight": take("word_embedding.weight", (cfg.vocab_size, d)),
           "mask_emb": take("mask_emb", (1, 1, d))}
    biases: dict[str, list[Tensor]] = {b: [] for b in _BIASES}
    for i in range(cfg.n_layer):
        a, p = f"layer.{i}.rel_attn.", f"layer.{i}."
        qkv = [take(a + n, (d, H, Dh)).reshape(d, H * Dh).t() for n in "qkv"]
        out[a + "qkv.weight"] = torch.cat(qkv, 0)
        out[a + "r.weight"] = take(a + "r", (d, H, Dh)).reshape(d, H * Dh).t()
        out[a + "o.weight"] = take(a + "o", (d, H, Dh)).reshape(d, H * Dh)
        for b in _BIASES:
            biases[b].append(take(a + b, (H, Dh)))
        out[a + "seg_embed"] = take(a + "seg_embed", (2, H, Dh))
        out[a + "layer_norm.weight"] = take(a + "layer_norm.weight", (d,))
        out[a + "layer_norm.bias"] = take(a + "layer_norm.bias", (d,))
        shapes = ((cfg.d_inner, d), (cfg.d_inner,), (d, cfg.d_inner), (d,), (d,), (d,))
        for n, shape in zip(_FF, shapes):
            out[p + "ff." + n] = take(p + "ff." + n, shape)
    for b, rows in biases.items():
        stacked = torch.stack(rows)
        if not cfg.untie_r:
            if not all(torch.equal(r, rows[0]) for r in rows[1:]):
                raise CxlnetError(f"{source}: untie_r is false but the per-layer {b!r} values differ "
                                  f"(set untie_r: true in config.json)")
            stacked = stacked[:1]
        out[b] = stacked.contiguous()
    return {k: v.contiguous() for k, v in out.items()}


def to_hf_state_dict(model) -> dict[str, Tensor]:
    """The model's state dict under HF names (with `transformer.` for head models)."""
    from cxlnet.model.model import XLNet

    if isinstance(model, XLNet):
        return core_to_hf(model.state_dict(), model.config)
    sd = model.state_dict()
    core = {k[len("transformer."):]: v for k, v in sd.items() if k.startswith("transformer.")}
    out = {"transformer." + k: v for k, v in core_to_hf(core, model.config).items()}
    out.update({k: v for k, v in sd.items() if not k.startswith("transformer.")})
    return out


def load_hf_state_dict(model, hf: dict[str, Tensor], source: str) -> None:
    """Load an HF-named state dict into `model` (body or head model), strictly."""
    from cxlnet.model.model import XLNet

    hf = dict(hf)
    is_core = isinstance(model, XLNet)
    # Normalise to body keys without prefix; head keys keep their names.
    core: dict[str, Tensor] = {}
    rest: dict[str, Tensor] = {}
    for k, v in hf.items():
        if k.startswith("transformer."):
            core[k[len("transformer."):]] = v
        elif k.startswith(_CORE_ROOTS):
            core[k] = v
        else:
            rest[k] = v
    new_sd = {k if is_core else "transformer." + k: v for k, v in hf_to_core(core, model.config, source).items()}
    if core:
        raise CxlnetError(f"{source}: unexpected key {next(iter(core))!r}")

    own = model.state_dict()
    head_keys = [k for k in own if not k.startswith("transformer.")] if not is_core else []
    groups = sorted({k.split(".")[0] for k in head_keys})
    for group in groups:
        keys = [k for k in head_keys if k.split(".")[0] == group]
        present = [k for k in keys if k in rest]
        if not present:
            log.info("%s: no %r weights in the checkpoint; that head starts from random init", source, group)
            for k in keys:
                new_sd[k] = own[k]
            continue
        for k in keys:
            if k not in rest:
                raise CxlnetError(f"{source}: missing key {k!r}")
            t = rest.pop(k)
            if t.shape != own[k].shape:
                raise CxlnetError(f"{source}: key {k!r} has shape {tuple(t.shape)}, the model needs {tuple(own[k].shape)}")
            new_sd[k] = t
    rest.pop("lm_loss.weight", None)  # tied to the word embedding; re-tied by construction
    for k in list(rest):
        if k.startswith(_HEAD_PREFIXES):
            log.info("%s: ignoring %r (this model has no such head)", source, k)
            del rest[k]
    if rest:
        raise CxlnetError(f"{source}: unexpected key {next(iter(rest))!r}")
    model.load_state_dict(new_sd, strict=True)


# ---------------------------------------------------------------------------- files
def _read_hf_weights(directory: Path) -> dict[str, Tensor]:
    st, pt = directory / "model.safetensors", directory / "pytorch_model.bin"
    if st.is_file():
        from safetensors.torch import load_file

        try:
            return load_file(str(st))
        except Exception as err:  # noqa: BLE001 - corrupt file: one line
            raise CxlnetError(f"{st}: cannot read safetensors file: {err}") from None
    if pt.is_file():
        sd = load_tensors(pt, "PyTorch weights file")
        if not isinstance(sd, dict):
            raise CxlnetError(f"{pt}: expected a state dict, got {type(sd).__name__}")
        return sd
    raise CxlnetError(f"{directory}: no model.safetensors or pytorch_model.bin")


def _model_kwargs(cls, config_dict: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    from cxlnet.model.heads import XLNetForSequenceClassification

    kwargs: dict[str, Any] = {}
    if issubclass(cls, XLNetForSequenceClassification):
        n = overrides.pop("num_labels", None)
        if n is None:
            n = config_dict.get("num_labels") or len(config_dict.get("id2label") or {}) or 2
        kwargs["num_labels"] = int(n)
    return kwargs


def _keep_trained_summary(stored: XLNetConfig, weights: dict[str, Tensor], overrides: dict[str, Any],
                          path: Path) -> dict[str, Any]:
    """`summary_type` is a run setting for weights without a summary head (a pre-trained LM), but a
    fine-tuned summary head has learnt one pooling: evaluating or continuing it keeps the stored one."""
    wanted = overrides.get("summary_type", stored.summary_type)
    if wanted == stored.summary_type or not any(name.startswith("sequence_summary.") for name in weights):
        return overrides
    log.info("%s: summary_type %r, the one its summary head was trained with (not %r)", path,
             stored.summary_type, wanted)
    return {**overrides, "summary_type": stored.summary_type}


def load_pretrained(cls, path: str | Path, **overrides: Any):
    path = Path(path)
    if not path.exists() and not Path(str(path) + ".index").exists():
        raise CxlnetError(f"{path}: no such file or directory")
    if path.is_dir() and (path / "config.json").is_file():
        cfg_raw = XLNetConfig.from_json(path / "config.json")  # validates the file as is
        kwargs = _model_kwargs(cls, {**cfg_raw.extra}, overrides)
        weights = _read_hf_weights(path)
        overrides = _keep_trained_summary(cfg_raw, weights, overrides, path)
        config = cfg_raw.replace(**overrides) if overrides else cfg_raw
        model = cls(config, **kwargs)
        load_hf_state_dict(model, weights, str(path))
        model.load_summary = summarise_load(model, weights, *hf_format(path), cfg_raw)
        return model
    return _load_tf(cls, path, overrides)


def save_pretrained(model, directory: str | Path) -> Path:
    from safetensors.torch import save

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().to("cpu").contiguous().clone() for k, v in to_hf_state_dict(model).items()}
    cfg = model.config.to_dict(architectures=[model.hf_architecture])
    if hasattr(model, "num_labels"):
        cfg["id2label"] = {str(i): f"LABEL_{i}" for i in range(model.num_labels)}
        cfg["label2id"] = {f"LABEL_{i}": i for i in range(model.num_labels)}
        cfg.pop("num_labels", None)
    atomic_write_bytes(directory / "model.safetensors", save(sd, metadata={"format": "pt"}))
    atomic_write_json(directory / "config.json", cfg)
    return directory


# ---------------------------------------------------------------------------- TF checkpoints
def tf_to_hf(variables: dict[str, Any], cfg: XLNetConfig, source: str) -> dict[str, Tensor]:
    """Original TF variable names/layouts (spec §8.2, §8.3) -> HF names/layouts."""
    out: dict[str, Tensor] = {}
    T = "model/transformer/"
    for name, value in variables.items():
        if name == "global_step" or name.endswith(("/adam_m", "/adam_v", "/Adam", "/Adam_1")):
            continue
        t = torch.as_tensor(value.copy() if hasattr(value, "copy") else value)
        if name == T + "word_embedding/lookup_table":
            out["transformer.word_embedding.weight"] = t
        elif name == T + "mask_emb/mask_emb":
            out["transformer.mask_emb"] = t
        elif name in (T + "r_w_bias", T + "r_r_bias", T + "r_s_bias", T + "seg_embed"):
            short = name[len(T):]
            per_layer = t.dim() == (4 if short == "seg_embed" else 3)
            for i in range(cfg.n_layer):  # stacked (untie_r) or one shared copy
                out[f"transformer.layer.{i}.rel_attn.{short}"] = t[i] if per_layer else t
        elif name.startswith(T + "layer_"):
            layer, _, rest = name[len(T) + len("layer_"):].partition("/")
            p = f"transformer.layer.{int(layer)}."
            if rest.startswith("rel_attn/") and rest.endswith("/kernel") and rest.count("/") == 2:
                out[p + "rel_attn." + rest.split("/")[1]] = t  # q/k/v/o/r: (d, H, Dh) in both
            elif rest in ("rel_attn/LayerNorm/gamma", "rel_attn/LayerNorm/beta", "ff/LayerNorm/gamma", "ff/LayerNorm/beta"):
                scope = rest.split("/")[0]
                out[p + scope + ".layer_norm." + ("weight" if rest.endswith("gamma") else "bias")] = t
            elif rest in ("ff/layer_1/kernel", "ff/layer_2/kernel"):
                out[p + "ff." + rest.split("/")[1] + ".weight"] = t.t()
            elif rest in ("ff/layer_1/bias", "ff/layer_2/bias"):
                out[p + "ff." + rest.split("/")[1] + ".bias"] = t
            else:
                raise CxlnetError(f"{source}: unknown TF variable {name!r}")
        elif name == "model/lm_loss/bias":
            out["lm_loss.bias"] = t
        else:
            hf = _tf_head_name(name)
            if hf is None:
                raise CxlnetError(f"{source}: unknown TF variable {name!r}")
            out[hf] = t.t() if name.endswith("/kernel") else t
    return {k: v.contiguous() for k, v in out.items()}


def _tf_head_name(name: str) -> str | None:
    parts = name.split("/")
    leaf = {"kernel": "weight", "bias": "bias", "gamma": "weight", "beta": "bias"}.get(parts[-1])
    if leaf is None:
        return None
    if name.startswith("model/sequnece_summary/summary/"):
        return "sequence_summary.summary." + leaf
    if len(parts) == 4 and parts[0] == "model" and parts[1].startswith(("classification_", "regression_")) \
            and parts[2] == "logit":
        return "logits_proj." + leaf
    if len(parts) == 3 and parts[0] in ("start_logits", "end_logits", "answer_class"):
        return f"{parts[0]}.{parts[1]}.{leaf}"
    return None


def _load_tf(cls, path: Path, overrides: dict[str, Any]):
    if path.is_dir():
        prefix = path / "xlnet_model.ckpt"
        if not Path(str(prefix) + ".index").is_file():
            indexes = sorted(path.glob("*.index"))
            if not indexes:
                raise CxlnetError(f"{path}: neither a Hugging Face directory (config.json) nor a TF checkpoint (*.index)")
            prefix = indexes[-1].with_suffix("")
        directory = path
    else:
        prefix = path.with_suffix("") if path.suffix == ".index" else path
        directory = prefix.parent
    cfg_path = directory / "xlnet_config.json"
    if not cfg_path.is_file():
        cfg_path = directory / "config.json"
    if not cfg_path.is_file():
        raise CxlnetError(f"{directory}: no xlnet_config.json next to the TF checkpoint")
    from cxlnet.errors import read_json

    raw = read_json(cfg_path)
    if raw.get("ff_activation") == "gelu" and cfg_path.name == "xlnet_config.json":
        raw["ff_activation"] = "gelu_new"  # the original's gelu is the tanh approximation
    kwargs = _model_kwargs(cls, raw, overrides)
    config = XLNetConfig.from_dict({**raw, **overrides}, source=str(cfg_path))
    variables = read_tf_checkpoint(prefix)
    model = cls(config, **kwargs)
    weights = tf_to_hf(variables, config, str(prefix))
    load_hf_state_dict(model, weights, str(prefix))
    model.load_summary = summarise_load(model, weights, TF_FORMAT, prefix, XLNetConfig.from_dict(raw, str(cfg_path)))
    return model


def read_tf_checkpoint(prefix: str | Path) -> dict[str, Any]:
    """All variables of a TF V2 checkpoint (prefix, `.index` file or directory) as numpy arrays,
    read in pure Python + numpy (no TensorFlow); a missing or corrupt file is one CxlnetError line."""
    from cxlnet.model.tf_checkpoint import read_tf_checkpoint as read_bundle

    return read_bundle(prefix)
