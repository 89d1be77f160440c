"""Who may call the API, and how much they may send.

Tokens come from a file (one a line, `#` comments) or the STEP1X3D_TOKENS environment variable,
never from a URL. A job belongs to the digest of the token that made it, so the token itself is
never stored. A server reachable from other machines must have tokens: `check_bind` refuses to
start otherwise.
"""
from __future__ import annotations

import hashlib
import ipaddress
import os
import secrets
from pathlib import Path

from shared.errors import BackendError

TOKENS_ENV = "STEP1X3D_TOKENS"
MIN_TOKEN_LENGTH = 16
LOCAL_OWNER = "local"  # the one owner of a loopback server without tokens


def load_tokens(token_file: str | None = None, environ: dict[str, str] | None = None) -> list[str]:
    environ = os.environ if environ is None else environ
    tokens: list[str] = []
    if token_file:
        try:
            text = Path(token_file).expanduser().read_text(encoding="utf-8")
        except OSError as exc:
            raise BackendError("input_not_found", f"cannot read the token file {token_file}: {exc}") from None
        tokens += [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    tokens += environ.get(TOKENS_ENV, "").replace(",", " ").split()
    short = [t for t in tokens if len(t) < MIN_TOKEN_LENGTH]
    if short:
        raise BackendError("invalid_request", f"{len(short)} token(s) are shorter than {MIN_TOKEN_LENGTH} characters; "
                                              "make them with `python -c 'import secrets; print(secrets.token_urlsafe(32))'`")
    return tokens


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, tokens: list[str]) -> None:
    if not tokens and not is_loopback(host):
        raise BackendError("unauthorized", f"refusing to listen on {host} without an access token: give "
                                           f"--token-file or set {TOKENS_ENV} (or bind to 127.0.0.1)")


class Tokens:
    def __init__(self, tokens: list[str]):
        self._tokens = [t.encode("utf-8") for t in tokens]

    @property
    def required(self) -> bool:
        return bool(self._tokens)

    def owner(self, authorization: str | None) -> str:
        """The owner id for an `Authorization` header; raises `unauthorized`."""
        if not self._tokens:
            return LOCAL_OWNER
        scheme, _, value = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise BackendError("unauthorized", "send the access token as `Authorization: Bearer TOKEN`")
        given = value.strip().encode("utf-8")
        # compare with every token, so the time taken does not tell which one nearly matched
        if not any([secrets.compare_digest(given, t) for t in self._tokens]):
            raise BackendError("unauthorized", "the access token is not valid for this server")
        return "t-" + hashlib.sha256(given).hexdigest()[:24]


class BodyLimit:
    """Pure ASGI middleware: a request body over `limit` bytes gets 413, whether it announces its
    length or arrives chunked. (Neither FastAPI nor Starlette bounds uploads, and the check must
    come before the multipart parser spools the body to disk.)"""

    def __init__(self, app, limit: int, error_body):
        self.app, self.limit, self.error_body = app, limit, error_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        try:
            declared = int(headers.get(b"content-length", b"0"))
        except ValueError:
            declared = 0
        if declared > self.limit:
            return await self._refuse(send)
        seen = 0
        over = False
        started = False

        async def counting_receive():
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    over = True
                    return {"type": "http.disconnect"}  # the parser stops reading
            return message

        async def guarded_send(message):
            nonlocal started
            if over:
                return  # whatever the app answers to a cut body, the client gets the 413
            started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not over:
                raise
        if over and not started:
            await self._refuse(send)

    async def _refuse(self, send):
        status, headers, body = self.error_body(BackendError(
            "input_too_large", f"the request is larger than this server's limit of {self.limit} bytes"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
