"""Progress on stderr for the CLI (stdout stays free for --json results): a stage-aware bar for
jobs, a byte counter for weight downloads."""
from __future__ import annotations

import sys
import time
from typing import Any, TextIO


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


class DownloadProgress:
    """`download` events as one redrawn line on a terminal (a line per file elsewhere):
    percentage, bytes done of total, the current file, and the time left at the average rate."""

    def __init__(self, stream: Any):
        self.stream, self.started, self._last, self._file = stream, time.monotonic(), 0.0, ""
        self.tty = hasattr(stream, "isatty") and stream.isatty()

    def __call__(self, event: dict[str, Any]) -> None:
        if event["event"] == "start":
            self.stream.write(f"downloading {event['files']} files, {_size(event['total_bytes'])}\n")
        if event["event"] != "progress":
            return
        now = time.monotonic()
        new_file = event["file"] != self._file
        finished = event["bytes"] >= event["total"]
        if not (new_file or finished or (self.tty and now - self._last > 0.2)):
            return
        self._last, self._file = now, event["file"]
        done, total = event["done_bytes"], max(event["total_bytes"], 1)
        rate = done / max(now - self.started, 1e-3)
        eta = (total - done) / rate if rate > 0 else float("inf")
        text = (f"[{100 * done / total:5.1f}%] {_size(done)} / {_size(total)}  {event['file']} "
                f"{_size(event['bytes'])} / {_size(event['total'])}  ETA {_duration(eta)}")
        if self.tty:
            self.stream.write(f"\r{text}\x1b[K" + ("\n" if done >= total else ""))
        elif new_file or finished:
            self.stream.write(text + "\n")
        self.stream.flush()


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def _duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "--"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m{secs:02d}s"
