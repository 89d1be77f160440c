"""The add-on's side of a remote backend: the HTTP API v1 of `python -m backend serve --http`.

`RemoteSession` has the interface of `Session` (session.py) and feeds the same `Job` state
machine with the same protocol events, so Generate, progress, cancel, import and history work as
with a local backend. All network I/O runs on worker threads with the standard library only
(Blender's Python has no requests); the threads put events on a queue that `pump()` drains on the
main thread. Results are downloaded to the job's local output path (temporary name, then rename)
before `done` is handed over. Failures come as stable codes: server_unreachable, server_timeout,
unauthorized, queue_full, job_lost (the server restarted under the job).
"""
from __future__ import annotations

import collections
import http.client
import json
import os
import queue
import socket
import ssl
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import urlsplit

from ..shared import protocol
from ..shared.errors import CODES, BackendError
from .jobs import Job, JobRequest, Outcome
from .session import BUSY, CRASHED, READY, STARTING, STOPPED, JobTable, Timeouts

REQUEST_TIMEOUT = 30.0  # one plain request (uploads included)
RETRY_PAUSE = 1.0  # between reconnects of an event stream


@dataclass(frozen=True)
class RemoteConfig:
    url: str  # http(s)://host:port of the server
    token: str = ""
    online: bool = True

    engine = "auto"  # the server picks (its --engine and plan)

    def check(self) -> None:
        parts = urlsplit(self.url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BackendError("server_unreachable", f"the server URL {self.url!r} is not like "
                                                     "http://host:8188 or https://host")
        if not self.online and parts.hostname not in ("localhost", "127.0.0.1", "::1"):
            raise BackendError("server_unreachable", "Blender's online access is off (Preferences > System > "
                                                     "Network): allow it to use a server on another machine")


class RemoteClient:
    """Blocking calls to one server; every failure is a BackendError with a stable code."""

    def __init__(self, config: RemoteConfig, timeout: float = REQUEST_TIMEOUT):
        config.check()
        parts = urlsplit(config.url.strip())
        self.https = parts.scheme == "https"
        self.host, self.port = parts.hostname, parts.port or (443 if self.https else 80)
        self.prefix = parts.path.rstrip("/")
        self.token, self.timeout = config.token.strip(), timeout

    def _connect(self, timeout: float) -> http.client.HTTPConnection:
        if self.https:
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout,
                                               context=ssl.create_default_context())
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def open(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
             timeout: float | None = None) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Send a request; the response is open for reading. Raises coded errors for non-2xx."""
        heads = {"Accept": "application/json", **(headers or {})}
        if self.token:
            heads["Authorization"] = f"Bearer {self.token}"
        conn = self._connect(timeout or self.timeout)
        try:
            conn.request(method, self.prefix + path, body=body, headers=heads)
            response = conn.getresponse()
        except BaseException as exc:
            conn.close()
            raise _network_error(exc, self) from None
        if response.status >= 300:
            try:
                raise _http_error(response)
            finally:
                conn.close()
        return conn, response

    def call(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> dict:
        conn, response = self.open(method, path, body, headers)
        try:
            return json.loads(response.read() or b"{}")
        except (OSError, http.client.HTTPException) as exc:
            raise _network_error(exc, self) from None
        finally:
            conn.close()

    def info(self) -> dict:
        return self.call("GET", "/v1/info")

    def submit(self, request: JobRequest) -> str:
        parts = [("settings", None, json.dumps(request.settings).encode())]
        if request.engine and request.engine != "auto":
            parts.append(("engine", None, request.engine.encode()))
        for field, path in (("image", request.image), ("mesh", request.mesh)):
            if path:
                try:
                    parts.append((field, Path(path).name, Path(path).read_bytes()))
                except OSError as exc:
                    raise BackendError("input_not_found", f"cannot read {path}: {exc}") from None
        body, content_type = multipart(parts)
        return self.call("POST", "/v1/jobs", body, {"Content-Type": content_type})["job"]

    def cancel(self, job_id: str) -> None:
        self.call("DELETE", f"/v1/jobs/{job_id}")

    def events(self, job_id: str, after: int, timeout: float) -> Iterator[tuple[int, str]]:
        """(event id, data) of the job's SSE stream after `after`; ends when the server closes it."""
        headers = {"Accept": "text/event-stream"}
        if after >= 0:
            headers["Last-Event-ID"] = str(after)
        conn, response = self.open("GET", f"/v1/jobs/{job_id}/events", headers=headers, timeout=timeout)
        try:
            event_id, data = after, []
            while True:
                line = response.readline()
                if not line:
                    return
                text = line.decode("utf-8").rstrip("\r\n")
                if text.startswith("data:"):
                    data.append(text[5:].lstrip(" "))
                elif text.startswith("id:"):
                    event_id = int(text[3:].strip() or event_id)
                elif not text and data:
                    yield event_id, "\n".join(data)
                    data = []
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise _network_error(exc, self) from None
        finally:
            conn.close()

    def download(self, path: str, target: Path) -> Path:
        """GET a file to `target` through a temporary name, so a cut transfer leaves nothing."""
        conn, response = self.open("GET", path, headers={"Accept": "*/*"})
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:6]}.part")
        try:
            with open(tmp, "wb") as out:
                while chunk := response.read(1 << 16):
                    out.write(chunk)
            os.replace(tmp, target)
        except (OSError, http.client.HTTPException) as exc:
            tmp.unlink(missing_ok=True)
            raise _network_error(exc, self) from None
        finally:
            conn.close()
        return target


def multipart(parts: list[tuple[str, str | None, bytes]]) -> tuple[bytes, str]:
    """multipart/form-data body of (field, filename or None, bytes) parts, and its content type."""
    boundary = uuid.uuid4().hex
    chunks = []
    for field, filename, data in parts:
        disposition = f'form-data; name="{field}"' + (f'; filename="{_quote(filename)}"' if filename else "")
        chunks += [f"--{boundary}\r\nContent-Disposition: {disposition}\r\n".encode(),
                   b"Content-Type: application/octet-stream\r\n\r\n" if filename else b"\r\n", data, b"\r\n"]
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


def _quote(name: str) -> str:
    return name.replace("\\", "_").replace('"', "_").replace("\r", "_").replace("\n", "_")


def _network_error(exc: BaseException, client: RemoteClient) -> BackendError:
    if isinstance(exc, BackendError):
        return exc
    where = f"{client.host}:{client.port}"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return BackendError("server_timeout", f"the server {where} did not answer within {client.timeout:g} s")
    return BackendError("server_unreachable", f"no connection to the server {where}: {exc or type(exc).__name__}")


def _http_error(response: http.client.HTTPResponse) -> BackendError:
    try:
        error = json.loads(response.read()).get("error", {})
        code, message = error.get("code"), error.get("message", "")
    except (ValueError, AttributeError, OSError, http.client.HTTPException):
        code, message = None, ""
    if code not in CODES:
        code = {401: "unauthorized", 404: "job_not_found", 413: "input_too_large", 429: "queue_full"}.get(
            response.status, "internal_error")
    retry = response.getheader("Retry-After")
    if code == "queue_full" and retry:
        message = f"{message} (the server suggests retrying in {retry} s)".strip()
    return BackendError(code, message or f"HTTP {response.status} {response.reason}")


def remote_info(config: RemoteConfig) -> str:
    """The preferences' Check: what the server says about itself, as lines."""
    info = RemoteClient(config).info()
    gpus = "; ".join(f"{g.get('name', 'GPU')} ({g.get('index', '?')})" for g in info.get("gpus", [])) or "none"
    return "\n".join([
        f"server {config.url} (backend {info.get('version')}, protocol {info.get('protocol')})",
        f"engines: {', '.join(info.get('engines', []))}; auto -> {info.get('auto')}",
        f"GPUs: {gpus}",
        f"device plan: {info.get('plan')}",
        f"queue limit: {info.get('limits', {}).get('max_jobs')} jobs",
    ])


class RemoteSession(JobTable):
    """`Session` for a server: same jobs, outcomes and blocking `wait`, no process."""

    process = None  # nothing local to keep the timer alive for once the jobs are done

    def __init__(self, config: RemoteConfig, timeouts: Timeouts = Timeouts(),
                 clock: Callable[[], float] = time.monotonic):
        self.config, self.timeouts, self._clock = config, timeouts, clock
        self.jobs: dict[str, Job] = {}
        self.backend_info: dict = {}
        self.problem = ""
        self.log: collections.deque[tuple[str, str]] = collections.deque(maxlen=200)
        self._events: queue.Queue = queue.Queue()
        self._state = STOPPED
        self._cancel_flags: dict[str, threading.Event] = {}
        self._scratch = Path(tempfile.gettempdir()) / "step1x3d-remote"

    @property
    def state(self) -> str:
        if self._state == READY and self.active_jobs:
            return BUSY
        return self._state

    def start(self) -> None:
        """Ask the server who it is (on a thread); the answer arrives through `pump`."""
        if self._state in (STARTING, READY):
            return
        self._state = STARTING
        self._thread(self._hello, "hello")

    def stop(self, grace: float = 5.0) -> list[Outcome]:
        outcomes = []
        for job in self.active_jobs:
            flag = self._cancel_flags.get(job.job_id)
            if flag is not None:
                flag.set()
            outcome = job.request_cancel() or job.fail("cancelled", "the connection to the server was closed")
            if outcome:
                outcomes.append(outcome)
        self._state = STOPPED
        return outcomes

    def submit(self, request: JobRequest) -> Job:
        if request.job_id in self.jobs:
            raise BackendError("invalid_request", f"job id {request.job_id!r} is already in use")
        self.config.check()
        job = Job(request)
        self.jobs[request.job_id] = job
        self._cancel_flags[request.job_id] = threading.Event()
        job.sent()
        self._thread(lambda: self._follow(request, self._cancel_flags[request.job_id]), request.job_id)
        self._forget_old()
        return job

    def cancel(self, job_id: str) -> list[Outcome]:
        job = self.jobs.get(job_id)
        if job is None or not job.active:
            return []
        self._cancel_flags[job_id].set()  # the worker sends DELETE (now, or once the job has an id)
        outcome = job.request_cancel()
        return [outcome] if outcome else []

    def pump(self, timeout: float = 0.0) -> list[Outcome]:
        outcomes: list[Outcome] = []
        try:
            item = self._events.get(timeout=timeout) if timeout > 0 else self._events.get_nowait()
            while True:
                outcomes += self._handle(item)
                item = self._events.get_nowait()
        except queue.Empty:
            pass
        return outcomes

    def _give_up(self, job_id: str, timeout: float) -> list[Outcome]:
        outcome = self.jobs[job_id].fail("server_timeout", f"no result within {timeout:g} s")
        return [outcome] if outcome else []

    # --- main thread --------------------------------------------------------------------------

    def _handle(self, item) -> list[Outcome]:
        kind, payload = item
        if kind == "hello":
            self.backend_info, self._state, self.problem = payload, READY, ""
            return []
        if kind == "problem":
            self._state, self.problem = CRASHED, payload
            self.log.append(("error", payload))
            return []
        job = self.jobs.get(payload.get("job"))
        if job is None:
            return []
        outcome = job.apply(payload)
        if payload.kind == "error" and payload.get("code") in ("server_unreachable", "server_timeout"):
            self._state, self.problem = CRASHED, payload.get("message")
        elif self._state != READY and payload.kind in ("accepted", "progress", "done"):
            self._state, self.problem = READY, ""
        return [outcome] if outcome else []

    # --- worker threads -----------------------------------------------------------------------

    def _thread(self, target, name: str) -> None:
        threading.Thread(target=target, name=f"step1x3d-remote-{name}", daemon=True).start()

    def _hello(self) -> None:
        try:
            self._events.put(("hello", RemoteClient(self.config).info()))
        except BackendError as err:
            self._events.put(("problem", f"[{err.code}] {err.message}"))

    def _put(self, job_id: str, name: str, **fields) -> None:
        self._events.put(("event", protocol.decode_event(protocol.event(name, job=job_id, **fields))))

    def _follow(self, request: JobRequest, cancel: threading.Event) -> None:
        """Submit, then follow the event stream, reconnecting through short outages, until the end."""
        local = request.job_id
        client = RemoteClient(self.config)
        try:
            remote = client.submit(request)
        except BackendError as err:
            self._put(local, "error", code=err.code, message=err.message)
            return
        self.log.append(("info", f"job {local} is {remote} on {self.config.url}"))
        after, last_contact, cancel_sent = -1, self._clock(), False
        while True:
            if cancel.is_set() and not cancel_sent:
                cancel_sent = self._send_cancel(client, remote)
            try:
                for event_id, data in client.events(remote, after, timeout=self.timeouts.silence):
                    after, last_contact = event_id, self._clock()
                    if self._deliver(client, request, protocol.decode_event(data)):
                        return
                    if cancel.is_set() and not cancel_sent:
                        cancel_sent = self._send_cancel(client, remote)
            except BackendError as err:
                retry = err.code in ("server_unreachable", "server_timeout")
                if not retry or self._clock() - last_contact > self.timeouts.silence:
                    code = "job_lost" if err.code == "job_not_found" else err.code
                    self._put(local, "error", code=code, message=err.message)
                    return
                time.sleep(RETRY_PAUSE)

    def _send_cancel(self, client: RemoteClient, remote: str) -> bool:
        try:
            client.cancel(remote)
        except BackendError as err:
            if err.code in ("server_unreachable", "server_timeout"):
                return False  # try again after reconnecting
        return True  # sent, or the job had already ended

    def _deliver(self, client: RemoteClient, request: JobRequest, msg: protocol.Message) -> bool:
        """Hand one server event over as the local job's; True when it was the last one."""
        fields = {**msg.fields, "job": request.job_id}
        try:
            if msg.kind == "artifact":
                target = self._scratch / f"{request.job_id}-{msg.get('kind')}.glb"
                glbs = [p for p in fields["paths"] if p.lower().endswith(".glb")][:1]
                fields["paths"] = [str(client.download(p, target)) for p in glbs]
            elif msg.kind == "done":
                fields["path"] = str(client.download(msg.get("path"), Path(request.output)))
        except BackendError as err:
            if msg.kind == "artifact":
                self.log.append(("warning", f"preview not downloaded: {err.message}"))
                return False
            self._put(request.job_id, "error", code=err.code, message=f"the result could not be downloaded: "
                                                                      f"{err.message}")
            return True
        self._put(request.job_id, msg.kind, **{k: v for k, v in fields.items() if k != "job"})
        return msg.kind in ("done", "error")

    def _forget_old(self) -> None:
        super()._forget_old()
        self._cancel_flags = {k: f for k, f in self._cancel_flags.items() if k in self.jobs}
