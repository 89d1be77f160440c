"""Back-project view images into a UV texture (gather formulation), on torch CPU or CUDA.

Every texel inside a UV chart gets its 3D point and smooth normal from a UV-space raster; the
point is projected into each view, kept if that view's depth buffer shows it (visibility), the
surface faces the camera steeply enough and the pixel is away from silhouettes and depth edges,
and the image is sampled bilinearly there. Views are merged with weights
view_weight * cos(angle)^power.

Same as the reference baker (anchors-mesh.md §1.3-1.4, step1x3d-reference.md §4.9): cosine power
4, grazing cut at 75°, per-view weights, an unreliable border of round(2/512 * view size) pixels
(8 at 2048) around silhouettes and depth edges, the "fast" merge that skips a view when more than
99% of the texels it would paint are already painted.
Deliberate deviations:
- gather instead of the reference's pixel -> texel bilinear splat, so a visible texel is never
  left empty (the splat leaves ~10% of chart texels for the inpainter) and there is no
  half-texel offset: texel centres follow the glTF sampler convention (`raster.rasterize_uv`);
- depth edges are found geometrically (a jump between neighbouring pixels steeper than
  `depth_edge_slope` pixel widths) instead of Canny on 8-bit min-max normalised depth, which
  depends on the object's depth range;
- visibility is a depth test against the view's z-buffer with a slope-scaled tolerance; the
  reference gets visibility implicitly from its splat of the nearest surface.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from backend.mesh import bake_cpu
from backend.mesh.camera import Camera
from backend.mesh.raster import Raster, pick_method, rasterize_uv, rasterize_views
from backend.mesh.render import sample_bilinear
from backend.mesh.uv import UVMesh
from shared.views import View


@dataclass(frozen=True)
class BakeOptions:
    cos_power: float = 4.0
    max_angle_deg: float = 75.0  # surfaces seen more obliquely than this are not baked from a view
    edge_px: int | None = None  # unreliable border in view pixels; None: round(2 / 512 * view size)
    depth_edge_slope: float = 8.0  # depth jump per pixel, in pixel widths, that marks a depth edge
    skip_covered: float | None = 0.99  # skip a view when this fraction of its texels is painted


@dataclass
class TexelSurface:
    """The surface behind each chart texel: what both the baker and the inpainter start from."""

    uv_raster: Raster  # (T, T) face id (-1 outside charts) and barycentrics
    index: torch.Tensor  # (M, 2) long row, column of every chart texel
    position: torch.Tensor  # (M, 3) world point
    normal: torch.Tensor  # (M, 3) unit smooth normal

    @property
    def chart_mask(self) -> torch.Tensor:
        return self.uv_raster.mask


@dataclass
class BakeResult:
    texture: torch.Tensor  # (T, T, C) float32, zero where no view painted
    weight: torch.Tensor  # (T, T) float32 summed view weights
    surface: TexelSurface
    views_used: list[str]

    @property
    def covered(self) -> torch.Tensor:
        return self.weight > 0


def texel_surface(mesh: UVMesh, texture_size: int, device: str | torch.device | None = None,
                  method: str = "auto") -> TexelSurface:
    device = torch.device(device or "cpu")
    uv_raster = rasterize_uv(mesh.uv, mesh.faces, texture_size, device=device, method=method)
    if pick_method(method, device) == "numba":
        index, pos, nrm = bake_cpu.texel_surface(uv_raster.face_id.numpy(), uv_raster.bary.numpy(), mesh.faces,
                                                 mesh.vertices, mesh.normals)
        return TexelSurface(uv_raster, torch.from_numpy(index), torch.from_numpy(pos), torch.from_numpy(nrm))
    index = torch.nonzero(uv_raster.mask)
    fid = uv_raster.face_id[index[:, 0], index[:, 1]].long()
    bary = uv_raster.bary[index[:, 0], index[:, 1]].unsqueeze(-1)  # (M, 3, 1)
    tri = torch.as_tensor(mesh.faces, device=device).long()[fid]  # (M, 3)
    verts = torch.as_tensor(mesh.vertices, device=device, dtype=torch.float32)
    normals = torch.as_tensor(mesh.normals, device=device, dtype=torch.float32)
    position = (verts[tri] * bary).sum(1)
    normal = F.normalize((normals[tri] * bary).sum(1), dim=-1)
    return TexelSurface(uv_raster, index, position, normal)


def _max_filter(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary dilation with a (2r+1)^2 square, separable so its cost does not grow with r^2."""
    if radius <= 0:
        return mask
    x = mask[None, None].float()
    x = F.max_pool2d(x, (1, 2 * radius + 1), stride=1, padding=(0, radius))
    x = F.max_pool2d(x, (2 * radius + 1, 1), stride=1, padding=(radius, 0))
    return x[0, 0] > 0


def reliable_pixels(depth: torch.Tensor, camera: Camera, edge_px: int, slope: float) -> torch.Tensor:
    """Pixels of a view worth baking from: covered, and more than `edge_px` pixels away from the
    silhouette and from depth discontinuities, where generated views are least trustworthy."""
    seen = torch.isfinite(depth)
    z = torch.where(seen, depth, torch.zeros_like(depth))
    jump = torch.zeros_like(z)
    for dim in (0, 1):
        a, b = z.narrow(dim, 0, z.shape[dim] - 1), z.narrow(dim, 1, z.shape[dim] - 1)
        both = seen.narrow(dim, 0, z.shape[dim] - 1) & seen.narrow(dim, 1, z.shape[dim] - 1)
        d = torch.where(both, (a - b).abs(), torch.zeros_like(a))
        jump.narrow(dim, 0, z.shape[dim] - 1).copy_(torch.maximum(jump.narrow(dim, 0, z.shape[dim] - 1), d))
        jump.narrow(dim, 1, z.shape[dim] - 1).copy_(torch.maximum(jump.narrow(dim, 1, z.shape[dim] - 1), d))
    edge = jump > slope * camera.pixel_size(z)
    return seen & ~_max_filter(edge | ~seen, edge_px)


def _images(images, device) -> list[torch.Tensor]:
    out = []
    for img in images:
        t = img if isinstance(img, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(img))
        scale = t.dtype == torch.uint8
        t = t.to(device=device, dtype=torch.float32).contiguous()  # no copy when it already is
        if scale:
            t = t / 255.0
        if t.ndim == 2:
            t = t.unsqueeze(-1)
        if t.ndim != 3:
            raise ValueError(f"each view image must be (H, W) or (H, W, C), got {tuple(t.shape)}")
        out.append(t)
    if len({t.shape[-1] for t in out}) > 1:
        raise ValueError("all view images must have the same number of channels")
    return out


def bake(mesh: UVMesh, images, views: Sequence[View], texture_size: int, *, weights: Sequence[float] | None = None,
         options: BakeOptions = BakeOptions(), device: str | torch.device | None = None, method: str = "auto",
         surface: TexelSurface | None = None) -> BakeResult:
    """Merge N view images ((N, H, W, C) or a list of (H, W, C); float in [0, 1] or uint8) into a
    (T, T, C) texture. `weights` default to each View's weight; views are merged in order.
    method: "auto" (numba kernels on the CPU, torch on CUDA) or "torch" (the reference path)."""
    device = torch.device(device or "cpu")
    method = pick_method(method, device)
    imgs = _images(images, device)
    if len(imgs) != len(views):
        raise ValueError(f"{len(imgs)} images for {len(views)} views")
    weights = [v.weight for v in views] if weights is None else list(weights)
    if len(weights) != len(views):
        raise ValueError(f"{len(weights)} weights for {len(views)} views")
    cameras = [Camera.from_view(v, img.shape[1], img.shape[0]) for v, img in zip(views, imgs)]
    surface = surface or texel_surface(mesh, texture_size, device, method)
    rasters = rasterize_views(mesh.vertices, mesh.faces, cameras, device=device, method=method, barycentrics=False)
    cos_min = math.cos(math.radians(options.max_angle_deg))
    channels = imgs[0].shape[-1]
    acc = torch.zeros(len(surface.position), channels, device=device)
    acc_w = torch.zeros(len(surface.position), device=device)
    used = []
    for view, cam, img, raster, w_view in zip(views, cameras, imgs, rasters, weights):
        edge_px = options.edge_px if options.edge_px is not None else round(2 / 512 * max(cam.width, cam.height))
        bake_view = _bake_view_numba if method == "numba" else _bake_view_torch
        if bake_view(surface, cam, img, raster.depth, float(w_view), edge_px, options, cos_min, acc, acc_w):
            used.append(view.name)
    t = texture_size
    flat = surface.index[:, 0] * t + surface.index[:, 1]
    texture = torch.zeros(t * t, channels, device=device).index_copy_(0, flat, acc / acc_w.clamp_min(1e-12)[:, None])
    weight = torch.zeros(t * t, device=device).index_copy_(0, flat, acc_w)
    return BakeResult(texture.view(t, t, channels), weight.view(t, t), surface, used)


def _skip(n_hit: int, n_already: int, options: BakeOptions) -> bool:
    """The reference's "fast" merge: a view adds nothing when it paints only painted texels."""
    return n_hit == 0 or (options.skip_covered is not None and n_already > options.skip_covered * n_hit)


def _bake_view_torch(surface: TexelSurface, cam: Camera, img: torch.Tensor, depth: torch.Tensor, w_view: float,
                     edge_px: int, options: BakeOptions, cos_min: float, acc: torch.Tensor,
                     acc_w: torch.Tensor) -> bool:
    reliable = reliable_pixels(depth, cam, edge_px, options.depth_edge_slope)
    w, xy = _view_weights(surface, cam, depth, reliable, options.cos_power, cos_min)
    w = w * w_view
    hit = w > 0
    if _skip(int(hit.sum()), int((hit & (acc_w > 0)).sum()), options):
        return False
    acc[hit] += sample_bilinear(img, xy[hit, 0], xy[hit, 1]) * w[hit, None]
    acc_w[hit] += w[hit]
    return True


def _bake_view_numba(surface: TexelSurface, cam: Camera, img: torch.Tensor, depth: torch.Tensor, w_view: float,
                     edge_px: int, options: BakeOptions, cos_min: float, acc: torch.Tensor,
                     acc_w: torch.Tensor) -> bool:
    depth_np, acc_w_np = depth.numpy(), acc_w.numpy()
    reliable = bake_cpu.reliable_pixels(depth_np, cam, edge_px, options.depth_edge_slope)
    w, xy = bake_cpu.view_weights(surface.position.numpy(), surface.normal.numpy(), cam, depth_np, reliable,
                                  cos_min, options.cos_power)
    w *= w_view
    hit = w > 0
    if _skip(int(np.count_nonzero(hit)), int(np.count_nonzero(hit & (acc_w_np > 0))), options):
        return False
    bake_cpu.accumulate(img.numpy(), xy, w, acc.numpy(), acc_w_np)
    return True


def _view_weights(surface: TexelSurface, cam: Camera, depth: torch.Tensor, reliable: torch.Tensor,
                  cos_power: float, cos_min: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos^power for texels this view sees reliably (zero elsewhere), and their pixel xy."""
    xy, z = cam.project(surface.position)
    cos = (surface.normal * cam.directions_to_camera(surface.position)).sum(-1)
    col, row = xy[:, 0].floor().long(), xy[:, 1].floor().long()
    inside = (col >= 0) & (col < cam.width) & (row >= 0) & (row < cam.height) & (z >= cam.near) & (cos >= cos_min)
    col, row = col.clamp(0, cam.width - 1), row.clamp(0, cam.height - 1)
    # the texel's own depth may differ from the buffer's at the nearest pixel centre by up to
    # about one pixel of offset times the surface slope, plus one pixel of slack
    c = cos.clamp(cos_min, 1)
    tolerance = cam.pixel_size(z) * (1.0 + (1 - c * c).sqrt() / c)
    ok = inside & (z <= depth[row, col] + tolerance) & reliable[row, col]
    return torch.where(ok, cos.clamp_min(0) ** cos_power, torch.zeros_like(cos)), xy
