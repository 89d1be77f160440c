"""Stable error codes shared by the backend, its CLI, the server protocol and the add-on.

A code never changes meaning once released: the add-on and scripts branch on it. Each code also
fixes the CLI's exit status, so a pipeline can tell a bad image from a missing GPU without parsing
text.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ErrorCode:
    code: str
    exit_status: int
    summary: str


_CODES = (
    ErrorCode("invalid_request", 2, "the request or the command line is malformed"),
    ErrorCode("invalid_setting", 2, "a generation setting is unknown or out of range"),
    ErrorCode("input_not_found", 3, "the input file does not exist"),
    ErrorCode("input_unreadable", 4, "the input file is not a readable image or mesh"),
    ErrorCode("input_too_large", 5, "the input image is larger than the supported size"),
    ErrorCode("empty_foreground", 6, "no foreground object was found in the image"),
    ErrorCode("foreground_fills_frame", 7, "the foreground covers the whole image; no background to separate"),
    ErrorCode("output_unwritable", 8, "the output path cannot be written"),
    ErrorCode("engine_unavailable", 9, "the requested engine cannot run here (no GPU or no weights)"),
    ErrorCode("weights_not_found", 10, "model weights were not found locally or on the hub"),
    ErrorCode("out_of_memory", 11, "the device ran out of memory"),
    ErrorCode("cancelled", 12, "the job was cancelled"),
    ErrorCode("backend_unavailable", 13, "the backend process is not running or stopped answering"),
    ErrorCode("background_unclear", 14, "the object could not be told from the background with confidence"),
    # the HTTP API and its clients (backend/http, addon/core/remote.py)
    ErrorCode("unauthorized", 15, "the server refused the access token (missing, wrong or revoked)"),
    ErrorCode("queue_full", 16, "the server's job queue is full; retry after the time it gives"),
    ErrorCode("job_not_found", 17, "the server knows no such job for this token (never made, or removed)"),
    ErrorCode("job_lost", 18, "the server restarted while the job was queued or running"),
    ErrorCode("server_unreachable", 19, "no connection to the server (refused, unknown host, reset)"),
    ErrorCode("server_timeout", 20, "the server did not answer in time"),
    ErrorCode("internal_error", 70, "an unexpected error inside the backend"),
)

CODES: dict[str, ErrorCode] = {c.code: c for c in _CODES}


class BackendError(Exception):
    """An error the user can act on: carries a stable code and a message naming the culprit."""

    def __init__(self, code: str, message: str):
        if code not in CODES:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def exit_status(self) -> int:
        return CODES[self.code].exit_status

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}"
