"""The web page at `/` of the HTTP server: upload, cut-out preview, settings, progress, cancel, a 3D
viewer of the result and a download link.

Built with NiceGUI (a FastAPI-native UI library that ships its own Vue, Quasar and three.js, so the
page works with no network): Gradio 6, the reference's choice, requires pillow<13 and cannot share
the backend's environment. The page runs in the server process and queues jobs through the same
`queue_job` as POST /v1/jobs, so it obeys the same checks, limits and tokens. The viewer and the
download fetch the GLB through an unguessable per-result URL the page alone knows (a browser's
three.js loader cannot send a Bearer header).
"""
from __future__ import annotations

import base64
import io
import secrets
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI
from fastapi.responses import FileResponse
from nicegui import run, ui
from PIL import Image

from shared import settings as settings_schema
from shared.errors import BackendError

from .app import IMAGE_SUFFIXES, ApiContext, queue_job
from .security import LOCAL_OWNER
from .store import DONE, RESULT


def cutout_preview(data: bytes, suffix: str, mode: str) -> bytes:
    """The image as the engines will see its object: a PNG with the background made transparent.
    Hook: when backend.imaging grows a prepare_image (background removal with a model), call it here."""
    from ..imaging import foreground_alpha, load_image

    with tempfile.NamedTemporaryFile(suffix=suffix) as tmp:
        tmp.write(data)
        tmp.flush()
        image = load_image(tmp.name)
        alpha = foreground_alpha(image, mode)
    rgba = image.rgba.copy()
    rgba[..., 3] = np.clip(alpha * 255.0 + 0.5, 0, 255).astype(np.uint8)
    out = io.BytesIO()
    picture = Image.fromarray(rgba, "RGBA")
    picture.thumbnail((384, 384))
    picture.save(out, format="PNG")
    return out.getvalue()


def _control(spec: settings_schema.Setting, values: dict[str, Any]):
    """A widget bound to `values[spec.name]`, chosen by the setting's type and limits."""
    if spec.type is bool:
        widget = ui.switch(spec.label)
    elif spec.choices:
        widget = ui.select(list(spec.choices), label=spec.label)
    elif spec.type in (int, float):
        widget = ui.number(spec.label, min=spec.minimum, max=spec.maximum,
                           step=1 if spec.type is int else 0.05, format="%d" if spec.type is int else None)
    else:
        widget = ui.input(spec.label)
    widget.bind_value(values, spec.name).tooltip(spec.help).classes("w-full")
    return widget


def mount(app: FastAPI, ctx: ApiContext) -> None:
    files: dict[str, Path] = {}  # capability key -> a finished result

    @app.get("/web/files/{key}/{name}", include_in_schema=False)
    def web_file(key: str, name: str):
        path = files.get(key)
        if path is None or not path.is_file():
            raise BackendError("job_not_found", "this result is gone (expired or removed)")
        return FileResponse(path, media_type="model/gltf-binary", filename=name)

    @ui.page("/", title="Step1X-3D")
    def page() -> None:
        values = settings_schema.defaults()
        upload_state: dict[str, Any] = {"data": None, "name": "", "job": None, "owner": None, "shown": None}

        ui.markdown("## Step1X-3D: image to textured 3D model")
        with ui.row().classes("w-full items-start gap-8"):
            with ui.column().classes("w-96"):
                token = ui.input("Access token", password=True).classes("w-full")
                token.set_visibility(ctx.tokens.required)
                picker = ui.upload(label="Reference image", auto_upload=True, max_file_size=ctx.limits.image_bytes)
                picker.props("accept=image/*").classes("w-full")
                cutout = ui.image().classes("w-64 h-64").props("fit=contain")
                cutout.set_visibility(False)
                with ui.expansion("Settings").classes("w-full"):
                    for spec in settings_schema.SETTINGS:
                        _control(spec, values)
                with ui.row():
                    generate = ui.button("Generate", icon="auto_awesome").classes("generate")
                    cancel = ui.button("Cancel", icon="close", color="negative").classes("cancel")
                cancel.disable()
                bar = ui.linear_progress(value=0, show_value=False).classes("w-full")
                status = ui.label("Upload an image").classes("status")
            with ui.column():
                viewer = ui.scene(width=520, height=420, grid=False, background_color="#dfe3e8").classes("viewer")
                download = ui.link("Download GLB", "#").classes("download")
                download.props("download")
                download.set_visibility(False)

        async def on_upload(event) -> None:
            name = event.file.name or "image.png"
            suffix = Path(name).suffix.lower()
            data = await event.file.read()
            if suffix not in IMAGE_SUFFIXES:
                status.text = f"{name} is not one of {', '.join(sorted(IMAGE_SUFFIXES))}"
                return
            upload_state.update(data=data, name=name)
            try:
                png = await run.io_bound(cutout_preview, data, suffix, values["remove_background"])
            except BackendError as err:
                status.text = f"[{err.code}] {err.message.replace(tempfile.gettempdir(), '…')}"
                cutout.set_visibility(False)
                return
            cutout.set_source("data:image/png;base64," + base64.b64encode(png).decode())
            cutout.set_visibility(True)
            status.text = f"{name}: ready to generate"

        async def on_generate() -> None:
            if upload_state["data"] is None:
                status.text = "Upload an image first"
                return
            try:
                owner = ctx.tokens.owner(f"Bearer {token.value}") if ctx.tokens.required else LOCAL_OWNER
                settings = settings_schema.resolve({k: v for k, v in values.items() if v is not None})
            except BackendError as err:
                status.text = f"[{err.code}] {err.message}"
                return
            job_id = secrets.token_hex(8)
            folder = ctx.book.open(job_id, owner)
            suffix = Path(upload_state["name"]).suffix.lower()
            path = folder / "input" / f"image{suffix}"
            path.write_bytes(upload_state["data"])
            try:
                if ctx.service.load() >= ctx.limits.max_jobs:
                    ctx.book.discard(job_id)
                    raise BackendError("queue_full", f"the server is busy; retry in {ctx.service.retry_after()} s")
                await run.io_bound(queue_job, ctx, job_id, {"image": path}, {"image": upload_state["name"]}, settings)
            except BackendError as err:
                status.text = f"[{err.code}] {err.message}"
                return
            upload_state.update(job=job_id, owner=owner)
            download.set_visibility(False)
            cancel.enable()
            status.text = "Queued"

        def on_cancel() -> None:
            job_id = upload_state["job"]
            if job_id:
                try:
                    ctx.service.cancel(job_id)
                except BackendError:
                    pass  # it ended meanwhile

        def poll() -> None:
            job_id = upload_state["job"]
            live = ctx.book.get(job_id, upload_state["owner"]) if job_id else None
            if live is None:
                return
            record = live.record
            bar.value = record.step / record.total if record.total else 0.0
            if record.state == "queued":
                status.text = f"Queued ({ctx.service.position(job_id) or 0} ahead)"
            elif record.state == "running":
                status.text = f"{record.stage.capitalize()} {record.step}/{record.total}: {record.message}"
            elif upload_state["shown"] != job_id:
                upload_state["shown"] = job_id
                cancel.disable()
                if record.state == DONE:
                    show(job_id)
                else:
                    error = record.error or {}
                    status.text = f"{record.state}: [{error.get('code')}] {error.get('message')}"

        def show(job_id: str) -> None:
            key = secrets.token_urlsafe(16)
            files[key] = ctx.book.store.folder(job_id) / RESULT
            url = f"/web/files/{key}/{job_id}.glb"
            viewer.clear()
            with viewer:
                viewer.gltf(url).rotate(np.pi / 2, 0, 0)  # glTF is +Y up, the scene +Z up
            viewer.move_camera(x=0, y=-2.2, z=0.6, look_at_z=0, duration=0)
            download.props(f'href="{url}"')
            download.set_visibility(True)
            bar.value = 1.0
            status.text = "Done"

        picker.on_upload(on_upload)
        generate.on_click(on_generate)
        cancel.on_click(on_cancel)
        ui.timer(0.25, poll)

    ui.run_with(app, title="Step1X-3D", show_welcome_message=False, reconnect_timeout=10.0)
