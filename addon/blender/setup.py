"""Install Backend and Download Weights in Blender: where things live, the operators, and the
drawing shared by the preferences and the sidebar. The logic is in core/installer.py,
core/downloads.py and core/setup.py; this module only starts their worker threads, reads their
snapshots and draws them. In background mode (`blender -b`) both operators block until done."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import bpy
from bpy.props import BoolProperty

from ..core import installer, setup
from ..core.downloads import WeightsDownload, human_bytes, human_seconds
from . import prefs, text
from .runtime import RUNTIME

_PACKAGE_DIR = Path(__file__).resolve().parents[1]


def bundle_dir() -> Path:
    """backend/ + shared/ + requirements.txt: the zip's bundle, or the repository around addon/."""
    packed = _PACKAGE_DIR / "bundle"
    return packed if (packed / "backend").is_dir() else _PACKAGE_DIR.parent


def layout() -> installer.Layout:
    return installer.Layout(prefs.user_folder("backend-env"))


def status() -> installer.Status:
    running = RUNTIME.installer is not None and RUNTIME.installer.snapshot().running
    return installer.inspect(layout(), bundle_dir() / "requirements.txt", running=running)


def facts(context) -> setup.Facts:
    p = prefs.get(context)
    problem = ""
    try:
        p.config().check()
    except Exception as err:  # BackendError: shown as what is missing
        problem = getattr(err, "message", str(err))
    dl = RUNTIME.download
    return setup.Facts(
        mode=p.backend_mode, plan=p.plan, env=status() if p.backend_mode == setup.BUNDLED else None,
        config_problem=problem, installing=RUNTIME.installer is not None and RUNTIME.installer.snapshot().running,
        downloading=dl is not None and dl.snapshot().running, weights=RUNTIME.weights_state,
        online=bool(bpy.app.online_access))


def _offline(op) -> bool:
    if bpy.app.online_access:
        return False
    op.report({"ERROR"}, "Online access is off (Preferences > System > Network > Allow Online Access): "
                         "nothing can be downloaded")
    return True


def _open(path: Path) -> None:
    if sys.platform.startswith("win"):
        os.startfile(str(path))  # noqa: S606 (the user asked to open their own log)
    else:
        subprocess.Popen(["open" if sys.platform == "darwin" else "xdg-open", str(path)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class STEP1X3D_OT_install_backend(bpy.types.Operator):
    """Create the backend's own Python environment in the add-on's user folder and install its
    pinned packages (PyTorch for this machine). Needs online access; no admin rights"""

    bl_idname = "step1x3d.install_backend"
    bl_label = "Install Backend"

    repair: BoolProperty(name="Repair", default=False, options={"SKIP_SAVE"},
                         description="Delete the environment and install it again")

    def execute(self, context):
        if _offline(self):
            return {"CANCELLED"}
        if RUNTIME.installer is not None and RUNTIME.installer.snapshot().running:
            self.report({"WARNING"}, "The backend is already being installed")
            return {"CANCELLED"}
        p = prefs.get(context)
        machine = installer.this_machine()
        plan = installer.Plan(layout(), bundle_dir() / "requirements.txt", bundle_dir(), installer.base_python(),
                              machine, installer.choose_torch(machine, p.torch_build.lower()))
        RUNTIME.stop()  # the environment may change under a running backend
        RUNTIME.installer = installer.Installer(plan)
        RUNTIME.notice = ("", "")
        if bpy.app.background:
            result = RUNTIME.installer.run(repair=self.repair)
            RUNTIME.after_install(p.config())
            level = {"ready": "INFO", "cancelled": "WARNING"}.get(result, "ERROR")
            self.report({level}, RUNTIME.installer.snapshot().message)
            return {"FINISHED"} if result == installer.READY else {"CANCELLED"}
        threading.Thread(target=RUNTIME.installer.run, kwargs={"repair": self.repair}, name="step1x3d-install",
                         daemon=True).start()
        RUNTIME.ensure_timer()
        return {"FINISHED"}


class STEP1X3D_OT_cancel_task(bpy.types.Operator):
    """Stop it; pressing its button again later resumes where it stopped"""

    bl_idname = "step1x3d.cancel_task"
    bl_label = "Cancel"
    bl_options = {"INTERNAL"}

    task: bpy.props.EnumProperty(items=[("INSTALL", "Install", ""), ("DOWNLOAD", "Download", "")],
                                 options={"SKIP_SAVE"})

    def execute(self, context):
        running = RUNTIME.installer if self.task == "INSTALL" else RUNTIME.download
        if running is not None:
            running.cancel()
        return {"FINISHED"}


class STEP1X3D_OT_open_install_log(bpy.types.Operator):
    """Open the install and download log in the system's text viewer"""

    bl_idname = "step1x3d.open_install_log"
    bl_label = "Open Log"

    def execute(self, context):
        log = layout().log_file
        if not log.is_file():
            self.report({"WARNING"}, "Nothing was installed or downloaded yet")
            return {"CANCELLED"}
        try:
            _open(log)
        except OSError as err:
            self.report({"ERROR"}, f"Cannot open {log}: {err}")
            return {"CANCELLED"}
        self.report({"INFO"}, str(log))
        return {"FINISHED"}


class STEP1X3D_OT_download_weights(bpy.types.Operator):
    """Download the Step1X-3D model weights into the Hugging Face cache (resumes an interrupted
    download). The CPU preview plan needs no weights"""

    bl_idname = "step1x3d.download_weights"
    bl_label = "Download Weights"

    def execute(self, context):
        if _offline(self):
            return {"CANCELLED"}
        if RUNTIME.download is not None and RUNTIME.download.snapshot().running:
            self.report({"WARNING"}, "The weights are already downloading")
            return {"CANCELLED"}
        config = prefs.get(context).config()
        try:
            config.check()
        except Exception as err:
            self.report({"ERROR"}, getattr(err, "message", str(err)))
            return {"CANCELLED"}
        argv = [str(Path(config.python).expanduser()), "-m", "backend", "download", "--json"]
        RUNTIME.download = WeightsDownload(argv, config.environment(restrict_gpus=False), config.cwd,
                                           layout().log_file)
        if bpy.app.background:
            result = RUNTIME.download.run()
            RUNTIME.after_download(config)
            snap = RUNTIME.download.snapshot()
            self.report({"INFO"} if result == "done" else {"ERROR"}, snap.message or result)
            return {"FINISHED"} if result == "done" else {"CANCELLED"}
        threading.Thread(target=RUNTIME.download.run, name="step1x3d-download", daemon=True).start()
        RUNTIME.ensure_timer()
        return {"FINISHED"}


class STEP1X3D_OT_open_network_preferences(bpy.types.Operator):
    """Open Preferences > System, where Network > Allow Online Access is"""

    bl_idname = "step1x3d.open_network_preferences"
    bl_label = "Allow Online Access"

    def execute(self, context):
        context.preferences.active_section = "SYSTEM"
        bpy.ops.screen.userpref_show("INVOKE_DEFAULT")
        return {"FINISHED"}


class STEP1X3D_OT_why(bpy.types.Operator):
    """Why this is greyed out"""

    bl_idname = "step1x3d.why"
    bl_label = ""
    bl_options = {"INTERNAL"}

    reason: bpy.props.StringProperty(options={"SKIP_SAVE", "HIDDEN"})

    @classmethod
    def description(cls, context, properties):
        return properties.reason

    def execute(self, context):
        self.report({"INFO"}, self.reason)
        return {"FINISHED"}


CLASSES = (STEP1X3D_OT_install_backend, STEP1X3D_OT_cancel_task, STEP1X3D_OT_open_install_log,
           STEP1X3D_OT_download_weights, STEP1X3D_OT_open_network_preferences, STEP1X3D_OT_why)


# --- drawing ----------------------------------------------------------------------------------

def draw_install_progress(layout, context) -> bool:
    """The running install (bar, step, package, bytes, Cancel); False when none runs."""
    if RUNTIME.installer is None:
        return False
    snap = RUNTIME.installer.snapshot()
    if not snap.running:
        return False
    col = layout.column(align=True)
    col.progress(factor=snap.fraction, type="BAR", text=f"{snap.step_label} · {snap.fraction * 100:.0f} %")
    if snap.file:
        size = f"{human_bytes(snap.bytes)} of {human_bytes(snap.total)}" if snap.total else human_bytes(snap.bytes)
        pct = f" ({snap.bytes * 100 // snap.total} %)" if snap.total else ""
        text.label(col, context, f"{snap.package or snap.file}: {size}{pct}")
    elif snap.package:
        text.label(col, context, snap.package)
    row = layout.row(align=True)
    row.operator("step1x3d.cancel_task", text="Cancel Install", icon="X").task = "INSTALL"
    row.operator("step1x3d.open_install_log", icon="TEXT")
    return True


def draw_download_progress(layout, context) -> bool:
    if RUNTIME.download is None:
        return False
    snap = RUNTIME.download.snapshot()
    if not snap.running:
        return False
    col = layout.column(align=True)
    eta = f" · {human_seconds(snap.eta)} left" if snap.eta is not None else ""
    total = (f"{human_bytes(snap.done_bytes)} of {human_bytes(snap.total_bytes)}" if snap.total_bytes
             else "Starting…")
    col.progress(factor=snap.fraction, type="BAR", text=f"Weights: {total}{eta}")
    if snap.file:
        part = f"{human_bytes(snap.file_bytes)} of {human_bytes(snap.file_total)}" if snap.file_total else ""
        text.label(col, context, f"{snap.file} {part}".strip())
    layout.operator("step1x3d.cancel_task", text="Cancel Download", icon="X").task = "DOWNLOAD"
    return True


def draw_setup_box(layout, context, advice: setup.Advice) -> None:
    """The "Set up" box: what is missing and one button for the next step."""
    box = layout.box()
    box.label(text="Set up", icon="TOOL_SETTINGS")
    for line in advice.missing:
        text.label(box, context, line, icon="DOT")
    if not draw_install_progress(box, context) and not draw_download_progress(box, context) and advice.operator:
        row = box.row()
        row.scale_y = 1.3
        if advice.operator == "preferences.addon_show":
            row.operator(advice.operator, text=advice.label, icon="PREFERENCES").module = prefs.ADDON_ID
        else:
            op = row.operator(advice.operator, text=advice.label, icon="IMPORT" if "install" in advice.operator
                              else "URL" if "download" in advice.operator else "PREFERENCES")
            for key, value in advice.properties.items():
                setattr(op, key, value)


def draw_environment(layout, context, p) -> None:
    """Preferences: the bundled environment's state and its buttons."""
    st = status()
    box = layout.box()
    row = box.row()
    row.label(text=f"Environment: {st.text}", icon="CHECKMARK" if st.kind == installer.READY else "INFO")
    if not draw_install_progress(box, context):
        row = box.row(align=True)
        label = {installer.READY: "Reinstall", installer.OUTDATED: "Update Backend",
                 installer.MISSING: "Install Backend"}.get(st.kind, "Resume Install")
        op = row.operator("step1x3d.install_backend", text=label, icon="IMPORT")
        op.repair = st.kind in (installer.READY, installer.BROKEN)
        row.operator("step1x3d.open_install_log", icon="TEXT")
        done = RUNTIME.installer.snapshot() if RUNTIME.installer is not None else None
        if done is not None and done.result in (installer.FAILED, installer.CANCELLED):
            text.label(box, context, done.message, icon="ERROR" if done.result == installer.FAILED else "INFO")
    box.prop(p, "torch_build")
    text.label(box, context, f"Folder: {layout().root}", icon="FILE_FOLDER")
    if not bpy.app.online_access:
        text.label(box, context, "Online access is off (System > Network): Install and Download Weights need it.",
                   icon="INTERNET_OFFLINE")
