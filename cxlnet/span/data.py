"""The Lightning data module for span extraction: SQuAD-format files → static-shape features."""
from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from cxlnet.span.examples import SpanExample, read_examples
from cxlnet.span.features import FeatureStats, SpanConfig, SpanFeatures, convert_examples

TRAIN_KEYS = ("input_ids", "segment_ids", "input_mask", "p_mask", "start_positions", "end_positions")
EVAL_KEYS = ("input_ids", "segment_ids", "input_mask", "p_mask", "feature_index")


class SpanSplit:
    """One file's examples and features (features keep the bookkeeping decoding needs)."""

    def __init__(self, path: Path, tokenizer, cfg: SpanConfig, is_training: bool, max_examples: int | None):
        self.path = path
        self.examples, read_stats = read_examples(path)
        # Scored against the whole file (missing answers count as wrong, as the official script
        # does) unless only a slice of it is used.
        self.gold = path
        if max_examples:
            self.examples = self.examples[:max_examples]
            self.gold = self.examples
        # Reading and conversion log their counts (UTF-16 fixes, skipped answers, truncations).
        self.features, _ = convert_examples(self.examples, tokenizer, cfg, is_training,
                                            FeatureStats(read=read_stats.as_dict()))

    def dataset(self, keys: tuple[str, ...]) -> TensorDataset:
        tensors = self.features.as_tensors()
        return TensorDataset(*(tensors[k] for k in keys))


class SpanData(pl.LightningDataModule):
    def __init__(self, files: dict[str, Path], tokenizer, task_cfg, num_workers: int, seed: int):
        super().__init__()
        self.files = files
        self.tokenizer = tokenizer
        self.cfg = task_cfg
        self.span_cfg = SpanConfig(task_cfg.max_seq_length, task_cfg.doc_stride, task_cfg.max_query_length)
        self.num_workers = num_workers
        self.seed = seed
        self.splits: dict[str, SpanSplit] = {}

    def setup(self, stage: str | None = None) -> None:
        for split, path in self.files.items():
            if split not in self.splits:
                limit = self.cfg.max_train_examples if split == "train" else self.cfg.get("max_eval_examples")
                self.splits[split] = SpanSplit(path, self.tokenizer, self.span_cfg, split == "train", limit)

    def _loader(self, split: str, keys, batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.splits[split].dataset(keys), batch_size=batch_size, shuffle=shuffle, drop_last=shuffle,
            num_workers=self.num_workers, generator=torch.Generator().manual_seed(self.seed),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", TRAIN_KEYS, self.cfg.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("dev", EVAL_KEYS, self.cfg.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", EVAL_KEYS, self.cfg.eval_batch_size, shuffle=False)

    def examples(self, split: str) -> list[SpanExample]:
        return self.splits[split].examples

    def features(self, split: str) -> SpanFeatures:
        return self.splits[split].features
