"""Seed sweeps summarised the Chinese-XLNet way: each metric as "max (mean)" over the runs of one
configuration.

Every run records a hash of its configuration without the seed (and without paths, run names and
the logger, which do not change a result) in `metrics.json`. A sweep's runs are grouped by that
hash, so `-m sweep=seeds3 optimizer.optim.lr=2e-5,3e-5` gives two groups, each with its own
max (mean) / std / per-seed values. The summary is rebuilt from the per-run files, so a failed seed
never loses the others: every finished or failed job refreshes `summary.json`, and
`cxlnet aggregate SWEEP_DIR` rebuilds it at any time.

Running into an existing sweep resumes it: a seed that finished with the same configuration is
skipped, and one that finished with another configuration is refused (see `check_resume`).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import statistics
import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from cxlnet.errors import CxlnetError, atomic_write_json, read_json

log = logging.getLogger(__name__)

# Left out of the configuration hash: the seed (what a sweep varies), where files go, the run's
# name (it carries the seed), the logger and the progress bar (they record a run, not change it).
UNHASHED_KEYS = ("seed", "run_name", "paths", "logger", "trainer.enable_progress_bar")
# Left out of a run's group label for the same reasons.
UNLABELLED_PREFIXES = ("seed=", "paths.", "logger=", "logger.", "trainer.enable_progress_bar=")
ERROR_FILE = "error.json"


class ConfigMismatch(CxlnetError):
    """Running into a sweep whose finished runs used another configuration: refused for the whole sweep."""


def config_hash(cfg: DictConfig) -> str:
    """sha256 (16 hex digits) of the resolved configuration minus `UNHASHED_KEYS`."""
    container = OmegaConf.to_container(cfg, resolve=True)
    for dotted in UNHASHED_KEYS:
        *parents, leaf = dotted.split(".")
        node = container
        for key in parents:
            node = node.get(key, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(leaf, None)
    text = json.dumps(container, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def group_overrides(overrides: list[str]) -> list[str]:
    """The overrides that tell one configuration of a sweep from another (no seed, paths, logger)."""
    return sorted(o for o in overrides if not o.startswith(UNLABELLED_PREFIXES) and not o.startswith("hydra."))


def recorded_overrides(run: Path) -> list[str]:
    path = run / ".hydra" / "overrides.yaml"
    return group_overrides([str(o) for o in OmegaConf.load(path)]) if path.is_file() else []


def max_mean(values: list[float]) -> str:
    return f"{max(values):.1f} ({statistics.fmean(values):.1f})"


def read_record(metrics: Path) -> dict:
    record = read_json(metrics)
    scores = record.get("metrics") if isinstance(record, dict) else None
    if not isinstance(scores, dict) or not all(isinstance(v, (int, float)) for v in scores.values()):
        raise CxlnetError(f"{metrics}: not a cxlnet metrics file (needs \"metrics\": {{name: number}})")
    return record


def collect(sweep: Path) -> tuple[list[dict], list[str], dict[str, str]]:
    """Finished runs (their metrics.json records, with the run's overrides), the names of runs that
    started but did not finish, and the recorded error of those that failed with one."""
    runs, failed, errors = [], [], {}
    for sub in run_dirs(sweep):
        name, metrics = run_name(sweep, sub), sub / "metrics.json"
        if metrics.is_file():
            runs.append({"run": name, "overrides": recorded_overrides(sub), **read_record(metrics)})
        else:
            failed.append(name)
            if (sub / ERROR_FILE).is_file():
                errors[name] = str(read_json(sub / ERROR_FILE).get("error", ""))
    return runs, failed, errors


def run_dirs(sweep: Path) -> list[Path]:
    """The runs of a sweep: directories with a metrics.json, an error record or Hydra's .hydra
    record. Usually `seed=N`; a swept value holding a `/` (a path) nests them deeper."""
    marks = [*sweep.rglob("metrics.json"), *sweep.rglob(ERROR_FILE), *sweep.rglob(".hydra")]
    return sorted({p.parent for p in marks if p.parent != sweep})


def run_name(sweep: Path, run: Path) -> str:
    """`seed=3`: a run's path inside its sweep (the whole path where `hydra.sweep.subdir` leads outside)."""
    return run.relative_to(sweep).as_posix() if run.is_relative_to(sweep) else run.as_posix()


def metric_stats(runs: list[dict]) -> dict:
    names = sorted({name for run in runs for name in run["metrics"]})
    metrics = {}
    for name in names:
        per_run = {run["run"]: run["metrics"][name] for run in runs if name in run["metrics"]}
        values = list(per_run.values())
        metrics[name] = {
            "max": max(values),
            "mean": round(statistics.fmean(values), 4),
            "std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
            "n": len(values),
            "formatted": max_mean(values),
            "values": per_run,
        }
    return metrics


def group_runs(runs: list[dict]) -> list[dict]:
    """One group per configuration hash (runs from before hashes: per override list), labelled by
    the overrides that differ between the groups."""
    by_key: dict[str, list[dict]] = {}
    for run in runs:
        key = run.get("config_hash") or "overrides:" + " ".join(run["overrides"])
        by_key.setdefault(key, []).append(run)
    shared = set.intersection(*(set(g[0]["overrides"]) for g in by_key.values())) if by_key else set()
    groups = []
    for key, members in by_key.items():
        label = " ".join(o for o in members[0]["overrides"] if o not in shared)
        groups.append({
            "label": label or ("all runs" if len(by_key) == 1 else f"config {key[:8]}"),
            "config_hash": members[0].get("config_hash"),
            "overrides": members[0]["overrides"],
            "runs": [run["run"] for run in members],
            "seeds": [run.get("seed") for run in members],
            "metrics": metric_stats(members),
        })
    return sorted(groups, key=lambda g: g["label"])


def summarize(runs: list[dict], failed: list[str], errors: dict[str, str] | None = None) -> dict:
    """The sweep's summary. `metrics` is the single group's (None when the sweep holds several
    configurations: one max (mean) over different learning rates would mean nothing)."""
    groups = group_runs(runs)
    first = runs[0] if runs else {}
    return {
        "task": first.get("task"),
        "model": first.get("model"),
        "runs": [run["run"] for run in runs],
        "seeds": [run.get("seed") for run in runs],
        "failed": failed,
        "errors": errors or {},
        "groups": groups,
        "metrics": groups[0]["metrics"] if len(groups) == 1 else None,
    }


def print_summary(summary: dict, title: str) -> None:
    """One row per configuration: runs, then "max (mean) ±std" of every metric."""
    from rich.console import Console
    from rich.table import Table

    names = sorted({name for group in summary["groups"] for name in group["metrics"]})
    table = Table(title=title, caption="max (mean) ±std per configuration")
    table.add_column("configuration")
    table.add_column("runs", justify="right")
    for name in names:
        table.add_column(name, justify="right")
    for group in summary["groups"]:
        cells = [f"{s['formatted']} ±{s['std']:.2f}" if (s := group["metrics"].get(name)) else "–" for name in names]
        table.add_row(group["label"], str(len(group["runs"])), *cells)
    console = Console()
    console.print(table)
    for run in summary["failed"]:
        reason = summary["errors"].get(run, "no metrics.json (still running, or killed)")
        console.print(f"[red]{run}: {reason}[/red]", highlight=False)


def refresh(sweep: Path) -> dict | None:
    """Rewrite `summary.json` from the runs on disk; None (and nothing written) for an empty sweep."""
    runs, failed, errors = collect(sweep)
    if not runs and not failed:
        return None
    summary = summarize(runs, failed, errors)
    atomic_write_json(sweep / "summary.json", summary)
    return summary


def aggregate(sweep: str | Path, quiet: bool = False) -> dict:
    sweep = Path(sweep)
    if not sweep.is_dir():
        raise CxlnetError(f"{sweep}: not a directory")
    summary = refresh(sweep)
    if summary is None or not summary["runs"]:
        raise CxlnetError(f"{sweep}: no finished runs (no */metrics.json)")
    if not quiet:
        print_summary(summary, f"{summary['task']} / {summary['model']}: {sweep}")
    return summary


def record_failure(sweep: Path, run_dir: Path, message: str) -> None:
    """Mark a run of a sweep as failed (with its one-line reason) and refresh the sweep's summary."""
    if not (run_dir / "metrics.json").exists():
        atomic_write_json(run_dir / ERROR_FILE, {"error": message})
    refresh(sweep)


def _remove_fresh_run_dir(run_dir: Path) -> None:
    """A refused job leaves no trace: remove the directory Hydra made for it (its .hydra record and log)."""
    if run_dir.is_dir() and all(p.name == ".hydra" or p.suffix == ".log" for p in run_dir.iterdir()):
        shutil.rmtree(run_dir)


def check_resume(digest: str, sweep: Path, run_dir: Path, overrides: list[str]) -> dict | None:
    """For a job of a sweep: the finished record to keep (its directory holds a run of the same
    configuration), or None to run it. Raises ConfigMismatch when the job's directory, or a
    finished run of the sweep with the same overrides, holds another configuration."""
    metrics = run_dir / "metrics.json"
    if metrics.is_file():
        record = read_record(metrics)
        if record.get("config_hash") == digest:
            return record
        raise ConfigMismatch(
            f"{run_dir}: finished with another configuration (hash {record.get('config_hash') or 'not recorded'}, "
            f"this one {digest}); choose another hydra.sweep.dir, or remove the finished runs to redo them")
    mine = group_overrides(overrides)
    for other in run_dirs(sweep):
        if not (other / "metrics.json").is_file() or recorded_overrides(other) != mine:
            continue
        record = read_record(other / "metrics.json")
        if record.get("config_hash") != digest:
            _remove_fresh_run_dir(run_dir)
            raise ConfigMismatch(
                f"{other}: the sweep's finished runs of these overrides used another configuration "
                f"(hash {record.get('config_hash') or 'not recorded'}, this one {digest}); "
                f"choose another hydra.sweep.dir, or remove the finished runs to redo them")
    return None


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="cxlnet aggregate", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", nargs="+", help="multirun directories holding one sub-directory per run")
    args = parser.parse_args(argv)
    for sweep in args.sweep_dir:
        aggregate(sweep)
    return 0


class SweepSummary(Callback):
    """Hydra callback: at the end of a sweep, print one max (mean) row per configuration, then one
    line per failed run, and exit non-zero if any failed (a failed job does not stop the others)."""

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep = Path(config.hydra.sweep.dir)
        summary = refresh(sweep) if sweep.is_dir() else None
        if summary is None:
            return
        if summary["runs"]:
            print_summary(summary, f"{summary['task']} / {summary['model']}: {sweep}")
        if summary["failed"]:
            failed = "; ".join(f"{run}: {summary['errors'].get(run, 'no metrics.json')}" for run in summary["failed"])
            print(f"cxlnet {config.command}: error: {len(summary['failed'])} of "
                  f"{len(summary['failed']) + len(summary['runs'])} runs failed ({failed})", file=sys.stderr, flush=True)
            raise SystemExit(1)
