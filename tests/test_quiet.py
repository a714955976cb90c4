"""The two third-party notices are silenced, and nothing else: Lightning's litlogger tip and
torch's LeafSpec FutureWarning."""
from __future__ import annotations

import logging
import warnings

import pytorch_lightning as pl

from cxlnet.quiet import silence_third_party_notices


def test_only_the_two_notices_are_silenced(caplog):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        silence_third_party_notices()
        from torch.utils._pytree import LeafSpec

        LeafSpec()  # what Lightning's pytree helper does in every training step
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated", DeprecationWarning)  # another category
        with caplog.at_level(logging.INFO):
            pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    assert [str(w.message) for w in caught] == ["`isinstance(treespec, LeafSpec)` is deprecated"]
    assert "litlogger" not in caplog.text
    assert "GPU available" in caplog.text  # Lightning's other messages still show
