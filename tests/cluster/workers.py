"""A stand-in worker for the driver tests: slow enough to be killed mid-object, and it commits
its output the way every real worker does (temporary name, then rename)."""
from __future__ import annotations

import os
import time
from pathlib import Path


class SlowWriter:
    def __init__(self, out_dir: str, seconds: float):
        self.out_dir, self.seconds = Path(out_dir), seconds

    def __call__(self, task) -> dict:
        target = self.out_dir / f"{task.id}.txt"
        if target.exists():
            return {"status": "skipped", "reason": "done"}
        (self.out_dir / f"{task.id}.started-{os.getpid()}").touch()  # tells the test who runs what
        time.sleep(self.seconds)
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        tmp.write_text(f"{task.input}\n")
        os.replace(tmp, target)
        return {"status": "ok", "pid": os.getpid()}
