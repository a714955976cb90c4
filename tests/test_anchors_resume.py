"""Gradient accumulation with one memory per micro-batch (row slice) resumes exactly: a fast CPU
version of the slow subprocess test, with every command run in this process on a small store."""
from __future__ import annotations

import pytest
import torch
from test_pretrain_train import CORPUS, GOLDEN_OVERRIDES, HFL_SPIECE, cxlnet_inproc, losses_of


def test_accumulation_with_memory_resumes_exactly(tmp_path, capsys):
    corpus = tmp_path / "slice.txt"
    corpus.write_text("".join(CORPUS.read_text(encoding="utf-8").splitlines(keepends=True)[:300]), encoding="utf-8")
    store, runs = tmp_path / "store", tmp_path / "runs"
    rc, out = cxlnet_inproc(capsys, "data", f"data.corpus=[{corpus}]", f"data.spiece_model={HFL_SPIECE}",
                            f"data.out_dir={store}", "data.num_shards=1", f"paths.output_dir={runs}")
    assert rc == 0, out

    def train(name: str, *extra: str) -> None:
        rc, out = cxlnet_inproc(capsys, "train", *GOLDEN_OVERRIDES, f"data.store={store}", f"paths.output_dir={runs}",
                                f"run_name={name}", "hardware.micro_batch_size=2", "train.max_steps=4",
                                "train.save_steps=2", "data.val_shards=0", *extra)
        assert rc == 0, out[-3000:]

    train("straight")
    train("resumed", "train.stop_after=2")
    ckpt = torch.load(runs / "pretrain" / "resumed" / "checkpoints" / "last.ckpt", map_location="cpu",
                      weights_only=True)
    mems = ckpt["cxlnet_pretrain"]["mems"]
    assert sorted(mems) == [0, 1] and all(m[0].abs().sum() > 0 for m in mems.values())  # one memory per slice
    assert not torch.equal(mems[0][0], mems[1][0])
    train("resumed")
    straight = losses_of(runs / "pretrain" / "straight")
    assert len(straight) == 4
    assert losses_of(runs / "pretrain" / "resumed") == pytest.approx(straight, rel=1e-6, abs=1e-7)
