"""Configuration values checked before any work: one table of key -> rule, plus the few rules that
relate several keys (a sequence layout, an output path).

Every command calls `validate(cfg)` on its composed config before it touches a file: `cxlnet.cli`
composes the config with the user's overrides first (so a bad value is refused before Hydra
creates the run directory), and each job checks again (a sweep's jobs, DDP workers). A bad value
is one line naming the key: `task.batch_size=abc: expected a positive integer`.

Why an explicit pass and not Hydra structured configs: the config tree is YAML-first (every knob
in conf/, presets overriding groups), several keys take a number *or* a word (`-1`, `auto`,
`null`), and paths must be checked against the file system; a dataclass schema would duplicate
the YAML defaults and could express none of these. Adding a key is one line in `RULES`.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from cxlnet.errors import CxlnetError


@dataclass(frozen=True)
class Rule:
    """`ok(value)` is true for a valid value; `expected` says what a valid value is."""

    expected: str
    ok: Callable[[Any], bool]

    def __or__(self, other: "Rule") -> "Rule":
        return Rule(f"{self.expected} or {other.expected}", lambda v: self.ok(v) or other.ok(v))


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


POSITIVE_INT = Rule("a positive integer", lambda v: _is_int(v) and v > 0)
NON_NEGATIVE_INT = Rule("an integer >= 0", lambda v: _is_int(v) and v >= 0)
SEED = Rule("an integer from 0 to 2**32 - 1", lambda v: _is_int(v) and 0 <= v < 2**32)
POSITIVE_NUMBER = Rule("a positive number", lambda v: _is_number(v) and v > 0)
NON_NEGATIVE_NUMBER = Rule("a number >= 0", lambda v: _is_number(v) and v >= 0)
FRACTION = Rule("a number from 0 to 1", lambda v: _is_number(v) and 0 <= v <= 1)
OPEN_FRACTION = Rule("a number in (0, 1]", lambda v: _is_number(v) and 0 < v <= 1)
DROPOUT = Rule("a probability in [0, 1)", lambda v: _is_number(v) and 0 <= v < 1)
NULL = Rule("null", lambda v: v is None)
MINUS_ONE = Rule("-1", lambda v: _is_int(v) and v == -1)
AUTO = Rule("auto", lambda v: v == "auto")
BOOL = Rule("true or false", lambda v: isinstance(v, bool))
TEXT = Rule("a non-empty string", lambda v: isinstance(v, str) and bool(v.strip()))


def one_of(*choices: str) -> Rule:
    return Rule(f"one of {', '.join(choices)}", lambda v: v in choices)


# Lightning's `limit_*_batches` / `val_check_interval`: a fraction of the epoch or a number of batches.
BATCHES = Rule("a fraction in (0, 1] or a positive number of batches",
               lambda v: (isinstance(v, float) and 0 < v <= 1) or (_is_int(v) and v > 0))
DEVICES = POSITIVE_INT | AUTO | Rule("a list of device ids", lambda v: isinstance(v, (list, ListConfig)) and len(v) > 0)

# key -> rule; a key absent from a command's config is not checked. Keys of every command share
# the table: `data.bsz` exists only in `train`'s config, `data.num_shards` only in `data`'s.
RULES: dict[str, Rule] = {
    "seed": SEED,
    # fine-tuning tasks
    "task.batch_size": POSITIVE_INT,
    "task.eval_batch_size": POSITIVE_INT,
    "task.max_seq_length": POSITIVE_INT,
    "task.doc_stride": POSITIVE_INT,
    "task.max_query_length": POSITIVE_INT,
    "task.max_answer_length": POSITIVE_INT,
    "task.n_best_size": POSITIVE_INT,
    "task.num_labels": Rule("an integer >= 2", lambda v: _is_int(v) and v >= 2),
    "task.epochs": MINUS_ONE | POSITIVE_INT,
    "task.max_steps": MINUS_ONE | POSITIVE_INT,
    "task.max_train_examples": NULL | POSITIVE_INT,
    "task.max_eval_examples": NULL | POSITIVE_INT,
    # optimizer
    "optimizer.optim.lr": POSITIVE_NUMBER,
    "optimizer.optim.eps": POSITIVE_NUMBER,
    "optimizer.optim.weight_decay": NON_NEGATIVE_NUMBER,
    "optimizer.warmup_steps": NULL | NON_NEGATIVE_INT,
    "optimizer.warmup_ratio": FRACTION,
    "optimizer.min_lr_ratio": FRACTION,
    "optimizer.layer_decay": OPEN_FRACTION,
    "optimizer.layer_decay_mode": one_of("grad", "lr"),
    # trainer and hardware
    "trainer.gradient_clip_val": NULL | NON_NEGATIVE_NUMBER,
    "trainer.log_every_n_steps": POSITIVE_INT,
    "trainer.limit_train_batches": NULL | BATCHES,
    "trainer.limit_val_batches": NULL | BATCHES | Rule("0", lambda v: v == 0),
    "trainer.val_check_interval": NULL | BATCHES,
    "trainer.enable_progress_bar": BOOL,
    "hardware.devices": DEVICES,
    "hardware.micro_batch_size": NULL | POSITIVE_INT | AUTO,   # null: the whole per-device share at once
    "hardware.num_workers": NON_NEGATIVE_INT,
    "hardware.accelerator": one_of("cpu", "gpu", "tpu", "auto"),
    "logger.kind": one_of("csv", "wandb", "none"),
    # model
    "model.grad_checkpointing": BOOL,
    "model.compile": BOOL,
    "model.config.dropout": DROPOUT,
    "model.config.dropatt": NULL | DROPOUT,   # null: the same as dropout
    "model.config.vocab_size": NULL | POSITIVE_INT,   # null: the tokenizer's
    "model.config.mem_len": NULL | NON_NEGATIVE_INT,
    "model.config.reuse_len": NULL | NON_NEGATIVE_INT,
    # pre-training (`cxlnet train`)
    "mem_len": NON_NEGATIVE_INT,
    "data.bsz": POSITIVE_INT,
    "data.seq_len": POSITIVE_INT,
    "data.reuse_len": POSITIVE_INT,
    "data.perm_size": POSITIVE_INT,
    "data.num_predict": NON_NEGATIVE_INT,
    "data.mask_alpha": POSITIVE_INT,
    "data.mask_beta": POSITIVE_INT,
    "data.max_gram": POSITIVE_INT,
    "data.num_task": POSITIVE_INT,
    "data.task": NON_NEGATIVE_INT,
    "data.bi_data": BOOL,
    "data.num_workers": NULL | NON_NEGATIVE_INT,  # `data`: null is one encoding process per core
    "train.max_steps": POSITIVE_INT,
    "train.save_steps": POSITIVE_INT,
    "train.keep_checkpoints": MINUS_ONE | NON_NEGATIVE_INT,
    "train.stop_after": NULL | POSITIVE_INT,
    "train.lm_bias_init": one_of("zeros", "unigram"),
    # `cxlnet data` / `cxlnet vocab`
    "data.num_shards": POSITIVE_INT,
    "data.lower": BOOL,
    "vocab.vocab_size": POSITIVE_INT,
    "vocab.character_coverage": OPEN_FRACTION,
    "vocab.input_sentence_size": POSITIVE_INT,
    "vocab.num_threads": NULL | POSITIVE_INT,
    "vocab.seed": NULL | SEED,
    "vocab.shuffle": BOOL,
    "vocab.lower": BOOL,
    "vocab.overwrite": BOOL,
    "predict.overwrite": BOOL,
}


def _show(value: Any) -> str:
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value)
    return "null" if value is None else str(value)


def _select(cfg: DictConfig, key: str) -> tuple[bool, Any]:
    """(present, value) of `key`; an interpolation that cannot be resolved is a user error too."""
    from omegaconf.errors import OmegaConfBaseException

    try:
        missing = object()
        value = OmegaConf.select(cfg, key, default=missing, throw_on_missing=True)
    except OmegaConfBaseException as err:
        raise CxlnetError(f"{key}: {str(err).splitlines()[0]}") from None
    return value is not missing, value


def check_values(cfg: DictConfig, rules: dict[str, Rule] = RULES) -> None:
    for key, rule in rules.items():
        present, value = _select(cfg, key)
        if present and not rule.ok(value):
            raise CxlnetError(f"{key}={_show(value)}: expected {rule.expected}")


def _need(ok: bool, message: str) -> None:
    if not ok:
        raise CxlnetError(message)


# command -> keys it cannot run without, and what to give
REQUIRED = {
    "eval": {"model.pretrained": "<fine-tuned run dir or weights dir>"},
    "predict": {"model.pretrained": "<fine-tuned run dir or weights dir>"},
}


def check_required(cfg: DictConfig) -> None:
    command = cfg.get("command")
    for key, what in REQUIRED.get(command, {}).items():
        if _select(cfg, key)[1] is None:
            raise CxlnetError(f"cxlnet {command} needs {key}={what}")


def check_layout(cfg: DictConfig) -> None:
    """Rules between keys: a sequence must hold its special tokens and at least one real token."""
    task = cfg.get("task")
    if isinstance(task, DictConfig) and "max_seq_length" in task:
        L = task.max_seq_length
        if task.get("kind") == "span":
            q = task.max_query_length
            _need(L > q + 3, f"task.max_seq_length={L}: too small for the layout paragraph <sep> question <sep> "
                             f"<cls> with questions of up to task.max_query_length={q} tokens (needs at least {q + 4})")
        else:
            _need(L >= 3, f"task.max_seq_length={L}: too small for the layout text <sep> <cls> (needs at least 3)")
        _need(cfg.get("command") != "finetune" or task.get("epochs", 1) != -1 or task.get("max_steps", 1) != -1,
              "task.epochs=-1 and task.max_steps=-1: nothing to train; set one of them")
    if cfg.get("command") == "train":
        d = cfg.data
        R, S = d.reuse_len, d.seq_len - d.reuse_len
        _need(R < d.seq_len - 3, f"data.reuse_len={R}: must be below data.seq_len - 3 = {d.seq_len - 3} "
                                 f"(the rest holds A <sep> B <sep> <cls>)")
        _need(R % d.perm_size == 0 and S % d.perm_size == 0 and d.perm_size <= min(R, S),
              f"data.perm_size={d.perm_size}: must divide data.reuse_len={R} and data.seq_len - data.reuse_len={S}")
        _need(d.mask_alpha >= d.mask_beta, f"data.mask_alpha={d.mask_alpha}: must be >= data.mask_beta={d.mask_beta}")
        _need(d.task < d.num_task, f"data.task={d.task}: must be below data.num_task={d.num_task}")
        stop = cfg.train.stop_after
        _need(stop is None or stop < cfg.train.max_steps,
              f"train.stop_after={stop}: must be below train.max_steps={cfg.train.max_steps}")


# ------------------------------------------------------------------------------------- paths
def _first_existing_parent(path: Path) -> Path:
    for parent in (path, *path.parents):
        if parent.exists():
            return parent
    return Path("/")


def writable_dir(path: str | os.PathLike, key: str, shown: str | os.PathLike | None = None) -> Path:
    """`path` is (or can be created as) a directory this process can write into; the message
    names `key={shown or path}`."""
    path = Path(path).expanduser()
    setting = f"{key}={shown or path}"
    if path.exists() and not path.is_dir():
        raise CxlnetError(f"{setting}: {path} is a file, not a directory" if shown else f"{setting}: a file, not a directory")
    base = _first_existing_parent(path)
    if not base.is_dir():
        raise CxlnetError(f"{setting}: {base} is a file, not a directory")
    if not os.access(base, os.W_OK | os.X_OK):
        raise CxlnetError(f"{setting}: {base} is not writable")
    return path


def writable_file(path: str | os.PathLike, key: str) -> Path:
    """`path` is a file this process can create or replace (not a directory)."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise CxlnetError(f"{key}={path}: a directory; give a file name")
    writable_dir(path.parent, key, shown=path)
    return path


def _vocab_output(cfg: DictConfig, prefix: str, key: str) -> None:
    """SentencePiece writes `<prefix>.model` and `<prefix>.vocab`; an existing vocabulary is a
    result (token stores are built with it), replaced only with `vocab.overwrite=true`."""
    for suffix in (".model", ".vocab"):
        writable_file(f"{prefix}{suffix}", key)
    if Path(f"{prefix}.model").expanduser().is_file() and not cfg.vocab.get("overwrite"):
        raise CxlnetError(f"{key}={prefix}: {prefix}.model exists (token stores may be built with it); "
                          f"vocab.overwrite=true replaces it")


def _predict_output(cfg: DictConfig, value: Any, key: str) -> None:
    """Predictions are a result: an existing file is replaced only with `predict.overwrite=true`."""
    path = writable_file(value, key)
    if path.is_file() and not cfg.predict.get("overwrite"):
        raise CxlnetError(f"{key}={value}: the file exists; predict.overwrite=true replaces it")


# output key -> check(cfg, value, key); `train`'s data.* is the store it reads, not an output
OUTPUTS: dict[str, Callable[[DictConfig, Any, str], Any]] = {
    "vocab.output": _vocab_output,
    "data.out_dir": lambda cfg, value, key: writable_dir(value, key),
    "predict.output": _predict_output,
}


def check_paths(cfg: DictConfig, run_dir: str | None) -> None:
    """Output locations of the command (run directory, vocabulary, token store, predictions) and
    its JSONL input."""
    if run_dir is not None and cfg.get("command") != "predict":
        writable_dir(run_dir, "hydra.run.dir")
    for key, check in OUTPUTS.items():
        present, value = _select(cfg, key)
        if present and value is not None and not (cfg.get("command") == "train" and key.startswith("data.")):
            check(cfg, value, key)
    present, value = _select(cfg, "predict.input")
    if present and value is not None and Path(str(value)).expanduser().is_dir():
        raise CxlnetError(f"predict.input={value}: a directory; give a JSONL file")


def validate(cfg: DictConfig, run_dir: str | None = None) -> None:
    """All checks of a composed config; `run_dir` is the resolved `hydra.run.dir` when known."""
    check_values(cfg)
    check_required(cfg)
    check_layout(cfg)
    check_paths(cfg, run_dir)


# ------------------------------------------------------------------------- before Hydra runs
FINISHING_COMMANDS = ("finetune", "eval", "train")  # a run of these ends with metrics.json


def ensure_unfinished(run_dir: str | os.PathLike) -> None:
    """Refuse to run into a directory whose run already finished: its metrics are never overwritten."""
    path = Path(run_dir) / "metrics.json"
    if path.exists():
        raise CxlnetError(f"{path}: this run already finished; choose another hydra.run.dir or remove it")


def _expand_sweeps(overrides: list[str]) -> list[list[str]]:
    """The override lists of every job of `-m` (a cartesian product, as Hydra's basic sweeper)."""
    import itertools

    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    choices = [[f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()] if o.is_sweep_override()
               else [o.input_line] for o in parsed]
    return [list(job) for job in itertools.islice(itertools.product(*choices), 1000)]


def compose_job(command: str, overrides: list[str]) -> tuple[DictConfig, str | None]:
    """The config a Hydra app would run with, and its resolved `hydra.run.dir` (None if unknown)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    from cxlnet.confdir import conf_dir

    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3", job_name=command):
        cfg = compose(config_name=command, overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    try:
        run = str(cfg.hydra.run.dir)
    except Exception:  # noqa: BLE001 - an unresolvable run dir is Hydra's own error to report
        run = None
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, run


def preflight(command: str, overrides: list[str], multirun: bool,
              config_only: bool = False) -> list[tuple[DictConfig, str | None]]:
    """Check every job's values (and, for a single run, its output paths and run directory) before
    Hydra creates anything, so a refused command leaves no trace. A config that does not compose
    is left to Hydra, whose message names the bad override or group."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        jobs = _expand_sweeps(overrides) if multirun else [overrides]
        composed = [compose_job(command, job) for job in jobs]
    except (HydraException, OmegaConfBaseException):
        return []
    for cfg, run in composed:
        check_values(cfg)
        check_layout(cfg)
        if config_only or multirun:
            continue
        check_required(cfg)
        check_paths(cfg, run)
        if command in FINISHING_COMMANDS and run is not None:
            ensure_unfinished(run)
    return composed
