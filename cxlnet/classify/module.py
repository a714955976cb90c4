"""The Lightning module for sequence classification: XLNet + the `<cls>` summary head."""
from __future__ import annotations

import torch

from cxlnet.training import TrainModule


class ClassificationModule(TrainModule):
    """Trains with mean cross-entropy; reports accuracy in percent as `dev/acc` and `test/acc`."""

    def __init__(self, model, optimizer_cfg):
        super().__init__(model, optimizer_cfg)
        self._correct = self._total = 0

    def forward(self, input_ids, token_type_ids, input_mask, labels=None):
        return self.model(input_ids=input_ids, token_type_ids=token_type_ids, input_mask=input_mask, labels=labels)

    def training_step(self, batch, batch_idx):
        loss = self(*batch).loss
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def _count(self, batch) -> None:
        *inputs, labels = batch
        predictions = self(*inputs).logits.argmax(dim=-1)
        self._correct += int((predictions == labels).sum())
        self._total += int(labels.numel())

    def _report(self, split: str) -> None:
        # Counts are summed over processes so DDP reports the accuracy of the whole split.
        counts = self.all_gather(torch.tensor([self._correct, self._total], dtype=torch.float64, device=self.device))
        correct, total = counts.reshape(-1, 2).sum(0).tolist()
        self.log(f"{split}/acc", 100.0 * correct / max(1.0, total), prog_bar=True)
        self._correct = self._total = 0

    def validation_step(self, batch, batch_idx):
        self._count(batch)

    def on_validation_epoch_end(self):
        self._report("dev")

    def test_step(self, batch, batch_idx):
        self._count(batch)

    def on_test_epoch_end(self):
        self._report("test")

    @torch.no_grad()
    def predict_step(self, batch, batch_idx):
        return self(*batch[:3]).logits.softmax(dim=-1)
