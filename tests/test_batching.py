"""The global batch: devices x micro-batch x accumulation, its errors, and accumulation = the big batch."""
from __future__ import annotations

import pytest
import torch

from cxlnet.batching import plan_batch
from cxlnet.errors import CxlnetError


@pytest.mark.parametrize("global_batch, devices, micro, line", [
    (16, 1, 4, "global 16 = 1 device × 4 micro × 4 accum"),
    (48, 8, None, "global 48 = 8 devices × 6 micro × 1 accum"),
    (48, 8, 2, "global 48 = 8 devices × 2 micro × 3 accum"),
    (32, 4, 8, "global 32 = 4 devices × 8 micro × 1 accum"),
])
def test_the_global_batch_is_the_same_on_any_number_of_devices(global_batch, devices, micro, line):
    plan = plan_batch(global_batch, devices, micro, "task.batch_size")
    assert plan.line() == line
    assert plan.devices * plan.micro * plan.accumulation == global_batch


def test_auto_picks_the_largest_micro_batch_that_fits():
    tried = []

    def fits(m):
        tried.append(m)
        return m <= 5

    plan = plan_batch(48, 2, "auto", "task.batch_size", fits)
    assert (plan.micro, plan.accumulation) == (4, 6)  # 24 per device; 24, 12, 8, 6 do not fit
    assert tried == [24, 12, 8, 6, 4]
    with pytest.raises(CxlnetError, match="not even a micro-batch of 1 fits"):
        plan_batch(48, 2, "auto", "task.batch_size", lambda m: False)


@pytest.mark.parametrize("global_batch, devices, micro, message", [
    (16, 3, None, "task.batch_size=16 cannot be split over 3 devices"),
    (16, 1, 3, "task.batch_size=16 over 1 device(s) is 16 per device, not a multiple of hardware.micro_batch_size=3"),
    (16, 2, 16, "is 8 per device, not a multiple of hardware.micro_batch_size=16"),
    (16, 1, 0, "hardware.micro_batch_size=0: expected a positive integer, auto or null"),
    (16, 1, "big", "hardware.micro_batch_size='big'"),
    (0, 1, None, "task.batch_size=0: the global batch must be a positive integer"),
])
def test_impossible_combinations_fail_naming_the_keys(global_batch, devices, micro, message):
    with pytest.raises(CxlnetError, match=message.replace("(", r"\(").replace(")", r"\)")):
        plan_batch(global_batch, devices, micro, "task.batch_size")


def test_accumulation_gives_the_updates_of_the_big_batch(tmp_path, cxlnet_run):
    """tiny, fp32, no dropout: 4 steps of 16 as 4 x 4 accumulated equal 4 steps of 16 at once."""
    from safetensors.torch import load_file

    from cxlnet.paths import sample_dir

    dev = tmp_path / "dev.tsv"
    dev.write_text("".join((sample_dir() / "chnsenticorp" / "dev.tsv").read_text(encoding="utf-8")
                           .splitlines(keepends=True)[:17]), encoding="utf-8")
    common = ["finetune", "experiment=demo", "task.max_train_examples=64", "task.max_seq_length=32",
              "task.batch_size=16", "task.epochs=1", f"task.dev_file={dev}", "model.config.dropout=0.0",
              "trainer.enable_progress_bar=false", "logger=none"]
    weights = {}
    for micro in ("null", "4"):
        rc, out = cxlnet_run(*common, f"hardware.micro_batch_size={micro}", f"hydra.run.dir={tmp_path / micro}")
        assert rc == 0, out[-2000:]
        assert ("global 16 = 1 device × 4 micro × 4 accum" in out) == (micro == "4")
        weights[micro] = load_file(str(tmp_path / micro / "model" / "model.safetensors"))
    assert len(weights["null"]) > 10
    for name, big in weights["null"].items():
        torch.testing.assert_close(weights["4"][name], big, rtol=1e-4, atol=2e-6, msg=name)


def test_a_bad_micro_batch_fails_before_training(tmp_path, cxlnet_run):
    rc, out = cxlnet_run("finetune", "experiment=demo", "task.batch_size=16", "hardware.micro_batch_size=5",
                  f"hydra.run.dir={tmp_path / 'bad'}", "trainer.enable_progress_bar=false", "logger=none",
                  "task.max_train_examples=32")
    assert rc == 2
    assert "cxlnet finetune: error: task.batch_size=16 over 1 device(s) is 16 per device, not a multiple of " \
           "hardware.micro_batch_size=5" in out
    assert "Traceback" not in out and not (tmp_path / "bad" / "metrics.json").exists()


def test_auto_without_a_gpu_uses_the_estimate_against_the_device_memory():
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from cxlnet.batching import BatchRequest
    from cxlnet.memory import GIB, HEADROOM, Workload, estimate
    from cxlnet.model import XLNetConfig, XLNetForSequenceClassification

    model = XLNetForSequenceClassification(XLNetConfig.named("tiny", vocab_size=1000), num_labels=2)
    request = BatchRequest(64, "task.batch_size", model, seq_len=256)
    one_device = SimpleNamespace(world_size=1)
    work = Workload(model.config, 256, fused_attention=False)
    limit = estimate(work, 9).total / HEADROOM / GIB  # room for 9 examples at once: 8 is the largest divisor
    hw = OmegaConf.create({"accelerator": "cpu", "precision": "32-true", "micro_batch_size": "auto",
                           "device_memory_gb": limit})
    plan = request.plan(hw, one_device)
    assert (plan.micro, plan.accumulation) == (8, 8)
    hw.device_memory_gb = 1000
    assert request.plan(hw, one_device).micro == 64
