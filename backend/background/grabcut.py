"""The classical fallback remover: GrabCut seeded from a model of the image border.

Used when no segmentation model file is on disk. The border (a thin ring around the frame) is
taken as background and clustered into a few colours, so a textured backdrop, a wall above a table
or a lighting gradient is still one model. Pixels far from every border colour seed the object;
GrabCut then refines both colour models and the cut. A side of the frame whose colours appear on
no other side is taken to be where the object leaves the frame, so it is not forced to background.
Parts much smaller than the largest are clutter (a window behind a person, a cup at the edge):
their colours join the background and GrabCut runs once more.

The confidence is how well the final object and background colours separate (Bhattacharyya
distance of their colour histograms, 0 = same colours, 1 = disjoint), lowered when the border
itself is too varied to be a backdrop. It decides whether an empty or frame-filling result is
reported as such or as "could not tell" (see backend.background.check_coverage).
"""
from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage

from .cutout import Cutout

WORK_SIDE = 384  # GrabCut runs at this size; the mask is upsampled (its cost grows with pixels x iterations)
RING = 0.02  # border ring width, share of the shorter side
CLUSTERS = 6
ITERATIONS = 5
REFINE_ITERATIONS = 3
LUMA_WEIGHT = 0.5  # shadows change brightness more than hue: brightness counts half in colour distances
SHADOW, SHADOW_WEIGHT = 0.5, 0.3  # a shadow darkens the backdrop by at most half; such darkening counts 30%
BUSY_BORDER = (6.0, 15.0)  # Lab units: border colour spread where trust in the border model falls from 1 to 0
MIN_PART = 0.05  # object parts smaller than this share of the largest part are clutter


def _features(rgb: np.ndarray) -> np.ndarray:
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).astype(np.float32)
    lab[..., 0] *= LUMA_WEIGHT * 100.0 / 255.0  # OpenCV scales L to 0..255
    return lab


def _ring_mask(h: int, w: int, width: int) -> np.ndarray:
    ring = np.zeros((h, w), bool)
    ring[:width], ring[-width:], ring[:, :width], ring[:, -width:] = True, True, True, True
    return ring


def _sides(h: int, w: int, width: int) -> list[np.ndarray]:
    sides = []
    for sl in ((slice(0, width), slice(None)), (slice(h - width, h), slice(None)),
               (slice(None), slice(0, width)), (slice(None), slice(w - width, w))):
        m = np.zeros((h, w), bool)
        m[sl] = True
        sides.append(m)
    return sides


def _border_model(samples: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    """Cluster centres of the border colours and their typical spread (Lab units)."""
    k = max(1, min(k, len(samples) // 20))
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 0.5)
    cv2.setRNGSeed(0)
    _, labels, centres = cv2.kmeans(samples.astype(np.float32), k, None, criteria, 2, cv2.KMEANS_PP_CENTERS)
    spread = np.linalg.norm(samples - centres[labels.ravel()], axis=1)
    return centres, float(np.median(spread))


def _distance(features: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Distance of (..., 3) features to the nearest border colour; a pixel up to SHADOW darker than a
    border colour with its hue counts as that colour in shadow (a darker but not black backdrop)."""
    flat = features.reshape(-1, 1, 3)
    darker = centres[None, :, 0] - flat[..., 0]
    shade = (darker > 0) & (darker <= SHADOW * centres[None, :, 0])
    luma = np.where(shade, SHADOW_WEIGHT * darker, darker)
    chroma = flat[..., 1:] - centres[None, :, 1:]
    d = np.sqrt(luma ** 2 + (chroma ** 2).sum(axis=2)).min(axis=1)
    return d.reshape(features.shape[:-1])


def _grabcut(image: np.ndarray, mask: np.ndarray, iterations: int) -> None:
    """GrabCut, in place on `mask`, on the box around everything not fixed as background."""
    rows, cols = np.nonzero(mask != cv2.GC_BGD)
    if len(rows) == 0:
        return
    pad = 8
    top, bottom = max(rows.min() - pad, 0), min(rows.max() + pad + 1, mask.shape[0])
    left, right = max(cols.min() - pad, 0), min(cols.max() + pad + 1, mask.shape[1])
    sub = np.ascontiguousarray(mask[top:bottom, left:right])
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    try:
        cv2.grabCut(np.ascontiguousarray(image[top:bottom, left:right]), sub, None, bgd, fgd, iterations,
                    cv2.GC_INIT_WITH_MASK)
    except cv2.error:  # a degenerate colour model (e.g. a handful of seed pixels): keep the seeds
        pass
    mask[top:bottom, left:right] = sub


def _separation(features: np.ndarray, fg: np.ndarray) -> float:
    """Bhattacharyya distance of the object's and the background's colour histograms."""
    lab = np.clip(features, -128, 255).astype(np.float32)
    ranges = [0, 100 * LUMA_WEIGHT + 1, 0, 256, 0, 256]
    hists = []
    for m in (fg, ~fg):
        h = cv2.calcHist([lab], [0, 1, 2], m.astype(np.uint8), [12, 16, 16], ranges)
        hists.append(h / max(float(h.sum()), 1.0))
    return float(cv2.compareHist(hists[0], hists[1], cv2.HISTCMP_BHATTACHARYYA))


def _border_trust(spread: float) -> float:
    lo, hi = BUSY_BORDER
    return float(np.clip((hi - spread) / (hi - lo), 0.0, 1.0))


def _keep_object_parts(fg: np.ndarray) -> np.ndarray:
    parts, count = ndimage.label(fg)
    if count <= 1:
        return fg
    sizes = ndimage.sum_labels(fg, parts, index=np.arange(1, count + 1))
    keep = np.concatenate([[False], sizes >= MIN_PART * sizes.max()])
    return keep[parts]


def _fill_small_holes(fg: np.ndarray) -> np.ndarray:
    holes, count = ndimage.label(~fg)
    if count <= 1:
        return fg
    sizes = ndimage.sum_labels(~fg, holes, index=np.arange(1, count + 1))
    edge = np.unique(np.concatenate([holes[0], holes[-1], holes[:, 0], holes[:, -1]]))
    small = sizes < 0.002 * fg.size
    small[edge[edge > 0] - 1] = False  # the open background is never a hole
    return fg | np.concatenate([[False], small])[holes]


def grabcut_cutout(rgba: np.ndarray) -> Cutout:
    """Object alpha of an (H, W, 3|4) uint8 image from its border, with a confidence."""
    rgb = np.ascontiguousarray(rgba[..., :3])
    h, w = rgb.shape[:2]
    scale = min(1.0, WORK_SIDE / max(h, w))
    sh, sw = max(8, round(h * scale)), max(8, round(w * scale))
    small = cv2.resize(rgb, (sw, sh), interpolation=cv2.INTER_AREA) if (sh, sw) != (h, w) else rgb
    features = _features(small)
    width = max(2, round(RING * min(sh, sw)))
    ring = _ring_mask(sh, sw, width)

    # A side whose pixels match no other side's colours is where the object crosses the frame: those
    # pixels are left out of the background model and not forced to background.
    _, spread = _border_model(features[ring], CLUSTERS)
    floor = max(8.0, 2.5 * spread)  # how far from every border colour a pixel must be to seed the object
    backdrop = ring.copy()
    sides = _sides(sh, sw, width)
    for i, side in enumerate(sides):
        others = np.logical_or.reduce([s for j, s in enumerate(sides) if j != i]) & ~side
        other_centres, _ = _border_model(features[others], CLUSTERS)
        foreign = _distance(features[side], other_centres) / floor > 1.0
        if foreign.mean() > 0.05:
            backdrop[side] &= ~foreign
    if backdrop.sum() < 0.25 * ring.sum():  # every side differs from the others: no backdrop to model
        return Cutout(np.ones((h, w), np.float32), "grabcut", 0.0, "the image border has no common background")
    centres, _ = _border_model(features[backdrop], CLUSTERS)
    dist = _distance(features, centres) / floor

    seed_fg = (dist > 1.0) & ~backdrop
    if seed_fg.mean() < 0.001:  # the border colours explain the whole picture: nothing stands out
        alpha = np.zeros((h, w), np.float32)
        return Cutout(alpha, "grabcut", round(_border_trust(spread), 3), "nothing in the image differs from its border")
    mask = np.where(dist > 1.0, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
    mask[dist > 2.0] = cv2.GC_PR_FGD
    mask[backdrop] = cv2.GC_BGD
    _grabcut(small, mask, ITERATIONS)
    fg = (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
    kept = _keep_object_parts(fg)
    clutter = fg & ~kept
    if clutter.any():  # clutter away from the border: its colours are background too, also where it touches the object
        clutter_centres, _ = _border_model(features[clutter], 3)
        mask[kept & (_distance(features, clutter_centres) / floor < 1.0)] = cv2.GC_PR_BGD
        mask[clutter] = cv2.GC_BGD
        _grabcut(small, mask, REFINE_ITERATIONS)
        kept = _keep_object_parts((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD))
    fg = _fill_small_holes(kept)

    confidence = _separation(features, fg) if 0 < fg.sum() < fg.size else 1.0
    confidence *= _border_trust(spread)
    soft = cv2.GaussianBlur(fg.astype(np.float32), (0, 0), 0.6)
    alpha = cv2.resize(soft, (w, h), interpolation=cv2.INTER_LINEAR) if (sh, sw) != (h, w) else soft
    alpha = np.clip((alpha - 0.5) * 2.0 + 0.5, 0.0, 1.0)  # upsampling softened the edge: restore ~1-2 px
    return Cutout(alpha.astype(np.float32), "grabcut", round(confidence, 3))
