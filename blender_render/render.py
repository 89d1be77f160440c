"""Render one object's views with Blender: exact geometry passes, then colour (bpy).

Geometry: Cycles, 1 sample, a 0.01-pixel box filter and an emission-only material override; one
render per view writes the interpolated shading normal (an AOV), the Position, Z and alpha passes
to one multilayer EXR (no compositor: it cost a third of the render), read back with
OpenImageIO. The maps are sampled at the pixel centres without anti-aliasing (like the
reference's nvdiffrast conditioning renders), and the file's own materials cannot bend normals or
let rays through. Measured on bpy 5.0.1: unit normals to 1e-7, positions on the depth ray to 1e-5,
equal to the backend's rasteriser within one 16-bit step. Colour: Cycles or EEVEE with the real
materials, the 'Standard' view transform and transparent film, plus shader AOVs for albedo and
metallic-roughness, which a compositor File Output node writes.

Blender 5 API: compositor trees are node groups assigned to `scene.compositing_node_group`; the
File Output node has `directory`, `file_name`, `file_output_items` and defaults to multilayer EXR.
"""
from __future__ import annotations

import math
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import bpy
import mathutils
import numpy as np

from shared.errors import BackendError

from .cameras import CameraSpec
from .options import RenderOptions

_GPU_BACKENDS = ("OPTIX", "CUDA", "HIP", "ONEAPI", "METAL")
NORMAL_AOV = "blender_render_normal"
COLOR_BOUNCES = 4
# With one sample and the narrowest box filter, Cycles (measured on 5.0.1) samples every pixel at
# (+0.00049, +0.00049) pixels from its centre (x right, y up), the same for all pixels, views and
# resolutions. Geometry renders shift the camera back by that much, so positions and normals are
# taken at the pixel centres of shared/views.py; the checks measure what remains.
SAMPLE_OFFSET_PX = 0.00049


@dataclass
class GeometryPasses:
    """One view's geometry as float arrays, row 0 at the top, in the Blender world frame."""

    mask: np.ndarray  # (H, W) bool
    normal: np.ndarray  # (H, W, 3), zeros on the background
    position: np.ndarray  # (H, W, 3), zeros on the background
    depth: np.ndarray  # (H, W) camera depth, 1e10 on the background


@dataclass
class ColorPasses:
    alpha: np.ndarray  # (H, W) float coverage of the colour render
    aovs: dict  # AOV name -> (H, W, 3) float, premultiplied by coverage as Cycles accumulates it


def configure_device(device: str) -> dict:
    """Point Cycles at the CPU or at every GPU of the first available backend (restrict GPUs with
    CUDA_VISIBLE_DEVICES). 'gpu' without a GPU raises engine_unavailable; 'auto' falls back."""
    scene = bpy.context.scene
    if device == "cpu":
        scene.cycles.device = "CPU"
        return {"device": "CPU"}
    prefs = bpy.context.preferences.addons["cycles"].preferences
    for backend in _GPU_BACKENDS:
        try:
            prefs.compute_device_type = backend
        except TypeError:  # backend not compiled into this build
            continue
        prefs.refresh_devices()
        gpus = [d for d in prefs.devices if d.type == backend]
        if gpus:
            for d in prefs.devices:
                d.use = d.type == backend
            scene.cycles.device = "GPU"
            return {"device": "GPU", "backend": backend, "gpus": [d.name for d in gpus]}
    if device == "gpu":
        raise BackendError("engine_unavailable", "no GPU that Cycles can use was found (OptiX/CUDA/HIP/oneAPI/Metal)")
    scene.cycles.device = "CPU"
    return {"device": "CPU", "note": "no GPU found"}


def _openimageio():
    """Blender (4.0+) bundles OpenImageIO's Python module in its own site-packages; the bpy wheel
    keeps that folder off sys.path."""
    local = Path(bpy.utils.resource_path("LOCAL")) / "python" / "lib"
    for site in sorted(local.glob("python3*/site-packages")):
        if str(site) not in sys.path:
            sys.path.append(str(site))
    import OpenImageIO

    return OpenImageIO


def load_float_image(path: Path) -> np.ndarray:
    """An image file as (H, W, C) float32, row 0 at the top, without colour conversion.

    Read with OpenImageIO, not `bpy.data.images.load`: adding and removing an image data-block
    makes Cycles resynchronise its persistent scene, which cost 0.4 s per render (measured)."""
    oiio = _openimageio()
    buf = oiio.ImageBuf(str(path))
    pixels = buf.get_pixels(oiio.FLOAT)
    if buf.has_error or pixels is None:
        raise RuntimeError(f"cannot read {path}: {buf.geterror()}")
    return pixels.reshape(buf.spec().height, buf.spec().width, -1)


def load_render_layers(path: Path, layer: str) -> dict[str, np.ndarray]:
    """The passes of `layer` in a multilayer EXR written by Blender (one part per pass, channels
    named LAYER.PASS.CHANNEL), as pass name -> (H, W, C) float32, row 0 at the top."""
    oiio = _openimageio()
    image = oiio.ImageInput.open(str(path))
    if image is None:
        raise RuntimeError(f"cannot read {path}: {oiio.geterror()}")
    passes = {}
    try:
        part = 0
        while image.seek_subimage(part, 0):
            spec = image.spec()
            names = [n.split(".") for n in spec.channelnames]
            if all(len(n) == 3 and n[0] == layer for n in names):
                pixels = image.read_image(part, 0, 0, spec.nchannels, oiio.FLOAT)
                passes[names[0][1]] = pixels.reshape(spec.height, spec.width, spec.nchannels)
            part += 1
    finally:
        image.close()
    return passes


def write_float_exr(path: Path, pixels: np.ndarray) -> None:
    """A float32 EXR, ZIP-compressed: channels R, G, B for (H, W, 3), a single Y for (H, W); both
    read by OpenCV and OpenImageIO."""
    oiio = _openimageio()
    channels = ("Y",) if pixels.ndim == 2 else ("R", "G", "B", "A")[: pixels.shape[2]]
    pixels = np.ascontiguousarray(pixels, dtype=np.float32).reshape(pixels.shape[0], pixels.shape[1], len(channels))
    spec = oiio.ImageSpec(pixels.shape[1], pixels.shape[0], len(channels), oiio.FLOAT)
    spec.channelnames = channels
    spec.attribute("compression", "zip")
    out = oiio.ImageOutput.create(str(path))
    if out is None or not out.open(str(path), spec) or not out.write_image(pixels) or not out.close():
        raise BackendError("output_unwritable", f"cannot write {path}: {oiio.geterror()}")


def _geometry_material() -> bpy.types.Material:
    """The override for geometry renders: emission only (a BSDF would let Cycles bend shading
    normals at grazing angles) and an AOV with the interpolated shading normal. Cycles turns
    normals towards the camera on back faces; multiplying by (1 - 2 * backfacing) undoes that, so
    open meshes keep their true orientation, as the backend's rasteriser sees them."""
    mat = bpy.data.materials.new("blender_render_geometry")
    tree = mat.node_tree
    for node in list(tree.nodes):
        if node.bl_idname != "ShaderNodeOutputMaterial":
            tree.nodes.remove(node)
    output = tree.nodes[0]
    emission = tree.nodes.new("ShaderNodeEmission")
    tree.links.new(emission.outputs["Emission"], output.inputs["Surface"])
    geometry = tree.nodes.new("ShaderNodeNewGeometry")
    sign = tree.nodes.new("ShaderNodeMath")
    sign.operation = "MULTIPLY_ADD"
    sign.inputs[1].default_value, sign.inputs[2].default_value = -2.0, 1.0
    tree.links.new(geometry.outputs["Backfacing"], sign.inputs[0])
    scale = tree.nodes.new("ShaderNodeVectorMath")
    scale.operation = "SCALE"
    tree.links.new(geometry.outputs["Normal"], scale.inputs[0])
    tree.links.new(sign.outputs["Value"], scale.inputs["Scale"])
    aov = tree.nodes.new("ShaderNodeOutputAOV")
    aov.aov_name = NORMAL_AOV
    tree.links.new(scale.outputs["Vector"], aov.inputs["Color"])
    return mat


def _file_output(tree, rlayers, directory: Path, items: dict) -> bpy.types.Node:
    """A File Output node writing each render-layer socket in `items` as a float32 EXR."""
    node = tree.nodes.new("CompositorNodeOutputFile")
    node.directory = str(directory)
    node.save_as_render = False
    fmt = node.format
    fmt.media_type = "IMAGE"  # the default is multilayer, which would refuse file_format OPEN_EXR
    fmt.file_format = "OPEN_EXR"
    fmt.color_depth = "32"
    fmt.exr_codec = "NONE"  # read back at once
    for name, mode in items.items():
        item = node.file_output_items.new("FLOAT" if mode == "BW" else "RGBA", name)
        item.override_node_format = True
        item.format.media_type = "IMAGE"
        item.format.file_format = "OPEN_EXR"
        item.format.color_depth = "32"
        item.format.color_mode = mode
        item.format.exr_codec = "NONE"
        item.save_as_render = False
        tree.links.new(rlayers.outputs[name], node.inputs[name])
    return node


class Renderer:
    """Renders the views of the object already in the scene; EXRs go to `work_dir`."""

    def __init__(self, options: RenderOptions, work_dir: Path):
        self.options = options
        self.work_dir = work_dir
        scene = bpy.context.scene
        self.device = configure_device(options.device)
        render = scene.render
        render.resolution_x = render.resolution_y = options.resolution
        render.resolution_percentage = 100
        render.film_transparent = True
        render.use_persistent_data = True  # keep the BVH between views
        if options.threads:
            render.threads_mode, render.threads = "FIXED", options.threads
        layer = bpy.context.view_layer
        for other in scene.view_layers:  # a .blend may hold several; render only the active one
            other.use = other == layer
        layer.use_pass_position = layer.use_pass_z = True
        aov = layer.aovs.add()
        aov.name, aov.type = NORMAL_AOV, "COLOR"
        cam_data = bpy.data.cameras.new("blender_render_camera")
        self.camera = bpy.data.objects.new("blender_render_camera", cam_data)
        scene.collection.objects.link(self.camera)
        scene.camera = self.camera
        self.override = _geometry_material()
        self.lighting = self._lighting()
        self.color_tree = None  # built once AOVs exist (they add render-layer sockets)

    # -- scene pieces -------------------------------------------------------------------------
    def _color_tree(self):
        tree = bpy.data.node_groups.new("blender_render_color", "CompositorNodeTree")
        rl = tree.nodes.new("CompositorNodeRLayers")
        items = {"Alpha": "BW", **{name: "RGB" for name in self.options.material_passes}}
        self.color_output = _file_output(tree, rl, self.work_dir, items)
        return tree

    def _lighting(self) -> dict:
        """Neutral uniform light, or an HDRI turned about +Z; returns the meta.json record."""
        o = self.options
        world = self.world = bpy.data.worlds.new("blender_render_world")
        nodes, links = world.node_tree.nodes, world.node_tree.links
        background = next(n for n in nodes if n.bl_idname == "ShaderNodeBackground")
        if not o.hdri:
            background.inputs["Color"].default_value = (1.0, 1.0, 1.0, 1.0)
            background.inputs["Strength"].default_value = o.light_strength
            return {"type": "uniform", "color": [1.0, 1.0, 1.0], "strength": o.light_strength}
        path = Path(o.hdri)
        if not path.is_file():
            raise BackendError("input_not_found", f"HDRI {path} does not exist")
        try:
            image = bpy.data.images.load(str(path), check_existing=True)
            if not image.has_data and image.size[0] == 0:
                raise RuntimeError("no pixels")
        except RuntimeError as exc:
            raise BackendError("input_unreadable", f"HDRI {path.name} cannot be read: {exc}") from None
        rotation = o.hdri_rotation
        if rotation is None:
            rotation = random.Random(f"hdri-rotation-{o.seed}").uniform(0.0, 360.0)
        env = nodes.new("ShaderNodeTexEnvironment")
        env.image = image
        mapping = nodes.new("ShaderNodeMapping")
        mapping.inputs["Rotation"].default_value = (0.0, 0.0, math.radians(rotation))
        coords = nodes.new("ShaderNodeTexCoord")
        links.new(coords.outputs["Generated"], mapping.inputs["Vector"])
        links.new(mapping.outputs["Vector"], env.inputs["Vector"])
        links.new(env.outputs["Color"], background.inputs["Color"])
        background.inputs["Strength"].default_value = o.hdri_strength
        return {"type": "hdri", "path": str(path.resolve()), "strength": o.hdri_strength,
                "rotation_deg": rotation, "rotation_axis": "+Z (Blender world)"}

    def place(self, cam: CameraSpec, geometry: bool) -> None:
        data = self.camera.data
        for key, value in cam.blender_camera().items():
            setattr(data, key, value)
        offset = SAMPLE_OFFSET_PX if geometry else 0.0
        data.shift_x, data.shift_y = -offset / cam.width, -offset / cam.height
        self.camera.matrix_world = mathutils.Matrix(cam.c2w_blender().tolist())

    # -- passes -------------------------------------------------------------------------------
    def begin_geometry(self) -> None:
        scene = bpy.context.scene
        scene.render.engine = "CYCLES"
        c = scene.cycles
        c.samples = 1
        c.use_adaptive_sampling = False
        c.use_denoising = False
        c.pixel_filter_type = "BOX"
        c.filter_width = 0.01  # Cycles' minimum: one sample at the pixel centre, no anti-aliasing
        c.max_bounces = 0  # passes come from the first hit
        bpy.context.view_layer.material_override = self.override
        scene.render.use_compositing = False
        scene.world = None  # no lighting needed; an HDRI would cost seconds of importance-map building
        settings = scene.render.image_settings
        settings.media_type = "MULTI_LAYER_IMAGE"
        settings.file_format = "OPEN_EXR_MULTILAYER"
        settings.color_depth = "32"
        settings.exr_codec = "NONE"  # read back at once

    def geometry(self, cam: CameraSpec) -> GeometryPasses:
        self.place(cam, geometry=True)
        path = self.work_dir / f"geometry_{cam.index:03d}.exr"
        bpy.context.scene.render.filepath = str(path)
        bpy.ops.render.render(write_still=True)
        data = load_render_layers(path, bpy.context.view_layer.name)
        path.unlink()
        return GeometryPasses(mask=data["Combined"][..., 3] > 0.5, normal=data[NORMAL_AOV][..., :3],
                              position=data["Position"][..., :3], depth=data["Depth"][..., 0])

    def begin_color(self) -> None:
        o = self.options
        scene = bpy.context.scene
        bpy.context.view_layer.material_override = None
        scene.world = self.world
        if self.color_tree is None:
            self.color_tree = self._color_tree()
        scene.compositing_node_group = self.color_tree
        scene.render.use_compositing = True
        view = scene.view_settings
        view.view_transform, view.look, view.exposure, view.gamma = "Standard", "None", 0.0, 1.0
        settings = scene.render.image_settings
        settings.media_type = "IMAGE"
        settings.file_format = "PNG"
        settings.color_mode = "RGBA"
        settings.color_depth = str(o.color_depth)
        if o.engine == "eevee":
            scene.render.engine = "BLENDER_EEVEE"
            scene.eevee.taa_render_samples = o.samples
            return
        scene.render.engine = "CYCLES"
        c = scene.cycles
        c.samples = o.samples
        c.use_denoising = o.denoise
        c.pixel_filter_type = "BLACKMAN_HARRIS"
        c.filter_width = 1.5
        c.max_bounces = COLOR_BOUNCES

    def color(self, cam: CameraSpec, png: Path) -> ColorPasses:
        self.place(cam, geometry=False)
        prefix = f"color_{cam.index:03d}_"
        self.color_output.file_name = prefix
        scene = bpy.context.scene
        scene.render.filepath = str(png)
        bpy.ops.render.render(write_still=True)
        alpha = load_float_image(self.work_dir / f"{prefix}Alpha.exr")[..., 0]
        aovs = {name: load_float_image(self.work_dir / f"{prefix}{name}.exr")[..., :3]
                for name in self.options.material_passes}
        return ColorPasses(alpha, aovs)

    def settings_meta(self) -> dict:
        o = self.options
        if o.engine == "eevee":
            color = {"engine": "BLENDER_EEVEE", "samples": o.samples, "view_transform": "Standard"}
        else:
            color = {"engine": "CYCLES", "samples": o.samples, "denoise": o.denoise, "filter": "BLACKMAN_HARRIS 1.5 px",
                     "max_bounces": COLOR_BOUNCES, "view_transform": "Standard"}
        return {"geometry": {"engine": "CYCLES", "samples": 1, "filter": "BOX 0.01 px", "material": "override",
                             "sample_offset_compensation_px": SAMPLE_OFFSET_PX},
                "color": color, "device": self.device, "lighting": self.lighting}
