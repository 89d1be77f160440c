"""`python -m backend serve`: the JSON-lines front door the Blender add-on drives.

A reader thread takes requests from stdin and answers the quick ones at once; the main thread
runs the job loop of a `JobService` (backend/service.py, the job logic the HTTP API shares),
keeping engines (and their models) loaded between jobs: one at a time, or, under the multi
plan, pipelined on two lanes so the geometry of one job overlaps the texture of the one before.
The protocol stream is a private duplicate of the original stdout; file descriptor 1 itself is
pointed at stderr, so anything a library prints (Python or C level) lands in the log, never in
the protocol.
"""
from __future__ import annotations

import os
import sys
import threading
import uuid
from typing import TextIO

from shared import protocol
from shared.errors import BackendError

from . import __version__
from .jobs import JobRunner
from .service import JobService


class Server:
    def __init__(self, out: TextIO, default_engine: str = "auto", runner: JobRunner | None = None):
        self.out = out
        self._lock = threading.Lock()  # guards the stream
        self.service = JobService(runner or JobRunner(), self.emit, default_engine=default_engine)
        self.runner = self.service.runner
        self.jobs = self.service.jobs

    # ---- output ----
    def emit(self, name: str, **fields) -> None:
        line = protocol.event(name, **fields)
        with self._lock:
            try:
                self.out.write(line)
                self.out.flush()
            except (BrokenPipeError, ValueError):
                pass  # the client went away; the read loop will see EOF and stop

    # ---- requests ----
    def handle_line(self, line: str) -> bool:
        """Handle one request line; returns False when the server should stop."""
        if not line.strip():
            return True
        try:
            msg = protocol.decode_request(line)
        except BackendError as err:
            self.emit("error", job=None, code=err.code, message=err.message)
            return True
        handler = getattr(self, f"_op_{msg.kind}")
        return handler(msg) is not False

    def _op_hello(self, msg: protocol.Message) -> None:
        client = msg.get("protocol", protocol.PROTOCOL_VERSION)
        if client != protocol.PROTOCOL_VERSION:
            self.emit("error", job=None, code="invalid_request",
                      message=f"protocol {client} is not supported; this backend speaks {protocol.PROTOCOL_VERSION}")
            return
        self._ready()

    def _ready(self) -> None:
        self.emit("ready", protocol=protocol.PROTOCOL_VERSION, version=__version__, engines=list(protocol.ENGINES))

    def _op_generate(self, msg: protocol.Message) -> None:
        job_id = msg.get("job") or uuid.uuid4().hex[:12]
        try:
            self.service.submit(image=msg.get("image"), mesh=msg.get("mesh"), output=msg.get("output"),
                                engine=msg.get("engine"), settings=msg.get("settings"), job_id=job_id)
        except BackendError as err:
            self.emit("error", job=job_id, code=err.code, message=err.message)

    def _op_cancel(self, msg: protocol.Message) -> None:
        try:
            self.service.cancel(msg.get("job"))
        except BackendError as err:
            self.emit("error", job=msg.get("job"), code=err.code, message=err.message)

    def _op_prepare_image(self, msg: protocol.Message) -> None:
        """The cut-out preview, on its own thread: quick requests (cancel, status) stay answered."""
        def work() -> None:
            from .cutout_preview import write_cutout

            try:
                result = write_cutout(msg.get("image"), msg.get("output"), msg.get("settings"), msg.get("checker"))
            except BackendError as err:
                self.emit("error", job=msg.get("job"), code=err.code, message=err.message)
            except Exception as exc:  # never let a preview take the server down
                self.emit("error", job=msg.get("job"), code="internal_error", message=f"{type(exc).__name__}: {exc}")
            else:
                self.emit("cutout", job=msg.get("job"), **result.as_dict())

        threading.Thread(target=work, name="step1x3d-cutout", daemon=True).start()

    def _op_status(self, msg: protocol.Message) -> None:
        self.emit("status", **self.service.status())

    def _op_shutdown(self, msg: protocol.Message) -> bool:
        return False

    # ---- lifecycle ----
    def _read(self, stdin: TextIO) -> None:
        for line in stdin:
            if not self.handle_line(line):
                break
        self.stop()  # shutdown requested, or stdin closed because the client is gone

    def stop(self) -> None:
        """Cancel everything and let the job loop end after the running job's next step."""
        self.service.stop()

    def serve_forever(self, stdin: TextIO) -> None:
        self._ready()
        threading.Thread(target=self._read, args=(stdin,), name="request-reader", daemon=True).start()
        self.service.run()
        self.emit("bye")


def _protocol_stream() -> TextIO:
    """Keep the real stdout for the protocol and send fd 1 (and sys.stdout) to stderr."""
    sys.stdout.flush()
    proto_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(proto_fd, "w", encoding="utf-8", buffering=1)


def serve(default_engine: str = "auto", runner: JobRunner | None = None) -> int:
    out = _protocol_stream()
    stdin = open(sys.stdin.fileno(), "r", encoding="utf-8", errors="replace", closefd=False)
    Server(out, default_engine=default_engine, runner=runner).serve_forever(stdin)
    return 0
