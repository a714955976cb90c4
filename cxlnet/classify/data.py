"""ChnSentiCorp-style TSV data as XLNet's `run_classifier.py` feeds it.

Files are `label<TAB>text` with a header line; texts contain literal `"`, so each line is split on
its first tab (never CSV quoting). Features follow `classifier_utils.convert_single_example`:
`text <sep> <cls>` truncated to max length, **left**-padded with id 0, so `<cls>` is always the
last position, which is the one the summary head reads.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

from cxlnet.errors import CxlnetError
from cxlnet.text import CLS_ID, SEP_ID, UNK_ID, Tokenizer
from cxlnet.training import TaskData

SEG_A, SEG_CLS, SEG_PAD = 0, 2, 4  # XLNet's classifier segment ids (SEG_ID_A, SEG_ID_CLS, SEG_ID_PAD)


@dataclass
class Example:
    line: int
    label: int
    text: str


def read_tsv(path: Path, num_labels: int = 2) -> list[Example]:
    """Rows of `label<TAB>text`; the header line is skipped, empty lines ignored."""
    path = Path(path)
    if not path.is_file():
        raise CxlnetError(f"{path}: data file not found")
    labels = {str(i): i for i in range(num_labels)}
    examples = []
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as err:
                raise CxlnetError(f"{path}:{lineno}: not valid UTF-8 (byte {raw[err.start]:#04x} at column "
                                  f"{err.start + 1})") from None
            if lineno == 1:
                line = line.removeprefix("\ufeff")
            if lineno == 1 and line.startswith("label"):
                continue
            if not line.strip():
                continue
            label, tab, text = line.partition("\t")
            if not tab:
                raise CxlnetError(f"{path}:{lineno}: no tab between label and text")
            if label not in labels:
                raise CxlnetError(f"{path}:{lineno}: label {label!r} is not one of {', '.join(labels)}")
            examples.append(Example(lineno, labels[label], text))
    if not examples:
        raise CxlnetError(f"{path}: no examples")
    return examples


def encode_examples(examples: list[Example], tokenizer: Tokenizer, max_seq_length: int) -> TensorDataset:
    """Left-padded `text <sep> <cls>` features: (input_ids, token_type_ids, input_mask, labels, index)."""
    n = len(examples)
    input_ids = torch.full((n, max_seq_length), UNK_ID, dtype=torch.long)
    token_type_ids = torch.full((n, max_seq_length), SEG_PAD, dtype=torch.long)
    input_mask = torch.ones((n, max_seq_length), dtype=torch.float)  # 1 = padding, XLNet's convention
    for row, ids in enumerate(tokenizer.encode_many([e.text for e in examples])):
        ids = ids[: max_seq_length - 2] + [SEP_ID, CLS_ID]
        start = max_seq_length - len(ids)
        input_ids[row, start:] = torch.tensor(ids)
        token_type_ids[row, start:-1] = SEG_A
        token_type_ids[row, -1] = SEG_CLS
        input_mask[row, start:] = 0.0
    labels = torch.tensor([e.label for e in examples], dtype=torch.long)
    # The example's index lets evaluation count every example once when a distributed sampler
    # pads the processes' shares with repeats.
    return TensorDataset(input_ids, token_type_ids, input_mask, labels, torch.arange(n))


class ClassificationData(TaskData):
    def __init__(self, files: dict[str, Path | None], tokenizer: Tokenizer, task_cfg, num_workers: int, seed: int):
        super().__init__(task_cfg, num_workers, seed)
        self.files = files
        self.tokenizer = tokenizer
        self.splits: dict[str, TensorDataset] = {}

    def setup(self, stage: str | None = None) -> None:
        for split, path in self.files.items():
            if path is None or split in self.splits:
                continue
            examples = read_tsv(path, self.cfg.num_labels)
            if split == "train" and self.cfg.max_train_examples:
                examples = examples[: self.cfg.max_train_examples]
            self.splits[split] = encode_examples(examples, self.tokenizer, self.cfg.max_seq_length)

    def train_dataloader(self) -> DataLoader:
        return self.loader(self.splits["train"], shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader(self.splits["dev"], shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self.loader(self.splits["test"], shuffle=False)
