"""The JSON-lines protocol between the add-on (client) and `python -m backend serve` (server).

One JSON object per line, UTF-8. Client lines carry `op` (a request), server lines carry `event`.
Both sides validate every line against the tables below, so a typo or a stale peer fails loudly
with `invalid_request` instead of being half-understood. Stdlib only: Blender's Python imports it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .errors import BackendError

PROTOCOL_VERSION = 1
MAX_LINE_BYTES = 1 << 20  # a generate request with settings is a few hundred bytes

_NUMBER = (int, float)

# name -> {field: (accepted types, required)}; None inside the types means JSON null is allowed.
REQUESTS: dict[str, dict[str, tuple[tuple, bool]]] = {
    "hello": {"protocol": ((int,), False), "client": ((str,), False)},
    "generate": {
        "job": ((str,), False),
        "image": ((str,), False),
        "mesh": ((str,), False),
        "output": ((str,), False),
        "engine": ((str,), False),
        "settings": ((dict,), False),
    },
    "cancel": {"job": ((str,), True)},
    # the cut-out preview (backend/cutout_preview.py): answered by a `cutout` event or an `error`, both
    # carrying `job` as given, so the client can match them; it never enters the job queue
    "prepare_image": {
        "job": ((str,), True),
        "image": ((str,), True),
        "output": ((str,), True),
        "checker": ((str,), False),
        "settings": ((dict,), False),
    },
    "status": {},
    "shutdown": {},
}

EVENTS: dict[str, dict[str, tuple[tuple, bool]]] = {
    "ready": {"protocol": ((int,), True), "version": ((str,), True), "engines": ((list,), True)},
    "accepted": {"job": ((str,), True), "engine": ((str,), True), "queue_position": ((int,), True)},
    "progress": {
        "job": ((str,), True),
        "stage": ((str,), True),
        "step": ((int,), True),
        "total": ((int,), True),
        "message": ((str,), False),
    },
    "artifact": {"job": ((str,), True), "kind": ((str,), True), "paths": ((list,), True)},
    "done": {
        "job": ((str,), True),
        "path": ((str,), True),
        "metadata": ((dict,), True),
        "seconds": (_NUMBER, True),
    },
    "error": {"job": ((str, type(None)), False), "code": ((str,), True), "message": ((str,), True)},
    "status": {"state": ((str,), True), "job": ((str, type(None)), True), "queue": ((list,), True)},
    "log": {"level": ((str,), True), "message": ((str,), True)},
    "cutout": {
        "job": ((str,), True),
        "path": ((str,), True),
        "size": ((int,), True),
        "foreground_ratio": (_NUMBER, True),
        "coverage": (_NUMBER, True),
        "method": ((str,), True),
        "confidence": (_NUMBER, True),
        "note": ((str,), False),
        "checker": ((str, type(None)), False),
    },
    "bye": {},
}

ENGINES = ("auto", "preview", "step1x3d")
STAGES = ("queued", "preprocess", "geometry", "mesh", "texture", "bake", "export")


@dataclass
class Message:
    """A validated request (`kind` = op) or event (`kind` = event name) with its fields."""

    kind: str
    fields: dict[str, Any] = field(default_factory=dict)

    def get(self, name: str, default: Any = None) -> Any:
        return self.fields.get(name, default)


def _validate(obj: Any, key: str, table: dict[str, dict[str, tuple[tuple, bool]]]) -> Message:
    if not isinstance(obj, dict):
        raise BackendError("invalid_request", "a protocol line must be a JSON object")
    kind = obj.get(key)
    if not isinstance(kind, str):
        raise BackendError("invalid_request", f"the line has no string {key!r} field")
    if kind not in table:
        raise BackendError("invalid_request", f"unknown {key} {kind!r}; expected one of {', '.join(table)}")
    spec = table[kind]
    fields = {k: v for k, v in obj.items() if k != key}
    for name, value in fields.items():
        if name not in spec:
            raise BackendError("invalid_request", f"{key} {kind!r} has no field {name!r}")
        types, _ = spec[name]
        # bool is an int subclass in Python but not a number in this protocol.
        if isinstance(value, bool) and bool not in types:
            raise BackendError("invalid_request", f"field {name!r} of {kind!r} must not be a boolean")
        if not isinstance(value, types):
            names = "/".join("null" if t is type(None) else t.__name__ for t in types)
            raise BackendError(
                "invalid_request", f"field {name!r} of {kind!r} must be {names}, got {type(value).__name__}"
            )
    for name, (_, required) in spec.items():
        if required and name not in fields:
            raise BackendError("invalid_request", f"{key} {kind!r} needs the field {name!r}")
    return Message(kind, fields)


def _parse(line: str | bytes) -> Any:
    if isinstance(line, bytes):
        if len(line) > MAX_LINE_BYTES:
            raise BackendError("invalid_request", f"line of {len(line)} bytes exceeds {MAX_LINE_BYTES}")
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError:
            raise BackendError("invalid_request", "line is not valid UTF-8") from None
    if len(line) > MAX_LINE_BYTES:
        raise BackendError("invalid_request", f"line of {len(line)} characters exceeds {MAX_LINE_BYTES}")
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise BackendError("invalid_request", f"line is not JSON: {exc.msg} at column {exc.colno}") from None


def decode_request(line: str | bytes) -> Message:
    msg = _validate(_parse(line), "op", REQUESTS)
    if msg.kind == "generate":
        if "image" not in msg.fields and "mesh" not in msg.fields:
            raise BackendError("invalid_request", "generate needs an 'image', a 'mesh', or both")
        if msg.get("engine", "auto") not in ENGINES:
            raise BackendError("invalid_request", f"unknown engine {msg.get('engine')!r}; expected {ENGINES}")
    return msg


def decode_event(line: str | bytes) -> Message:
    return _validate(_parse(line), "event", EVENTS)


def request(op: str, **fields: Any) -> str:
    """Encode a request line (validated, newline-terminated)."""
    obj = {"op": op, **{k: v for k, v in fields.items() if v is not None}}
    _validate(obj, "op", REQUESTS)
    return _dump(obj)


def event(name: str, **fields: Any) -> str:
    """Encode an event line (validated, newline-terminated). `job=None` is kept: it means no job."""
    obj = {"event": name, **{k: v for k, v in fields.items() if v is not None or k == "job"}}
    _validate(obj, "event", EVENTS)
    return _dump(obj)


def _dump(obj: dict) -> str:
    try:
        text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError as exc:  # NaN or infinity: not JSON
        raise BackendError("invalid_request", f"message is not valid JSON: {exc}") from None
    if len(text.encode("utf-8")) > MAX_LINE_BYTES:
        raise BackendError("invalid_request", "message exceeds the protocol's line limit")
    return text + "\n"
