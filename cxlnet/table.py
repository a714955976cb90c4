"""`cxlnet table run|render`: reproduce Chinese-XLNet's result tables from declarative rows.

Each `experiments/<table>.yaml` lists rows (a model and its `cxlnet finetune` overrides) with the
published "max (mean)" cells. `run` fine-tunes every row over its seeds into
`experiments/results/<table>/<row>/seed=N`, skipping seeds that already finished (so an interrupted
table resumes, and finished metrics are never overwritten); a row with `pretrain: <stage>` first
needs that stage of the table's `pretrain_stages` (vocab / data / train overrides), which runs once
into `experiments/results/<table>/<stage>/` and is shared by every seed of every row naming it; `render` rebuilds each row's summary
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


ROW_KEYS = {"name", "overrides", "published", "seeds", "pretrain"}
# A pre-training stage: overrides of `cxlnet vocab` (optional: without it the store uses data's
# `data.spiece_model`), `cxlnet data` and `cxlnet train`, run once into results/<table>/<stage>/.
STAGE_KEYS = {"vocab", "data", "train"}


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
        stages = spec.get("pretrain_stages") or {}
        for name, stage in stages.items():
            unknown = set(stage or {}) - STAGE_KEYS
            if unknown or "train" not in (stage or {}) or "data" not in stage:
                raise CxlnetError(f"{path}: pretrain_stages.{name}: " + (
                    f"unknown keys {sorted(unknown)} (allowed: {', '.join(sorted(STAGE_KEYS))})" if unknown
                    else "needs `data` and `train` (lists of overrides; `vocab` is optional)"))
        for i, row in enumerate(spec["rows"]):
            unknown = set(row) - ROW_KEYS
            if unknown or "name" not in row:
                raise CxlnetError(f"{path}: row {i}: " + (f"unknown keys {sorted(unknown)} (allowed: "
                                  f"{', '.join(sorted(ROW_KEYS))})" if unknown else "missing `name`"))
            if "pretrain" in row and row["pretrain"] not in stages:
                raise CxlnetError(f"{path}: row {i}: pretrain: {row['pretrain']!r} is not one of pretrain_stages "
                                  f"({', '.join(stages) or 'none declared'})")
        tables.append((path.stem, spec))
    return tables


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()


def row_dir(results: Path, table_id: str, row: dict) -> Path:
    return results / table_id / slug(row["name"])


def finished_seeds(sweep: Path) -> set[int]:
    return {int(p.parent.name.split("=", 1)[1]) for p in sweep.glob("seed=*/metrics.json")}


def stage_dir(results: Path, table_id: str, stage: str) -> Path:
    return results / table_id / slug(stage)


def _cxlnet(command: str, *args: str) -> int:
    argv = [sys.executable, "-m", "cxlnet", command, *args]
    print("+", " ".join(argv[2:]), flush=True)
    return subprocess.run(argv, env={**os.environ, "CXLNET_COMMAND": command}).returncode


def run_stage(out: Path, stage: dict) -> int:
    """Pre-train once into `out`: `cxlnet vocab` (if the stage has `vocab`) into out/vocab, `cxlnet
    data` into out/store, `cxlnet train` with `out` as its run directory. A finished stage (its
    metrics.json) is skipped; an interrupted one resumes (a built store is kept, train resumes from
    out/checkpoints/last.ckpt). The rows naming the stage fine-tune from `model.pretrained=out`."""
    if (out / "metrics.json").is_file():
        print(f"{out}: pre-training finished")
        return 0
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    spiece = []
    if "vocab" in stage:
        vocab = out / "vocab" / "spiece"
        if not vocab.with_suffix(".model").is_file():
            if rc := _cxlnet("vocab", *stage["vocab"], f"vocab.output={vocab}", f"hydra.run.dir={out / 'logs'}"):
                return rc
        spiece = [f"data.spiece_model={vocab.with_suffix('.model')}"]
    store = out / "store"
    if not (store / "store.json").is_file():
        if rc := _cxlnet("data", *stage["data"], *spiece, f"data.out_dir={store}", f"hydra.run.dir={out / 'logs'}"):
            return rc
    return _cxlnet("train", *stage["train"], f"data.store={store}", f"hydra.run.dir={out}")


def run_row(sweep: Path, row: dict, extra: list[str], pretrained: Path | None = None) -> int:
    seeds = [s for s in range(int(row.get("seeds", 10))) if s not in finished_seeds(sweep)]
    if not seeds:
        print(f"{sweep}: all seeds finished")
        return 0
    start = [] if pretrained is None else [f"model.pretrained={pretrained.resolve()}"]
    return _cxlnet("finetune", "-m", *row["overrides"], *start, *extra, f"hydra.sweep.dir={sweep}",
                   "seed=" + ",".join(map(str, seeds)))


def run_table(table_id: str, spec: dict, results: Path, extra: list[str]) -> int:
    """Every row of one table (a row's pre-training stage first, once for all rows naming it);
    the number of rows (or stages) that failed."""
    failed, stages = 0, {}
    for row in spec["rows"]:
        name = row.get("pretrain")
        if name is not None and name not in stages:
            out = stage_dir(results, table_id, name)
            stages[name] = out if run_stage(out, spec["pretrain_stages"][name]) == 0 else None
            failed += stages[name] is None
        if name is not None and stages[name] is None:
            print(f"{row['name']}: skipped (pre-training stage {name!r} failed)")
            continue
        failed += run_row(row_dir(results, table_id, row), row, extra, stages.get(name)) != 0
    return failed


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
            failed += run_table(table_id, spec, results, args.overrides)
    print(render(load_tables(base) if args.target.is_file() else tables, results, args.out or base / "RESULTS.md"))
    return 1 if failed else 0
