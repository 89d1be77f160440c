"""Download Weights: runs `python -m backend download --json` in the backend's environment and
follows its progress lines.

The command's contract (one JSON object per stdout line): `{"event": "progress", "file", "bytes",
"total", "done_bytes", "total_bytes"}` while files arrive, then `{"event": "done", ...}` or
`{"event": "error", "code", "message"}`; a non-zero exit code when something is missing. Resuming
an interrupted download is huggingface_hub's (it keeps partial files); cancelling terminates the
process. Plain Python: the Blender layer runs `WeightsDownload.run()` on a worker thread.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .lines import Cancelled, run_lines


@dataclass
class DownloadProgress:
    files: dict[str, tuple[int, int]] = field(default_factory=dict)  # file -> (bytes, total)
    current: str = ""
    done_bytes: int = 0
    total_bytes: int = 0
    started: float = 0.0
    first_bytes: int = -1  # done_bytes at the first progress line (what an earlier run left)
    result: str = ""  # "", done, error
    code: str = ""
    message: str = ""

    def feed(self, line: str, now: float) -> bool:
        """One stdout line; anything that is not a JSON event (a library's print) is ignored."""
        try:
            event = json.loads(line)
        except ValueError:
            return False
        if not isinstance(event, dict):
            return False
        kind = event.get("event")
        if kind == "progress":
            name = str(event.get("file", ""))
            self.files[name] = (_int(event.get("bytes")), _int(event.get("total")))
            self.current = name
            self.done_bytes, self.total_bytes = _int(event.get("done_bytes")), _int(event.get("total_bytes"))
            if self.first_bytes < 0:
                self.first_bytes, self.started = self.done_bytes, now
            return True
        if kind == "done":
            self.result, self.message = "done", str(event.get("message", ""))
            return True
        if kind == "error":
            self.result = "error"
            self.code, self.message = str(event.get("code", "internal_error")), str(event.get("message", ""))
            return True
        return False

    @property
    def fraction(self) -> float:
        return min(1.0, self.done_bytes / self.total_bytes) if self.total_bytes > 0 else 0.0

    def eta(self, now: float) -> float | None:
        """Seconds left at the rate of this run (bytes an earlier run left do not count as speed)."""
        got = self.done_bytes - max(self.first_bytes, 0)
        elapsed = now - self.started
        if self.first_bytes < 0 or got <= 0 or elapsed < 1.0 or self.total_bytes <= 0:
            return None
        return max(0.0, (self.total_bytes - self.done_bytes) / (got / elapsed))


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    return f"{n:.1f} GB"


def human_seconds(s: float) -> str:
    s = int(round(s))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def _int(value) -> int:
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return 0


@dataclass(frozen=True)
class DownloadSnapshot:
    running: bool
    file: str
    file_bytes: int
    file_total: int
    done_bytes: int
    total_bytes: int
    fraction: float
    eta: float | None
    result: str  # "", done, error, cancelled
    message: str


class WeightsDownload:
    def __init__(self, argv: list[str], env: dict[str, str], cwd: str | None, log_file: Path,
                 clock: Callable[[], float] = time.monotonic):
        self.argv, self.env, self.cwd, self.log_file = list(argv), env, cwd, Path(log_file)
        self.cancel_event = threading.Event()
        self._clock = clock
        self._lock = threading.Lock()
        self._progress = DownloadProgress()
        self._running = False
        self._result = ""
        self._stderr: list[str] = []

    def snapshot(self) -> DownloadSnapshot:
        with self._lock:
            p, now = self._progress, self._clock()
            file_bytes, file_total = p.files.get(p.current, (0, 0))
            message = p.message if p.result else ""
            return DownloadSnapshot(self._running, p.current, file_bytes, file_total, p.done_bytes, p.total_bytes,
                                    p.fraction, p.eta(now), self._result, message)

    def cancel(self) -> None:
        self.cancel_event.set()

    def run(self) -> str:
        """To the end; returns done, error or cancelled."""
        with self._lock:
            self._running, self._result = True, ""
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(self.log_file, "a", encoding="utf-8") as log:
                code = run_lines(self.argv, self._on_line, cancel=self.cancel_event, log=log, env=self.env,
                                 cwd=self.cwd, merge_stderr=False, on_stderr=self._on_stderr)
            with self._lock:
                p = self._progress
                if code == 0 and p.result != "error":
                    self._result = "done"
                else:
                    self._result = "error"
                    if not p.message:
                        tail = " / ".join(self._stderr[-3:]) or "no output"
                        p.message = f"the download stopped (exit code {code}): {tail}"
                    p.result = "error"
        except Cancelled:
            with self._lock:
                self._result = "cancelled"
                self._progress.message = "Cancelled; Download resumes where it stopped"
                self._progress.result = "cancelled"
        except OSError as err:
            with self._lock:
                self._result, self._progress.result = "error", "error"
                self._progress.message = f"cannot run the backend: {err}"
        finally:
            with self._lock:
                self._running = False
        return self._result

    def _on_line(self, line: str) -> None:
        with self._lock:
            self._progress.feed(line, self._clock())

    def _on_stderr(self, line: str) -> None:
        self._stderr = (self._stderr + [line])[-20:]
