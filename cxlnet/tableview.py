"""Rendering of the experiment tables in Chinese-XLNet's layout: markdown, CSV and LaTeX.

A table is rows (BERT ... XLNet-mid as published, then ours such as "XLNet-mid (cxlnet)") by
columns (dev / test / challenge), each cell "max (mean)" for every metric of its column (EM / F1,
or accuracy). As in the original, the best value of each number of a column (max and mean of
each metric, separately; ties all) is bold. A cell without results is "–"; cells of columns scored
elsewhere (CMRC 2018's hidden test and challenge sets) come from the row's `scores:`, marked †.
"""
from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

from cxlnet.errors import CxlnetError, read_json
from cxlnet.sweep import aggregate, collect

NO_RESULT = "–"
SUPPLIED_MARK = "†"
_PART = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*\(\s*(-?\d+(?:\.\d+)?)\s*\)\s*$")

Cell = list[tuple[float, float]]  # (max, mean) per metric of the column


@dataclass
class Row:
    name: str
    ours: bool
    cells: dict[str, Cell | None]
    supplied: set[str] = field(default_factory=set)
    values: dict[str, dict[str, float]] = field(default_factory=dict)  # metric -> {run: value}
    runs: int = 0
    note: str = ""


def parse_cell(text, parts: int, where: str) -> Cell:
    """"66.8 (66.3) / 88.4 (88.1)" -> [(66.8, 66.3), (88.4, 88.1)]."""
    pieces = str(text).split("/")
    matches = [_PART.match(p) for p in pieces]
    if len(pieces) != parts or not all(matches):
        raise CxlnetError(f"{where}: {text!r} is not {' / '.join(['max (mean)'] * parts)}")
    return [(float(m.group(1)), float(m.group(2))) for m in matches]


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()


def row_dir(results: Path, table_id: str, row: dict) -> Path:
    return results / table_id / slug(row["name"])


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def hardware_text(hw: dict) -> str:
    """`1x NVIDIA H100 80GB HBM3` or `CPU AMD EPYC (2 cores)`, from a run record's `hardware`."""
    if hw.get("accelerator") == "gpu" and hw.get("gpus"):
        count = hw["devices"] if isinstance(hw.get("devices"), int) else len(hw["gpus"])
        return f"{count}x {hw['gpus'][0]}"
    if hw.get("accelerator") == "tpu":
        return f"TPU ({hw.get('devices')} devices)"
    return f"CPU {hw.get('cpu')} ({hw.get('usable_cores') or hw.get('cores')} cores)"


def versions_text(record: dict) -> str:
    git, versions = record.get("git") or {}, record.get("versions") or {}
    cxlnet = (git["commit"][:7] + ("+dirty" if git.get("dirty") else "")) if git.get("commit") else versions.get("cxlnet")
    return ", ".join(f"{name} {value}" for name, value in (("cxlnet", cxlnet), ("torch", versions.get("torch")),
                     ("lightning", versions.get("lightning")), ("python", versions.get("python"))) if value)


def provenance(sweep: Path, records: list[dict]) -> str:
    """Where the row's runs are, how long they took, on what and with which versions (from each
    run's `run_record.json`)."""
    from cxlnet.record import RECORD

    seconds = sum(float(r.get("seconds", 0)) for r in records)
    run_records = [read_json(sweep / r["run"] / RECORD) for r in records if (sweep / r["run"] / RECORD).is_file()]
    hardware = sorted({hardware_text(r.get("hardware") or {}) for r in run_records}) or ["hardware not recorded"]
    versions = sorted({versions_text(r) for r in run_records} - {""})
    return (f"{len(records)} seeds in `{sweep}`, {_hours(seconds)} in total ({_hours(seconds / len(records))} per seed) "
            f"on {'; '.join(hardware)}; {'; '.join(versions) or 'versions not recorded'}")


def our_row(table_id: str, spec: dict, row: dict, results: Path) -> Row:
    sweep = row_dir(results, table_id, row)
    external = set(spec.get("external", []))
    cells: dict[str, Cell | None] = {}
    for column in external & set(row.get("scores", {})):
        cells[column] = parse_cell(row["scores"][column], len(spec["columns"][column]), f"{row['name']}: scores.{column}")
    out = Row(row["name"], ours=True, cells=cells, supplied=set(cells))
    runs = collect(sweep)[0] if sweep.is_dir() else []
    if not runs:
        out.note = "no finished runs yet (`cxlnet table run`)"
        return out
    summary = aggregate(sweep, quiet=True)
    if summary["metrics"] is None:
        out.note = f"`{sweep}` holds {len(summary['groups'])} configurations: not shown (`cxlnet aggregate {sweep}`)"
        return out
    stats = summary["metrics"]
    for column, metrics in spec["columns"].items():
        if column not in external and all(m in stats for m in metrics):
            cells[column] = [(round(stats[m]["max"], 1), round(stats[m]["mean"], 1)) for m in metrics]
    out.values = {m: s["values"] for m, s in stats.items()}
    out.runs = len(runs)
    out.note = provenance(sweep, runs)
    return out


def build_rows(table_id: str, spec: dict, results: Path) -> list[Row]:
    rows = []
    for row in spec["rows"]:
        if "overrides" in row:
            rows.append(our_row(table_id, spec, row, results))
        else:
            published = row.get("published") or {}
            rows.append(Row(row["name"], ours=False, cells={
                c: parse_cell(published[c], len(m), f"{row['name']}: published.{c}") if published.get(c) else None
                for c, m in spec["columns"].items()}))
    return rows


def best_values(rows: list[Row], columns: dict) -> dict[str, list[tuple[float, float]]]:
    """Per column, the best max and the best mean of each metric over every row with a cell."""
    best = {}
    for column, metrics in columns.items():
        cells = [r.cells[column] for r in rows if r.cells.get(column)]
        best[column] = [(max(c[i][0] for c in cells), max(c[i][1] for c in cells)) if cells else (None, None)
                        for i in range(len(metrics))]
    return best


def cell_text(row: Row, column: str, best: dict, bold) -> str:
    cell = row.cells.get(column)
    if not cell:
        return NO_RESULT
    parts = []
    for (top, mean), (best_top, best_mean) in zip(cell, best[column]):
        top_text = bold(f"{top:.1f}") if top == best_top else f"{top:.1f}"
        mean_text = bold(f"{mean:.1f}") if mean == best_mean else f"{mean:.1f}"
        parts.append(f"{top_text} ({mean_text})")
    return " / ".join(parts) + (SUPPLIED_MARK if column in row.supplied else "")


def seeds_phrase(spec: dict, rows: list[Row]) -> str:
    """"max (mean) over 10 seeds", naming our rows that used another number of seeds."""
    published = int(spec.get("seeds", 10))
    others = [f"{r.name}: {r.runs}" for r in rows if r.ours and r.runs and r.runs != published]
    return f"max (mean) over {published} seeds" + (f" ({'; '.join(others)})" if others else "")


def heading(spec: dict, rows: list[Row]) -> str:
    metric = f" ({spec['metric']})" if spec.get("metric") else ""
    return f"{spec['title']}{metric}: {seeds_phrase(spec, rows)}"


def markdown(spec: dict, rows: list[Row], links: str = "") -> str:
    columns = list(spec["columns"])
    best = best_values(rows, spec["columns"])
    lines = [f"## {heading(spec, rows)}", ""]
    lines += ["| Model | " + " | ".join(columns) + " |", "| :--- |" + " :---: |" * len(columns)]
    for row in rows:
        cells = [cell_text(row, c, best, lambda s: f"**{s}**") for c in columns]
        lines.append(f"| {row.name} | " + " | ".join(cells) + " |")
    lines.append("")
    notes = [f"- {row.name}: {row.note}" for row in rows if row.ours]
    if any(row.supplied for row in rows):
        notes.append(f"- {SUPPLIED_MARK} scored by the organisers (hidden test set), as supplied in the table's `scores:`")
    if spec.get("external"):
        notes.append(f"- {', '.join(spec['external'])}: hidden sets scored by the organisers only; our cells there "
                     f"are \"{NO_RESULT}\" unless a score is supplied")
    lines += notes + ([""] if notes else [])
    if links:
        lines += [links, ""]
    return "\n".join(lines)


def to_csv(spec: dict, rows: list[Row]) -> str:
    """One line per row: every max and mean as a number (empty without a result), then the notes."""
    header = ["model", "source", "seeds"]
    for column, metrics in spec["columns"].items():
        for metric in metrics:
            header += [f"{column}:{metric}:max", f"{column}:{metric}:mean"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header + ["supplied", "notes"])
    for row in rows:
        numbers = []
        for column, metrics in spec["columns"].items():
            cell = row.cells.get(column) or [("", "")] * len(metrics)
            numbers += [v for part in cell for v in part]
        source = "cxlnet" if row.ours else "published"
        writer.writerow([row.name, source, row.runs if row.ours else spec.get("seeds", 10), *numbers,
                         " ".join(sorted(row.supplied)), row.note])
    return buffer.getvalue()


def latex_escape(text: str) -> str:
    return re.sub(r"([&%$#_{}])", r"\\\1", text).replace("~", r"\textasciitilde{}").replace("–", "--")


def to_latex(spec: dict, rows: list[Row]) -> str:
    """A booktabs table; our rows below a rule, the best numbers in \\textbf."""
    columns = list(spec["columns"])
    best = best_values(rows, spec["columns"])
    lines = [f"% {spec['title']}: generated by `cxlnet table render` (needs \\usepackage{{booktabs}})",
             r"\begin{table}[t]", r"\centering",
             rf"\caption{{{latex_escape(heading(spec, rows))}.}}",
             r"\begin{tabular}{l" + "c" * len(columns) + "}", r"\toprule",
             "Model & " + " & ".join(latex_escape(c) for c in columns) + r" \\", r"\midrule"]
    previous_ours = False
    for row in rows:
        if row.ours and not previous_ours and row is not rows[0]:
            lines.append(r"\midrule")
        previous_ours = row.ours
        # cell text is numbers, brackets and slashes: only the dash needs LaTeX's spelling
        cells = [cell_text(row, c, best, lambda s: f"\\textbf{{{s}}}").replace(NO_RESULT, "--") for c in columns]
        lines.append(latex_escape(row.name) + " & " + " & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(lines).replace(SUPPLIED_MARK, r"$^\dagger$")
