"""Child processes that never outlive their parent (stdlib only; the backend's mesh workers and
blender_render's workers both call it first thing).

Two mechanisms, because neither is enough alone: on Linux the kernel sends SIGKILL when the
parent dies (PR_SET_PDEATHSIG), which also stops a child stuck in native code, but it fires when
the *thread* that started the child ends, so the parent must start children from a thread that
lives as long as they should; everywhere, a daemon thread watches a pipe whose only writer is the
parent and exits the process when it reads end-of-file, which the OS delivers when the parent
dies however it dies.
"""
from __future__ import annotations

import os
import sys
import threading

PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int = 0, watch=None) -> None:
    """Call in the child. `parent_pid`: the parent it must still have (0: not checked);
    `watch`: a `multiprocessing.connection.Connection` (or anything with `recv`) read until EOF."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if parent_pid and os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)
    if watch is not None:
        threading.Thread(target=_exit_at_eof, args=(watch,), name="parent-watch", daemon=True).start()


def _exit_at_eof(connection) -> None:
    try:
        while True:
            connection.recv()  # the parent never sends; this returns only by raising at EOF
    except (EOFError, OSError):
        pass
    os._exit(1)
