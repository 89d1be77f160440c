"""Load one asset into an empty Blender scene and get it ready to render (bpy).

Uses only importers that exist in Blender 4.2+/5.x (`wm.obj_import`, `wm.ply_import`,
`wm.stl_import`, `wm.usd_import`, ...; the `import_scene.obj` / `import_mesh.*` family the public
scripts call is gone, anchors-render.md §B.6). After import: imported cameras and lights are
removed (lighting is ours and recorded), shading is set, materials are cleaned for the colour pass,
missing textures are unlinked and reported, and the object is parented to one empty that carries
the normalisation, so animated children keep their animation.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import bpy
import numpy as np

from shared.errors import BackendError
from shared.jobs import INPUT_FORMATS

from .normalization import Normalization
from .options import RenderOptions

RENDERABLE = {"MESH", "CURVE", "SURFACE", "META", "FONT", "CURVES", "POINTCLOUD"}
DEFAULT_MATERIAL = "blender_render_default"
_AXES = {"y": ("NEGATIVE_Z", "Y"), "z": ("Y", "Z")}  # source up -> (forward, up) importer axes
_FBX_AXES = {"y": ("-Z", "Y"), "z": ("Y", "Z")}


@dataclass
class SceneInfo:
    """What was imported, for meta.json."""

    objects: int = 0
    vertices: int = 0
    triangles: int = 0
    materials: int = 0
    images: int = 0
    removed: dict = field(default_factory=dict)  # imported cameras / lights we dropped
    animated: bool = False
    missing_textures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    bbox_min: tuple = (0.0, 0.0, 0.0)
    bbox_max: tuple = (0.0, 0.0, 0.0)

    def to_meta(self) -> dict:
        return {k: getattr(self, k) for k in ("objects", "vertices", "triangles", "materials", "images",
                                              "removed", "animated", "missing_textures")}


def reset() -> None:
    """An empty scene with factory settings: nothing of the previous object survives."""
    bpy.ops.wm.read_factory_settings(use_empty=True)


def import_asset(path: Path, up: str) -> list[str]:
    """Import `path` into the current scene; returns warnings. Raises input_unreadable."""
    ext = path.suffix.lower().lstrip(".")
    if ext not in INPUT_FORMATS:
        raise BackendError("input_unreadable", f"{path.name}: unsupported format .{ext} "
                                               f"(supported: {', '.join(INPUT_FORMATS)})")
    warnings = []
    fp = str(path)
    axes = {}
    if up != "default":
        if ext in ("obj", "ply", "stl"):
            axes = dict(zip(("forward_axis", "up_axis"), _AXES[up]))
        elif ext == "fbx":
            axes = dict(zip(("axis_forward", "axis_up"), _FBX_AXES[up]))
        else:
            warnings.append(f"--up {up} is ignored for .{ext} files (the format defines its up axis)")
    try:
        if ext in ("glb", "gltf"):
            bpy.ops.import_scene.gltf(filepath=fp)
        elif ext == "obj":
            bpy.ops.wm.obj_import(filepath=fp, **axes)
        elif ext == "ply":
            bpy.ops.wm.ply_import(filepath=fp, **axes)
        elif ext == "stl":
            bpy.ops.wm.stl_import(filepath=fp, **axes)
        elif ext == "fbx":
            bpy.ops.import_scene.fbx(filepath=fp, **axes)
        elif ext.startswith("usd"):
            bpy.ops.wm.usd_import(filepath=fp)
        elif ext == "abc":
            bpy.ops.wm.alembic_import(filepath=fp, as_background_job=False)
        else:  # blend
            bpy.ops.wm.open_mainfile(filepath=fp, load_ui=False)
    except Exception as exc:  # importers raise RuntimeError with Blender's report text
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BackendError("input_unreadable", f"{path.name}: import failed: {message}") from None
    return warnings


def _renderable() -> list[bpy.types.Object]:
    return [o for o in bpy.context.scene.objects if o.type in RENDERABLE and not o.hide_render]


def _remove_cameras_and_lights(info: SceneInfo) -> None:
    for obj in list(bpy.context.scene.objects):
        if obj.type in ("CAMERA", "LIGHT", "LIGHT_PROBE", "SPEAKER"):
            info.removed[obj.type.lower()] = info.removed.get(obj.type.lower(), 0) + 1
            bpy.data.objects.remove(obj, do_unlink=True)


def _set_shading(objects, mode: str) -> None:
    if mode == "import":
        return
    for mesh in {o.data for o in objects if o.type == "MESH"}:
        if mode == "smooth":
            mesh.shade_smooth()  # keeps the file's custom normals, as the reference renders do
        else:
            if mesh.has_custom_normals and "custom_normal" in mesh.attributes:
                mesh.attributes.remove(mesh.attributes["custom_normal"])
            mesh.shade_flat()


def _principled(material) -> bpy.types.Node | None:
    """The Principled BSDF that feeds the material output's surface, else the first one."""
    if material is None or material.node_tree is None:
        return None
    nodes = [n for n in material.node_tree.nodes if n.bl_idname == "ShaderNodeBsdfPrincipled"]
    for out in (n for n in material.node_tree.nodes if n.bl_idname == "ShaderNodeOutputMaterial" and n.is_active_output):
        stack = [link.from_node for link in out.inputs["Surface"].links]
        seen = set()
        while stack:
            node = stack.pop()
            if node.bl_idname == "ShaderNodeBsdfPrincipled":
                return node
            if node.name not in seen:
                seen.add(node.name)
                stack.extend(link.from_node for sock in node.inputs for link in sock.links)
    return nodes[0] if nodes else None


def _default_material(mesh) -> bpy.types.Material:
    """Grey Principled, showing the mesh's colour attribute when it has one (coloured PLY/OBJ)."""
    colour_name = mesh.color_attributes.active_color_name if mesh.color_attributes else None
    name = f"{DEFAULT_MATERIAL}:{colour_name}" if colour_name else DEFAULT_MATERIAL
    mat = bpy.data.materials.get(name)
    if mat is not None:
        return mat
    mat = bpy.data.materials.new(name)
    bsdf = _principled(mat)
    bsdf.inputs["Base Color"].default_value = (0.8, 0.8, 0.8, 1.0)
    if colour_name:
        attr = mat.node_tree.nodes.new("ShaderNodeAttribute")
        attr.attribute_name = colour_name
        mat.node_tree.links.new(attr.outputs["Color"], bsdf.inputs["Base Color"])
    return mat


def _prepare_materials(objects, options: RenderOptions, info: SceneInfo) -> None:
    bare = 0
    for obj in objects:
        if obj.type == "MESH" and not any(slot.material for slot in obj.material_slots):
            bare += 1
            obj.data.materials.clear()
            obj.data.materials.append(_default_material(obj.data))
    if bare:
        info.warnings.append(f"{bare} object(s) without a material: default grey (vertex colours where present)")
    for image in bpy.data.images:
        if image.source == "FILE" and image.packed_file is None and image.filepath:
            if not os.path.isfile(bpy.path.abspath(image.filepath, library=image.library)):
                info.missing_textures.append(image.name)
    if info.missing_textures:
        # Cycles paints missing images magenta; drop them so the material's own values show.
        for mat in bpy.data.materials:
            if mat.node_tree is None:
                continue
            for node in mat.node_tree.nodes:
                if node.bl_idname == "ShaderNodeTexImage" and node.image and node.image.name in info.missing_textures:
                    for sock in node.outputs:
                        for link in list(sock.links):
                            mat.node_tree.links.remove(link)
        info.warnings.append(f"missing textures (unlinked): {', '.join(info.missing_textures)}")
    if options.opaque:
        for mat in bpy.data.materials:
            bsdf = _principled(mat)
            if bsdf is not None:
                for link in list(bsdf.inputs["Alpha"].links):
                    mat.node_tree.links.remove(link)
                bsdf.inputs["Alpha"].default_value = 1.0
    info.materials = len(bpy.data.materials)
    info.images = len(bpy.data.images)


def add_material_aovs(names: tuple[str, ...]) -> list[str]:
    """Shader AOVs for the colour render: 'albedo' = base colour, 'mr' = (1, roughness, metallic)
    as in glTF's metallicRoughness texture. Returns warnings for materials that lack a Principled
    BSDF (their AOVs stay zero)."""
    layer = bpy.context.view_layer
    for name in names:
        if name not in layer.aovs:
            aov = layer.aovs.add()
            aov.name, aov.type = name, "COLOR"
    plain = []
    for mat in bpy.data.materials:
        bsdf = _principled(mat)
        if bsdf is None:
            if mat.users:
                plain.append(mat.name)
            continue
        tree = mat.node_tree
        for name in names:
            out = tree.nodes.new("ShaderNodeOutputAOV")
            out.aov_name = name
            if name == "albedo":
                _feed(tree, bsdf.inputs["Base Color"], out.inputs["Color"])
            else:
                comb = tree.nodes.new("ShaderNodeCombineColor")
                comb.inputs["Red"].default_value = 1.0
                _feed(tree, bsdf.inputs["Roughness"], comb.inputs["Green"])
                _feed(tree, bsdf.inputs["Metallic"], comb.inputs["Blue"])
                tree.links.new(comb.outputs["Color"], out.inputs["Color"])
    return [f"materials without a Principled BSDF (albedo/mr are zero there): {', '.join(plain)}"] if plain else []


def _feed(tree, source, target) -> None:
    """Connect whatever drives `source` to `target`, or copy its constant value."""
    if source.links:
        tree.links.new(source.links[0].from_socket, target)
    else:
        value = source.default_value
        target.default_value = value if isinstance(value, float) else tuple(value)


def _world_vertices() -> tuple[np.ndarray, int, int]:
    """World-space vertices of everything that renders, instances included (collection instances
    in .blend or FBX files, particle and geometry-node instances), and vertex / triangle counts."""
    depsgraph = bpy.context.evaluated_depsgraph_get()
    local: dict[str, tuple[np.ndarray, int]] = {}
    chunks, nverts, ntris = [], 0, 0
    for inst in depsgraph.object_instances:
        obj = inst.object
        if obj.type not in RENDERABLE or not inst.show_self:
            continue
        key = obj.name_full if not inst.is_instance else f"{obj.name_full}#{obj.data.name_full if obj.data else ''}"
        if key not in local:
            mesh = obj.to_mesh()
            if mesh is None:
                continue
            try:
                co = np.empty(len(mesh.vertices) * 3, dtype=np.float64)
                mesh.vertices.foreach_get("co", co)
                mesh.calc_loop_triangles()
                local[key] = (co.reshape(-1, 3), len(mesh.loop_triangles))
            finally:
                obj.to_mesh_clear()
        co, tris = local[key]
        m = np.array(inst.matrix_world, dtype=np.float64)
        chunks.append(co @ m[:3, :3].T + m[:3, 3])
        nverts += len(co)
        ntris += tris
    return (np.concatenate(chunks) if chunks else np.zeros((0, 3))), nverts, ntris


def prepare(options: RenderOptions, import_warnings: list[str]) -> SceneInfo:
    """Clean the imported scene; measure it. Raises input_unreadable when nothing can be rendered."""
    info = SceneInfo(warnings=list(import_warnings))
    scene = bpy.context.scene
    scene.frame_set(scene.frame_start)
    _remove_cameras_and_lights(info)
    objects = _renderable()
    info.animated = any(o.animation_data and o.animation_data.action for o in bpy.data.objects)
    _set_shading(objects, options.normals)
    _prepare_materials(objects, options, info)
    verts, info.vertices, info.triangles = _world_vertices()
    info.objects = len(objects)
    if len(verts) == 0 or info.triangles == 0:
        raise BackendError("input_unreadable", "the file holds no renderable geometry (no triangles)")
    if not np.all(np.isfinite(verts)):
        raise BackendError("input_unreadable", "the geometry has NaN or infinite vertex coordinates")
    info.bbox_min, info.bbox_max = tuple(verts.min(0).tolist()), tuple(verts.max(0).tolist())
    return info


def apply_normalization(norm: Normalization) -> None:
    """Parent every root object to one empty that carries the normalisation matrix."""
    import mathutils

    scene = bpy.context.scene
    roots = [o for o in scene.objects if o.parent is None]
    holder = bpy.data.objects.new("blender_render_normalization", None)
    scene.collection.objects.link(holder)
    for obj in roots:
        world = obj.matrix_world.copy()
        obj.parent = holder
        obj.matrix_parent_inverse = mathutils.Matrix.Identity(4)
        obj.matrix_world = world
    holder.matrix_world = mathutils.Matrix(norm.matrix().tolist())
    bpy.context.view_layer.update()
