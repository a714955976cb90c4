"""`cxlnet eval` and `cxlnet predict`: use a fine-tuned model without training it.

    cxlnet eval model.pretrained=runs/drcd/mid/<run> task=drcd task.test_file=DRCD_test.json
    cxlnet predict model.pretrained=<run> task=cmrc2018 predict.question=... predict.context=...
    cxlnet predict model.pretrained=<run> task=chnsenticorp predict.input=reviews.jsonl
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from cxlnet.confdir import CONF_DIR
from cxlnet.errors import CxlnetError, atomic_write_text
from cxlnet.finetune import build_task
from cxlnet.record import write_run_record
from cxlnet.runs import hydra_job, model_loader, resolve_spiece, run_dir, show_config
from cxlnet.text import Tokenizer
from cxlnet.training import build_trainer, ensure_unfinished, write_metrics

log = logging.getLogger(__name__)


def require_pretrained(cfg: DictConfig) -> None:
    if cfg.model.pretrained is None:
        raise CxlnetError(f"cxlnet {cfg.command} needs model.pretrained=<fine-tuned run dir or weights dir>")


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Score the dev file and, when given, `task.test_file`; metrics.json (+ predictions) in the run dir."""
    started = time.time()
    require_pretrained(cfg)
    out_dir = run_dir()
    ensure_unfinished(out_dir)
    show_config(cfg, out_dir)
    _, module, data = build_task(cfg, out_dir, train=False)
    trainer = build_trainer(cfg, out_dir, group=None, logger=False)
    metrics: dict[str, float] = {}
    if cfg.task.dev_file:
        for result in trainer.validate(module, datamodule=data, verbose=False):
            metrics.update(result)
    if cfg.task.test_file:
        for result in trainer.test(module, datamodule=data, verbose=False):
            metrics.update(result)
    path = write_metrics(out_dir, cfg, metrics, started)
    log.info("%s -> %s", ", ".join(f"{k} {v:.2f}" for k, v in sorted(metrics.items())), path)
    return metrics


def read_inputs(cfg: DictConfig, fields: tuple[str, ...]) -> list[dict]:
    """Items from the command line (predict.<field>=...) or a JSONL file (predict.input=...)."""
    pcfg = cfg.predict
    if pcfg.input:
        path = Path(pcfg.input)
        if not path.is_file():
            raise CxlnetError(f"{path}: file not found")
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as err:
            raise CxlnetError(f"{path}: not valid UTF-8 (byte {err.start})") from None
        items = []
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as err:
                raise CxlnetError(f"{path}:{lineno}:{err.colno}: malformed JSON: {err.msg}") from None
            if not isinstance(item, dict):
                raise CxlnetError(f"{path}:{lineno}: expected a JSON object")
            missing = [f for f in fields if not isinstance(item.get(f), str) or not item[f].strip()]
            if missing:
                raise CxlnetError(f"{path}:{lineno}: missing {', '.join(missing)}")
            # ids as strings (predictions are keyed by them); no id: the line number
            items.append({**item, "id": str(lineno if item.get("id") in (None, "") else item["id"])})
        return items
    missing = [f for f in fields if not pcfg.get(f)]
    if missing:
        raise CxlnetError(f"give {' and '.join(f'predict.{f}=...' for f in missing)} or predict.input=FILE.jsonl")
    return [{"id": "1", **{f: str(pcfg[f]) for f in fields}}]


@torch.no_grad()
def run_batches(model, tensors: dict[str, torch.Tensor], batch_size: int, call) -> list:
    return [call(model, {k: v[i:i + batch_size] for k, v in tensors.items()})
            for i in range(0, len(next(iter(tensors.values()))), batch_size)]


def predict_spans(cfg: DictConfig, model, tokenizer: Tokenizer) -> list[dict]:
    from cxlnet.span.decode import RESULT_KEYS, decode
    from cxlnet.span.examples import parse_squad
    from cxlnet.span.features import SpanConfig, convert_examples

    items = read_inputs(cfg, ("question", "context"))
    squad = {"data": [{"paragraphs": [{"context": it["context"], "qas": [
        {"id": it["id"], "question": it["question"], "answers": []}]} for it in items]}]}
    examples, _ = parse_squad(squad, source=str(cfg.predict.input or "command line"))
    span_cfg = SpanConfig(cfg.task.max_seq_length, cfg.task.doc_stride, cfg.task.max_query_length)
    features, _ = convert_examples(examples, tokenizer, span_cfg, is_training=False)
    tensors = features.as_tensors()

    def call(m, b):
        out = m(input_ids=b["input_ids"], token_type_ids=b["segment_ids"], input_mask=b["input_mask"],
                p_mask=b["p_mask"])
        return {k: getattr(out, k) for k in RESULT_KEYS}

    chunks = run_batches(model, tensors, cfg.task.eval_batch_size, call)
    results = {k: torch.cat([c[k] for c in chunks]).float().numpy() for k in RESULT_KEYS}
    predictions, nbest = decode(examples, features, results, n_best_size=cfg.task.n_best_size,
                                max_answer_length=cfg.task.max_answer_length,
                                start_n_top=model.config.start_n_top, end_n_top=model.config.end_n_top)
    return [{"id": it["id"], "question": it["question"], "answer": predictions[it["id"]],
             "score": round(nbest[it["id"]][0]["probability"], 4) if nbest.get(it["id"]) else 0.0}
            for it in items]


def predict_labels(cfg: DictConfig, model, tokenizer: Tokenizer) -> list[dict]:
    from cxlnet.classify.data import Example, encode_examples

    items = read_inputs(cfg, ("text",))
    dataset = encode_examples([Example(i, 0, it["text"]) for i, it in enumerate(items)], tokenizer,
                              cfg.task.max_seq_length)
    tensors = dict(zip(("input_ids", "token_type_ids", "input_mask"), dataset.tensors[:3]))
    chunks = run_batches(model, tensors, cfg.task.eval_batch_size, lambda m, b: m(**b).logits.softmax(-1))
    probs = torch.cat(chunks)
    return [{"id": it["id"], "text": it["text"], "label": int(p.argmax()), "score": round(float(p.max()), 4)}
            for it, p in zip(items, probs)]


def predict_fillmask(cfg: DictConfig, model, tokenizer: Tokenizer) -> list[dict]:
    from cxlnet.fillmask import fill_masks

    summary = getattr(model, "load_summary", None)
    if summary is not None and summary.heads.get("lm_loss") != "loaded":
        log.warning("the checkpoint has no LM head bias (lm_loss.bias): predictions use the tied embedding alone")
    return [{"id": it["id"], **fill_masks(model, tokenizer, it["text"], str(cfg.task.order), int(cfg.task.top_k))}
            for it in read_inputs(cfg, ("text",))]


def _table(rows: list[dict], title: str):
    from rich.table import Table

    table = Table(title=title)
    for column in rows[0]:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    return table


def predict(cfg: DictConfig) -> list[dict]:
    from rich.console import Console

    from cxlnet.model import XLNetForQuestionAnswering, XLNetForSequenceClassification, XLNetLMHeadModel

    require_pretrained(cfg)
    tokenizer = Tokenizer(resolve_spiece(cfg))
    load = model_loader(cfg, tokenizer.vocab_size)
    if cfg.task.kind == "fillmask":
        from cxlnet.fillmask import render

        rows = predict_fillmask(cfg, load(XLNetLMHeadModel).eval(), tokenizer)
        Console().print(render(rows))
    else:
        if cfg.task.kind == "span":
            rows = predict_spans(cfg, load(XLNetForQuestionAnswering).eval(), tokenizer)
        else:
            rows = predict_labels(cfg, load(XLNetForSequenceClassification, num_labels=cfg.task.num_labels).eval(),
                                  tokenizer)
        Console().print(_table(rows, f"{cfg.task.name} predictions"))
    if cfg.predict.output:
        output = Path(cfg.predict.output)
        atomic_write_text(output, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        inputs = {"input": cfg.predict.input} if cfg.predict.input else {}
        write_run_record(output.with_name(output.name + ".run_record.json"), inputs, tokenizer.path,
                         accelerator=cfg.hardware.accelerator, devices=cfg.hardware.devices)
    return rows


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="eval")
@hydra_job
def eval_main(cfg: DictConfig) -> None:
    evaluate(cfg)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="predict")
@hydra_job
def predict_main(cfg: DictConfig) -> None:
    predict(cfg)
