"""One fine-tuning run with per-shard clipping (8 shards) on 1 or 2 CPU processes, for
test_training_parity.test_ddp_shards_equal_one_process: `python tests/ddp_shards_run.py WORLD OUT`.
Under DDP (gloo) rank r's loader yields examples r, r+2, ... (an unshuffled DistributedSampler); the 1-process run
reads the same examples in the order that gives it the same 8 shards per step."""
from __future__ import annotations

import sys

import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf

from cxlnet.classify.module import ClassificationModule
from cxlnet.model import XLNetConfig, XLNetForSequenceClassification
from cxlnet.training import shard_accumulation

STEPS, BATCH, SHARDS, MICRO = 3, 16, 8, 2


def one_process_order(n_steps: int) -> list[int]:
    order = []
    for s in range(n_steps):
        for r in range(2):
            for q in range(4 * s, 4 * s + 4):  # rank r's micro-batch q holds its examples 2q, 2q+1
                order += [r + 4 * q, r + 4 * q + 2]
    return order


def main(world: int, out: str) -> None:
    torch.manual_seed(0)
    cfg = XLNetConfig.named("tiny", vocab_size=60, n_layer=3, dropout=0.0, summary_last_dropout=0.0)
    model = XLNetForSequenceClassification(cfg, num_labels=2)
    opt = OmegaConf.create({
        "name": "tf_adam", "optim": {"_target_": "cxlnet.optim.TFAdam", "_partial_": True, "lr": 3e-3,
                                     "betas": [0.9, 0.999], "eps": 1e-4, "weight_decay": 0.0},
        "warmup_steps": 1, "warmup_ratio": 0.0, "min_lr_ratio": 0.0, "layer_decay": 0.5,
        "layer_decay_mode": "grad", "clip_shards": SHARDS})
    module = ClassificationModule(model, opt)
    g = torch.Generator().manual_seed(1)
    n = STEPS * BATCH
    rows = [torch.randint(5, 60, (n, 12), generator=g), torch.randint(0, 2, (n, 12), generator=g),
            torch.zeros(n, 12), torch.randint(0, 2, (n,), generator=g), torch.arange(n)]
    if world == 1:
        order = torch.tensor(one_process_order(STEPS))
        rows = [t[order] for t in rows]
    trainer = pl.Trainer(accelerator="cpu", devices=world, strategy="ddp" if world > 1 else "auto", max_steps=STEPS,
                         use_distributed_sampler=False,
                         gradient_clip_val=float(sys.argv[3]) if len(sys.argv) > 3 else 0.01, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0)
    trainer.accumulate_grad_batches = shard_accumulation(SHARDS, trainer.world_size, 1)
    data = torch.utils.data.TensorDataset(*rows)
    sampler = torch.utils.data.DistributedSampler(data, world, trainer.global_rank, shuffle=False) if world > 1 else None
    loader = torch.utils.data.DataLoader(data, batch_size=MICRO, sampler=sampler, shuffle=False)
    trainer.fit(module, train_dataloaders=loader)
    if trainer.is_global_zero:
        torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, out)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
