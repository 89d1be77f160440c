"""A stage-aware progress bar on stderr for the CLI (stdout stays free for --json results)."""
from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    """Redraws one line in a terminal; elsewhere (logs, CI) prints a line per stage change."""

    def __init__(self, stream: TextIO = sys.stderr, label: str = "", width: int = 28, redraw: bool = True):
        """`redraw=False` forces log lines (several jobs report at once)."""
        self.stream = stream
        self.label = label
        self.width = width
        self.tty = redraw and hasattr(stream, "isatty") and stream.isatty()
        self.stage = ""
        self.started = time.perf_counter()
        self._last_draw = 0.0

    def update(self, stage: str, step: int, total: int, message: str = "") -> None:
        now = time.perf_counter()
        changed = stage != self.stage
        self.stage = stage
        elapsed = now - self.started
        if not self.tty:
            if changed or message:
                text = f" {message}" if message else ""
                self.stream.write(f"[{elapsed:6.1f}s] {self.label} {stage}{text}\n")
                self.stream.flush()
            return
        if not changed and step < total and now - self._last_draw < 0.05:
            return
        self._last_draw = now
        frac = min(1.0, step / total) if total > 0 else 0.0
        filled = int(frac * self.width)
        bar = "#" * filled + "-" * (self.width - filled)
        self.stream.write(f"\r{self.label} {stage:<10} [{bar}] {step}/{total} {elapsed:6.1f}s \x1b[K")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
