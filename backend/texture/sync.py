"""Texture sync: keep the 6 latent views of one object consistent during early denoising (§4.7).

For every step with t > (1 - ratio) * 1000 (the first half of the steps), the release bakes the
views' predicted clean latents x0 into a UV latent texture (weights: face visible in the view x
cos(view, normal)^exp, exp ramping from 1 to 6 * i / steps), takes the DDPM step in texture space
(x_prev = c0 * x0_tex + ct * x_t_tex + sigma * noise, where x_t_tex is the texture carried over from
the previous sync step), renders the texture back into the views and paints the background with
noised solid colours (any of 14 colours early on, then black or white).

Here the texture is kept only where it is ever read: at the surface points the views show, one
per foreground latent pixel of each view (at most 6 * 96 * 96). The release's 1536^2 texture is
read back by nearest sampling at exactly those points, and its Voronoi-filled per-view bakes give
each of them the view's pixel nearest to it on the surface, which is what the gather below reads;
so the same averaging happens without a texture, a UV atlas, a Voronoi fill or any per-step
rasterisation. All rasterisation (the project's rasteriser) happens once, when the sync is set up.
Differences to the release: the background colours are drawn from the job's seeded generator
(the release does not seed them) and backgrounds are noised as sqrt(alpha_bar) * colour +
sqrt(1 - alpha_bar) * noise like every other noising (the release mixes alpha_bar * colour +
(1 - alpha_bar) * noise).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from backend.mesh.camera import Camera
from backend.mesh.raster import rasterize_views
from backend.mesh.uv import smooth_vertex_normals
from shared.views import View

from .scheduler import posterior, predict_x0

# The 16 basic HTML colours without grey and silver; black and white come first.
BACKGROUND_COLOURS: dict[str, tuple[float, float, float]] = {
    "black": (0, 0, 0), "white": (1, 1, 1), "maroon": (0.5, 0, 0), "red": (1, 0, 0), "olive": (0.5, 0.5, 0),
    "yellow": (1, 1, 0), "green": (0, 0.5, 0), "lime": (0, 1, 0), "teal": (0, 0.5, 0.5), "aqua": (0, 1, 1),
    "navy": (0, 0, 0.5), "blue": (0, 0, 1), "purple": (0.5, 0, 0.5), "fuchsia": (1, 0, 1),
}
BLACK_WHITE = 2  # the first two colours


@dataclass(frozen=True)
class SyncOptions:
    ratio: float = 0.5  # sync while t > (1 - ratio) * num_train_timesteps
    exp_start: float = 0.0
    exp_end: float = 6.0
    any_colour_until: float = 0.4  # background progress (1 - t / T) below which any colour is drawn
    black_white_until: float = 0.99  # ... then black or white until here
    visibility_size: int = 512  # raster size that decides which faces a view sees


@dataclass
class SurfaceSamples:
    """The surface points behind the views' foreground latent pixels and where the other views see
    them. Flat pixel indices address a [views * h * w] layout."""

    pixel: torch.Tensor  # (S,) long: the sample's own pixel
    source: torch.Tensor  # (S, V) long: nearest pixel of the point in each view
    cosine: torch.Tensor  # (S, V) float32: cos(view, normal) where the view sees the point, else 0
    foreground: torch.Tensor  # (V, h, w) bool: pixels the mesh covers
    position: torch.Tensor  # (S, 3) float32, for tests and diagnostics


def surface_samples(vertices: np.ndarray, faces: np.ndarray, views: Sequence[View], size: tuple[int, int], *,
                    normals: np.ndarray | None = None, visibility_size: int = 512,
                    device: str | torch.device = "cpu") -> SurfaceSamples:
    """One sample per front-facing foreground pixel of each view at latent resolution `size`."""
    device = torch.device(device)
    h, w = size
    verts = np.asarray(vertices, dtype=np.float64)
    tris = np.asarray(faces, dtype=np.int64)
    if normals is None:
        normals = smooth_vertex_normals(verts, tris)
    cams = [Camera.from_view(v, w, h) for v in views]
    rasters = rasterize_views(verts, tris, cams, device=device)
    vis_cams = [Camera.from_view(v, visibility_size) for v in views]
    seen = torch.zeros(len(views), len(tris), dtype=torch.bool, device=device)
    for i, r in enumerate(rasterize_views(verts, tris, vis_cams, device=device, barycentrics=False)):
        seen[i, r.face_id[r.mask].long()] = True

    tri = torch.as_tensor(tris, device=device)
    attrs = torch.cat([torch.as_tensor(verts, dtype=torch.float32, device=device),
                       torch.as_tensor(normals, dtype=torch.float32, device=device)], dim=1)
    foreground = torch.stack([r.mask for r in rasters])
    pos, nrm, face, own, pixel = [], [], [], [], []
    for i, (cam, r) in enumerate(zip(cams, rasters)):
        interp = r.interpolate(attrs, tri)[r.mask]
        p, n = interp[:, :3], F.normalize(interp[:, 3:], dim=-1)
        front = (n * cam.directions_to_camera(p)).sum(-1) > 0
        rows, cols = torch.nonzero(r.mask, as_tuple=True)
        pos.append(p[front])
        nrm.append(n[front])
        face.append(r.face_id[rows, cols][front].long())
        own.append(torch.full((int(front.sum()),), i, dtype=torch.long, device=device))
        pixel.append((i * h * w + rows * w + cols)[front])
    pos, nrm, face, own, pixel = (torch.cat(x) for x in (pos, nrm, face, own, pixel))

    source = torch.empty(len(pos), len(views), dtype=torch.long, device=device)
    cosine = torch.zeros(len(pos), len(views), dtype=torch.float32, device=device)
    for j, cam in enumerate(cams):
        xy, depth = cam.project(pos)
        col, row = xy[:, 0].floor().long(), xy[:, 1].floor().long()
        inside = (col >= 0) & (col < w) & (row >= 0) & (row < h) & (depth >= cam.near)
        col, row = col.clamp(0, w - 1), row.clamp(0, h - 1)
        cos = (nrm * cam.directions_to_camera(pos)).sum(-1)
        sees = inside & foreground[j, row, col] & seen[j, face] & (cos > 0)
        mine = own == j  # a sample's own view always sees it, at its own pixel
        source[:, j] = torch.where(mine, pixel, j * h * w + row * w + col)
        cosine[:, j] = torch.where(sees | mine, cos.clamp_min(0), torch.zeros_like(cos))
    return SurfaceSamples(pixel, source, cosine, foreground, pos)


class TextureSync:
    """The pipeline's `LatentSync`: texture-space DDPM steps while t is above the threshold."""

    def __init__(self, samples: SurfaceSamples, scheduler: DDPMScheduler, colour_latents: torch.Tensor,
                 options: SyncOptions = SyncOptions()):
        self.samples = samples
        self.scheduler = scheduler
        self.colours = colour_latents.float()  # (K, C): latent of each solid background colour
        self.options = options
        self.train_steps = int(scheduler.config.num_train_timesteps)
        self.state: torch.Tensor | None = None  # (C, S): x_t at the samples
        self.steps = 0

    def active(self, t: int) -> bool:
        return t > (1.0 - self.options.ratio) * self.train_steps

    def exponent(self, index: int) -> float:
        o = self.options
        e = o.exp_start + (o.exp_end - o.exp_start) * index / max(self.steps, 1)
        return e if e != 0 else 1.0

    def bake(self, views: torch.Tensor, exponent: float) -> torch.Tensor:
        """(V, C, h, w) view latents -> (C, S) cosine-weighted average over the views that see each
        sample (the sample's own view always does, so no sample is left empty)."""
        flat = views.float().permute(1, 0, 2, 3).reshape(views.shape[1], -1)
        weight = self.samples.cosine ** exponent
        return (flat[:, self.samples.source] * weight).sum(-1) / weight.sum(-1)

    def render(self, values: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        """Write (C, S) sample values into their own pixels of (V, C, h, w) `views` (a new tensor)."""
        v, c, h, w = views.shape
        flat = views.float().permute(1, 0, 2, 3).reshape(c, -1).clone()
        flat[:, self.samples.pixel] = values
        return flat.view(c, v, h, w).permute(1, 0, 2, 3)

    def start(self, latents: torch.Tensor, steps: int, generator: torch.Generator) -> torch.Tensor:
        self.steps = steps
        self.state = latents.float().permute(1, 0, 2, 3).reshape(latents.shape[1], -1)[:, self.samples.pixel].clone()
        t0 = int(self.scheduler.timesteps[0])
        if not self.active(t0):
            return latents
        return self._background(latents.float(), t0, t0, generator).to(latents.dtype)

    def step(self, index: int, t: int, latents: torch.Tensor, eps: torch.Tensor,
             generator: torch.Generator) -> torch.Tensor | None:
        if not self.active(t) or self.state is None:
            return None
        x0 = predict_x0(self.scheduler, latents.float(), eps.float(), t)
        post = posterior(self.scheduler, t)
        noise = torch.randn(self.state.shape, generator=generator, device=generator.device).to(self.state.device)
        self.state = post.x0_coeff * self.bake(x0, self.exponent(index)) + post.xt_coeff * self.state \
            + post.std * noise
        # pixels outside the sync (back-facing foreground) take the ordinary per-view step
        stepped = self.scheduler.step(eps.float(), t, latents.float(), generator=generator).prev_sample
        out = self.render(self.state, stepped)
        prev_t = int(self.scheduler.previous_timestep(t))
        return self._background(out, t, prev_t, generator).to(latents.dtype)

    def _background(self, latents: torch.Tensor, t: int, level: int, generator: torch.Generator) -> torch.Tensor:
        """Replace the background by solid-colour latents noised to timestep `level`."""
        progress = 1.0 - t / self.train_steps
        if progress >= self.options.black_white_until:
            return latents
        choices = len(self.colours) if progress < self.options.any_colour_until else BLACK_WHITE
        pick = torch.randint(0, choices, (latents.shape[0],), generator=generator, device=generator.device)
        colour = self.colours[pick].to(latents.device)[:, :, None, None].expand_as(latents)
        a = float(self.scheduler.alphas_cumprod[level]) if level >= 0 else 1.0
        noise = torch.randn(latents.shape, generator=generator, device=generator.device).to(latents.device)
        noised = math.sqrt(a) * colour + math.sqrt(1.0 - a) * noise
        background = ~self.samples.foreground[:, None].to(latents.device)
        return torch.where(background, noised, latents)
