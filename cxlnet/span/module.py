"""The Lightning module for span extraction (CMRC 2018, DRCD): XLNet + the SQuAD span head.

Evaluation keeps device work static-shaped (the head's top-k beams per window); decoding to text
and the official metric run on the CPU once per evaluation, over the whole split.
"""
from __future__ import annotations

import numpy as np
import torch

from cxlnet.errors import atomic_write_json
from cxlnet.span.decode import RESULT_KEYS, decode
from cxlnet.span.metric import evaluate
from cxlnet.training import TrainModule

# Files per evaluated split: predictions in the official format (id -> answer) and the n-best lists.
OUTPUT_FILES = {"dev": ("predictions.json", "nbest.json"), "test": ("test_predictions.json", "test_nbest.json")}


class SpanModule(TrainModule):
    unused_parameters = ("transformer.mask_emb",)  # the query stream's start state (pre-training only)

    def __init__(self, model, optimizer_cfg, data, task_cfg):
        super().__init__(model, optimizer_cfg)
        self.data = data
        self.task_cfg = task_cfg
        self.output_dir = None
        self._results: list[dict[str, torch.Tensor]] = []

    def forward(self, input_ids, segment_ids, input_mask, p_mask, start_positions=None, end_positions=None):
        return self.model(input_ids=input_ids, token_type_ids=segment_ids, input_mask=input_mask, p_mask=p_mask,
                          start_positions=start_positions, end_positions=end_positions)

    def training_step(self, batch, batch_idx):
        loss = self(*batch[:6]).loss  # the forward's six inputs; the loader adds feature_index (example_ids)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def example_ids(self, batch) -> dict:
        features, examples = self.data.features("train"), self.data.examples("train")
        rows = [int(i) for i in batch[-1]]
        return {"feature_index": rows, "example_id": [examples[features.example_index[r]].qid for r in rows]}

    def _collect(self, batch) -> None:
        *inputs, feature_index = batch
        out = self(*inputs)
        result = {k: getattr(out, k) for k in RESULT_KEYS}
        result["feature_index"] = feature_index
        # Gathered over processes (static shapes make this a plain all_gather under DDP or XLA).
        gathered = self.all_gather(result)
        self._results.append({k: v.reshape(-1, *v.shape[-1:]) if v.dim() > 1 and k != "feature_index"
                              else v.reshape(-1) for k, v in gathered.items()})

    def _decode(self, split: str) -> tuple[dict, dict]:
        """Predictions and n-best lists of the collected windows."""
        results = {k: torch.cat([r[k] for r in self._results]).float().cpu().numpy() for k in self._results[0]}
        self._results.clear()
        features = self.data.features(split)
        # A distributed sampler repeats a few windows to even out the processes: keep each once.
        _, first = np.unique(results["feature_index"], return_index=True)
        results = {k: v[first] for k, v in results.items()}
        results["unique_ids"] = features.unique_ids[results.pop("feature_index").astype(np.int64)]
        return decode(
            self.data.examples(split), features, results, n_best_size=self.task_cfg.n_best_size,
            max_answer_length=self.task_cfg.max_answer_length,
            start_n_top=self.model.config.start_n_top, end_n_top=self.model.config.end_n_top,
        )

    def _finish(self, split: str) -> dict[str, float]:
        predictions, nbest = self._decode(split)
        scores = evaluate(self.data.splits[split].gold, predictions)
        if self.output_dir is not None and self.trainer.is_global_zero:
            pred_name, nbest_name = OUTPUT_FILES[split]
            atomic_write_json(self.output_dir / pred_name, predictions)
            atomic_write_json(self.output_dir / nbest_name, nbest)
        self.log(f"{split}/em", scores["em"], prog_bar=True, rank_zero_only=True)
        self.log(f"{split}/f1", scores["f1"], prog_bar=True, rank_zero_only=True)
        return scores

    def validation_step(self, batch, batch_idx):
        self._collect(batch)

    def on_validation_epoch_end(self):
        self._finish("dev")

    def test_step(self, batch, batch_idx):
        self._collect(batch)

    def on_test_epoch_end(self):
        self._finish("test")
