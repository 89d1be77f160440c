"""The embedded CPU engine: a real single-image reconstruction with no weights and no GPU.

Geometry is the inflated silhouette (inflate.py); the texture is the input itself baked as the
front view and its mirror image as the back view with the toolkit's baker, the rest filled by the
inpainter. It is the default on machines without a GPU and the quick path for trying settings.
"""
from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage

from backend.context import JobContext, JobResult
from backend.imaging import foreground, load_image
from backend.mesh.bake import bake
from backend.mesh.clean import clean
from backend.mesh.decimate import decimate
from backend.mesh.export import ExportMetadata, write_glb
from backend.mesh.frame import fit_unit_box
from backend.mesh.inpaint import inpaint
from backend.mesh.uv import unwrap
from shared.errors import BackendError
from shared.views import CANONICAL_VIEWS

from .inflate import Inflated, inflate

FRONT, BACK = CANONICAL_VIEWS[0], CANONICAL_VIEWS[2]
STEPS = 6
PREVIEW_FACE_CAP = 30000  # the inflated surfaces are smooth: more faces only cost unwrap and bake time


def bleed_colours(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Give every background pixel the colour of its nearest foreground pixel, so the baker never
    samples the backdrop at the silhouette's edge."""
    fg = alpha > 0.5
    _, (rows, cols) = ndimage.distance_transform_edt(~fg, return_indices=True)
    return rgb[rows, cols]


def front_view_image(rgb: np.ndarray, shape: Inflated, size: int) -> np.ndarray:
    """Resample the input into the canonical front camera's image of the inflated mesh."""
    half = FRONT.ortho_half_extent
    pixel = 2.0 * half / size  # world units per view pixel
    k = pixel / shape.scale  # input pixels per view pixel
    # view pixel centre (j + 0.5, i + 0.5) -> world x = (j + 0.5) * pixel - half, y = half - (i + 0.5) * pixel
    # -> input col = x / scale + centre_col, row = centre_row - y / scale (pixel centres at +0.5)
    offset_col = shape.centre_col - half / shape.scale + 0.5 * k - 0.5
    offset_row = shape.centre_row - half / shape.scale + 0.5 * k - 0.5
    matrix = np.array([[k, 0.0, offset_col], [0.0, k, offset_row]])
    return cv2.warpAffine(rgb, matrix, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


class PreviewEngine:
    name = "preview"

    def run(self, ctx: JobContext) -> JobResult:
        spec, s = ctx.spec, ctx.spec.settings
        if spec.image is None:
            raise BackendError("engine_unavailable",
                               "the preview engine needs an image; texturing a given mesh needs the step1x3d engine")
        ctx.step("preprocess", 0, STEPS, "reading the image")
        image = load_image(spec.image)
        cut = foreground(image, s["remove_background"])
        alpha = cut.alpha

        ctx.step("geometry", 1, STEPS, "inflating the silhouette")
        shape = inflate(alpha)

        ctx.step("mesh", 2, STEPS, "cleaning and decimating")
        vertices, faces = clean(shape.vertices, shape.faces)
        vertices, faces = decimate(vertices, faces, min(s["face_count"], PREVIEW_FACE_CAP))
        shape = shape.refit(vertices, fit_unit_box(vertices))  # decimation moves the bounds a little
        vertices = shape.vertices

        texture = None
        tex_size = s["texture_resolution"]
        ctx.step("texture", 3, STEPS, "unwrapping UVs")
        mesh = unwrap(vertices, faces, tex_size)
        if s["texture"]:
            ctx.step("bake", 4, STEPS, "baking front and back views")
            rgb = bleed_colours(image.rgba[..., :3], alpha)
            view_size = min(tex_size, 2048)
            front = front_view_image(rgb, shape, view_size)
            back = np.ascontiguousarray(front[:, ::-1])
            baked = bake(mesh, [front, back], [FRONT, BACK], tex_size, weights=[1.0, 1.0])
            filled = inpaint(mesh, baked)
            texture = np.clip(filled.texture * 255.0 + 0.5, 0, 255).astype(np.uint8)

        ctx.step("export", 5, STEPS, "writing the GLB")
        meta = ExportMetadata(engine=self.name, model="silhouette inflation (no weights)", settings=s,
                              seed=s["seed"], source_image=spec.image.name)
        write_glb(spec.output, mesh, texture, meta, name=spec.image.stem)
        ctx.step("export", STEPS, STEPS, "done")
        return JobResult(spec.output, {"engine": self.name, "faces": int(len(mesh.faces)),
                                       "vertices": int(len(mesh.vertices)), "textured": texture is not None,
                                       "texture_resolution": tex_size if texture is not None else 0,
                                       "background": {"method": cut.method, "confidence": cut.confidence}})
