"""The Lightning module for sequence classification: XLNet + the summary head (`<cls>`, first or mean)."""
from __future__ import annotations

import numpy as np
import torch

from cxlnet.training import TrainModule


class ClassificationModule(TrainModule):
    """Trains with mean cross-entropy; reports accuracy in percent as `dev/acc` and `test/acc`."""

    unused_parameters = ("transformer.mask_emb",)  # the query stream's start state (pre-training only)

    def __init__(self, model, optimizer_cfg):
        super().__init__(model, optimizer_cfg)
        self._seen: list[torch.Tensor] = []  # per batch: (index, correct) of each example, (b, 2)

    def forward(self, input_ids, token_type_ids, input_mask, labels=None):
        return self.model(input_ids=input_ids, token_type_ids=token_type_ids, input_mask=input_mask, labels=labels)

    def training_step(self, batch, batch_idx):
        *inputs, labels, _ = batch
        loss = self(*inputs, labels=labels).loss
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def _count(self, batch) -> None:
        *inputs, labels, index = batch
        correct = self(*inputs).logits.argmax(dim=-1) == labels
        self._seen.append(torch.stack([index, correct.long()], dim=1))

    def _report(self, split: str) -> None:
        # Every process holds the same number of examples (the distributed sampler pads with repeats),
        # so the gather is static-shaped; each example then counts once, by its index.
        seen = self.all_gather(torch.cat(self._seen)).reshape(-1, 2).cpu()
        self._seen.clear()
        index, first = np.unique(seen[:, 0].numpy(), return_index=True)
        correct = int(seen[first, 1].sum())
        self.log(f"{split}/acc", 100.0 * correct / max(1, index.size), prog_bar=True, rank_zero_only=True)

    def validation_step(self, batch, batch_idx):
        self._count(batch)

    def on_validation_epoch_end(self):
        self._report("dev")

    def test_step(self, batch, batch_idx):
        self._count(batch)

    def on_test_epoch_end(self):
        self._report("test")
