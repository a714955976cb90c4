"""`cxlnet table run|render`: reproduce Chinese-XLNet's result tables from declarative rows.

Each `experiments/<table>.yaml` lists rows (a model and its `cxlnet finetune` overrides) with the
published "max (mean)" cells. `run` fine-tunes every row over its seeds into
`experiments/results/<table>/<row>/seed=N`, skipping seeds that already finished (so an interrupted
table resumes, and finished metrics are never overwritten); `render` rebuilds each row's summary
from those runs and writes `experiments/RESULTS.md` with the published and our numbers side by side.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

from omegaconf import OmegaConf

from cxlnet.errors import CxlnetError, atomic_write_text
from cxlnet.sweep import aggregate


ROW_KEYS = {"name", "overrides", "published", "seeds"}


def load_tables(target: Path) -> list[tuple[str, dict]]:
    """(table id, spec) for a YAML file or every YAML file of a directory."""
    paths = sorted(target.glob("*.yaml")) if target.is_dir() else [target]
    if not paths or not all(p.is_file() for p in paths):
        raise CxlnetError(f"{target}: no experiment tables (*.yaml)")
    tables = []
    for path in paths:
        spec = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        for key in ("title", "columns", "rows"):
            if key not in spec:
                raise CxlnetError(f"{path}: missing `{key}`")
        for i, row in enumerate(spec["rows"]):
            unknown = set(row) - ROW_KEYS
            if unknown or "name" not in row:
                raise CxlnetError(f"{path}: row {i}: " + (f"unknown keys {sorted(unknown)} (allowed: "
                                  f"{', '.join(sorted(ROW_KEYS))})" if unknown else "missing `name`"))
        tables.append((path.stem, spec))
    return tables


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()


def row_dir(results: Path, table_id: str, row: dict) -> Path:
    return results / table_id / slug(row["name"])


def finished_seeds(sweep: Path) -> set[int]:
    return {int(p.parent.name.split("=", 1)[1]) for p in sweep.glob("seed=*/metrics.json")}


def run_row(sweep: Path, row: dict, extra: list[str]) -> int:
    seeds = [s for s in range(int(row.get("seeds", 10))) if s not in finished_seeds(sweep)]
    if not seeds:
        print(f"{sweep}: all seeds finished")
        return 0
    command = [sys.executable, "-m", "cxlnet", "finetune", "-m", *row["overrides"], *extra,
               f"hydra.sweep.dir={sweep}", "seed=" + ",".join(map(str, seeds))]
    print("+", " ".join(command[2:]))
    return subprocess.run(command, env={**os.environ, "CXLNET_COMMAND": "finetune"}).returncode


def cell(summary: dict | None, metrics: list[str]) -> str:
    if not summary or not all(m in summary["metrics"] for m in metrics):
        return "–"
    return " / ".join(summary["metrics"][m]["formatted"] for m in metrics)


def render(tables: list[tuple[str, dict]], results: Path, out: Path) -> str:
    lines = ["# Results", "", "Each cell is max (mean) over seeds, as in Chinese-XLNet's tables. "
             "Regenerate with `make reproduce-table`.", ""]
    for table_id, spec in tables:
        columns = list(spec["columns"])
        lines += [f"## {spec['title']}", ""]
        header = ["model"] + [f"{c} (published)" for c in columns] + [f"{c} (cxlnet)" for c in columns] + ["runs"]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in spec["rows"]:
            sweep = row_dir(results, table_id, row)
            summary = aggregate(sweep, quiet=True) if sweep.is_dir() and finished_seeds(sweep) else None
            published = [str(row.get("published", {}).get(c, "–")) for c in columns]
            ours = [cell(summary, spec["columns"][c]) for c in columns]
            runs = str(len(summary["runs"])) if summary else "0"
            lines.append("| " + " | ".join([row["name"], *published, *ours, runs]) + " |")
        lines.append("")
    text = "\n".join(lines)
    atomic_write_text(out, text)
    return text


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="cxlnet table", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["run", "render"])
    parser.add_argument("target", type=Path, help="an experiments/*.yaml table or the experiments/ directory")
    parser.add_argument("--results", type=Path, default=None, help="default: <experiments dir>/results")
    parser.add_argument("--out", type=Path, default=None, help="default: <experiments dir>/RESULTS.md")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every row")
    args = parser.parse_intermixed_args(argv)  # overrides before or after the options
    base = args.target if args.target.is_dir() else args.target.parent
    results = args.results or base / "results"
    tables = load_tables(args.target)
    failed = 0
    if args.action == "run":
        for table_id, spec in tables:
            for row in spec["rows"]:
                failed += run_row(row_dir(results, table_id, row), row, args.overrides) != 0
    print(render(load_tables(base) if args.target.is_file() else tables, results, args.out or base / "RESULTS.md"))
    return 1 if failed else 0
