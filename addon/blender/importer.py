"""GLB import and placement: one clean object, named, in its collection, standing at the cursor.

The glTF importer may create a wrapper empty, cameras or several mesh nodes; the new objects are
found by comparing `bpy.data.objects` before and after, meshes keep their world transform and are
joined into one object, everything else is removed. Levels of detail (`<name>_LOD<n>` nodes, as
the backend writes them) are not joined: they become hidden children that follow the object.
The maths lives in core/placement.py.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import bpy
import numpy as np
from mathutils import Matrix, Vector

from ..core import placement, provenance as glb_provenance

COLLECTION = "Step1X-3D"
PREFIX = "step1x3d_"
LOD_NAME = re.compile(r"_LOD(\d+)(?:\.\d+)?$")  # Blender adds .001 when the name is taken


class ImportProblem(Exception):
    """The result cannot be brought into the scene (missing importer, missing or empty file)."""


def ensure_gltf_importer() -> None:
    if hasattr(bpy.types, "IMPORT_SCENE_OT_gltf"):
        return
    import addon_utils

    addon_utils.enable("io_scene_gltf2", default_set=True)
    if not hasattr(bpy.types, "IMPORT_SCENE_OT_gltf"):
        raise ImportProblem("Blender's glTF importer is disabled: enable 'glTF 2.0 format' in Preferences > Add-ons")


def _ensure_object_mode(context) -> None:
    if context.mode != "OBJECT" and context.view_layer.objects.active is not None:
        bpy.ops.object.mode_set(mode="OBJECT")


def import_glb(path: str, name: str, context=None) -> bpy.types.Object:
    """Import a GLB as one mesh object called `name`, without the importer's extra nodes."""
    context = context or bpy.context
    if not Path(path).is_file():
        raise ImportProblem(f"the result file is missing: {path}")
    ensure_gltf_importer()
    _ensure_object_mode(context)
    before = set(bpy.data.objects)
    result = bpy.ops.import_scene.gltf(filepath=str(path))
    new = [o for o in bpy.data.objects if o not in before]
    meshes = [o for o in new if o.type == "MESH"]
    if "FINISHED" not in result or not meshes:
        _remove(new)
        raise ImportProblem(f"the result has no mesh: {path}")
    context.view_layer.update()
    for obj in meshes:  # unwrap: keep where the importer put it in the world, without its parent
        world = obj.matrix_world.copy()
        obj.parent = None
        obj.matrix_world = world
    _remove([o for o in new if o.type != "MESH"])
    lods = sorted((o for o in meshes if LOD_NAME.search(o.name)), key=lambda o: int(LOD_NAME.search(o.name)[1]))
    parts = [o for o in meshes if o not in lods]
    if not parts:  # nothing but LOD names: a foreign file; keep everything as the object
        parts, lods = meshes, []
    obj = _join(parts, context)
    obj.name = name
    obj.data.name = name
    _attach_lods(obj, lods, name)
    return obj


def _attach_lods(obj, lods, name: str) -> None:
    """Coarser levels as children `<name>_LOD1..n` in the object's own frame (every transform
    baked into the meshes first), so any later placement of the object carries them along."""
    if not lods:
        return
    for part in (obj, *lods):
        part.data.transform(part.matrix_world)
        part.matrix_world = Matrix.Identity(4)
    for level, lod in enumerate(lods, start=1):
        lod.name = lod.data.name = f"{name}_LOD{level}"
        lod.parent = obj
        lod.matrix_parent_inverse = Matrix.Identity(4)
        lod.hide_render = True


_DATA = {"MESH": "meshes", "CAMERA": "cameras", "LIGHT": "lights"}


def _remove(objects) -> None:
    """Delete objects and the data only they used: the importer's cameras and lights, a preview's
    mesh with its materials and textures."""
    for obj in objects:
        data, kind = obj.data, obj.type
        materials = [m for m in getattr(data, "materials", []) if m is not None]
        bpy.data.objects.remove(obj, do_unlink=True)
        if data is None or data.users > 0 or kind not in _DATA:
            continue
        getattr(bpy.data, _DATA[kind]).remove(data)
        for material in materials:
            if material.users > 0:
                continue
            images = [n.image for n in material.node_tree.nodes if getattr(n, "image", None)] if material.node_tree else []
            bpy.data.materials.remove(material)
            for image in images:
                if image.users == 0:
                    bpy.data.images.remove(image)


def _join(meshes, context) -> bpy.types.Object:
    if len(meshes) == 1:
        return meshes[0]
    active = meshes[0]
    with context.temp_override(active_object=active, object=active, selected_objects=meshes,
                               selected_editable_objects=meshes):
        bpy.ops.object.join()
    return active


def world_bounds(obj) -> tuple[np.ndarray, np.ndarray]:
    vertices = obj.data.vertices
    co = np.empty(len(vertices) * 3, dtype=np.float32)
    vertices.foreach_get("co", co)
    return placement.world_bounds(co.reshape(-1, 3), np.array(obj.matrix_world))


def stand_at(obj, cursor, context=None) -> None:
    """Centre on the cursor in X/Y with the lowest vertex at the cursor's height."""
    (context or bpy.context).view_layer.update()
    lo, hi = world_bounds(obj)
    obj.location = obj.location + Vector(placement.standing_offset(lo, hi, cursor))


def take_place_of(obj, source) -> None:
    """Fit `obj` into the bounds of `source`'s (evaluated) mesh and give it `source`'s transform."""
    obj.data.transform(obj.matrix_world)  # bake the importer's transform: vertices in the result's frame
    obj.matrix_world = Matrix.Identity(4)
    lo, hi = world_bounds(obj)
    depsgraph = bpy.context.evaluated_depsgraph_get()
    evaluated = source.evaluated_get(depsgraph)
    mesh = evaluated.to_mesh()
    try:
        co = np.empty(len(mesh.vertices) * 3, dtype=np.float32)
        mesh.vertices.foreach_get("co", co)
    finally:
        evaluated.to_mesh_clear()
    src_lo, src_hi = placement.world_bounds(co.reshape(-1, 3), np.eye(4))
    fit = Matrix(placement.fit_matrix(lo, hi, src_lo, src_hi).tolist())
    obj.parent = source.parent
    obj.matrix_parent_inverse = source.matrix_parent_inverse.copy()
    obj.matrix_basis = source.matrix_basis @ fit


def collection(scene) -> bpy.types.Collection:
    """The "Step1X-3D" collection, created and linked into the scene if needed, and not excluded."""
    coll = bpy.data.collections.get(COLLECTION)
    if coll is None or coll.library is not None:
        coll = bpy.data.collections.new(COLLECTION)
    if coll not in scene.collection.children_recursive:
        scene.collection.children.link(coll)
    for view_layer in scene.view_layers:
        layer = _find_layer_collection(view_layer.layer_collection, coll)
        if layer is not None and layer.exclude:
            layer.exclude = False
    return coll


def _find_layer_collection(layer, coll):
    if layer.collection == coll:
        return layer
    for child in layer.children:
        found = _find_layer_collection(child, coll)
        if found is not None:
            return found
    return None


def move_to_collection(obj, scene) -> None:
    target = collection(scene)
    for coll in list(obj.users_collection):
        if coll != target:
            coll.objects.unlink(obj)
    if obj.name not in target.objects:
        target.objects.link(obj)


def select_only(obj, context=None) -> None:
    context = context or bpy.context
    for other in context.view_layer.objects:
        if other.select_get():
            other.select_set(False)
    obj.select_set(True)
    context.view_layer.objects.active = obj


def stamp(obj, provenance: dict[str, Any]) -> None:
    """Provenance as custom properties (`step1x3d_seed`, `step1x3d_settings`, and the settings the
    engine did not apply in `step1x3d_ignored_settings`)."""
    for key, value in provenance.items():
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if isinstance(v, (bool, int, float, str))}
        if value is not None:
            obj[PREFIX + key] = value


def remove_object(name: str | None) -> None:
    obj = bpy.data.objects.get(name) if name else None
    if obj is not None:
        _remove([obj, *obj.children_recursive])


def footprint(obj) -> tuple[float, float, float]:
    """The point an object stands on: centre of its bounds in X/Y, its lowest Z."""
    lo, hi = world_bounds(obj)
    return ((lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, lo[2])


def bring_in(path: str, name: str, *, cursor=None, source=None, provenance=None, context=None):
    """The whole import: one object, placed (standing at `cursor`, default the 3D cursor, or in
    place of the mesh `source`), in the collection, selected and active, stamped with `provenance`
    as the GLB corrects it (the settings the engine applied, those it ignored)."""
    context = context or bpy.context
    obj = import_glb(path, name, context)
    for part in (obj, *obj.children):
        move_to_collection(part, context.scene)
        if part is not obj:
            part.hide_set(True)  # LODs stay out of the viewport (and renders) until shown
    if source is not None:
        take_place_of(obj, source)
    else:
        stand_at(obj, cursor if cursor is not None else context.scene.cursor.location, context)
    select_only(obj, context)
    provenance = glb_provenance.merged(provenance, glb_provenance.glb_extras(path))
    if provenance:
        stamp(obj, provenance)
    return obj
