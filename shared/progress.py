"""A one-line progress report with rate and ETA for the batch drivers (rendering, data preparation)."""
from __future__ import annotations

import sys
import time
from typing import TextIO


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class Progress:
    """Counts finished objects; on a terminal redraws one line, elsewhere prints at most every
    `interval` seconds so logs stay readable."""

    def __init__(self, total: int, stream: TextIO = sys.stderr, interval: float = 10.0, clock=time.monotonic):
        self.total, self.stream, self.interval, self.clock = total, stream, interval, clock
        self.ok = self.failed = 0
        self.start = self.clock()
        self._last_print = float("-inf")
        self._tty = hasattr(stream, "isatty") and stream.isatty()

    @property
    def done(self) -> int:
        return self.ok + self.failed

    def line(self) -> str:
        elapsed = max(self.clock() - self.start, 1e-9)
        rate = self.done / elapsed
        eta = _duration((self.total - self.done) / rate) if rate > 0 else "?"
        pct = 100.0 * self.done / self.total if self.total else 100.0
        return (f"[{self.done}/{self.total}] {pct:5.1f}% ok {self.ok} failed {self.failed} | "
                f"{rate * 60:.1f} obj/min | elapsed {_duration(elapsed)} | ETA {eta}")

    def update(self, ok: bool) -> None:
        if ok:
            self.ok += 1
        else:
            self.failed += 1
        now = self.clock()
        if self._tty:
            self.stream.write("\r" + self.line())
            self.stream.flush()
        elif now - self._last_print >= self.interval or self.done == self.total:
            self.stream.write(self.line() + "\n")
            self.stream.flush()
            self._last_print = now

    def finish(self) -> None:
        if self._tty:
            self.stream.write("\n")
            self.stream.flush()
