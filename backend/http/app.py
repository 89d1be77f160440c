"""The HTTP API, version 1 (FastAPI): a second front door over the same `JobService` as `serve`.

    GET    /v1/health                    no token; {"status": "ok", "protocol": 1, ...}
    GET    /v1/info                      engines, GPUs, plan, weights (as `backend info --json`)
    POST   /v1/jobs                      multipart: image, mesh (optional), settings (JSON) -> 202
    GET    /v1/jobs                      this token's jobs
    GET    /v1/jobs/ID                   state, stage, step, total, error
    GET    /v1/jobs/ID/events            Server-Sent Events: the JSON-lines protocol's event objects
    GET    /v1/jobs/ID/result            the GLB
    GET    /v1/jobs/ID/artifacts/NAME    an intermediate file (the untextured mesh)
    DELETE /v1/jobs/ID                   cancel (queued or running)

Every failure is `{"error": {"code", "message"}}` with the code of shared/errors.py and an HTTP
status from `STATUS`. Uploads are checked as images or meshes before they are queued, with the
CLI's codes; the client never names a path on the server.
"""
from __future__ import annotations

import asyncio
import json
import secrets
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable

from fastapi import Depends, FastAPI, File, Form, Header, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPBearer
from fastapi.sse import EventSourceResponse, ServerSentEvent
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared import protocol
from shared import settings as settings_schema
from shared.errors import BackendError

from .. import __version__
from ..jobs import MESH_SUFFIXES
from ..service import JobService
from .book import JobBook, LiveJob
from .security import BodyLimit, Tokens
from .store import DONE, RESULT

STATUS = {
    "invalid_request": 400, "invalid_setting": 422, "input_not_found": 400, "input_unreadable": 415,
    "input_too_large": 413, "empty_foreground": 422, "foreground_fills_frame": 422, "output_unwritable": 500,
    "engine_unavailable": 503, "weights_not_found": 503, "out_of_memory": 503, "cancelled": 409,
    "backend_unavailable": 503, "unauthorized": 401, "queue_full": 429, "job_not_found": 404,
    "job_lost": 410, "internal_error": 500,
}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"}


@dataclass
class Limits:
    image_bytes: int = 32 << 20
    mesh_bytes: int = 128 << 20
    max_jobs: int = 16  # queued plus running; more gets 429


@dataclass
class ApiContext:
    service: JobService
    book: JobBook
    tokens: Tokens
    limits: Limits
    info: Callable[[], dict[str, Any]]  # backend info, as `backend info --json`
    sweep_seconds: float = 60.0


_bearer = HTTPBearer(auto_error=False, description="an access token of this server (--token-file)")


def _owner(request: Request, authorization: Annotated[str | None, Header()] = None, _=Depends(_bearer)) -> str:
    """The caller's owner id (a token digest); tokens are read from the header only."""
    return request.app.state.ctx.tokens.owner(authorization)


Owner = Annotated[str, Depends(_owner)]


def _owned_job(request: Request, job_id: str, who: Owner) -> LiveJob:
    """The caller's job (checked before a stream starts: once it has, no status can be sent)."""
    live = request.app.state.ctx.book.get(job_id, who)
    if live is None:
        raise BackendError("job_not_found", f"no job {job_id!r} for this token (never made, or removed)")
    return live


def error_parts(err: BackendError, retry_after: int | None = None) -> tuple[int, list, bytes]:
    body = json.dumps({"error": {"code": err.code, "message": err.message}}).encode()
    headers = [(b"content-type", b"application/json")]
    if err.code == "unauthorized":
        headers.append((b"www-authenticate", b"Bearer"))
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    return STATUS.get(err.code, 500), headers, body


def error_response(err: BackendError, retry_after: int | None = None) -> JSONResponse:
    status, headers, body = error_parts(err, retry_after)
    return JSONResponse(json.loads(body), status_code=status,
                        headers={k.decode(): v.decode() for k, v in headers if k != b"content-type"})


def create_app(ctx: ApiContext) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        ctx.book.loop = asyncio.get_running_loop()
        sweeper = asyncio.create_task(_sweep(ctx))
        yield
        sweeper.cancel()

    app = FastAPI(title="Step1X-3D backend", version=__version__, lifespan=lifespan,
                  description="Image to textured GLB. Submit a job, follow its events, download the result.")
    app.state.ctx = ctx
    limit = ctx.limits.image_bytes + ctx.limits.mesh_bytes + (1 << 20)
    app.add_middleware(BodyLimit, limit=limit, error_body=error_parts)

    @app.exception_handler(BackendError)
    async def _coded(request: Request, err: BackendError):
        retry = ctx.service.retry_after() if err.code == "queue_full" else None
        return error_response(err, retry)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        detail = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors())
        return error_response(BackendError("invalid_request", detail or "malformed request"))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        code = {401: "unauthorized", 404: "job_not_found", 413: "input_too_large"}.get(exc.status_code, "invalid_request")
        response = error_response(BackendError(code, str(exc.detail)))
        response.status_code = exc.status_code
        return response

    @app.get("/v1/health", tags=["server"])
    def health() -> dict[str, Any]:
        """Liveness, for load balancers and the add-on's Check; needs no token."""
        return {"status": "ok", "protocol": protocol.PROTOCOL_VERSION, "version": __version__,
                "queued": ctx.service.load(), "max_jobs": ctx.limits.max_jobs, "auth": ctx.tokens.required}

    @app.get("/v1/info", tags=["server"])
    async def info(who: Owner) -> dict[str, Any]:
        data = await run_in_threadpool(ctx.info)
        return {**data, "protocol": protocol.PROTOCOL_VERSION, "version": __version__,
                "limits": {"image_bytes": ctx.limits.image_bytes, "mesh_bytes": ctx.limits.mesh_bytes,
                           "max_jobs": ctx.limits.max_jobs},
                "settings": [s.name for s in settings_schema.SETTINGS]}

    @app.post("/v1/jobs", status_code=202, tags=["jobs"])
    async def submit(who: Owner, image: Annotated[UploadFile | None, File()] = None,
                     mesh: Annotated[UploadFile | None, File()] = None,
                     settings: Annotated[str, Form(description="JSON object of generation settings")] = "{}",
                     engine: Annotated[str | None, Form()] = None) -> dict[str, Any]:
        """Queue a job from an uploaded image (and optionally a mesh to texture)."""
        if image is None and mesh is None:
            raise BackendError("invalid_request", "send an `image` file, a `mesh` file, or both")
        if engine is not None and engine not in protocol.ENGINES:
            raise BackendError("invalid_request", f"unknown engine {engine!r}; expected one of {protocol.ENGINES}")
        values = _settings(settings)
        if ctx.service.load() >= ctx.limits.max_jobs:  # refuse before copying and checking the uploads
            raise BackendError("queue_full", f"{ctx.limits.max_jobs} jobs are queued or running; retry later")
        job_id = secrets.token_hex(8)
        folder = ctx.book.open(job_id, who)
        try:
            paths, names = {}, {}
            for field, upload, limit, suffixes in (("image", image, ctx.limits.image_bytes, IMAGE_SUFFIXES),
                                                   ("mesh", mesh, ctx.limits.mesh_bytes, set(MESH_SUFFIXES))):
                if upload is not None:
                    paths[field] = await _save(upload, folder / "input", field, limit, suffixes)
                    names[field] = upload.filename or field
        except BaseException:
            ctx.book.discard(job_id)
            raise
        await run_in_threadpool(queue_job, ctx, job_id, paths, names, values, engine)
        return {"job": job_id, "position": ctx.service.position(job_id) or 0}

    @app.get("/v1/jobs", tags=["jobs"])
    def list_jobs(who: Owner) -> dict[str, Any]:
        return {"jobs": [j.record.public() for j in ctx.book.owned(who)]}

    @app.get("/v1/jobs/{job_id}", tags=["jobs"])
    def job_state(request: Request, job_id: str, who: Owner) -> dict[str, Any]:
        live = _owned_job(request, job_id, who)
        return {**live.record.public(), "position": ctx.service.position(job_id)}

    @app.get("/v1/jobs/{job_id}/events", response_class=EventSourceResponse, tags=["jobs"])
    async def job_events(live: Annotated[LiveJob, Depends(_owned_job)],
                         last_event_id: Annotated[str | None, Header()] = None):
        """The job's events from the start (or after Last-Event-ID), until its `done` or `error`."""
        after = int(last_event_id) if last_event_id and last_event_id.isdigit() else -1
        async for index, event in ctx.book.events(live, after):
            yield ServerSentEvent(raw_data=json.dumps(event, separators=(",", ":")), event=event["event"],
                                  id=str(index))

    @app.get("/v1/jobs/{job_id}/result", tags=["jobs"], response_class=FileResponse,
             responses={200: {"content": {"model/gltf-binary": {}}}})
    def job_result(request: Request, job_id: str, who: Owner):
        live = _owned_job(request, job_id, who)
        path = ctx.book.store.folder(job_id) / RESULT
        if live.record.state != DONE or not path.is_file():
            raise BackendError("invalid_request", f"job {job_id} has no result (it is {live.record.state})")
        return FileResponse(path, media_type="model/gltf-binary", filename=f"{job_id}.glb")

    @app.get("/v1/jobs/{job_id}/artifacts/{name}", tags=["jobs"])
    def job_artifact(request: Request, job_id: str, name: str, who: Owner):
        live = _owned_job(request, job_id, who)
        if name not in live.record.artifacts:  # only names the server made: no path from the client
            raise BackendError("job_not_found", f"job {job_id} has no artifact {name!r}")
        path = ctx.book.store.folder(job_id) / "artifacts" / name
        media = "model/gltf-binary" if name.endswith(".glb") else None
        return FileResponse(path, media_type=media, filename=name)

    @app.delete("/v1/jobs/{job_id}", status_code=202, tags=["jobs"])
    def cancel(request: Request, job_id: str, who: Owner) -> dict[str, Any]:
        """Cancel a queued job (at once) or a running one (at its next step)."""
        live = _owned_job(request, job_id, who)
        if live.record.finished_state:
            raise BackendError("cancelled" if live.record.state == "cancelled" else "invalid_request",
                               f"job {job_id} already ended ({live.record.state})")
        try:
            was = ctx.service.cancel(job_id)
        except BackendError:  # it ended between the check and the cancel
            raise BackendError("invalid_request", f"job {job_id} already ended ({live.record.state})") from None
        return {"job": job_id, "state": "cancelled" if was == "queued" else "cancelling"}

    return app


def queue_job(ctx: ApiContext, job_id: str, paths: dict[str, Path], names: dict[str, str],
              settings: dict[str, Any], engine: str | None = None) -> None:
    """Check a job's saved uploads and queue it (the API and the web page both come here); on any
    failure the job and its folder are gone and the error names the uploads, not server paths."""
    try:
        try:
            check_inputs(paths.get("image"), paths.get("mesh"), settings)
        except BackendError as err:
            message = err.message
            for field, path in paths.items():
                message = message.replace(str(path), repr(names.get(field, field)))
            raise BackendError(err.code, message) from None
        ctx.service.submit(image=str(paths["image"]) if "image" in paths else None,
                           mesh=str(paths["mesh"]) if "mesh" in paths else None,
                           output=str(ctx.book.store.folder(job_id) / RESULT), engine=engine, settings=settings,
                           job_id=job_id)
    except BaseException:
        ctx.book.discard(job_id)
        raise


def _settings(text: str) -> dict[str, Any]:
    try:
        raw = json.loads(text or "{}")
    except json.JSONDecodeError as exc:
        raise BackendError("invalid_request", f"`settings` is not JSON: {exc.msg}") from None
    if not isinstance(raw, dict):
        raise BackendError("invalid_request", "`settings` must be a JSON object")
    return settings_schema.resolve(raw)


async def _save(upload: UploadFile, folder: Path, field: str, limit: int, suffixes: set[str]) -> Path:
    """Copy an upload under a name the server picks; only its suffix comes from the client."""
    suffix = Path(upload.filename or "").suffix.lower()
    if suffix not in suffixes:
        raise BackendError("input_unreadable", f"the {field} file {upload.filename!r} is not one of "
                                               f"{', '.join(sorted(suffixes))}")
    path = folder / f"{field}{suffix}"
    size = 0
    with open(path, "wb") as out:
        while chunk := await upload.read(1 << 20):
            size += len(chunk)
            if size > limit:
                raise BackendError("input_too_large", f"the {field} file is larger than {limit} bytes")
            out.write(chunk)
    if size == 0:
        raise BackendError("input_unreadable", f"the {field} file is empty")
    return path


def check_inputs(image: Path | None, mesh: Path | None, settings: dict[str, Any]) -> None:
    """The checks the engines would fail on, run before queueing, with the same codes."""
    if image is not None:
        from ..imaging import foreground_alpha, load_image

        foreground_alpha(load_image(image), settings["remove_background"])
    if mesh is not None:
        from ..engines.step1x3d import load_mesh

        load_mesh(mesh)


async def _sweep(ctx: ApiContext) -> None:
    """Remove expired results now and then (and once at start)."""
    while True:
        await run_in_threadpool(ctx.book.sweep)
        await asyncio.sleep(ctx.sweep_seconds)
