"""Third-party notices that say nothing about a run, silenced at their source and nothing else:

* Lightning's advertising tip for its hosted logger ("💡 Tip: ... litlogger ..."), logged at INFO by
  every Trainer: a filter on Lightning's rank-zero logger drops exactly that record;
* torch's `LeafSpec` FutureWarning, raised inside Lightning's own pytree helper (not our code): a
  warnings filter for exactly that message.
Every other Lightning message and warning still shows.
"""
from __future__ import annotations

import logging
import warnings

_LIGHTNING_LOGGERS = ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero")


class _DropLitLoggerTip(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not ("litlogger" in str(record.msg) and "Tip" in str(record.msg))


def silence_third_party_notices() -> None:
    """Idempotent; called before every Trainer is built."""
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            category=FutureWarning)
    for name in _LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropLitLoggerTip) for f in logger.filters):
            logger.addFilter(_DropLitLoggerTip())
