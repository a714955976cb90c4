"""Seed sweeps summarised the Chinese-XLNet way: each metric as "max (mean)" over the runs.

The summary is rebuilt from the per-run `metrics.json` files, so a failed seed never loses the
others: every finished job refreshes `summary.json`, and `cxlnet aggregate SWEEP_DIR` rebuilds it
at any time (for instance after re-running one seed into `SWEEP_DIR/seed=N`).
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from hydra.experimental.callback import Callback

from cxlnet.errors import CxlnetError, atomic_write_json, read_json


def max_mean(values: list[float]) -> str:
    return f"{max(values):.1f} ({statistics.fmean(values):.1f})"


def collect(sweep: Path) -> tuple[list[dict], list[str]]:
    """Finished runs (their metrics.json records) and the names of runs that started but did not finish."""
    runs, failed = [], []
    for sub in sorted(p for p in sweep.iterdir() if p.is_dir()):
        metrics = sub / "metrics.json"
        if metrics.is_file():
            record = read_json(metrics)
            scores = record.get("metrics") if isinstance(record, dict) else None
            if not isinstance(scores, dict) or not all(isinstance(v, (int, float)) for v in scores.values()):
                raise CxlnetError(f"{metrics}: not a cxlnet metrics file (needs \"metrics\": {{name: number}})")
            runs.append({"run": sub.name, **record})
        elif (sub / ".hydra").is_dir():
            failed.append(sub.name)
    return runs, failed


def summarize(runs: list[dict], failed: list[str]) -> dict:
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
    first = runs[0] if runs else {}
    return {
        "task": first.get("task"),
        "model": first.get("model"),
        "runs": [run["run"] for run in runs],
        "seeds": [run.get("seed") for run in runs],
        "failed": failed,
        "metrics": metrics,
    }


def print_summary(summary: dict, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("metric")
    table.add_column("max (mean)", justify="right")
    table.add_column("std", justify="right")
    table.add_column("runs", justify="right")
    for name, stats in summary["metrics"].items():
        table.add_row(name, stats["formatted"], f"{stats['std']:.2f}", str(stats["n"]))
    console = Console()
    console.print(table)
    if summary["failed"]:
        console.print(f"[red]unfinished runs (no metrics.json): {', '.join(summary['failed'])}[/red]")


def aggregate(sweep: str | Path, quiet: bool = False) -> dict:
    sweep = Path(sweep)
    if not sweep.is_dir():
        raise CxlnetError(f"{sweep}: not a directory")
    runs, failed = collect(sweep)
    if not runs:
        raise CxlnetError(f"{sweep}: no finished runs (no */metrics.json)")
    summary = summarize(runs, failed)
    atomic_write_json(sweep / "summary.json", summary)
    if not quiet:
        print_summary(summary, f"{summary['task']} / {summary['model']}: {sweep}")
    return summary


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="cxlnet aggregate", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", nargs="+", help="multirun directories holding one sub-directory per run")
    args = parser.parse_args(argv)
    for sweep in args.sweep_dir:
        aggregate(sweep)
    return 0


class SweepSummary(Callback):
    """Hydra callback: print the max (mean) table once every run of a sweep has finished.

    Hydra skips `on_multirun_end` when a run failed; the per-run refresh and `cxlnet aggregate`
    cover that case.
    """

    def on_multirun_end(self, config, **kwargs) -> None:
        aggregate(config.hydra.sweep.dir)
