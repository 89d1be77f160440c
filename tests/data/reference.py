"""Brute-force float64 references for the data tests: exact winding numbers (every triangle's
solid angle) and exact point-triangle distances (projection when inside, else nearest edge)."""
from __future__ import annotations

import numpy as np


def winding_numbers(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    tri = vertices[faces]
    out = np.empty(len(points))
    for i, q in enumerate(points):
        a, b, c = tri[:, 0] - q, tri[:, 1] - q, tri[:, 2] - q
        la, lb, lc = (np.linalg.norm(x, axis=1) for x in (a, b, c))
        det = np.einsum("ij,ij->i", a, np.cross(b, c))
        den = la * lb * lc + np.einsum("ij,ij->i", a, b) * lc + np.einsum("ij,ij->i", a, c) * lb \
            + np.einsum("ij,ij->i", b, c) * la
        out[i] = (2.0 * np.arctan2(det, den)).sum() / (4.0 * np.pi)
    return out


def _segment_distance(q, p0, p1):
    d = p1 - p0
    t = np.clip(np.einsum("ij,ij->i", q - p0, d) / np.maximum(np.einsum("ij,ij->i", d, d), 1e-300), 0.0, 1.0)
    return np.linalg.norm(q - (p0 + t[:, None] * d), axis=1)


def distances(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    tri = vertices[faces]
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    n = np.cross(b - a, c - a)
    n = n / np.linalg.norm(n, axis=1, keepdims=True)
    out = np.empty(len(points))
    for i, q in enumerate(points):
        qq = np.broadcast_to(q, a.shape)
        h = np.einsum("ij,ij->i", q - a, n)
        p = q - h[:, None] * n  # projection onto each plane
        inside = np.ones(len(a), dtype=bool)
        for u, v in ((a, b), (b, c), (c, a)):
            inside &= np.einsum("ij,ij->i", np.cross(v - u, p - u), n) >= 0
        edge = np.minimum(np.minimum(_segment_distance(qq, a, b), _segment_distance(qq, b, c)), _segment_distance(qq, c, a))
        out[i] = np.where(inside, np.abs(h), edge).min()
    return out


def exact_triangle_distance(q, tri) -> float:
    """Distance from q to a triangle in exact rational arithmetic on the given float64 values, so
    it holds for flat, needle and collapsed triangles too: the nearest of the three closed edges
    and, when the plane's foot lies inside a triangle of non-zero area, that foot."""
    from fractions import Fraction

    def sub(x, y):
        return [xi - yi for xi, yi in zip(x, y)]

    def dot(x, y):
        return sum(xi * yi for xi, yi in zip(x, y))

    q = [Fraction(float(x)) for x in q]
    a, b, c = ([Fraction(float(x)) for x in corner] for corner in tri)
    candidates = []
    for p0, p1 in ((a, b), (b, c), (c, a)):
        e, p = sub(p1, p0), sub(q, p0)
        t = min(max(dot(p, e) / dot(e, e), Fraction(0)), Fraction(1)) if dot(e, e) else Fraction(0)
        r = [pi - t * ei for pi, ei in zip(p, e)]
        candidates.append(dot(r, r))
    ab, ac, aq = sub(b, a), sub(c, a), sub(q, a)
    g11, g12, g22 = dot(ab, ab), dot(ab, ac), dot(ac, ac)
    det = g11 * g22 - g12 * g12  # |ab x ac|^2
    if det:
        r1, r2 = dot(ab, aq), dot(ac, aq)
        s, t = (g22 * r1 - g12 * r2) / det, (g11 * r2 - g12 * r1) / det
        if s >= 0 and t >= 0 and s + t <= 1:
            r = [aq[k] - s * ab[k] - t * ac[k] for k in range(3)]
            candidates.append(dot(r, r))
    return float(min(candidates)) ** 0.5
