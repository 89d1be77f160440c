"""meta.json: everything needed to use one object's renders without guessing (bpy-free).

The public scripts store one camera convention each, and their users ask in issue after issue
which one it is (anchors-render.md §A.3). This record names its frames: positions and normals are
in the Blender Z-up world; per view it carries the Blender camera-to-world (OpenGL camera axes),
OpenCV camera-to-world and world-to-camera, the glTF-frame camera of shared/views.py, OpenCV
intrinsics (pixels per metre for orthographic views), and the stored encodings.
"""
from __future__ import annotations

from .options import RenderOptions

FORMAT = "blender_render/1"

CONVENTIONS = {
    "world": "Blender world, Z up (x, y, z)_blender = (x, -z, y)_gltf; positions and normals use it",
    "c2w_blender": "Blender camera object matrix_world: camera looks down -Z, +Y up (OpenGL axes)",
    "c2w_opencv": "Blender world from an OpenCV camera: +Z forward, +Y down, +X right",
    "c2w_gltf": "glTF world (+Y up) from an OpenGL camera, as in shared/views.py",
    "intrinsics": "OpenCV K; orthographic: u = fx * x + cx with fx in pixels per metre",
    "pixels": "row 0 at the top; pixel (i, j) centred at (u, v) = (j + 0.5, i + 0.5)",
    "timings": "seconds per step; checks and file writes run in a writer thread alongside the renders, "
               "so the steps can add up to more than the total",
    "azimuth_elevation": "shared/views.py: azimuth from the front (+Z glTF, -Y Blender) towards +X, "
                         "elevation towards up",
}


def view_files(index: int, options: RenderOptions) -> dict[str, str]:
    """The files written for view `index`, keyed by pass."""
    files = {p: f"{p}_{index:03d}.png" for p in options.passes}
    if options.exr:
        for p in ("normal", "position", "depth"):
            if p in options.passes:
                files[f"{p}_exr"] = f"{p}_{index:03d}.exr"
    return files


def encoding_meta(options: RenderOptions) -> dict:
    return {
        "position": "16-bit RGB PNG: value / 65535 = clamp(world + 0.5, 0, 1); background 0.5",
        "normal": "16-bit RGB PNG: value / 65535 = clamp(normal * 0.5 + 0.5, 0, 1); background 0.5; the "
                  "interpolated shading normal, not turned towards the camera on back faces",
        "depth": "16-bit grey PNG: depth = near + value / 65534 * (far - near), per view; 65535 = background",
        "mask": "8-bit grey PNG: 255 where a camera ray through the pixel centre hits the object",
        "color": f"{options.color_depth}-bit RGBA PNG, sRGB ('Standard' view transform), straight alpha",
        "albedo": f"{options.color_depth}-bit RGBA PNG: base colour, sRGB, straight alpha",
        "mr": f"{options.color_depth}-bit RGBA PNG, linear: R = 1, G = roughness, B = metallic (glTF layout)",
        "exr": "float32 EXR: normal, position as RGB (0 on the background), depth as Y (1e10 on the background)",
        "geometry_sampling": "one sample at each pixel centre (0.01 px box filter), no anti-aliasing",
    }
