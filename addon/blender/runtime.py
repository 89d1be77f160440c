"""The add-on's runtime state, in Python only (never in .blend files), and its main-thread loop.

A `bpy.app.timers` callback drains the backend session (reader thread -> queue -> here), imports
results and redraws the panel. Under `blender -b` timers never fire, so `run_blocking()` drives the
same session synchronously. Every Blender data change happens on the main thread.
"""
from __future__ import annotations

import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bpy
import bpy.utils.previews

from ..core import history, jobs, messages, setup
from ..core.config import BackendConfig, run_info
from ..core.jobs import JobRequest, Outcome
from ..core.process import BackendProcess
from ..core.remote import RemoteConfig, RemoteSession, remote_info
from ..core.session import Session, Timeouts
from ..shared.errors import BackendError
from . import importer, prefs
from .images import safe_stem

BUSY_INTERVAL = 0.1  # seconds between timer ticks while work is pending
IDLE_INTERVAL = 0.5


@dataclass
class JobMeta:
    """What the main thread needs to place a job's result; lives only as long as the session."""

    label: str
    cursor: tuple[float, float, float]
    image: str = ""
    source: str = ""  # the object a texture-only job replaces
    preview: str = ""  # name of the preview object on screen
    settings: dict[str, Any] = field(default_factory=dict)
    temp_files: list[str] = field(default_factory=list)


class Runtime:
    def __init__(self):
        self.session: Session | None = None
        self.config: BackendConfig | None = None
        self.meta: dict[str, JobMeta] = {}
        self.notice: tuple[str, str] = ("", "")  # (INFO/WARNING/ERROR, text) shown in the panel
        self.info_state = ""  # "", running, ok, error: the preferences' Check button
        self.info_text = ""
        self._signature: tuple = ()
        self._previews = None
        self.installer = None  # core.installer.Installer of the last Install Backend
        self.download = None  # core.downloads.WeightsDownload of the last Download Weights
        self.weights_state = ""  # found / missing / "" from the last Check
        self._watched: dict[str, str] = {}  # install/download result already acted on

    # --- backend --------------------------------------------------------------------------------

    def session_for(self, config: BackendConfig, timeouts: Timeouts) -> Session:
        """The current session, or a new one when the preferences changed and nothing is running
        (a running job keeps its backend; the new settings apply from the next idle moment)."""
        config.check()
        if self.session is not None and config != self.config and not self.session.active_jobs:
            self.session.stop()
            self.session = None
        if self.session is None:
            self.config = config
            if isinstance(config, RemoteConfig):
                self.session = RemoteSession(config, timeouts)
            else:
                self.session = Session(
                    lambda: BackendProcess(config.serve_command(), cwd=config.cwd, env=config.environment()), timeouts)
        self.session.timeouts = timeouts
        return self.session

    def start(self, context) -> None:
        p = prefs.get(context)
        self.session_for(p.config(), _timeouts(p)).start()
        self.ensure_timer()

    def stop(self) -> None:
        if self.session is not None:
            self.handle_all(self.session.stop())

    @property
    def state(self) -> str:
        return self.session.state if self.session is not None else "stopped"

    def submit(self, context, *, label: str, settings: dict, image: str | None = None, mesh: str | None = None,
               source: str = "", temp_files: list[str] | None = None) -> jobs.Job:
        """Send a job (starting the backend if needed); raises BackendError with a code."""
        p = prefs.get(context)
        config = p.config()
        session = self.session_for(config, _timeouts(p))
        job_id = uuid.uuid4().hex[:12]
        output = prefs.output_folder(p) / f"{safe_stem(label)}-{job_id}.glb"
        request = JobRequest(job_id=job_id, output=str(output), settings=settings, engine=config.engine,
                             image=image, mesh=mesh, label=label)
        self.meta[job_id] = JobMeta(label=label, cursor=tuple(context.scene.cursor.location), image=image or "",
                                    source=source, settings=dict(settings), temp_files=list(temp_files or []))
        try:
            job = session.submit(request)
        except BackendError:
            self.meta.pop(job_id)
            raise
        self.notice = ("", "")
        self.ensure_timer()
        return job

    def cancel(self, job_id: str = "") -> None:
        if self.session is None:
            return
        for job in self.session.active_jobs:
            if not job_id or job.job_id == job_id:
                self.handle_all(self.session.cancel(job.job_id))

    def run_blocking(self, job_id: str, timeout: float | None = None) -> jobs.Job:
        """Background mode: wait for the job on this thread, importing as events arrive."""
        for outcome in self.session.wait(job_id, timeout=timeout):
            self.handle(outcome)
        return self.session.jobs[job_id]

    # --- main-thread loop -------------------------------------------------------------------------

    def ensure_timer(self) -> None:
        if not bpy.app.background and not bpy.app.timers.is_registered(tick):
            bpy.app.timers.register(tick, first_interval=0.0, persistent=True)

    def tick(self) -> float | None:
        if bpy.context.window_manager is not None and bpy.context.window_manager.is_interface_locked:
            return IDLE_INTERVAL  # a render holds the interface: touch nothing now
        outcomes = self.session.pump() if self.session is not None else []
        with _window_override():
            self.handle_all(outcomes)
        tasks = self._tasks_running()
        finished = self._finish_tasks()
        signature = self._current_signature()
        if outcomes or tasks or finished or signature != self._signature:
            self._signature = signature
            redraw()
        pending = tasks or self.info_state == "running" or (self.session is not None and (
            self.session.active_jobs or self.session.state == "starting"))
        if pending:
            return BUSY_INTERVAL
        return IDLE_INTERVAL if self.session is not None and self.session.process is not None else None

    def _current_signature(self) -> tuple:
        if self.session is None:
            return (self.info_state,)
        return (self.session.state, self.info_state, self.session.problem,
                tuple((j.job_id, j.state, j.stage, j.step, j.queue_position) for j in self.session.jobs.values()))

    # --- install and download (worker threads; results acted on here, on the main thread) ---------

    def _tasks_running(self) -> bool:
        return any(task is not None and task.snapshot().running for task in (self.installer, self.download))

    def _finish_tasks(self) -> bool:
        """Act once on an install or download that ended; True when one did (the panel must redraw)."""
        acted = False
        for name, task in (("install", self.installer), ("download", self.download)):
            if task is None:
                continue
            snap = task.snapshot()
            key = f"{id(task)}:{snap.result}"
            if snap.running or not snap.result or self._watched.get(name) == key:
                continue
            self._watched[name] = key
            acted = True
            config = self._current_config()
            if name == "install":
                self.after_install(config)
            else:
                self.after_download(config)
            level = "INFO" if snap.result in ("ready", "done") else "WARNING" if snap.result == "cancelled" else "ERROR"
            # a failed or cancelled install is what the Set up box shows: no second copy as a notice
            quiet = name == "install" and level != "INFO"
            self.say(level, f"{'Install Backend' if name == 'install' else 'Download Weights'}: "
                            f"{snap.message or snap.result}", notice=not quiet)
        return acted

    def _current_config(self) -> BackendConfig | None:
        try:
            return prefs.get().config()
        except RuntimeError:
            return None

    def after_install(self, config: BackendConfig | None) -> None:
        """A new environment: the next Generate starts a fresh backend; Check finds the weights."""
        if self.installer is not None and self.installer.snapshot().result == "ready" and config is not None:
            self.notice = ("", "")
            self.check(config)

    def after_download(self, config: BackendConfig | None) -> None:
        if config is not None:
            self.check(config)

    def info_lines(self, plan: str) -> list[str]:
        return setup.annotate_info(self.info_text, plan).splitlines()

    # --- outcomes -----------------------------------------------------------------------------

    def handle_all(self, outcomes: list[Outcome]) -> None:
        for outcome in outcomes:
            self.handle(outcome)

    def handle(self, outcome: Outcome) -> None:
        job, meta = outcome.job, self.meta.get(outcome.job.job_id)
        if meta is None:
            return
        try:
            if outcome.kind == jobs.PREVIEW:
                self._show_preview(job, meta, outcome.path)
            elif outcome.kind == jobs.FINISHED:
                self._finish(job, meta, outcome.path)
            else:
                importer.remove_object(meta.preview)
                meta.preview = ""
                if outcome.kind == jobs.ERRORED:
                    online = self.config.online if self.config else True
                    self.say("ERROR", f"{meta.label}: " + messages.explain(job.error_code, job.error_message, online))
                else:
                    self.say("INFO", f"{meta.label}: cancelled")
        except importer.ImportProblem as problem:
            self.say("ERROR", f"{meta.label}: {problem}")
        except Exception as exc:  # never let the timer die: it would stop every later update
            traceback.print_exc()
            self.say("ERROR", f"{meta.label}: the result could not be brought into the scene "
                              f"({type(exc).__name__}: {exc}); it is kept at {outcome.path or 'no path'}")
        finally:
            # Only a job's last outcome ends it: outcomes come in batches, so a preview may be
            # handled when the job has already finished.
            if outcome.kind != jobs.PREVIEW:
                self._cleanup(job.job_id)

    def _show_preview(self, job, meta: JobMeta, path: str) -> None:
        obj = importer.bring_in(path, f"{meta.label} (untextured)", cursor=meta.cursor, source=_source(meta))
        meta.preview = obj.name
        _undo_push(f"Step1X-3D: {meta.label} (untextured)")

    def _finish(self, job, meta: JobMeta, path: str) -> None:
        cursor = meta.cursor
        preview = bpy.data.objects.get(meta.preview) if meta.preview else None
        if preview is not None:  # stand where the preview stands (the artist may have moved it)
            bpy.context.view_layer.update()
            cursor = importer.footprint(preview)
        source = _source(meta)
        settings = job.metadata.get("settings") or meta.settings
        obj = importer.bring_in(path, meta.label, cursor=cursor, source=source, provenance={
            "job": job.job_id, "seed": settings.get("seed"), "settings": settings, "image": meta.image,
            "engine": job.engine or job.metadata.get("engine"), "glb": path,
        })
        importer.remove_object(meta.preview)
        meta.preview = ""
        if source is not None:
            source.hide_set(True)
            source.hide_render = True
        scene = bpy.context.scene
        scene.step1x3d.history = history.add(scene.step1x3d.history, history.Record(
            job_id=job.job_id, glb=path, label=meta.label, image=meta.image, mesh=job.request.mesh or "",
            engine=job.engine, settings=settings, seconds=job.seconds, object_name=obj.name))
        _undo_push(f"Step1X-3D: {meta.label}")
        self.say("INFO", f"{meta.label}: done in {job.seconds:.1f} s")

    def _cleanup(self, job_id: str) -> None:
        meta = self.meta.pop(job_id, None)
        for path in meta.temp_files if meta else []:
            Path(path).unlink(missing_ok=True)

    def say(self, level: str, text: str, notice: bool = True) -> None:
        """Show in the panel and in the status bar / Info editor (stdout in background mode)."""
        if notice:
            self.notice = (level, text)
        if bpy.app.background:
            print(f"Step1X-3D {level}: {text}", flush=True)
            return
        try:
            with _window_override():
                bpy.ops.step1x3d.report(level=level, message=text)
        except RuntimeError:  # no window (Blender is closing): the panel notice remains
            pass

    # --- preferences' Check button ----------------------------------------------------------------

    def check(self, config: BackendConfig) -> None:
        def work():
            try:
                describe = remote_info if isinstance(config, RemoteConfig) else run_info
                self.info_text, self.info_state = describe(config), "ok"
                self.weights_state = setup.weights_from_info(self.info_text)
                if self.notice[0] in ("ERROR", "WARNING"):  # the problem it reported is gone
                    self.notice = ("", "")
                if self.session is not None and self.session.state in ("stopped", "crashed"):
                    self.session.problem = ""
            except BackendError as err:
                self.info_text = messages.explain(err.code, err.message, config.online)
                self.info_state = "error"

        self.info_state, self.info_text = "running", ""
        if bpy.app.background:
            work()
            return
        threading.Thread(target=work, name="step1x3d-info", daemon=True).start()
        self.ensure_timer()

    # --- thumbnails -------------------------------------------------------------------------------

    def thumbnail(self, path: str) -> int:
        """Icon id of an image file's preview (0 when it cannot be shown)."""
        try:
            key = f"{path}:{Path(path).stat().st_mtime_ns}"
        except OSError:
            return 0
        if self._previews is None:
            self._previews = bpy.utils.previews.new()
        if key not in self._previews:
            self._previews.load(key, path, "IMAGE")
        return self._previews[key].icon_id

    def shutdown(self) -> None:
        """Stop the backend and free everything (add-on disabled, Blender quitting)."""
        if self.session is not None:
            for outcome in self.session.stop(grace=2.0):
                self._cleanup(outcome.job.job_id)
            self.session = None
        for task in (self.installer, self.download):
            if task is not None:
                task.cancel()  # the state file says "cancelled"; the next start offers to resume
                deadline = time.monotonic() + 5.0
                while task.snapshot().running and time.monotonic() < deadline:
                    time.sleep(0.05)
        if self._previews is not None:
            bpy.utils.previews.remove(self._previews)
            self._previews = None
        if bpy.app.timers.is_registered(tick):
            bpy.app.timers.unregister(tick)
        self.__init__()

    def forget_scene_objects(self) -> None:
        """Another file is loading: object names of running jobs would point into the wrong file."""
        for meta in self.meta.values():
            meta.preview = meta.source = ""


def _timeouts(p) -> Timeouts:
    return Timeouts(startup=float(p.startup_timeout), silence=float(p.hang_timeout))


def _source(meta: JobMeta):
    return bpy.data.objects.get(meta.source) if meta.source else None


def _undo_push(message: str) -> None:
    if bpy.app.background:
        return
    try:
        with _window_override():
            bpy.ops.ed.undo_push(message=message)
    except RuntimeError:
        pass


class _window_override:
    """Context with a window, for operators called from a timer (where there is none)."""

    def __enter__(self):
        wm = bpy.context.window_manager
        window = bpy.context.window or (wm.windows[0] if wm is not None and wm.windows else None)
        self._cm = bpy.context.temp_override(window=window) if window is not None else None
        if self._cm is not None:
            self._cm.__enter__()
        return self

    def __exit__(self, *exc):
        if self._cm is not None:
            return self._cm.__exit__(*exc)
        return False


def redraw() -> None:
    wm = bpy.context.window_manager
    for window in wm.windows if wm is not None else []:
        for area in window.screen.areas:
            if area.type in ("VIEW_3D", "PREFERENCES"):
                area.tag_redraw()


RUNTIME = Runtime()


def tick() -> float | None:
    return RUNTIME.tick()
