"""Run-directory helpers shared by the Hydra commands: the printed/saved config tree, the Hydra
run directory, model loading from `model.pretrained`, and one-line errors inside Hydra jobs."""
from __future__ import annotations

import functools
import logging
import os
import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, read_write

from cxlnet.errors import CxlnetError, atomic_write_text, one_line
from cxlnet.validate import validate

log = logging.getLogger(__name__)




def hydra_job(func):
    """Wrap a Hydra task function so user errors become one line and a non-zero exit.

    A single run exits at once with status 2. In a sweep a failed job logs one line and is recorded
    as failed (`error.json`, `summary.json`); the remaining jobs run, and the sweep's end reports
    the failed runs and exits with status 1. A sweep refused as a whole (another configuration in
    its finished runs) exits at once with status 2.
    """

    @functools.wraps(func)
    def wrapper(cfg: DictConfig):
        from cxlnet.sweep import ConfigMismatch, record_failure, run_name

        global _recorded
        _recorded = False
        before = _entries(run_dir()) if cfg.command != "predict" else None
        try:
            validate(cfg, None if sweep_dir() is None else str(run_dir()))
            return func(cfg)
        except CxlnetError as err:
            message = one_line(err)
            if sweep_dir() is None or isinstance(err, ConfigMismatch):
                if sweep_dir() is None and before is not None and not _recorded:
                    _undo_refused(run_dir(), before)
                print(f"cxlnet {cfg.command}: error: {message}", file=sys.stderr)
                raise SystemExit(2) from None
            # One line naming the run; the sweep goes on, and its end reports every failed run and
            # exits non-zero. NaN tells a sweeper (Optuna) the trial failed.
            log.error("%s: %s", run_name(sweep_dir(), run_dir()), message)
            record_failure(sweep_dir(), run_dir(), message)
            return float("nan")
        except Exception as err:
            if sweep_dir() is not None:
                record_failure(sweep_dir(), run_dir(), f"{type(err).__name__}: {err}".splitlines()[0])
            raise
        finally:
            _end_distributed()

    return wrapper


# Whether this job has written its run record (`show_config`): a CxlnetError before that is a
# refusal, which leaves the run directory as it found it.
_recorded = False


def _entries(out_dir: Path) -> dict[str, int]:
    """The top-level entries of `out_dir` when the job starts: name -> size (-1 for a directory)."""
    if not out_dir.is_dir():
        return {}
    return {p.name: -1 if p.is_dir() else p.stat().st_size for p in out_dir.iterdir()}


def _undo_refused(out_dir: Path, before: dict[str, int]) -> None:
    """Put the run directory back as the refused job found it: what the job created is removed,
    Hydra's job logs are cut back to their size, and a directory Hydra created for this job alone
    (empty logs only) is removed."""
    import shutil

    for handler in logging.getLogger().handlers[:]:  # Hydra's file handler: flushed and closed first
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).parent == out_dir.resolve():
            handler.close()
            logging.getLogger().removeHandler(handler)
    for path in out_dir.iterdir():
        if path.name not in before:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        elif path.suffix == ".log" and path.is_file() and path.stat().st_size > before[path.name]:
            with path.open("r+b") as fh:
                fh.truncate(before[path.name])
    logs_only = all(name.endswith(".log") and size == 0 for name, size in before.items())
    if logs_only and out_dir.resolve() != Path.cwd().resolve():
        for name in before:
            (out_dir / name).unlink(missing_ok=True)
        out_dir.rmdir()


# Lightning's DDP launcher sets these in the launching process (and a cluster sets them for every
# process before it starts): their values when this process started.
_DIST_ENV = ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
_DIST_ENV_AT_START = {name: os.environ.get(name) for name in _DIST_ENV}


def _end_distributed() -> None:
    """Tear down the process group after a job, and the launcher's environment: the next job of a
    sweep (same process) must launch new DDP worker processes, not wait for the exited ones."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    for name, value in _DIST_ENV_AT_START.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def run_dir() -> Path:
    return Path(HydraConfig.get().runtime.output_dir)


def sweep_dir() -> Path | None:
    """The multirun directory holding this job, or None for a single run."""
    hydra_cfg = HydraConfig.get()
    return Path(hydra_cfg.sweep.dir) if hydra_cfg.mode == RunMode.MULTIRUN else None


def sweep_group(cfg: DictConfig) -> str | None:
    """The W&B group of a run in a sweep: task, model and the sweep directory's name (also for one
    seed re-run into `SWEEP_DIR/seed=N`); None for a run outside any sweep."""
    sweep = sweep_dir()
    if sweep is None and (run_dir().parent / "multirun.yaml").is_file():
        sweep = run_dir().parent
    return None if sweep is None else f"{cfg.task.name}-{cfg.model.name}-{sweep.name}"


def single_run_argv_for_workers() -> None:
    """Lightning's DDP launcher re-executes `sys.argv` (plus `hydra.run.dir=<hydra.run.dir>`) for
    every other process. Inside a sweep that would be the whole sweep again (`-m`, every seed)
    writing into a new directory, so the workers get this job as a single run in its own directory."""
    if sweep_dir() is None:
        return
    run = HydraConfig.get().run
    with read_write(run):
        run.dir = str(run_dir())
    sys.argv = [sys.argv[0], *HydraConfig.get().overrides.task]


def show_config(cfg: DictConfig, out_dir: Path) -> None:
    """Print the composed config as a rich tree (one line per job in a sweep: ten trees would bury
    the results) and record the run (`record_run`). Called once the command's checks have passed
    (Hydra's own `output_subdir` is off), so a refused command never rewrites a run's record."""
    from rich import print as rprint
    from rich.syntax import Syntax
    from rich.tree import Tree

    record_run(cfg, out_dir)  # config.yaml and .hydra/ (a sweep's summary groups runs by their overrides)
    if sweep_dir() is not None:
        log.info("config: %s", out_dir / "config.yaml")
        return
    tree = Tree(f"[bold]config[/bold] ({out_dir})")
    for key, value in cfg.items():
        text = OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else str(value)
        tree.add(f"[bold cyan]{key}[/bold cyan]").add(Syntax(text.rstrip(), "yaml"))
    rprint(tree)


def record_run(cfg: DictConfig, out_dir: Path) -> None:
    """The run's record: the resolved config as `config.yaml` and Hydra's record in `.hydra/`."""
    global _recorded
    _recorded = True
    atomic_write_text(out_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    hydra_cfg = HydraConfig.get()
    record = {"config.yaml": cfg, "hydra.yaml": OmegaConf.create({"hydra": hydra_cfg}),
              "overrides.yaml": hydra_cfg.overrides.task}
    for name, node in record.items():
        atomic_write_text(out_dir / ".hydra" / name, OmegaConf.to_yaml(node))


def pretrained_source(path_setting: str) -> Path:
    """The existing file or directory `model.pretrained` names (a hub-style name: its downloaded copy)."""
    from cxlnet.paths import cache_dir

    path = Path(path_setting).expanduser()
    hub_copy = cache_dir() / "pretrained" / str(path_setting).replace("/", "-")
    if not path.exists() and str(path_setting).startswith("hfl/"):
        if not hub_copy.is_dir():
            raise CxlnetError(f"model.pretrained={path_setting}: not in {hub_copy.parent}; "
                              f"`cxlnet download {hub_copy.name}` fetches it, or give a local path")
        path = hub_copy
    if not path.exists():
        raise CxlnetError(f"model.pretrained={path_setting}: no such file or directory")
    return path


def resolve_pretrained(path_setting: str) -> Path:
    """Turn `model.pretrained` into a weights directory.

    * a cxlnet run dir (finetune or `cxlnet train`) -> its exported `model/`;
    * a `cxlnet train` run dir without `model/` yet (still running, or killed) -> its
      `checkpoints/last.ckpt`, exported as below;
    * a `cxlnet train` `.ckpt` -> exported once to Hugging Face format in the download cache
      (`<cache>/exported/<run>-<ckpt>-<hash of path, size, mtime>`), reused while the file is unchanged;
    * a hub-style name such as `hfl/chinese-xlnet-mid` -> `cxlnet download`'s copy in the cache;
    * anything else (HF dir, hfl TF checkpoint dir or prefix) as is.
    """
    path = pretrained_source(path_setting)
    if path.is_dir() and (path / "model" / "config.json").is_file():
        return path / "model"
    if path.is_dir() and (path / "checkpoints" / "last.ckpt").is_file() and not (path / "config.json").is_file():
        path = path / "checkpoints" / "last.ckpt"
    if path.is_file() and path.suffix == ".ckpt":
        from cxlnet.pretrain.commands import exported_checkpoint

        return exported_checkpoint(path)
    return path


def resolve_spiece(cfg: DictConfig) -> Path:
    """The SentencePiece model of a run: `model.spiece_model`, or with `auto` the `spiece.model`
    saved beside the weights of `model.pretrained` (a `cxlnet train` or `finetune` run, a
    checkpoint's export, hfl's directory), else `model.fallback_spiece_model` (hfl's)."""
    from cxlnet.paths import resolve_data_file
    from cxlnet.text import SPIECE_FILE

    setting = cfg.model.spiece_model
    if setting is None or str(setting) == "auto":
        if cfg.model.pretrained is not None:
            weights = resolve_pretrained(cfg.model.pretrained)
            own = (weights if weights.is_dir() else weights.parent) / SPIECE_FILE
            if own.is_file():
                log.info("tokenizer: %s (saved with model.pretrained)", own)
                return own
        setting = cfg.model.fallback_spiece_model
    return resolve_data_file(cfg.paths.data_dir, setting)


def model_settings(model_cfg: DictConfig, vocab_size: int, **run_overrides) -> tuple[dict, dict]:
    """The `model` group's `config` block as (the whole architecture, for a random initialisation;
    the run settings only, for a loaded checkpoint whose config.json decides the architecture).
    A null `vocab_size` is the tokenizer's; `run_overrides` (e.g. pre-training's mem_len) go into both."""
    from cxlnet.model.config import RUN_SETTINGS

    arch = dict(OmegaConf.to_container(model_cfg.config, resolve=True))
    arch["grad_checkpointing"] = bool(model_cfg.grad_checkpointing)
    arch.update(run_overrides)
    if arch.get("vocab_size") is None:
        arch["vocab_size"] = int(vocab_size)
    return arch, {k: v for k, v in arch.items() if k in RUN_SETTINGS}


def pretrained_origin(path_setting: str) -> str:
    """Where `model.pretrained` points, in words (the same cases as `resolve_pretrained`)."""
    from cxlnet.paths import cache_dir

    path = Path(path_setting).expanduser()
    if not path.exists() and str(path_setting).startswith("hfl/"):
        return f"published hfl weights (`cxlnet download` copy in {cache_dir() / 'pretrained'})"
    if path.is_dir() and (path / "model" / "config.json").is_file():
        return f"cxlnet run dir ({path / 'model'})"
    if path.is_dir() and (path / "checkpoints" / "last.ckpt").is_file() and not (path / "config.json").is_file():
        return f"pre-training checkpoint ({path / 'checkpoints' / 'last.ckpt'}, exported to the cache)"
    if path.is_file() and path.suffix == ".ckpt":
        return f"pre-training checkpoint ({path}, exported to the cache)"
    return f"weights directory or TF checkpoint ({path})"


def load_reported(cls, path_setting: str, chosen: dict | None, chosen_name: str, **kwargs):
    """`cls.from_pretrained(resolve_pretrained(path_setting), **kwargs)` that prints the provenance
    report (format, architecture vs `model=<chosen_name>`, tensors, heads) and logs it in one line."""
    from rich.console import Console

    from cxlnet.model.provenance import one_line as summary_line
    from cxlnet.model.provenance import report

    model = cls.from_pretrained(resolve_pretrained(path_setting), **kwargs)
    summary = model.load_summary
    Console().print(report(summary, str(path_setting), pretrained_origin(path_setting), chosen, chosen_name))
    log.info("%s", summary_line(summary, str(path_setting)))
    return model


def chosen_architecture(cfg: DictConfig, vocab_size: int, **overrides) -> dict:
    """The architecture `model=` asks for (`model.config`, with `overrides` applied), as config.json."""
    from cxlnet.model import XLNetConfig

    arch, _ = model_settings(cfg.model, vocab_size, **overrides)
    return XLNetConfig.from_dict(arch, source="model.config").to_dict()


def model_loader(cfg: DictConfig, vocab_size: int):
    """A function building `cls` from `model.pretrained`, or randomly initialised when it is unset
    (then with the tokenizer's `vocab_size` unless `model.config.vocab_size` is set)."""
    from cxlnet.model import XLNetConfig

    arch, run_settings = model_settings(cfg.model, vocab_size)

    def load(cls, **head_kwargs):
        if cfg.model.pretrained is None:
            log.warning("model.pretrained is not set: XLNet-%s starts from random initialisation", cfg.model.name)
            model = cls(XLNetConfig.from_dict(arch, source="model.config"), **head_kwargs)
        else:
            model = load_reported(cls, cfg.model.pretrained, chosen_architecture(cfg, vocab_size), cfg.model.name,
                                  **run_settings, **head_kwargs)
            check_architecture(cfg.model, model.config)
            if cfg.get("command") in ("eval", "predict") and cfg.task.kind in ("span", "classification"):
                check_task_head(cfg, model)  # fill-mask uses the pre-trained LM head
                warn_mean_summary_length(cfg, model)
        if model.config.vocab_size != vocab_size:
            raise CxlnetError(
                f"model vocab size {model.config.vocab_size} differs from the tokenizer's {vocab_size} "
                f"(model.spiece_model={cfg.model.get('spiece_model')})"
            )
        return model

    return load


ARCHITECTURE_FIELDS = ("n_layer", "d_model", "n_head", "d_head", "d_inner")


def _describe(config) -> str:
    return ", ".join(f"{k} {getattr(config, k)}" for k in ARCHITECTURE_FIELDS)


def _named_architecture(model_yaml: DictConfig):
    """The size fields a `model=` option states (its `config` block)."""
    from types import SimpleNamespace

    return SimpleNamespace(**{k: model_yaml.config[k] for k in ARCHITECTURE_FIELDS})


def _same_architecture(a, b) -> bool:
    return all(getattr(a, k) == getattr(b, k) for k in ARCHITECTURE_FIELDS)


def check_architecture(model_cfg: DictConfig, loaded) -> None:
    """Refuse weights whose architecture is not the chosen `model=` size: the run would train one
    model and label its results with another's name. The message names the size that fits."""
    from cxlnet.confdir import conf_dir

    expected = _named_architecture(model_cfg)
    if _same_architecture(expected, loaded):
        return
    fits = []
    for option in sorted((conf_dir() / "model").glob("*.yaml")):
        try:
            if _same_architecture(_named_architecture(OmegaConf.load(option)), loaded):
                fits.append(option.stem)
        except Exception:  # noqa: BLE001 - an option that does not describe a size is no hint
            continue
    hint = f"choose model={fits[0]}" if fits else "choose the model= size of these weights"
    raise CxlnetError(f"model.pretrained={model_cfg.pretrained}: {_describe(loaded)}, but model={model_cfg.name} is "
                      f"{_describe(expected)}; {hint}")


def check_task_head(cfg: DictConfig, model) -> None:
    """`eval` and `predict` score the fine-tuned head: weights without it (a pre-trained model, or
    one fine-tuned for a task of another kind) would score a randomly initialised head."""
    summary = getattr(model, "load_summary", None)
    missing = [head for head, state in summary.heads.items() if state == "initialised fresh"] if summary else []
    if missing:
        raise CxlnetError(
            f"model.pretrained={cfg.model.pretrained}: no {'/'.join(missing)} weights for a {cfg.task.kind} task "
            f"(task={cfg.task.name}); it is not a model fine-tuned for this task (give a `cxlnet finetune "
            f"task={cfg.task.name}` run)")


def warn_mean_summary_length(cfg: DictConfig, model) -> None:
    """summary_type "mean" averages the padding too (as the original's `reduce_mean`), so a head
    fine-tuned at one task.max_seq_length scores differently at another: warn when the run that
    trained it (its config.yaml beside the weights) used another length."""
    if not hasattr(model, "sequence_summary") or model.config.summary_type != "mean":
        return
    weights = resolve_pretrained(cfg.model.pretrained)
    record = next((p for p in (weights.parent / "config.yaml", weights / "config.yaml") if p.is_file()), None)
    trained = OmegaConf.select(OmegaConf.load(record), "task.max_seq_length") if record else None
    if trained is not None and int(trained) != int(cfg.task.max_seq_length):
        log.warning("summary_type 'mean' averages the padding too: %s was fine-tuned at task.max_seq_length=%d "
                    "(%s), this run uses %d; pass task.max_seq_length=%d for its own scores", cfg.model.pretrained,
                    int(trained), record, int(cfg.task.max_seq_length), int(trained))
