"""The sidebar tab "Step1X-3D": backend state, image, Generate, jobs with progress, settings (one
sub-panel per stage of the settings schema), history. Drawing reads runtime state; it never waits."""
from __future__ import annotations

from pathlib import Path

import bpy

from ..core import history, schema, timing
from . import cutout, prefs, setup, text
from .props import values
from .runtime import RUNTIME

STATE_ICONS = {"stopped": "RADIOBUT_OFF", "starting": "SORTTIME", "ready": "CHECKMARK", "busy": "PLAY",
               "crashed": "ERROR"}
STAGE_LABELS = {"image": "Image", "geometry": "Geometry", "texture": "Texture", "output": "Output"}


class _Sidebar:
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Step1X-3D"


class STEP1X3D_PT_main(_Sidebar, bpy.types.Panel):
    bl_idname = "STEP1X3D_PT_main"
    bl_label = "Step1X-3D"

    def draw(self, context):
        layout = self.layout
        props = context.scene.step1x3d
        advice = setup_advice(context)
        if not advice.ready:  # nothing to generate with yet: say what is missing, offer the next step
            setup.draw_setup_box(layout, context, advice)
        else:
            _draw_backend(layout, context)
        _draw_image(layout, context, props)

        col = layout.column(align=True)
        col.scale_y = 1.4
        col.enabled = advice.ready
        col.operator("step1x3d.generate", icon="SHADERFX")
        row = layout.row()
        row.enabled = advice.ready
        row.operator("step1x3d.texture_selection", icon="TEXTURE")

        session = RUNTIME.session
        for job in (session.active_jobs if session else []):
            meta = RUNTIME.meta.get(job.job_id)
            box = layout.box()
            row = box.row()
            row.label(text=meta.label if meta else job.job_id, icon="MESH_MONKEY")
            row.label(text=timing.clock_text(job.elapsed()), icon="TIME")
            row.operator("step1x3d.cancel", text="", icon="X").job = job.job_id
            box.progress(factor=job.overall(), type="BAR", text=job.describe())

        level, message = RUNTIME.notice
        if message:
            box = layout.box()
            row = box.row()
            text.label(row.column(), context, message, icon={"ERROR": "ERROR", "WARNING": "ERROR"}.get(level, "INFO"),
                       extra=24)
            row.operator("step1x3d.dismiss", text="", icon="X", emboss=False)


def setup_advice(context):
    """What is missing before Generate can work (core/setup.py decides)."""
    from ..core.setup import advise

    return advise(setup.facts(context))


def _draw_backend(layout, context) -> None:
    state = RUNTIME.state
    row = layout.row(align=True).split(factor=0.6, align=True)  # room for "Backend: starting"
    row.label(text=f"Backend: {state}", icon=STATE_ICONS.get(state, "QUESTION"))
    if state in ("stopped", "crashed"):
        row.operator("step1x3d.start_backend", text="Start", icon="PLAY")
    else:
        row.operator("step1x3d.stop_backend", text="Stop", icon="PAUSE")
    if RUNTIME.session is not None and RUNTIME.session.problem:
        text.label(layout.box(), context, RUNTIME.session.problem, icon="ERROR")
    setup.draw_install_progress(layout, context) or setup.draw_download_progress(layout, context)


def _draw_image(layout, context, props) -> None:
    layout.row().prop(props, "image_source", expand=True)
    if props.image_source == "FILE":
        layout.prop(props, "image_path", text="")
    else:
        layout.template_ID_preview(props, "image", open="image.open", rows=3, cols=6)
    cutout.draw(layout, context, props, RUNTIME)  # the cut-out the models will see


def _draw_stage(stage: str):
    def draw(self, context):
        layout = self.layout
        layout.use_property_split = True
        layout.use_property_decorate = False
        props = context.scene.step1x3d
        current = values(props)
        engine = "preview" if prefs.get(context).plan == "cpu" else "step1x3d"
        for spec in schema.prop_specs():
            if spec.stage != stage:
                continue
            row = layout.row(align=True)
            why = schema.ignored_because(spec.name, current, engine)
            sub = row.row(align=True)
            sub.enabled = not why
            sub.prop(props, spec.name)
            if spec.name == "seed":
                sub.prop(props, "randomize_seed", text="", icon="FILE_REFRESH")
            if why:  # hovering the icon says why the setting is greyed out
                row.operator("step1x3d.why", text="", icon="INFO", emboss=False).reason = why
    return draw


def _stage_panel(stage: str) -> type:
    return type(f"STEP1X3D_PT_{stage}", (_Sidebar, bpy.types.Panel), {
        "bl_idname": f"STEP1X3D_PT_{stage}", "bl_label": STAGE_LABELS.get(stage, stage.capitalize()),
        "bl_parent_id": "STEP1X3D_PT_main", "bl_options": {"DEFAULT_CLOSED"} if stage in ("image", "output") else set(),
        "draw": _draw_stage(stage),
    })


class STEP1X3D_PT_history(_Sidebar, bpy.types.Panel):
    bl_idname = "STEP1X3D_PT_history"
    bl_label = "History"
    bl_parent_id = "STEP1X3D_PT_main"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout = self.layout
        records = history.loads(context.scene.step1x3d.history)
        if not records:
            layout.label(text="No generations in this file yet")
            return
        for index, record in enumerate(records[:20]):
            row = layout.row(align=True)
            row.label(text=record.summary(), icon="OBJECT_DATA" if Path(record.glb).is_file() else "ERROR")
            sub = row.row(align=True)
            sub.enabled = Path(record.glb).is_file()
            sub.operator("step1x3d.history_import", text="", icon="IMPORT").index = index
            row.operator("step1x3d.history_apply", text="", icon="PRESET").index = index
        layout.operator("step1x3d.history_clear", icon="TRASH")


def _stages() -> list[str]:
    order = {stage: i for i, stage in enumerate(schema.STAGES)}
    return sorted({s.stage for s in schema.prop_specs()}, key=lambda stage: order.get(stage, len(order)))


STAGE_PANELS = tuple(_stage_panel(stage) for stage in _stages())


def classes() -> tuple:
    return (STEP1X3D_PT_main, *STAGE_PANELS, STEP1X3D_PT_history)
