"""The Lightning data module for span extraction: SQuAD-format files → static-shape features."""
from __future__ import annotations

from pathlib import Path

from torch.utils.data import DataLoader, TensorDataset

from cxlnet.errors import CxlnetError, read_json
from cxlnet.span.examples import SpanExample, first_questions, parse_squad
from cxlnet.span.features import FeatureStats, SpanConfig, SpanFeatures, convert_examples
from cxlnet.training import TaskData

TRAIN_KEYS = ("input_ids", "segment_ids", "input_mask", "p_mask", "start_positions", "end_positions", "feature_index")
EVAL_KEYS = ("input_ids", "segment_ids", "input_mask", "p_mask", "feature_index")


class SpanSplit:
    """One file's examples and features (features keep the bookkeeping decoding needs)."""

    def __init__(self, path: Path, tokenizer, cfg: SpanConfig, is_training: bool, max_examples: int | None):
        self.path = path
        data = read_json(path)
        self.examples, read_stats = parse_squad(data, str(path))  # validates the whole file
        # Scored as the official script scores a file: every question in it, those without a
        # prediction (e.g. empty contexts) as wrong. A slice is scored as the file of its questions.
        self.gold = data
        if max_examples:
            self.gold = first_questions(data, max_examples)
            kept = {str(qa["id"]) for article in self.gold["data"] for para in article["paragraphs"] for qa in para["qas"]}
            self.examples = [ex for ex in self.examples if ex.qid in kept]
        # Reading and conversion log their counts (UTF-16 fixes, skipped answers, truncations).
        self.features, stats = convert_examples(self.examples, tokenizer, cfg, is_training,
                                                FeatureStats(read=read_stats.as_dict()))
        if len(self.features) == 0:  # Lightning would silently skip the split
            raise CxlnetError(
                f"{path}: no question gives a feature ({read_stats.questions + read_stats.empty_context_questions} questions, "
                f"{read_stats.empty_context_questions} with an empty context, {stats.mismatch_questions} in "
                f"paragraphs that do not align with their pieces, {stats.untrainable_skipped} without a usable answer)")

    def dataset(self, keys: tuple[str, ...]) -> TensorDataset:
        tensors = self.features.as_tensors()
        return TensorDataset(*(tensors[k] for k in keys))


class SpanData(TaskData):
    def __init__(self, files: dict[str, Path], tokenizer, task_cfg, num_workers: int, seed: int):
        super().__init__(task_cfg, num_workers, seed)
        self.files = files
        self.tokenizer = tokenizer
        self.span_cfg = SpanConfig(task_cfg.max_seq_length, task_cfg.doc_stride, task_cfg.max_query_length)
        self.splits: dict[str, SpanSplit] = {}

    def setup(self, stage: str | None = None) -> None:
        for split, path in self.files.items():
            if split not in self.splits:
                limit = self.cfg.max_train_examples if split == "train" else self.cfg.get("max_eval_examples")
                self.splits[split] = SpanSplit(path, self.tokenizer, self.span_cfg, split == "train", limit)

    def train_dataloader(self) -> DataLoader:
        return self.loader(self.splits["train"].dataset(TRAIN_KEYS), shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader(self.splits["dev"].dataset(EVAL_KEYS), shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self.loader(self.splits["test"].dataset(EVAL_KEYS), shuffle=False)

    def examples(self, split: str) -> list[SpanExample]:
        return self.splits[split].examples

    def features(self, split: str) -> SpanFeatures:
        return self.splits[split].features
