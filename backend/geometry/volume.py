"""Evaluating the shape field on the marching-cubes lattice, densely or coarse-to-fine.

Coarse-to-fine (the release's levels: R, R/2, ... while >= 63, coarsest first; 96 -> 192 -> 384
for R = 384): the coarsest lattice is evaluated everywhere; each finer level evaluates only the
nodes near the surface of the level before (a sign change to a face neighbour, or |value| < band),
grown by 3x3x3 dilations as the release does. Unlike the release, which leaves the other nodes
as NaN/-10000 (a -10000 next to an inside node is a fake surface), every node that is not
evaluated takes the trilinear value of the coarser level. Such nodes lie in coarse cells whose
corners all share one sign, so they keep the right sign and marching cubes sees one closed
surface, never a second shell around the evaluated band.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

FieldFn = Callable[[torch.Tensor], torch.Tensor]  # points [P, 3] -> values [P] (positive inside)


@dataclass
class DecodeStats:
    levels: list[int] = field(default_factory=list)
    queries: list[int] = field(default_factory=list)  # field evaluations per level

    @property
    def total_queries(self) -> int:
        return sum(self.queries)


def octree_levels(resolution: int, minimum: int = 63) -> list[int]:
    """Lattice resolutions from coarse to fine; each level doubles the one before."""
    if resolution < 2:
        raise ValueError(f"octree resolution must be >= 2, got {resolution}")
    levels = [resolution]
    while levels[-1] % 2 == 0 and levels[-1] // 2 >= minimum:
        levels.append(levels[-1] // 2)
    return levels[::-1]


def lattice_points(flat_index: torch.Tensor, resolution: int, bounds: float) -> torch.Tensor:
    """Coordinates of lattice nodes (flat index over an (R+1)^3 grid, x-major) in [-bounds, bounds]^3."""
    n = resolution + 1
    ijk = torch.stack([flat_index // (n * n), (flat_index // n) % n, flat_index % n], dim=-1)
    return ijk.to(torch.float32) * (2.0 * bounds / resolution) - bounds


def evaluate(field_fn: FieldFn, flat_index: torch.Tensor, resolution: int, bounds: float, chunk: int) -> torch.Tensor:
    out = torch.empty(flat_index.shape[0], dtype=torch.float32, device=flat_index.device)
    for start in range(0, flat_index.shape[0], chunk):
        part = flat_index[start:start + chunk]
        out[start:start + chunk] = field_fn(lattice_points(part, resolution, bounds)).float()
    return out


def decode_dense(field_fn: FieldFn, resolution: int, bounds: float = 1.05, chunk: int = 131072,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """The field on every node of the (R+1)^3 lattice."""
    n = resolution + 1
    index = torch.arange(n**3, device=device)
    return evaluate(field_fn, index, resolution, bounds, chunk).view(n, n, n)


def dilate(mask: torch.Tensor, times: int = 1) -> torch.Tensor:
    """3x3x3 box dilation of a boolean grid."""
    dtype = torch.float16 if mask.is_cuda else torch.float32
    x = mask[None, None].to(dtype)
    for _ in range(times):
        x = F.max_pool3d(x, kernel_size=3, stride=1, padding=1)
    return x[0, 0] > 0


def near_surface(grid: torch.Tensor, level: float, band: float) -> torch.Tensor:
    """Nodes whose sign differs from a face neighbour's, or whose value is within `band` of `level`."""
    inside = grid > level
    mark = (grid - level).abs() < band
    for axis in range(3):
        n = grid.shape[axis]
        differs = inside.narrow(axis, 0, n - 1) != inside.narrow(axis, 1, n - 1)
        mark.narrow(axis, 0, n - 1).logical_or_(differs)
        mark.narrow(axis, 1, n - 1).logical_or_(differs)
    return mark


def _to_finer(coarse: torch.Tensor) -> torch.Tensor:
    """Put a coarse boolean grid on the even nodes of the lattice twice as fine."""
    n = coarse.shape[0]
    fine = torch.zeros((2 * n - 1,) * 3, dtype=torch.bool, device=coarse.device)
    fine[::2, ::2, ::2] = coarse
    return fine


def decode_coarse_to_fine(
    field_fn: FieldFn,
    resolution: int,
    bounds: float = 1.05,
    chunk: int = 131072,
    device: torch.device | str = "cpu",
    level: float = 0.0,
    band: float = 0.95,
    on_level: Callable[[int, int], None] | None = None,
) -> tuple[torch.Tensor, DecodeStats]:
    """The field on the (R+1)^3 lattice, evaluated only where a surface can be; see module doc."""
    levels = octree_levels(resolution)
    stats = DecodeStats(levels=levels)
    grid = decode_dense(field_fn, levels[0], bounds, chunk, device)
    known = torch.ones_like(grid, dtype=torch.bool)
    stats.queries.append(grid.numel())
    if on_level:
        on_level(1, len(levels))
    for i, res in enumerate(levels[1:], start=1):
        final = i == len(levels) - 1
        near = near_surface(grid, level, band)
        if not final:
            near = dilate(near)
        wanted = dilate(_to_finer(near), 2 if final else 1)
        grid = F.interpolate(grid[None, None], size=(res + 1,) * 3, mode="trilinear", align_corners=True)[0, 0]
        known = _to_finer(known)
        todo = (wanted & ~known).view(-1).nonzero().squeeze(1)
        grid.view(-1)[todo] = evaluate(field_fn, todo, res, bounds, chunk)
        known = wanted | known
        stats.queries.append(int(todo.numel()))
        if on_level:
            on_level(i + 1, len(levels))
    return grid, stats
