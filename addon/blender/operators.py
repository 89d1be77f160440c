"""Operators: generate, texture the selection, cancel, backend start/stop/check, history actions.

Operators that only send work to the backend change no Blender data and have no UNDO flag; the
import that follows pushes its own undo step. In background mode (`blender -b`) Generate and
Texture Selection block until the result is in the scene, so scripts can use them.
"""
from __future__ import annotations

import random
import uuid

import bpy
from bpy.props import EnumProperty, FloatProperty, IntProperty, StringProperty

from ..core import history, messages, schema
from ..shared import settings as settings_schema
from ..shared.errors import BackendError
from . import images, importer, prefs
from .props import values
from .runtime import RUNTIME


def _report_error(op, err: BackendError) -> set:
    online = bool(bpy.app.online_access)
    text = messages.explain(err.code, err.message, online)
    RUNTIME.notice = ("ERROR", text)
    op.report({"ERROR"}, text)
    return {"CANCELLED"}


def _settings(props) -> dict:
    if props.randomize_seed:
        props.seed = random.randint(0, settings_schema.BY_NAME["seed"].maximum)
    current = values(props)
    return schema.collect(current.__getitem__)


def _run(op, context, **job) -> set:
    """Submit; in background mode also wait for the result."""
    try:
        submitted = RUNTIME.submit(context, **job)
    except BackendError as err:
        return _report_error(op, err)
    if not bpy.app.background:
        op.report({"INFO"}, f"Step1X-3D: generating {job['label']}…")
        return {"FINISHED"}
    done = RUNTIME.run_blocking(submitted.job_id, timeout=op.timeout or None)
    if done.state != "done":
        text = RUNTIME.notice[1] or f"{job['label']}: {done.state}"
        op.report({"ERROR"} if done.state == "failed" else {"WARNING"}, text)
        return {"CANCELLED"}
    return {"FINISHED"}


class STEP1X3D_OT_generate(bpy.types.Operator):
    """Generate a textured 3D object from the reference image"""

    bl_idname = "step1x3d.generate"
    bl_label = "Generate"
    bl_options = {"REGISTER"}

    filepath: StringProperty(name="Image", subtype="FILE_PATH", options={"SKIP_SAVE"},
                             description="Image file to use instead of the panel's (for scripts)")
    timeout: FloatProperty(name="Timeout", default=0.0, min=0.0, options={"SKIP_SAVE"},
                           description="Background mode: give up after this many seconds (0: wait)")

    def execute(self, context):
        props = context.scene.step1x3d
        try:
            image, label = images.reference_image(props, self.filepath)
            settings = _settings(props)
        except BackendError as err:
            return _report_error(self, err)
        temp = [image] if image.startswith(str(images.temp_folder())) else []
        return _run(self, context, label=label, settings=settings, image=image, temp_files=temp)


class STEP1X3D_OT_texture_selection(bpy.types.Operator):
    """Paint a texture on the active mesh from the reference image (the original is hidden)"""

    bl_idname = "step1x3d.texture_selection"
    bl_label = "Texture Selection"
    bl_options = {"REGISTER"}

    filepath: StringProperty(name="Image", subtype="FILE_PATH", options={"SKIP_SAVE"})
    timeout: FloatProperty(name="Timeout", default=0.0, min=0.0, options={"SKIP_SAVE"})

    @classmethod
    def poll(cls, context):
        obj = context.active_object
        return obj is not None and obj.type == "MESH"

    def execute(self, context):
        source = context.active_object
        props = context.scene.step1x3d
        try:
            image, label = images.reference_image(props, self.filepath)
            settings = _settings(props)
            mesh = export_mesh(context, source)
        except BackendError as err:
            return _report_error(self, err)
        temp = [mesh] + ([image] if image.startswith(str(images.temp_folder())) else [])
        return _run(self, context, label=f"{source.name} textured", settings=settings, image=image, mesh=mesh,
                    source=source.name, temp_files=temp)


def export_mesh(context, source) -> str:
    """The object's evaluated mesh (modifiers applied) in its own coordinates, as a temporary GLB."""
    depsgraph = context.evaluated_depsgraph_get()
    mesh = bpy.data.meshes.new_from_object(source.evaluated_get(depsgraph))
    if len(mesh.vertices) == 0:
        bpy.data.meshes.remove(mesh)
        raise BackendError("input_unreadable", f"the object {source.name!r} has no vertices")
    temp = bpy.data.objects.new(f"{source.name}_step1x3d_export", mesh)
    context.scene.collection.objects.link(temp)
    selected = [o for o in context.view_layer.objects if o.select_get()]
    active = context.view_layer.objects.active
    path = images.temp_folder() / f"{images.safe_stem(source.name)}-{uuid.uuid4().hex[:8]}.glb"
    try:
        for obj in selected:
            obj.select_set(False)
        temp.select_set(True)
        context.view_layer.objects.active = temp
        bpy.ops.export_scene.gltf(filepath=str(path), export_format="GLB", use_selection=True,
                                  export_materials="NONE", export_animations=False)
    finally:
        bpy.data.objects.remove(temp, do_unlink=True)
        bpy.data.meshes.remove(mesh)
        for obj in selected:
            obj.select_set(True)
        context.view_layer.objects.active = active
    if not path.is_file():
        raise BackendError("output_unwritable", f"could not export {source.name!r} to {path}")
    return str(path)


class STEP1X3D_OT_cancel(bpy.types.Operator):
    """Cancel the job (or every running job)"""

    bl_idname = "step1x3d.cancel"
    bl_label = "Cancel"
    bl_options = {"INTERNAL"}

    job: StringProperty(options={"SKIP_SAVE"})

    def execute(self, context):
        RUNTIME.cancel(self.job)
        return {"FINISHED"}


class STEP1X3D_OT_start_backend(bpy.types.Operator):
    """Start the backend now (it also starts on the first Generate)"""

    bl_idname = "step1x3d.start_backend"
    bl_label = "Start"

    def execute(self, context):
        try:
            RUNTIME.start(context)
        except BackendError as err:
            return _report_error(self, err)
        return {"FINISHED"}


class STEP1X3D_OT_stop_backend(bpy.types.Operator):
    """Stop the backend and free its memory (running jobs are cancelled)"""

    bl_idname = "step1x3d.stop_backend"
    bl_label = "Stop"

    def execute(self, context):
        RUNTIME.stop()
        return {"FINISHED"}


class STEP1X3D_OT_check_backend(bpy.types.Operator):
    """Run `python -m backend info`: engines, GPUs, free memory, weights found"""

    bl_idname = "step1x3d.check_backend"
    bl_label = "Check Backend"

    def execute(self, context):
        RUNTIME.check(prefs.get(context).config())
        return {"FINISHED"}


def _record(operator, context):
    """The history entry the operator points at, or None after reporting that it is gone."""
    records = history.loads(context.scene.step1x3d.history)
    if 0 <= operator.index < len(records):
        return records[operator.index]
    operator.report({"ERROR"}, "No such history entry")
    return None


class STEP1X3D_OT_history_import(bpy.types.Operator):
    """Import this generation again at the 3D cursor"""

    bl_idname = "step1x3d.history_import"
    bl_label = "Re-import"
    bl_options = {"REGISTER", "UNDO"}

    index: IntProperty(options={"SKIP_SAVE"})

    def execute(self, context):
        record = _record(self, context)
        if record is None:
            return {"CANCELLED"}
        try:
            importer.bring_in(record.glb, record.label, provenance={
                "job": record.job_id, "seed": record.seed, "settings": record.settings, "image": record.image,
                "engine": record.engine, "glb": record.glb})
        except importer.ImportProblem as problem:
            self.report({"ERROR"}, str(problem))
            return {"CANCELLED"}
        return {"FINISHED"}


class STEP1X3D_OT_history_apply(bpy.types.Operator):
    """Put this generation's image and settings back into the panel"""

    bl_idname = "step1x3d.history_apply"
    bl_label = "Use These Settings"
    bl_options = {"REGISTER", "UNDO"}

    index: IntProperty(options={"SKIP_SAVE"})

    def execute(self, context):
        record = _record(self, context)
        if record is None:
            return {"CANCELLED"}
        props = context.scene.step1x3d
        skipped = []
        for name, value in record.settings.items():
            if name not in settings_schema.BY_NAME:
                skipped.append(name)
                continue
            try:
                setattr(props, name, settings_schema.BY_NAME[name].coerce(value))
            except (BackendError, TypeError, ValueError):
                skipped.append(name)
        props.randomize_seed = False
        if record.image:
            props.image_source, props.image_path = "FILE", record.image
        if skipped:
            self.report({"WARNING"}, f"Not restored (unknown or out of range now): {', '.join(skipped)}")
        return {"FINISHED"}


class STEP1X3D_OT_history_clear(bpy.types.Operator):
    """Forget this file's generation history (the objects and GLB files stay)"""

    bl_idname = "step1x3d.history_clear"
    bl_label = "Clear History"
    bl_options = {"REGISTER", "UNDO"}

    def invoke(self, context, event):
        return context.window_manager.invoke_confirm(self, event)

    def execute(self, context):
        context.scene.step1x3d.history = "[]"
        return {"FINISHED"}


class STEP1X3D_OT_dismiss(bpy.types.Operator):
    """Hide this message"""

    bl_idname = "step1x3d.dismiss"
    bl_label = "Dismiss"
    bl_options = {"INTERNAL"}

    def execute(self, context):
        RUNTIME.notice = ("", "")
        return {"FINISHED"}


class STEP1X3D_OT_report(bpy.types.Operator):
    """Put a message in the status bar and the Info editor (used from the timer)"""

    bl_idname = "step1x3d.report"
    bl_label = "Report"
    bl_options = {"INTERNAL"}

    level: EnumProperty(items=[(x, x, "") for x in ("INFO", "WARNING", "ERROR")])
    message: StringProperty()

    def execute(self, context):
        self.report({self.level}, self.message)
        return {"FINISHED"}


CLASSES = (
    STEP1X3D_OT_generate, STEP1X3D_OT_texture_selection, STEP1X3D_OT_cancel, STEP1X3D_OT_start_backend,
    STEP1X3D_OT_stop_backend, STEP1X3D_OT_check_backend, STEP1X3D_OT_history_import, STEP1X3D_OT_history_apply,
    STEP1X3D_OT_history_clear, STEP1X3D_OT_dismiss, STEP1X3D_OT_report,
)
