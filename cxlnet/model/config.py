"""`XLNetConfig`: the model hyper-parameters, with the field names of hfl's / Hugging Face's
`config.json` so that file loads as is and our `to_dict()` is read back by `transformers`.

Only `dropatt` is ours (the original has a separate attention-dropout rate; HF reuses `dropout`).
`grad_checkpointing` is a run-time switch and is not written to `config.json`.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cxlnet.errors import CxlnetError, read_json

# "gelu" follows Hugging Face (exact erf GELU) so a config.json means the same in both libraries;
# the original TF code's `gelu` is the tanh approximation, which HF calls "gelu_new".
FF_ACTIVATIONS = ("relu", "gelu", "gelu_new")
# The original's `summarize_sequence` types without weights of their own ("attn" adds an attention
# layer that neither hfl's checkpoints nor transformers have).
SUMMARY_TYPES = ("last", "first", "mean")

# Keys HF writes that mean nothing to us; kept in `extra` and written back unchanged.
_HF_ONLY_KEYS = {
    "architectures", "model_type", "output_past", "use_mems_eval", "use_mems_train", "num_labels",
    "id2label", "label2id", "problem_type", "transformers_version", "torch_dtype", "dtype",
    "return_dict", "output_hidden_states", "output_attentions", "chunk_size_feed_forward",
    "summary_first_dropout", "summary_proj_to_labels", "tie_word_embeddings", "n_token",
    "finetuning_task", "is_decoder", "add_cross_attention", "tokenizer_class",
}

# Fields that do not shape the weights (the original's RunConfig and task flags, not its
# xlnet_config.json): a run sets them on every model it builds, loaded checkpoints included
# (summary_type only where the checkpoint holds no trained summary head: weights._keep_trained_summary).
RUN_SETTINGS = ("dropout", "dropatt", "summary_type", "summary_last_dropout", "mem_len", "reuse_len", "bi_data",
                "clamp_len", "same_length", "start_n_top", "end_n_top", "grad_checkpointing")
# The sizes have no defaults: they come from a config.json or a conf/model/<name>.yaml, never from here.
_SIZES = ("vocab_size", "d_model", "n_layer", "n_head", "d_head", "d_inner")


@dataclass
class XLNetConfig:
    vocab_size: int
    d_model: int
    n_layer: int
    n_head: int
    d_head: int
    d_inner: int
    ff_activation: str = "relu"
    untie_r: bool = True
    attn_type: str = "bi"
    mem_len: int | None = None
    reuse_len: int | None = None
    bi_data: bool = False
    clamp_len: int = -1
    same_length: bool = False
    dropout: float = 0.1
    dropatt: float | None = None  # attention-probability dropout; None = same as `dropout`
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    summary_type: str = "last"
    summary_use_proj: bool = True
    summary_activation: str = "tanh"
    summary_last_dropout: float = 0.1
    start_n_top: int = 5
    end_n_top: int = 5
    pad_token_id: int = 5
    bos_token_id: int = 1
    eos_token_id: int = 2
    grad_checkpointing: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # HF-only keys, kept for the round trip

    def __post_init__(self) -> None:
        if self.dropatt is None:
            self.dropatt = self.dropout
        self.validate()

    def validate(self) -> None:
        def bad(msg: str) -> None:
            raise CxlnetError(f"XLNetConfig: {msg}")

        for name in _SIZES:
            if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
                bad(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.d_model != self.n_head * self.d_head:
            bad(f"d_model ({self.d_model}) != n_head * d_head ({self.n_head} * {self.d_head})")
        if self.d_model % 2:
            bad(f"d_model must be even for the sinusoid encoding, got {self.d_model}")
        if self.ff_activation not in FF_ACTIVATIONS:
            bad(f"ff_activation must be one of {FF_ACTIVATIONS}, got {self.ff_activation!r}")
        if self.attn_type not in ("bi", "uni"):
            bad(f"attn_type must be 'bi' or 'uni', got {self.attn_type!r}")
        for name in ("dropout", "dropatt", "summary_last_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                bad(f"{name} must be in [0, 1), got {getattr(self, name)!r}")
        for name in ("mem_len", "reuse_len"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 0):
                bad(f"{name} must be null or a non-negative integer, got {v!r}")
        if self.summary_type not in SUMMARY_TYPES:
            bad(f"summary_type must be one of {SUMMARY_TYPES}, got {self.summary_type!r}")

    # ------------------------------------------------------------------ constructors
    @classmethod
    def named(cls, name: str, **overrides: Any) -> "XLNetConfig":
        """The architecture of `conf/model/<name>.yaml` (its `config` block), e.g. `named("mid",
        vocab_size=32000)`; a `vocab_size: null` there (the tokenizer's) must be given here."""
        import yaml

        from cxlnet.confdir import conf_dir

        path = conf_dir() / "model" / f"{name}.yaml"
        if not path.is_file():
            choices = sorted(p.stem for p in path.parent.glob("*.yaml"))
            raise CxlnetError(f"unknown model {name!r}; choose one of {choices}")
        block = yaml.safe_load(path.read_text(encoding="utf-8"))["config"]
        return cls.from_dict({**block, **overrides}, source=str(path))

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> "XLNetConfig":
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        kwargs: dict[str, Any] = {}
        extra: dict[str, Any] = dict(d.get("extra", {}))
        for key, value in d.items():
            if key == "extra":
                continue
            if key in known:
                kwargs[key] = value
            elif key == "n_token":  # the original TF config's name for vocab_size
                kwargs["vocab_size"] = value
            else:
                if key not in _HF_ONLY_KEYS:
                    close = difflib.get_close_matches(key, known, n=1, cutoff=0.8)
                    if close:  # a likely typo silently ignored would change the model
                        raise CxlnetError(f"{source}: unknown key {key!r} (did you mean {close[0]!r}?)")
                extra[key] = value
        missing = [name for name in _SIZES if kwargs.get(name) is None]
        if missing:
            raise CxlnetError(f"{source}: no {', '.join(missing)} (the architecture needs every size)")
        try:
            return cls(**kwargs, extra=extra)
        except TypeError as err:
            raise CxlnetError(f"{source}: {err}") from None

    @classmethod
    def from_json(cls, path: str | Path, **overrides: Any) -> "XLNetConfig":
        d = read_json(path)
        if not isinstance(d, dict):
            raise CxlnetError(f"{path}: expected a JSON object")
        return cls.from_dict({**d, **overrides}, source=str(path))

    def replace(self, **overrides: Any) -> "XLNetConfig":
        d = dataclasses.asdict(self)
        if "dropout" in overrides and "dropatt" not in overrides and self.dropatt == self.dropout:
            d["dropatt"] = None  # keep "dropatt follows dropout"
        return self.from_dict({**d, **overrides})

    # ------------------------------------------------------------------ serialisation
    def to_dict(self, architectures: list[str] | None = None) -> dict[str, Any]:
        """An HF-compatible config.json dict (`transformers.XLNetConfig` reads it)."""
        d = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("extra", "grad_checkpointing")}
        out = {**self.extra, **d}
        out["model_type"] = "xlnet"
        if architectures is not None:
            out["architectures"] = architectures
        out.setdefault("architectures", ["XLNetLMHeadModel"])
        return dict(sorted(out.items()))

    def to_json_string(self, architectures: list[str] | None = None) -> str:
        return json.dumps(self.to_dict(architectures), ensure_ascii=False, indent=2) + "\n"
