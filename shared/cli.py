"""How every command-line entry point ends: one error line with the stable code, that code's exit
status, 130 on Ctrl-C. The backend's and blender_render's commands share it, so a pipeline sees
the same `error [code] message` line and status from all of them."""
from __future__ import annotations

import sys
from typing import Callable

from .errors import BackendError

INTERRUPTED = 130  # the shell's status for a process ended by SIGINT


def report_error(err: BackendError) -> None:
    print(f"error [{err.code}] {err.message}", file=sys.stderr, flush=True)


def run_command(body: Callable[[], int], interrupted: str = "interrupted") -> int:
    """`body()`'s status, or the status of the coded error it raised (reported on stderr)."""
    try:
        return body()
    except BackendError as err:
        report_error(err)
        return err.exit_status
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr, flush=True)
        return INTERRUPTED
