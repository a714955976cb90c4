"""`hardware=tpu`: Lightning's XLA accelerator over whichever PJRT device torch-xla runs on.

torch-xla is imported only from here and only when `hardware=tpu` is chosen: it pins its own torch
(2.9) and cannot import beside the main environment's. Lightning's `XLAAccelerator` counts TPU
chips on the PCI bus, so it reports "not available" when PJRT runs XLA on the host CPU
(`PJRT_DEVICE=CPU`, the way `make test-tpu` exercises the TPU path without a TPU). The accelerator
below counts the devices of the PJRT runtime that is configured instead: TPU chips on a TPU VM, the
`CPU_NUM_DEVICES` host devices (default 1) under `PJRT_DEVICE=CPU`.
"""
from __future__ import annotations

import os

from cxlnet.errors import CxlnetError


def require_torch_xla() -> None:
    try:
        import torch_xla  # noqa: F401
    except ImportError:
        raise CxlnetError("hardware=tpu needs torch-xla: pip install 'cxlnet[tpu]' on a TPU VM") from None


def pjrt_device_count() -> int:
    """Devices of the configured PJRT runtime on this host, without starting the runtime (Lightning
    asks before it spawns one process per device)."""
    device = os.environ.get("PJRT_DEVICE", "TPU").upper()
    if device == "CPU":
        return int(os.environ.get("CPU_NUM_DEVICES", "1"))
    if device == "TPU":
        from torch_xla._internal import tpu

        return tpu.num_available_devices()
    raise CxlnetError(f"PJRT_DEVICE={device}: hardware=tpu runs on PJRT_DEVICE=TPU (a TPU VM) or CPU")


def xla_accelerator():
    """An instance of Lightning's XLA accelerator that sees the devices of `pjrt_device_count`."""
    require_torch_xla()
    from pytorch_lightning.accelerators import XLAAccelerator

    import torch

    # Lightning's device parsing asks its own class for the chip count: all three are replaced.
    class PJRTAccelerator(XLAAccelerator):
        @staticmethod
        def auto_device_count() -> int:
            return pjrt_device_count()

        @staticmethod
        def is_available() -> bool:
            return pjrt_device_count() > 0

        @staticmethod
        def parse_devices(devices) -> int:
            count = pjrt_device_count()
            if str(devices).strip() not in {"1", str(count)}:
                raise CxlnetError(f"hardware.devices={devices}: this host has {count} XLA device(s) "
                                  f"(PJRT_DEVICE={os.environ.get('PJRT_DEVICE', 'TPU')}); use 1, {count} or auto")
            return int(devices)

        @staticmethod
        def get_parallel_devices(devices) -> list:
            # Lightning replaces these with the spawned processes' own xla devices.
            return [torch.device("xla", i) for i in range(int(devices))]

    return PJRTAccelerator()
