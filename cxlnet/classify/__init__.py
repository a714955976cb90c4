"""Sequence classification (ChnSentiCorp): TSV reading, XLNet features and the Lightning module."""
from __future__ import annotations


def build(cfg, tokenizer, model_loader, files):
    """The (LightningModule, LightningDataModule) pair for `task.kind: classification`."""
    from cxlnet.classify.data import ClassificationData
    from cxlnet.classify.module import ClassificationModule
    from cxlnet.model import XLNetForSequenceClassification

    task = cfg.task
    data = ClassificationData(files, tokenizer, task, cfg.hardware.num_workers, cfg.seed)
    model = model_loader(XLNetForSequenceClassification, num_labels=task.num_labels)
    return ClassificationModule(model, cfg.optimizer), data
