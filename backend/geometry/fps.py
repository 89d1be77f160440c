"""Farthest-point sampling in plain torch (replaces torch-cluster, which needs a CUDA build).

Each step is a handful of device-side tensor ops with no host synchronisation, so the loop runs at
kernel-launch speed on a GPU (1024 picks from 32k points in a few milliseconds).
"""
from __future__ import annotations

import torch


def farthest_point_sample(points: torch.Tensor, count: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Indices [B, count] of a farthest-point subset of points [B, N, D], starting at a random point.

    Distances are computed in float32 whatever the input precision.
    """
    batch, n, _ = points.shape
    if not 0 < count <= n:
        raise ValueError(f"cannot pick {count} of {n} points")
    pts = points.float()
    rows = torch.arange(batch, device=points.device)
    picked = torch.empty(batch, count, dtype=torch.long, device=points.device)
    nearest = torch.full((batch, n), float("inf"), device=points.device)
    current = torch.randint(n, (batch,), generator=generator, device=generator.device if generator else "cpu")
    current = current.to(points.device)
    for i in range(count):
        picked[:, i] = current
        step = (pts - pts[rows, current][:, None]).square().sum(-1)
        nearest = torch.minimum(nearest, step)
        current = nearest.argmax(dim=1)
    return picked
