"""A Hydra callback for tests: every job of a sweep announces itself at start and waits until
`parties` jobs have (or `timeout` seconds pass), then records how many it saw. Jobs that run one
after another can never see each other; jobs that run side by side all see every one."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from hydra.experimental.callback import Callback


class Barrier(Callback):
    def __init__(self, dir: str, parties: int, timeout: float = 300.0):
        self.dir, self.parties, self.timeout = Path(dir), int(parties), float(timeout)

    def on_job_start(self, config, **kwargs) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / f"arrived-{os.getpid()}").touch()
        deadline = time.time() + self.timeout
        while len(list(self.dir.glob("arrived-*"))) < self.parties and time.time() < deadline:
            time.sleep(0.2)
        seen = len(list(self.dir.glob("arrived-*")))
        (self.dir / f"job-{os.getpid()}.json").write_text(json.dumps({"pid": os.getpid(), "saw": seen}))
