"""Run a helper program (pip, `backend download`) and hand each line of its output to a callback.

Used from worker threads only: the callback must not touch Blender data. Output is split at both
newlines and carriage returns (progress bars redraw with `\\r`), every line also goes to an open
log file, and a cancel event terminates the whole process group within a fraction of a second.
"""
from __future__ import annotations

import os
import signal
import subprocess
import threading
from typing import Callable, TextIO


class Cancelled(Exception):
    """The user cancelled while the program ran."""


def _group_kwargs() -> dict:
    if os.name == "posix":
        return {"start_new_session": True}
    return {"creationflags": getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0) | getattr(subprocess, "CREATE_NO_WINDOW", 0)}


def _terminate(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        if os.name == "posix":
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.terminate()
        proc.wait(5.0)
    except (OSError, subprocess.TimeoutExpired):
        try:
            if os.name == "posix":
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
        except OSError:
            pass


def run_lines(argv: list[str], on_line: Callable[[str], None], *, cancel: threading.Event,
              log: TextIO | None = None, env: dict[str, str] | None = None, cwd: str | None = None,
              merge_stderr: bool = True, on_stderr: Callable[[str], None] | None = None) -> int:
    """Run `argv` to the end and return its exit code; raise Cancelled when `cancel` is set
    first, OSError when it cannot start. stderr goes to `on_stderr` (or the log) when not merged."""
    if log is not None:
        log.write("$ " + " ".join(argv) + "\n")
        log.flush()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
                            env=env, cwd=cwd, **_group_kwargs())
    watcher_done = threading.Event()

    def watch() -> None:
        while not watcher_done.wait(0.1):
            if cancel.is_set():
                _terminate(proc)
                return

    readers = [threading.Thread(target=watch, name="step1x3d-cancel-watch", daemon=True)]
    if not merge_stderr:
        readers.append(threading.Thread(target=_pump, args=(proc.stderr, on_stderr, log), daemon=True))
    for thread in readers:
        thread.start()
    try:
        _pump(proc.stdout, on_line, log)
        code = proc.wait()
    finally:
        watcher_done.set()
        for thread in readers:
            thread.join(timeout=5.0)
    if cancel.is_set():
        raise Cancelled()
    return code


def _pump(stream, on_line: Callable[[str], None] | None, log: TextIO | None) -> None:
    pending = b""
    while True:
        chunk = stream.read1(65536) if hasattr(stream, "read1") else stream.read(65536)
        if not chunk:
            break
        pending += chunk
        *complete, pending = pending.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        for raw in complete:
            _emit(raw, on_line, log)
    if pending:
        _emit(pending, on_line, log)
    stream.close()


def _emit(raw: bytes, on_line, log) -> None:
    line = raw.decode("utf-8", "replace").rstrip()
    if not line:
        return
    if log is not None:
        log.write(line + "\n")
        log.flush()
    if on_line is not None:
        on_line(line)
