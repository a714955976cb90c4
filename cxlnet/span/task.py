"""`task.kind: span` for `cxlnet finetune`: CMRC 2018 and DRCD differ in configuration only."""
from __future__ import annotations


def build(cfg, tokenizer, model_loader, files):
    """The (LightningModule, LightningDataModule) pair for a span-extraction task."""
    from cxlnet.model import XLNetForQuestionAnswering
    from cxlnet.span.data import SpanData
    from cxlnet.span.module import SpanModule

    task = cfg.task
    data = SpanData(files, tokenizer, task, cfg.hardware.num_workers, cfg.seed)
    model = model_loader(XLNetForQuestionAnswering)
    return SpanModule(model, cfg.optimizer, data, task), data
