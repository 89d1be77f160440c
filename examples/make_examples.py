"""Renders the example reference images with bpy (run: .venv/bin/python examples/make_examples.py).

The examples are the project's own renders of simple objects built from primitives, so nothing
third-party is bundled; they come out as RGBA PNGs with a transparent background like the images
the Step1X-3D release ships.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import bpy

HERE = Path(__file__).resolve().parent


def material(name: str, rgb: tuple[float, float, float], roughness: float = 0.5) -> bpy.types.Material:
    mat = bpy.data.materials.new(name)
    mat.use_nodes = True
    bsdf = mat.node_tree.nodes["Principled BSDF"]
    bsdf.inputs["Base Color"].default_value = (*rgb, 1.0)
    bsdf.inputs["Roughness"].default_value = roughness
    return mat


def add(op, mat, **kwargs) -> bpy.types.Object:
    op(**kwargs)
    obj = bpy.context.active_object
    obj.data.materials.append(mat)
    bpy.ops.object.shade_smooth()
    return obj


def build_robot() -> None:
    body, trim, eye = material("body", (0.85, 0.25, 0.1)), material("trim", (0.9, 0.85, 0.7)), material("eye", (0.05, 0.3, 0.9), 0.2)
    add(bpy.ops.mesh.primitive_uv_sphere_add, body, radius=0.55, location=(0, 0, 0.6), segments=48, ring_count=24)
    add(bpy.ops.mesh.primitive_uv_sphere_add, trim, radius=0.38, location=(0, 0, 1.35), segments=48, ring_count=24)
    for x in (-0.14, 0.14):
        add(bpy.ops.mesh.primitive_uv_sphere_add, eye, radius=0.09, location=(x, -0.33, 1.42))
    for x in (-0.62, 0.62):
        add(bpy.ops.mesh.primitive_cylinder_add, trim, radius=0.1, depth=0.7, location=(x, 0, 0.65),
            rotation=(0, math.radians(25 if x > 0 else -25), 0))
    for x in (-0.25, 0.25):
        add(bpy.ops.mesh.primitive_cylinder_add, body, radius=0.13, depth=0.3, location=(x, 0, 0.05))
    add(bpy.ops.mesh.primitive_cone_add, eye, radius1=0.06, depth=0.3, location=(0, 0, 1.85))


def render(path: Path, size: int) -> None:
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = 32
    scene.render.resolution_x = scene.render.resolution_y = size
    scene.render.film_transparent = True
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGBA"
    scene.view_settings.view_transform = "Standard"
    bpy.ops.object.camera_add(location=(0, -6, 0.95), rotation=(math.radians(90), 0, 0))
    cam = bpy.context.active_object
    cam.data.type = "ORTHO"
    cam.data.ortho_scale = 2.6
    scene.camera = cam
    bpy.ops.object.light_add(type="SUN", rotation=(math.radians(50), math.radians(-20), math.radians(-30)))
    bpy.context.active_object.data.energy = 3.0
    world = bpy.data.worlds.new("world")
    world.use_nodes = True
    world.node_tree.nodes["Background"].inputs["Strength"].default_value = 0.8
    scene.world = world
    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)


def main() -> None:
    bpy.ops.wm.read_factory_settings(use_empty=True)
    build_robot()
    render(HERE / "robot.png", int(sys.argv[1]) if len(sys.argv) > 1 else 512)


if __name__ == "__main__":
    main()
