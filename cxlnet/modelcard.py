"""`cxlnet export`'s publishable output: the weights in Hugging Face format plus a model card
(`README.md` with a `model-index` in its YAML front matter), for any of

* a fine-tuning seed sweep (`summary.json`): the best seed's weights; every metric as max (mean)
  over the seeds, the Chinese-XLNet way;
* one fine-tuning run (`metrics.json` + `model/`);
* a `cxlnet train` run directory or checkpoint (the pre-training loss, when the run finished).

The `model-index` value of a metric is its max over the seeds (what the published tables report
first); the mean, standard deviation and number of seeds are in the metric's name and in the card's
table, so the card never shows a max without its mean.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from cxlnet.errors import CxlnetError, atomic_write_text, read_json

# task name -> (Hugging Face task type, task name, dataset name)
TASKS = {
    "cmrc2018": ("question-answering", "Span extraction (reading comprehension)", "CMRC 2018"),
    "drcd": ("question-answering", "Span extraction (reading comprehension)", "DRCD"),
    "chnsenticorp": ("text-classification", "Sentiment classification", "ChnSentiCorp"),
}
METRIC_NAMES = {"f1": "F1", "em": "EM", "acc": "Accuracy"}
METRIC_TYPES = {"f1": "f1", "em": "exact_match", "acc": "accuracy"}  # the hub's metric ids
PRIMARY = ("dev/f1", "dev/acc", "dev/em")  # the seed exported from a sweep is the best on the first present
WEIGHT_FILES = ("config.json", "model.safetensors", "pytorch_model.bin", "spiece.model")


def _run_config(run: Path) -> dict[str, Any]:
    path = run / "config.yaml"
    return OmegaConf.to_container(OmegaConf.load(path), resolve=False) if path.is_file() else {}


def primary_metric(metrics: dict[str, Any], config: dict[str, Any]) -> str:
    objective = (config.get("task") or {}).get("objective")
    for name in ([objective] if objective else []) + list(PRIMARY):
        if name in metrics:
            return name
    return sorted(metrics)[0]


def _results(task: str, metrics: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """model-index `results` from {metric: {"max", "mean", "std", "n"}}, one entry per split."""
    kind, task_name, dataset = TASKS.get(task, ("other", task, task))
    by_split: dict[str, list[dict[str, Any]]] = {}
    for name, s in sorted(metrics.items()):
        split, _, metric = name.partition("/")
        label = METRIC_NAMES.get(metric, metric)
        over = f"max (mean) over {s['n']} seeds: {s['max']:.1f} ({s['mean']:.1f}), std {s['std']:.2f}" \
            if s["n"] > 1 else "1 seed"
        by_split.setdefault(split, []).append({"type": METRIC_TYPES.get(metric, metric), "value": round(float(s["max"]), 2),
                                               "name": f"{split} {label}, {over}"})
    return [{"task": {"type": kind, "name": task_name},
             "dataset": {"type": task, "name": dataset, "split": split}, "metrics": entries}
            for split, entries in by_split.items()]


def _one_seed(metrics: dict[str, float]) -> dict[str, dict[str, Any]]:
    return {k: {"max": v, "mean": v, "std": 0.0, "n": 1} for k, v in metrics.items()}


def card_text(name: str, config: dict[str, Any], results: list[dict[str, Any]], body: str) -> str:
    model = config.get("model") or {}
    base = model.get("pretrained")
    front: dict[str, Any] = {"language": ["zh"], "license": "apache-2.0", "library_name": "transformers",
                             "pipeline_tag": results[0]["task"]["type"] if results else None,
                             "tags": ["xlnet", "chinese", "cxlnet"]}
    if isinstance(base, str) and base.startswith("hfl/"):
        front["base_model"] = base
    if results:
        front["model-index"] = [{"name": name, "results": results}]
    front = {k: v for k, v in front.items() if v is not None}
    yaml = OmegaConf.to_yaml(OmegaConf.create(front)).rstrip()
    return f"---\n{yaml}\n---\n\n# {name}\n\n{body.rstrip()}\n"


def _table(metrics: dict[str, dict[str, Any]]) -> str:
    rows = ["| metric | max (mean) | std | seeds |", "|---|---|---|---|"]
    for name, s in sorted(metrics.items()):
        rows.append(f"| {name} | {s['max']:.1f} ({s['mean']:.1f}) | {s['std']:.2f} | {s['n']} |")
    return "\n".join(rows)


def _recipe(config: dict[str, Any]) -> str:
    task, opt, model = config.get("task") or {}, (config.get("optimizer") or {}), config.get("model") or {}
    optim = opt.get("optim") or {}
    parts = [f"model `{model.get('name')}`", f"from `{model.get('pretrained')}`" if model.get("pretrained") else None,
             f"lr {optim.get('lr')}" if optim.get("lr") is not None else None,
             f"batch {task.get('batch_size')}" if task.get("batch_size") else None,
             f"max length {task.get('max_seq_length')}" if task.get("max_seq_length") else None,
             f"epochs {task.get('epochs')}" if task.get("epochs") else None]
    return ", ".join(p for p in parts if p)


def _usage() -> str:
    return ("## Use\n\nThe weights load in `cxlnet` (`model.pretrained=<this directory>`) and in Hugging Face "
            "`transformers` (`XLNet*.from_pretrained`). Tokenize with `sentencepiece` and `spiece.model`, with "
            "XLNet's preprocessing (`cxlnet vocab inspect` shows the pieces): the layout is "
            "`A <sep> B <sep> <cls>` with `<cls>` last.\n")


def _copy_weights(model_dir: Path, out_dir: Path, spiece: Path | None) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in WEIGHT_FILES:
        if (model_dir / name).is_file():
            shutil.copyfile(model_dir / name, out_dir / name)
    if spiece is not None and spiece.is_file() and not (out_dir / "spiece.model").is_file():
        shutil.copyfile(spiece, out_dir / "spiece.model")


def _tokenizer_of(run: Path) -> Path | None:
    record = run / "run_record.json"
    if record.is_file():
        tok = (read_json(record) or {}).get("tokenizer") or {}
        if tok.get("path"):
            return Path(tok["path"])
    return None


def export_sweep(sweep: Path, out_dir: Path) -> Path:
    summary = read_json(sweep / "summary.json")
    metrics = summary.get("metrics") or {}
    if not metrics:
        raise CxlnetError(f"{sweep / 'summary.json'}: no metrics (run `cxlnet aggregate {sweep}`)")
    first_run = sweep / summary["runs"][0]
    config = _run_config(first_run)
    key = primary_metric(metrics, config)
    best = max(metrics[key]["values"], key=lambda run: metrics[key]["values"][run])
    if not (sweep / best / "model" / "config.json").is_file():
        raise CxlnetError(f"{sweep / best}: no model/ to export (the best run on {key})")
    _copy_weights(sweep / best / "model", out_dir, _tokenizer_of(sweep / best))
    name = f"cxlnet-{summary.get('task')}-{summary.get('model')}"
    body = (f"XLNet fine-tuned on {TASKS.get(summary.get('task'), ('', '', summary.get('task')))[2]} with cxlnet "
            f"({_recipe(config)}). {len(summary['runs'])} seeds ({', '.join(map(str, summary['seeds']))}); "
            f"these weights are run `{best}`, the best on {key} ({metrics[key]['values'][best]:.1f}).\n\n"
            f"## Results\n\n{_table(metrics)}\n\nAs in Chinese-XLNet's tables, max (mean) over the seeds.\n\n{_usage()}")
    atomic_write_text(out_dir / "README.md", card_text(name, config, _results(summary.get("task"), metrics), body))
    return out_dir


def export_finetune_run(run: Path, out_dir: Path) -> Path:
    record = read_json(run / "metrics.json")
    config = _run_config(run)
    _copy_weights(run / "model", out_dir, _tokenizer_of(run))
    metrics = _one_seed(record.get("metrics") or {})
    name = f"cxlnet-{record.get('task')}-{record.get('model')}"
    body = (f"XLNet fine-tuned on {TASKS.get(record.get('task'), ('', '', record.get('task')))[2]} with cxlnet "
            f"({_recipe(config)}), seed {record.get('seed')}: one run, not a seed sweep (a sweep's directory "
            f"gives max (mean) over its seeds).\n\n## Results\n\n{_table(metrics)}\n\n{_usage()}")
    atomic_write_text(out_dir / "README.md", card_text(name, config, _results(record.get("task"), metrics), body))
    return out_dir


def pretraining_card(run: Path | None, out_dir: Path) -> Path:
    """The card of a `cxlnet train` export: the training loss when the run finished."""
    record = read_json(run / "metrics.json") if run is not None and (run / "metrics.json").is_file() else None
    config = _run_config(run) if run is not None else {}
    name = f"cxlnet-pretrained-{(config.get('model') or {}).get('name', 'xlnet')}"
    results = []
    if record:
        m = record.get("metrics") or {}
        results = [{"task": {"type": "fill-mask", "name": "Permutation language modelling"},
                    "dataset": {"type": "text", "name": "pre-training corpus (token store)", "split": "train"},
                    "metrics": [{"type": "loss", "value": round(float(m.get("last10_loss", float("nan"))), 4),
                                 "name": f"training PLM loss, mean of the last 10 of {record.get('steps')} steps"}]}]
        status = (f"Pre-trained with cxlnet's permutation LM for {record.get('steps')} steps (loss "
                  f"{m.get('first_loss', float('nan')):.3f} -> {m.get('last_loss', float('nan')):.3f}).")
    else:
        status = "A checkpoint of a pre-training run that has not finished: no results yet."
    body = f"{status} A pre-trained model, to be fine-tuned; the loss is a training loss, not an evaluation.\n\n{_usage()}"
    atomic_write_text(out_dir / "README.md", card_text(name, config, results, body))
    return out_dir


def export_any(source: str | Path, out_dir: str | Path) -> Path:
    """Export `source` (sweep dir, fine-tuning run dir, `cxlnet train` run dir or checkpoint) with its card."""
    from cxlnet.pretrain.commands import export_checkpoint, find_checkpoint

    source, out_dir = Path(source).expanduser(), Path(out_dir).expanduser()
    if source.is_dir() and (source / "summary.json").is_file():
        return export_sweep(source, out_dir)
    metrics = source / "metrics.json"
    if source.is_dir() and metrics.is_file() and (source / "model" / "config.json").is_file() \
            and (read_json(metrics) or {}).get("command") == "finetune":
        return export_finetune_run(source, out_dir)
    ckpt = find_checkpoint(source)
    export_checkpoint(ckpt, out_dir)
    return pretraining_card(ckpt.parent.parent if ckpt.parent.name == "checkpoints" else None, out_dir)
