"""`cxlnet table run|render`: reproduce Chinese-XLNet's result tables from declarative rows.

Each `experiments/<table>.yaml` holds the published rows of one of Chinese-XLNet's tables (BERT ...
XLNet-mid, cells copied from the paper) and our rows (a `cxlnet finetune` preset and its seeds):

    title: CMRC 2018              # required
    metric: EM / F1               # what a cell holds (optional)
    seeds: 10                     # seeds of our rows, and the published rows' number of runs
    columns:                      # required: column -> the metrics.json keys of its cell
      dev: [dev/em, dev/f1]
      test: [test/em, test/f1]
    external: [test]              # columns scored elsewhere (hidden sets): our rows' cells come from `scores:`
    rows:                         # required
      - {name: BERT, published: {dev: 65.5 (64.4) / 84.5 (84.0), test: ...}}
      - name: XLNet-mid (cxlnet)
        overrides: [experiment=cmrc2018_mid, hardware=gpu]
        seeds: 10                 # optional, this row's number of seeds
        scores: {test: ...}       # optional, the organisers' score of an external column

`run` fine-tunes every row of ours over its seeds into `<results>/<table>/<row>/seed=N`. Before
launching a row it composes the row's configuration and checks what the row needs (a GPU, the
weights, the data files): a row that cannot run is skipped with one line. Seeds that finished with
the same configuration are kept (an interrupted table resumes); a row whose finished seeds used
another configuration is refused. `render` rebuilds every table from the runs on disk: markdown,
CSV, LaTeX and a PNG of the per-seed scores per table, and one markdown file with all tables.

A table may declare `pretrain_stages` (overrides of `cxlnet vocab` (optional), `cxlnet data` and
`cxlnet train`); a row with `pretrain: <stage>` fine-tunes from that stage, which runs once into
`<results>/<table>/<stage>/` (a finished stage is skipped, an interrupted one resumes) and is
shared by every seed of every row naming it.

A profile (`--profile smoke|paper`, `experiments/profiles/*.yaml`) adds overrides to every row and
picks the results directory, so a smoke run never mixes with paper results.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from omegaconf import OmegaConf

from cxlnet.errors import CxlnetError, atomic_write_text, one_line
from cxlnet.sweep import aggregate, collect, config_hash
from cxlnet.tableview import build_rows, markdown, parse_cell, row_dir, slug, to_csv, to_latex

TABLE_KEYS = {"title", "metric", "seeds", "columns", "external", "rows", "pretrain_stages"}
# `pretrain` (with the table's `pretrain_stages`) names the pre-training stage a row fine-tunes.
ROW_KEYS = {"name", "overrides", "published", "seeds", "scores", "pretrain"}
PROFILE_KEYS = {"description", "results", "out", "seeds", "overrides", "plot_published", "pretrain_stages"}
# A pre-training stage: overrides of `cxlnet vocab` (optional: without it the store uses data's
# `data.spiece_model`), `cxlnet data` and `cxlnet train`, run once into results/<table>/<stage>/.
STAGE_KEYS = {"vocab", "data", "train"}


def _check(ok: bool, where: str, message: str) -> None:
    if not ok:
        raise CxlnetError(f"{where}: {message}")


def _is_str_list(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def validate_row(path: Path, spec: dict, i: int, row) -> None:
    where = f"{path}: row {i}"
    _check(isinstance(row, dict), where, "expected a mapping with `name`")
    unknown = set(row) - ROW_KEYS
    _check(not unknown, where, f"unknown keys {sorted(unknown)} (allowed: {', '.join(sorted(ROW_KEYS))})")
    _check(isinstance(row.get("name"), str) and row["name"], where, "missing `name`")
    where = f"{path}: row {i} ({row['name']})"
    ours = "overrides" in row
    _check(not (ours and "published" in row), where, "`published` and `overrides` both set: a published row has no "
           "runs; give our runs their own row (e.g. \"XLNet-mid (cxlnet)\")")
    if ours:
        _check(_is_str_list(row["overrides"]), where, "`overrides` must be a list of Hydra overrides")
    for key, allowed in (("published", set(spec["columns"])), ("scores", set(spec.get("external", [])))):
        cells = row.get(key)
        if cells is None:
            continue
        _check(isinstance(cells, dict), where, f"`{key}` must map columns to \"max (mean)\" cells")
        _check(key != "scores" or ours, where, "`scores` belong to our rows (with `overrides`)")
        extra = set(cells) - allowed
        _check(not extra, where, f"`{key}` names {sorted(extra)}, not among "
               + (f"the columns {sorted(allowed)}" if key == "published" else f"the external columns {sorted(allowed)}"))
    seeds = row.get("seeds", 1)
    _check(isinstance(seeds, int) and not isinstance(seeds, bool) and seeds > 0, where,
           f"seeds={seeds!r}: expected a positive integer")
    if "pretrain" in row:
        stages = spec.get("pretrain_stages") or {}
        _check(isinstance(row["pretrain"], str) and row["pretrain"] in stages, f"{path}: row {i}",
               f"pretrain: {row['pretrain']!r} is not one of pretrain_stages ({', '.join(stages) or 'none declared'})")


def validate_stages(path: Path, stages) -> None:
    _check(isinstance(stages, dict), f"{path}: pretrain_stages", "expected stage name: {data: [...], train: [...]}")
    for name, stage in stages.items():
        where = f"{path}: pretrain_stages.{name}"
        _check(isinstance(stage, dict), where, "expected a mapping of vocab / data / train overrides")
        unknown = set(stage) - STAGE_KEYS
        _check(not unknown, where, f"unknown keys {sorted(unknown)} (allowed: {', '.join(sorted(STAGE_KEYS))})")
        _check("train" in stage and "data" in stage, where, "needs `data` and `train` (lists of overrides; "
               "`vocab` is optional)")
        for key, overrides in stage.items():
            _check(_is_str_list(overrides), f"{where}.{key}", "expected a list of Hydra overrides")


def validate_table(path: Path, spec) -> None:
    _check(isinstance(spec, dict), str(path), "expected a mapping with title, columns and rows")
    for key in ("title", "columns", "rows"):
        _check(key in spec, str(path), f"missing `{key}`")
    unknown = set(spec) - TABLE_KEYS
    _check(not unknown, str(path), f"unknown keys {sorted(unknown)} (allowed: {', '.join(sorted(TABLE_KEYS))})")
    columns = spec["columns"]
    _check(isinstance(columns, dict) and columns and all(_is_str_list(m) and m for m in columns.values()),
           f"{path}: columns", "expected column: [metric, ...] (the metrics.json keys of its cell)")
    external = spec.get("external", [])
    _check(_is_str_list(external) and set(external) <= set(columns), f"{path}: external",
           f"expected a list of columns among {sorted(columns)}")
    _check(isinstance(spec["rows"], list), f"{path}: rows", "expected a list")
    seeds = spec.get("seeds", 10)
    _check(isinstance(seeds, int) and not isinstance(seeds, bool) and seeds > 0, f"{path}: seeds",
           f"{seeds!r}: expected a positive integer")
    if "pretrain_stages" in spec:
        validate_stages(path, spec["pretrain_stages"])
    for i, row in enumerate(spec["rows"]):
        validate_row(path, spec, i, row)
    dirs = [slug(row["name"]) for row in spec["rows"]]
    duplicates = sorted({row["name"] for row in spec["rows"] if dirs.count(slug(row["name"])) > 1})
    _check(not duplicates, f"{path}: rows", f"names {duplicates} share a results directory (each row needs its own)")
    for row in spec["rows"]:
        for key in ("published", "scores"):
            for column, text in (row.get(key) or {}).items():
                if text not in (None, ""):
                    parse_cell(text, len(columns[column]), f"{path}: {row['name']}: {key}.{column}")


def load_tables(target: Path) -> list[tuple[str, dict]]:
    """(table id, spec) for a YAML file or every YAML file of a directory, validated."""
    paths = sorted(target.glob("*.yaml")) if target.is_dir() else [target]
    if not paths or not all(p.is_file() for p in paths):
        raise CxlnetError(f"{target}: no experiment tables (*.yaml)")
    tables = []
    for path in paths:
        try:
            spec = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        except Exception as err:  # YAML syntax (yaml's or OmegaConf's error): one line naming the file
            raise CxlnetError(f"{path}: not a valid YAML table: {str(err).splitlines()[0]}") from None
        validate_table(path, spec)
        tables.append((path.stem, spec))
    return tables


def load_profile(base: Path, name: str | None) -> dict:
    """`experiments/profiles/<name>.yaml` (or a path): results directory, output, seeds, overrides.
    Without a name: `paper.yaml` where there is one, else the rows as declared into `results/`."""
    defaults = {"results": "results", "out": "RESULTS.md", "seeds": None, "overrides": [], "plot_published": True,
                "description": "", "pretrain_stages": True}
    path = Path(name) if name and name.endswith(".yaml") else base / "profiles" / f"{name or 'paper'}.yaml"
    if name is None and not path.is_file():
        return defaults
    if not path.is_file():
        known = sorted(p.stem for p in (base / "profiles").glob("*.yaml"))
        raise CxlnetError(f"--profile {name}: no {path} (profiles: {', '.join(known) or 'none'})")
    profile = OmegaConf.to_container(OmegaConf.load(path), resolve=False) or {}
    unknown = set(profile) - PROFILE_KEYS
    _check(not unknown, str(path), f"unknown keys {sorted(unknown)} (allowed: {', '.join(sorted(PROFILE_KEYS))})")
    _check(_is_str_list(profile.get("overrides", [])), f"{path}: overrides", "expected a list of Hydra overrides")
    return {**defaults, **profile}


def compose_row(overrides: list[str]):
    """The row's `cxlnet finetune` configuration, composed here as its jobs will compose it."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from cxlnet.confdir import conf_dir

    try:
        with initialize_config_dir(str(conf_dir()), version_base="1.3", job_name="table"):
            return compose("finetune", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as err:
        raise CxlnetError(f"cannot compose {' '.join(overrides)}: {str(err).splitlines()[0]}") from None


def check_requirements(cfg, row: dict) -> None:
    """What the row's jobs need before they start: a GPU if asked for, the weights (unless a
    pre-training stage of the table makes them) and the data files."""
    import torch

    from cxlnet.finetune import task_files
    from cxlnet.runs import pretrained_source, resolve_spiece

    if cfg.hardware.accelerator == "gpu" and not torch.cuda.is_available():
        raise CxlnetError("hardware=gpu: no CUDA GPU is visible")
    if "pretrain" not in row:  # a stage's run brings its own weights and tokenizer
        if cfg.model.pretrained is not None:
            pretrained_source(cfg.model.pretrained)
        resolve_spiece(cfg)
    task_files(cfg, train=True)


def run_row(label: str, sweep: Path, row: dict, seeds: int, overrides: list[str]) -> tuple[str, object]:
    """Run the row's unfinished seeds: (outcome, its configuration or None). Outcomes: ran, failed,
    done (nothing to run), skipped (a requirement is missing), refused (another configuration)."""
    try:
        cfg = compose_row(overrides)
        check_requirements(cfg, row)
    except CxlnetError as err:
        print(f"{label}: skipped: {one_line(err)}", flush=True)
        return "skipped", None
    digest = config_hash(cfg)
    runs = collect(sweep)[0] if sweep.is_dir() else []
    other = sorted({r["config_hash"] for r in runs if r.get("config_hash")} - {digest})
    unhashed = sum(not r.get("config_hash") for r in runs)
    if unhashed and not other:
        print(f"{label}: {unhashed} finished seeds in {sweep} record no configuration hash (written by an "
              f"older cxlnet): kept as they are, not compared", flush=True)
    if other:
        print(f"{label}: refused: the finished runs in {sweep} used another configuration (hash {', '.join(other)}, "
              f"this one {digest}); remove them, or pass --results DIR, to run this one", flush=True)
        return "refused", cfg
    finished = {r.get("seed") for r in runs}
    todo = [s for s in range(seeds) if s not in finished]
    if not todo:
        print(f"{label}: nothing to run: all {seeds} seeds finished in {sweep} with this configuration "
              f"(remove that directory, or pass --results DIR, to run them again)", flush=True)
        return "done", cfg
    print(f"{label}: running seeds {','.join(map(str, todo))} ({len(finished)} of {seeds} finished before)", flush=True)
    returncode = _cxlnet("finetune", "-m", *overrides, f"hydra.sweep.dir={sweep}", "seed=" + ",".join(map(str, todo)))
    return ("ran" if returncode == 0 else "failed"), cfg


def _cxlnet(command: str, *args: str) -> int:
    argv = [sys.executable, "-m", "cxlnet", command, *args]
    print("+", " ".join(argv[2:]), flush=True)
    return subprocess.run(argv, env={**os.environ, "CXLNET_COMMAND": command}).returncode


def stage_dir(results: Path, table_id: str, stage: str) -> Path:
    return results / table_id / slug(stage)


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


def stage_overrides(table_id: str, spec: dict, row: dict, results: Path, stages: dict) -> list[str] | None:
    """`model.pretrained=<stage dir>` for a row with `pretrain:` (its stage run first, once per
    table run), [] for a row without, None when the row's stage failed."""
    name = row.get("pretrain")
    if name is None:
        return []
    if name not in stages:
        out = stage_dir(results, table_id, name)
        stages[name] = out.resolve() if run_stage(out, spec["pretrain_stages"][name]) == 0 else None
    if stages[name] is None:
        print(f"{table_id} / {row['name']}: skipped (pre-training stage {name!r} failed)", flush=True)
        return None
    return [f"model.pretrained={stages[name]}"]


def send_wandb_summary(table_id: str, row: dict, sweep: Path, cfg) -> None:
    from cxlnet.wandb_summary import log_row_summary

    summary = aggregate(sweep, quiet=True)
    if summary["metrics"] is not None:
        run_id = log_row_summary(cfg.logger, table_id, row["name"], f"table-{table_id}", summary, sweep)
        print(f"{table_id} / {row['name']}: W&B summary run {run_id}", flush=True)


def render(tables: list[tuple[str, dict]], results: Path, out: Path, profile: dict | None = None) -> str:
    """Every table as markdown + CSV + LaTeX + PNG in `results/`, and all tables in `out`."""
    from cxlnet.tableplot import plot_table

    profile = profile or {"description": "", "plot_published": True}
    sections = ["# Results", "", "Chinese-XLNet's tables with our rows beside the published ones. Each cell is "
                "max (mean) over seeds; the best per column is bold. Regenerate with `make reproduce-table`.", ""]
    if profile["description"]:
        sections += [profile["description"].strip(), ""]
    for table_id, spec in tables:
        rows = build_rows(table_id, spec, results)
        files = {ext: results / f"{table_id}.{ext}" for ext in ("md", "csv", "tex", "png")}
        atomic_write_text(files["csv"], to_csv(spec, rows))
        atomic_write_text(files["tex"], to_latex(spec, rows))
        plot_table(spec, rows, files["png"], published=profile["plot_published"])
        atomic_write_text(files["md"], markdown(spec, rows, f"Per-seed scores: ![{spec['title']}]({table_id}.png) · "
                                                           f"[CSV]({table_id}.csv) · [LaTeX]({table_id}.tex)"))
        rel = {ext: os.path.relpath(path, out.parent) for ext, path in files.items()}
        sections.append(markdown(spec, rows, f"Per-seed scores: ![{spec['title']}]({rel['png']}) · "
                                             f"[CSV]({rel['csv']}) · [LaTeX]({rel['tex']})"))
    text = "\n".join(sections)
    atomic_write_text(out, text)
    return text


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="cxlnet table", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["run", "render"])
    parser.add_argument("target", type=Path, help="an experiments/*.yaml table or the experiments/ directory")
    parser.add_argument("--profile", default=None,
                        help="smoke | paper (experiments/profiles/<name>.yaml) or a profile YAML file; default: paper")
    parser.add_argument("--results", type=Path, default=None, help="default: <experiments dir>/<profile's results>")
    parser.add_argument("--out", type=Path, default=None, help="default: <experiments dir>/<profile's out>")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every row")
    args = parser.parse_intermixed_args(argv)  # overrides before or after the options
    base = args.target if args.target.is_dir() else args.target.parent
    profile = load_profile(base, args.profile)
    results = args.results or base / profile["results"]
    tables = load_tables(args.target)
    outcomes: dict[str, int] = {}
    if args.action == "run":
        for table_id, spec in tables:
            stages: dict[str, Path | None] = {}
            for row in (r for r in spec["rows"] if "overrides" in r):
                start = stage_overrides(table_id, spec, row, results, stages) if profile["pretrain_stages"] else []
                if start is None:
                    outcomes["failed"] = outcomes.get("failed", 0) + 1
                    continue
                sweep = row_dir(results, table_id, row)
                seeds = profile["seeds"] or row.get("seeds") or spec.get("seeds", 10)
                overrides = [*row["overrides"], *start, *profile["overrides"], *args.overrides]
                outcome, cfg = run_row(f"{table_id} / {row['name']}", sweep, row, int(seeds), overrides)
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
                if outcome in ("ran", "done") and cfg.logger.kind == "wandb":
                    send_wandb_summary(table_id, row, sweep, cfg)
        print("rows: " + ", ".join(f"{n} {outcome}" for outcome, n in sorted(outcomes.items())), flush=True)
    every_table = load_tables(base) if args.target.is_file() else tables
    out = args.out or base / profile["out"]
    render(every_table, results, out, profile)
    print(f"wrote {out} and {results}/<table>.md|csv|tex|png", flush=True)
    return 1 if outcomes.get("failed") or outcomes.get("refused") else 0
