"""The backend as a child process speaking JSON lines on its stdin/stdout (no network port).

A reader thread turns each stdout line into a validated protocol message and puts it on a queue;
the owner drains the queue on its own thread (Blender's main thread), so nothing here ever touches
Blender data. stderr is kept as a short tail for error messages. The child runs in its own process
group so a kill also ends any workers it started.
"""
from __future__ import annotations

import collections
import os
import queue
import signal
import subprocess
import threading
from dataclasses import dataclass

from ..shared import protocol
from ..shared.errors import BackendError


@dataclass(frozen=True)
class Exited:
    """The child closed its stdout (it exited or is about to)."""

    returncode: int | None
    stderr_tail: str


@dataclass(frozen=True)
class Garbage:
    """A stdout line that is not a valid protocol event (a library printed into the stream)."""

    line: str
    reason: str


class BackendProcess:
    def __init__(self, command: list[str], *, cwd: str | None = None, env: dict[str, str] | None = None,
                 stderr_lines: int = 40):
        self.command = list(command)
        self.cwd = cwd
        self.env = env
        self.events: queue.Queue = queue.Queue()
        self._stderr = collections.deque(maxlen=stderr_lines)
        self._write_lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._threads: list[threading.Thread] = []

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        kwargs = {"start_new_session": True} if os.name == "posix" else {
            "creationflags": getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0) | getattr(subprocess, "CREATE_NO_WINDOW", 0)
        }
        try:
            self._proc = subprocess.Popen(
                self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                cwd=self.cwd or None, env=self.env, **kwargs,
            )
        except OSError as exc:
            raise BackendError("backend_unavailable", f"cannot start the backend {self.command[0]!r}: {exc}") from None
        stderr_reader = threading.Thread(target=self._read_stderr, name="step1x3d-stderr", daemon=True)
        stdout_reader = threading.Thread(target=self._read_stdout, args=(stderr_reader,), name="step1x3d-stdout",
                                         daemon=True)
        self._threads = [stderr_reader, stdout_reader]
        for thread in self._threads:
            thread.start()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def send(self, line: str) -> bool:
        """Write one request line; False when the child no longer reads (the reader reports why)."""
        if self._proc is None or self._proc.stdin is None:
            return False
        try:
            with self._write_lock:
                self._proc.stdin.write(line.encode("utf-8"))
                self._proc.stdin.flush()
            return True
        except (BrokenPipeError, OSError, ValueError):
            return False

    def close(self, grace: float = 5.0) -> None:
        """Ask politely (shutdown, then EOF on stdin), then terminate, then kill the whole group."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            self.send(protocol.request("shutdown"))
            try:
                proc.stdin.close()
            except OSError:
                pass
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.kill()
        self._join()

    def kill(self) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        try:
            if os.name == "posix":
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
        except (ProcessLookupError, PermissionError, OSError):
            proc.kill()
        try:
            proc.wait(5.0)
        except subprocess.TimeoutExpired:  # pragma: no cover - a kernel that ignores SIGKILL
            pass

    def _join(self) -> None:
        for thread in self._threads:
            thread.join(timeout=2.0)

    def stderr_tail(self, lines: int = 8) -> str:
        return "\n".join(list(self._stderr)[-lines:])

    # --- reader threads (never touch anything but the queue and the tail) ----------------------

    def _read_stdout(self, stderr_reader: threading.Thread) -> None:
        proc = self._proc
        for raw in iter(proc.stdout.readline, b""):
            text = raw.rstrip(b"\r\n")
            if not text.strip():
                continue
            try:
                self.events.put(protocol.decode_event(text))
            except BackendError as err:
                self.events.put(Garbage(text.decode("utf-8", "replace")[:500], err.message))
        proc.stdout.close()
        try:
            returncode = proc.wait(10.0)
        except subprocess.TimeoutExpired:  # stdout closed but still alive: the owner decides
            returncode = None
        stderr_reader.join(timeout=2.0)
        self.events.put(Exited(returncode, self.stderr_tail()))

    def _read_stderr(self) -> None:
        proc = self._proc
        for raw in iter(proc.stderr.readline, b""):
            # A progress bar redraws with carriage returns: keep only its latest state.
            line = raw.decode("utf-8", "replace").rstrip().rsplit("\r", 1)[-1]
            if line:
                self._stderr.append(line)
        proc.stderr.close()
