"""Add-on preferences: how to run the backend, where weights and results live.

The backend runs in one of the modes of MODE_ITEMS: the bundled environment the add-on installs
itself (the default), or an existing environment (interpreter + folder, for power users). Each
mode's fields are drawn by its own function in MODE_DRAW and turned into a BackendConfig by
`config()`; a new mode adds an item, a draw function and a branch there."""
from __future__ import annotations

from pathlib import Path

import bpy
from bpy.props import BoolProperty, EnumProperty, IntProperty, StringProperty

from ..core.config import BackendConfig
from ..core.remote import RemoteConfig
from ..core.setup import BUNDLED, EXISTING, REMOTE

ADDON_ID = __package__.rpartition(".")[0]  # "bl_ext.<repo>.step1x3d" installed, "addon" from the repository
_REPO = Path(__file__).resolve().parents[2]


def _repository_default(relative: str) -> str:
    """Run from a checkout of the repository, the backend and its venv sit beside the add-on."""
    path = _REPO / relative
    return str(path) if (_REPO / "backend" / "__init__.py").is_file() and path.exists() else ""


def get(context=None) -> "STEP1X3D_AP_preferences":
    context = context or bpy.context
    addon = context.preferences.addons.get(ADDON_ID)
    if addon is None:
        raise RuntimeError(f"the add-on {ADDON_ID!r} is not enabled")
    return addon.preferences


def user_folder(name: str) -> Path:
    """A folder in the extension's user directory (kept across add-on updates), not created."""
    try:
        return Path(bpy.utils.extension_path_user(ADDON_ID, path=name))
    except ValueError:  # not installed as an extension (run from the repository)
        return Path(bpy.utils.user_resource("DATAFILES", path=f"step1x3d/{name}"))


def output_folder(prefs, create: bool = True) -> Path:
    """Where GLBs go: the preference, else the extension's own user directory."""
    if prefs.output_dir.strip():
        folder = Path(bpy.path.abspath(prefs.output_dir)).expanduser()
    else:
        folder = user_folder("generations")
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    return folder


def _default_mode() -> str:
    """Run from a checkout that has its .venv, the existing environment is the obvious one."""
    return EXISTING if _repository_default(".venv/bin/python") else BUNDLED


MODE_ITEMS = [
    (BUNDLED, "Bundled", "The add-on installs the backend into its own environment (Install Backend)"),
    (EXISTING, "Existing Environment", "A Python environment of your own that has the backend's packages"),
    (REMOTE, "Remote Server", "Send jobs to `python -m backend serve --http` on another machine"),
]


class STEP1X3D_AP_preferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_ID

    backend_mode: EnumProperty(name="Backend", items=MODE_ITEMS, default=_default_mode(),
                               description="Where the backend runs")
    torch_build: EnumProperty(
        name="PyTorch Build", default="AUTO",
        items=[("AUTO", "Automatic", "CUDA where an NVIDIA driver is installed, else the CPU build"),
               ("CUDA", "CUDA", "The NVIDIA GPU build (Linux and Windows)"),
               ("CPU", "CPU", "The CPU build (no GPU; the CPU preview plan only)")],
        description="Which PyTorch Install Backend puts into the environment")
    python: StringProperty(
        name="Backend Python", subtype="FILE_PATH", default=_repository_default(".venv/bin/python"),
        description="Python interpreter of the backend's own environment (with torch); "
                    "the add-on runs `python -m backend serve` with it")
    backend_dir: StringProperty(
        name="Backend Folder", subtype="DIR_PATH", default=_repository_default(""),
        description="Folder that contains the `backend` package; leave empty when it is installed "
                    "in the backend's environment")
    weights: StringProperty(
        name="Weights", default="stepfun-ai/Step1X-3D",
        description="Local folder of the Step1X-3D weights, or a Hugging Face hub id "
                    "(not used by the CPU preview plan: it needs no weights)")
    plan: EnumProperty(
        name="Device Plan", default="single",
        items=[("single", "Single GPU", "One GPU runs geometry then texture; idle models are offloaded"),
               ("multi", "Multi GPU", "Geometry and texture on two GPUs, models stay loaded"),
               ("cpu", "CPU Preview", "The preview engine on the CPU: no GPU and no weights needed")])
    geometry_gpu: IntProperty(name="Geometry GPU", min=0, max=63, default=0,
                              description="GPU index for the geometry stage (and everything in the single plan)")
    texture_gpu: IntProperty(name="Texture GPU", min=0, max=63, default=1,
                             description="GPU index for the texture stage (used only by the multi-GPU plan)")
    output_dir: StringProperty(
        name="Output Folder", subtype="DIR_PATH", default="",
        description="Where generated GLBs are kept; empty means the extension's user folder")
    startup_timeout: IntProperty(name="Startup Timeout", min=5, default=180, subtype="TIME_ABSOLUTE",
                                 description="Seconds the backend may take to report ready")
    hang_timeout: IntProperty(name="Hang Timeout", min=5, default=120, subtype="TIME_ABSOLUTE",
                              description="Seconds without any answer after which a running backend counts as hung")
    show_log: BoolProperty(name="Show Backend Log", default=False)
    # a remote server (addon/core/remote.py); add-on preferences live in userpref.blend, never in a scene's .blend
    server_url: StringProperty(name="Server URL", default="http://127.0.0.1:8188",
                               description="Address of the server, like http://gpu-box:8188 or https://host")
    server_token: StringProperty(name="Access Token", subtype="PASSWORD", default="",
                                 description="Token the server's administrator gave you (sent as a Bearer header)")

    def config(self) -> BackendConfig | RemoteConfig:
        if self.backend_mode == REMOTE:
            return RemoteConfig(url=self.server_url.strip(), token=self.server_token.strip(),
                                online=bool(bpy.app.online_access))
        if self.backend_mode == BUNDLED:
            from . import setup

            python, backend_dir = str(setup.layout().python()), str(setup.bundle_dir())
        else:
            python, backend_dir = bpy.path.abspath(self.python).strip(), bpy.path.abspath(self.backend_dir).strip()
        return BackendConfig(
            python=python, backend_dir=backend_dir,
            weights=self.weights.strip(), plan=self.plan, geometry_gpu=self.geometry_gpu,
            texture_gpu=self.texture_gpu, online=bool(bpy.app.online_access),
        )

    def draw(self, context):
        from . import setup, text
        from .runtime import RUNTIME

        layout = self.layout
        layout.row().prop(self, "backend_mode", expand=True)
        MODE_DRAW[self.backend_mode](self, layout, context)
        if self.backend_mode == REMOTE:
            return
        col = layout.column()
        col.prop(self, "plan")
        row = col.row(align=True)
        sub = row.row()
        sub.prop(self, "weights")
        sub.enabled = self.plan != "cpu"
        if self.plan == "cpu":
            row.operator("step1x3d.why", text="", icon="INFO", emboss=False).reason = \
                "The CPU preview plan needs no weights"
        elif not setup.draw_download_progress(col, context):
            row.operator("step1x3d.download_weights", text="Download", icon="URL")
        if self.plan != "cpu":
            row = col.row()
            row.prop(self, "geometry_gpu")
            sub = row.row()
            sub.prop(self, "texture_gpu")
            sub.enabled = self.plan == "multi"
        col.prop(self, "output_dir")
        if not self.output_dir:
            col.label(text=f"Results go to {output_folder(self, create=False)}", icon="INFO")
        if not bpy.app.online_access:
            col.label(text="Online access is off (System > Network): the backend will not download weights.",
                      icon="INTERNET_OFFLINE")
        row = col.row()
        row.prop(self, "startup_timeout")
        row.prop(self, "hang_timeout")

        _draw_check(self, layout, context)
        box = layout.box()
        box.prop(self, "show_log", icon="TEXT")
        if self.show_log and RUNTIME.session is not None:
            for level, message in list(RUNTIME.session.log)[-15:]:
                text.label(box, context, f"{level}: {message}")


def _draw_bundled(p, layout, context) -> None:
    from . import setup

    setup.draw_environment(layout, context, p)


def _draw_existing(p, layout, context) -> None:
    col = layout.column()
    col.prop(p, "python")
    col.prop(p, "backend_dir")


def _draw_remote(p, layout, context) -> None:
    col = layout.column()
    col.prop(p, "server_url")
    col.prop(p, "server_token")
    col.prop(p, "output_dir")
    _draw_check(p, layout, context)


def _draw_check(p, layout, context) -> None:
    from . import text
    from .runtime import RUNTIME

    box = layout.box()
    row = box.row()
    row.operator("step1x3d.check_backend", icon="CHECKMARK")
    row.label(text={"running": "Checking…", "ok": "Backend found", "error": "Problem"}.get(RUNTIME.info_state, ""))
    for line in RUNTIME.info_lines(p.plan)[:24]:
        text.label(box, context, line)


MODE_DRAW = {BUNDLED: _draw_bundled, EXISTING: _draw_existing, REMOTE: _draw_remote}
