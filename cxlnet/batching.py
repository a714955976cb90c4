"""The global batch, split over devices and gradient accumulation.

`task.batch_size` (fine-tuning) and `data.bsz` (pre-training) are the GLOBAL batch: the examples of
one optimizer step over all devices, as in the published recipes. `hardware.micro_batch_size` is what
one device runs in one forward/backward; the accumulation follows:

    global = devices x micro x accumulation          e.g. global 48 = 1 device x 12 micro x 4 accum

so the optimizer steps, the schedule and the results are the same on 1 GPU, 8 GPUs or a TPU.
`micro_batch_size: null` runs the whole per-device share at once (no accumulation); `auto` picks the
largest micro-batch that fits: measured on one forward/backward on a GPU, estimated
(`cxlnet.memory.estimate`) against the device's memory elsewhere.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

from cxlnet.errors import CxlnetError

log = logging.getLogger(__name__)

MICRO_KEY = "hardware.micro_batch_size"


@dataclass(frozen=True)
class BatchPlan:
    global_batch: int
    devices: int
    micro: int
    accumulation: int

    def line(self) -> str:
        devices = f"{self.devices} device" + ("s" if self.devices != 1 else "")
        return f"global {self.global_batch} = {devices} × {self.micro} micro × {self.accumulation} accum"


def divisors_descending(n: int) -> list[int]:
    return [m for m in range(n, 0, -1) if n % m == 0]


def per_device(global_batch: int, devices: int, key: str) -> int:
    if not isinstance(global_batch, int) or global_batch < 1:
        raise CxlnetError(f"{key}={global_batch!r}: the global batch must be a positive integer")
    if global_batch % devices:
        raise CxlnetError(f"{key}={global_batch} cannot be split over {devices} devices "
                          f"(hardware.devices x hardware.num_nodes): choose a multiple of {devices}")
    return global_batch // devices


def plan_batch(global_batch: int, devices: int, micro, key: str,
               fits: Callable[[int], bool] | None = None) -> BatchPlan:
    """The split of `global_batch` (config key `key`) over `devices` with micro-batch `micro`
    (an int, None for the whole per-device share, or "auto" with `fits(micro) -> bool`)."""
    share = per_device(global_batch, devices, key)
    if micro is None:
        micro = share
    elif micro == "auto":
        if fits is None:
            raise CxlnetError(f"{MICRO_KEY}=auto: no memory check for this command; give a number")
        micro = next((m for m in divisors_descending(share) if fits(m)), None)
        if micro is None:
            raise CxlnetError(f"{MICRO_KEY}=auto: not even a micro-batch of 1 fits in the device's memory; "
                              "try model.grad_checkpointing=true, a shorter sequence or bf16 (`cxlnet memory`)")
    elif isinstance(micro, bool) or not isinstance(micro, int) or micro < 1:
        raise CxlnetError(f"{MICRO_KEY}={micro!r}: expected a positive integer, auto or null")
    if share % micro:
        raise CxlnetError(f"{key}={global_batch} over {devices} device(s) is {share} per device, not a multiple of "
                          f"{MICRO_KEY}={micro} (choose one of {divisors_descending(share)})")
    return BatchPlan(global_batch, devices, micro, share // micro)


@dataclass(frozen=True)
class BatchRequest:
    """A training run's global batch (`key` names its config key) and what `auto` sizes: the model
    and one micro-batch's shape (`seq_len` tokens, `mem_len` memory, `num_predict` query targets)."""

    global_batch: int
    key: str
    model: object = None
    seq_len: int = 0
    mem_len: int = 0
    num_predict: int = 0
    multiple_of: int = 1  # bi_data: every micro-batch holds forward and backward halves

    def plan(self, hw, trainer) -> BatchPlan:
        micro = hw.get("micro_batch_size")
        fits = self.auto_fits(hw, trainer) if micro == "auto" else None
        plan = plan_batch(int(self.global_batch), int(trainer.world_size), micro, self.key, fits)
        if plan.micro % self.multiple_of:
            raise CxlnetError(f"{MICRO_KEY}={plan.micro}: data.bi_data needs an even micro-batch "
                              f"({self.key}={self.global_batch} over {plan.devices} device(s))")
        return plan

    def final(self, trainer) -> BatchPlan:
        """The split as trained: `optimizer.clip_shards` may have raised the accumulation."""
        devices, accumulation = int(trainer.world_size), int(trainer.accumulate_grad_batches)
        if self.global_batch % (devices * accumulation):
            raise CxlnetError(f"{self.key}={self.global_batch} cannot be split over {devices} device(s) x "
                              f"{accumulation} micro-batches (optimizer.clip_shards); choose a multiple of "
                              f"{devices * accumulation}")
        return BatchPlan(self.global_batch, devices, self.global_batch // (devices * accumulation), accumulation)

    def workload(self, hw, checkpointing: bool):
        from cxlnet.memory import Workload

        return Workload(self.model.config, self.seq_len, self.mem_len, self.num_predict, precision=str(hw.precision),
                        checkpointing=checkpointing, fused_attention=hw.accelerator != "cpu")

    def auto_fits(self, hw, trainer) -> Callable[[int], bool]:
        """micro -> fits: one measured forward/backward on a CUDA device, else the estimate."""
        from cxlnet.memory import HEADROOM, device_memory, estimate, measure_peak

        work = self.workload(hw, bool(self.model.config.grad_checkpointing))
        limit = device_memory(hw)
        if limit is None:
            raise CxlnetError(f"{MICRO_KEY}=auto: the device's memory is unknown; set hardware.device_memory_gb")
        budget = HEADROOM * limit
        ok = lambda m: m % self.multiple_of == 0  # noqa: E731
        if hw.accelerator != "gpu":
            return lambda m: ok(m) and estimate(work, m).total <= budget

        import torch

        device = trainer.strategy.root_device

        def measured(m: int) -> bool:
            if not ok(m):
                return False
            home = next(self.model.parameters()).device
            self.model.to(device)
            try:
                return measure_peak(self.model, work, m, device) <= budget
            except torch.cuda.OutOfMemoryError:
                return False
            finally:
                self.model.to(home)
                torch.cuda.empty_cache()

        return measured
