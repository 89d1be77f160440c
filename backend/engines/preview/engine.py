"""The embedded CPU engine: a real single-image reconstruction with no weights and no GPU.

Geometry is the inflated silhouette (inflate.py), or the given mesh (`--mesh`, kept exactly, only
centred with largest extent 1 like every output); the texture is the input itself baked as the
front view and its mirror image as the back view with the toolkit's baker, the rest filled by the
inpainter; `lod_levels` adds coarser meshes sharing the texture. It is the default on machines
without a GPU and the quick path for trying settings. Settings it has no use for (the models'
steps and guidance, the seed: nothing here is random) are recorded as ignored, not as applied.
"""
from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage

from backend.context import JobContext, JobResult
from backend.data.meshes import load_mesh
from backend.imaging import foreground, load_image
from backend.mesh.bake import bake
from backend.mesh.clean import clean
from backend.mesh.decimate import decimate
from backend.mesh.export import ExportMetadata, write_glb
from backend.mesh.frame import fit_unit_box
from backend.mesh.inpaint import inpaint
from backend.mesh.uv import unwrap
from backend.texture.lod import lod_chain
from shared.errors import BackendError
from shared.views import CANONICAL_VIEWS

from .inflate import PixelMap, fit_silhouette, inflate

FRONT, BACK = CANONICAL_VIEWS[0], CANONICAL_VIEWS[2]
STEPS = 6
PREVIEW_FACE_CAP = 30000  # the inflated surfaces are smooth: more faces only cost unwrap and bake time
# what the preview never uses (it frames the object itself, so foreground_ratio too)
NEVER_APPLIED = ("seed", "model", "geometry_steps", "guidance_scale", "symmetry", "edge_type", "octree_resolution",
                 "texture_steps", "texture_guidance", "view_resolution", "lora", "lora_scale", "foreground_ratio")


def ignored_settings(given_mesh: bool) -> list[str]:
    """The settings a job leaves unused; a given mesh also keeps its faces (no face budget)."""
    return [*NEVER_APPLIED, "face_count"] if given_mesh else list(NEVER_APPLIED)


def bleed_colours(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Give every background pixel the colour of its nearest foreground pixel, so the baker never
    samples the backdrop at the silhouette's edge."""
    fg = alpha > 0.5
    _, (rows, cols) = ndimage.distance_transform_edt(~fg, return_indices=True)
    return rgb[rows, cols]


def front_view_image(rgb: np.ndarray, shape: PixelMap, size: int) -> np.ndarray:
    """Resample the input into the canonical front camera's image of the mesh `shape` maps it onto."""
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
            raise BackendError("invalid_request", "the preview engine paints from a reference image; give one")
        ctx.step("preprocess", 0, STEPS, "reading the image")
        image = load_image(spec.image)
        cut = foreground(image, s["remove_background"])
        alpha = cut.alpha

        if spec.mesh is not None:
            ctx.step("geometry", 1, STEPS, f"reading {spec.mesh.name}")
            vertices, faces = load_mesh(spec.mesh)
            vertices = fit_unit_box(vertices).apply(vertices)
            pixels = fit_silhouette(alpha, vertices)
            ctx.step("mesh", 2, STEPS, "keeping the given mesh as it is")
        else:
            ctx.step("geometry", 1, STEPS, "inflating the silhouette")
            shape = inflate(alpha)
            ctx.step("mesh", 2, STEPS, "cleaning and decimating")
            vertices, faces = clean(shape.vertices, shape.faces)
            vertices, faces = decimate(vertices, faces, min(s["face_count"], PREVIEW_FACE_CAP))
            shape = shape.refit(vertices, fit_unit_box(vertices))  # decimation moves the bounds a little
            vertices, pixels = shape.vertices, shape.pixels

        texture = None
        tex_size = s["texture_resolution"]
        ctx.step("texture", 3, STEPS, "unwrapping UVs")
        mesh = unwrap(vertices, faces, tex_size)
        if s["texture"]:
            ctx.step("bake", 4, STEPS, "baking front and back views")
            rgb = bleed_colours(image.rgba[..., :3], alpha)
            front = front_view_image(rgb, pixels, min(tex_size, 2048))
            back = np.ascontiguousarray(front[:, ::-1])
            baked = bake(mesh, [front, back], [FRONT, BACK], tex_size, weights=[1.0, 1.0])
            filled = inpaint(mesh, baked)
            texture = np.clip(filled.texture * 255.0 + 0.5, 0, 255).astype(np.uint8)

        ctx.step("export", 5, STEPS, "writing the GLB" + (f" with {s['lod_levels']} LODs" if s["lod_levels"] else ""))
        lods = lod_chain(mesh, s["lod_levels"]) if s["lod_levels"] else []
        given = spec.mesh is not None
        applied = dict(s, lod_levels=len(lods))  # fewer when a mesh cannot be coarsened further
        if not given:
            applied["face_count"] = min(s["face_count"], PREVIEW_FACE_CAP)
        model = "given mesh" if given else "silhouette inflation (no weights)"
        meta = ExportMetadata.applied(self.name, model, applied, ignored_settings(given), source_image=spec.image.name)
        write_glb(spec.output, mesh, texture, meta, lods=lods, name=spec.image.stem)
        ctx.step("export", STEPS, STEPS, "done")
        return JobResult(spec.output, {"engine": self.name, "faces": int(len(mesh.faces)),
                                       "vertices": int(len(mesh.vertices)), "textured": texture is not None,
                                       "texture_resolution": tex_size if texture is not None else 0,
                                       "background": {"method": cut.method, "confidence": cut.confidence},
                                       "lods": [int(len(lod.faces)) for lod in lods],
                                       "settings": meta.settings, "ignored_settings": meta.ignored})
