"""Render maps of a mesh for given cameras: geometry maps for the texture model, textured views.

The texture stage conditions its multi-view model on position and normal maps in the reference's
encoding (step1x3d-reference.md §4.4), and the bake round-trip test needs textured renders; both
are a rasterisation followed by barycentric interpolation, so they share this module.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from backend.mesh.camera import Camera
from backend.mesh.raster import rasterize_views
from backend.mesh.uv import UVMesh, smooth_vertex_normals
from shared.views import GLTF_TO_BLENDER

CONTROL_BACKGROUND = 0.5  # the reference composites its conditioning maps over grey 0.5


@dataclass
class GeometryMaps:
    """Per-view world-space geometry, batched over views (N, H, W, ...). All cameras share H, W."""

    position: torch.Tensor  # (N, H, W, 3) glTF world position, zeros on background
    normal: torch.Tensor  # (N, H, W, 3) unit glTF world normal (smooth), zeros on background
    depth: torch.Tensor  # (N, H, W) camera depth, +inf on background
    mask: torch.Tensor  # (N, H, W) bool


@dataclass
class Rendering:
    image: torch.Tensor  # (N, H, W, C) float32
    mask: torch.Tensor  # (N, H, W) bool


def _tensor(array, device, dtype=torch.float32) -> torch.Tensor:
    if isinstance(array, torch.Tensor):
        return array.to(device=device, dtype=dtype)
    return torch.from_numpy(np.ascontiguousarray(array)).to(device=device, dtype=dtype)


def _same_size(cameras: Sequence[Camera]) -> None:
    if len({(c.height, c.width) for c in cameras}) != 1:
        raise ValueError("all cameras of one batch must share a resolution")


def sample_bilinear(image: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Bilinear lookup in an (H, W, C) image at continuous pixel coordinates (centre at +0.5),
    clamped to the edge. Works on any device and any batch shape of x, y."""
    h, w = image.shape[:2]
    fx = (x - 0.5).clamp(0, w - 1)
    fy = (y - 0.5).clamp(0, h - 1)
    x0, y0 = fx.floor().long().clamp(max=w - 2 if w > 1 else 0), fy.floor().long().clamp(max=h - 2 if h > 1 else 0)
    x1, y1 = (x0 + 1).clamp(max=w - 1), (y0 + 1).clamp(max=h - 1)
    tx, ty = (fx - x0).unsqueeze(-1), (fy - y0).unsqueeze(-1)
    flat = image.reshape(h * w, -1)

    def at(yy, xx):
        return flat[yy * w + xx]

    top = at(y0, x0) * (1 - tx) + at(y0, x1) * tx
    bottom = at(y1, x0) * (1 - tx) + at(y1, x1) * tx
    return top * (1 - ty) + bottom * ty


def sample_texture(texture: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear texture lookup with the glTF-sampler convention of `raster.rasterize_uv`."""
    h, w = texture.shape[:2]
    return sample_bilinear(texture, uv[..., 0] * w, (1.0 - uv[..., 1]) * h)


def render_geometry(vertices, faces, cameras: Sequence[Camera], *, normals=None,
                    device: str | torch.device | None = None) -> GeometryMaps:
    """World-space position, smooth normal, depth and mask maps (normals default to the mesh's
    area-weighted vertex normals, re-normalised per pixel after interpolation)."""
    _same_size(cameras)
    device = torch.device(device or "cpu")
    verts_np = vertices.detach().cpu().numpy() if isinstance(vertices, torch.Tensor) else np.asarray(vertices)
    faces_np = faces.detach().cpu().numpy() if isinstance(faces, torch.Tensor) else np.asarray(faces)
    if normals is None:
        normals = smooth_vertex_normals(verts_np, faces_np.astype(np.int64))
    rasters = rasterize_views(verts_np, faces_np, cameras, device=device)
    tri = _tensor(faces_np, device, torch.long)
    attrs = torch.cat([_tensor(verts_np, device), _tensor(normals, device)], dim=1)
    maps = torch.stack([r.interpolate(attrs, tri) for r in rasters])
    normal = torch.nn.functional.normalize(maps[..., 3:], dim=-1)
    return GeometryMaps(maps[..., :3], normal, torch.stack([r.depth for r in rasters]),
                        torch.stack([r.mask for r in rasters]))


def control_maps(maps: GeometryMaps) -> torch.Tensor:
    """Encode geometry maps the way the Step1X-3D texture model was trained: Z-up (Blender) world
    coordinates, position + 0.5 and normal * 0.5 + 0.5 clamped to [0, 1], grey 0.5 background.
    Returns (N, 6, H, W): position RGB then normal RGB."""
    rot = torch.tensor(GLTF_TO_BLENDER, dtype=torch.float32, device=maps.position.device)[:3, :3]
    pos = (maps.position @ rot.T + 0.5).clamp(0, 1)
    nrm = (maps.normal @ rot.T * 0.5 + 0.5).clamp(0, 1)
    out = torch.cat([pos, nrm], dim=-1)
    out = torch.where(maps.mask.unsqueeze(-1), out, torch.full_like(out, CONTROL_BACKGROUND))
    return out.permute(0, 3, 1, 2).contiguous()


def render_textured(mesh: UVMesh, texture, cameras: Sequence[Camera], *, background: float = 0.0,
                    device: str | torch.device | None = None) -> Rendering:
    """Unlit render of a textured UV mesh (bilinear lookup, no mipmaps) over a flat background."""
    _same_size(cameras)
    device = torch.device(device or "cpu")
    tex = _tensor(texture, device)
    if tex.ndim == 2:
        tex = tex.unsqueeze(-1)
    rasters = rasterize_views(mesh.vertices, mesh.faces, cameras, device=device)
    tri = _tensor(mesh.faces, device, torch.long)
    uv = _tensor(mesh.uv, device)
    images = torch.full((len(rasters), cameras[0].height * cameras[0].width, tex.shape[-1]), float(background),
                        device=device)
    for image, r in zip(images, rasters):
        hit = torch.nonzero(r.mask.view(-1)).squeeze(1)
        image[hit] = sample_texture(tex, r.interpolate(uv, tri).view(-1, 2)[hit])
    return Rendering(images.view(len(rasters), cameras[0].height, cameras[0].width, -1),
                     torch.stack([r.mask for r in rasters]))
