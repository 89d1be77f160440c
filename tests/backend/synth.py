"""Synthetic reference images for the backend tests: a striped ellipse on a plain backdrop."""
from __future__ import annotations

import numpy as np


def striped_ellipse(size: int = 256, background=(255, 255, 255)) -> tuple[np.ndarray, np.ndarray]:
    """RGB image and its boolean foreground: an off-centre ellipse with horizontal colour bands."""
    rows, cols = np.mgrid[0:size, 0:size] + 0.5
    cy, cx, ry, rx = 0.55 * size, 0.45 * size, 0.32 * size, 0.22 * size
    fg = ((rows - cy) / ry) ** 2 + ((cols - cx) / rx) ** 2 <= 1.0
    bands = np.array([[220, 40, 40], [40, 160, 60], [40, 70, 210]], np.uint8)
    colour = bands[((rows - (cy - ry)) / (2 * ry) * 3).clip(0, 2.999).astype(int)]
    image = np.where(fg[..., None], colour, np.array(background, np.uint8))
    return image.astype(np.uint8), fg


# ---- photo-like scenes with a known object mask (background removal tests and benchmark) ------

def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.mgrid[0:size, 0:size] + 0.5
    return rows / size, cols / size  # in [0, 1)


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    from scipy import ndimage

    axes = (sigma, sigma, 0) if image.ndim == 3 else (sigma, sigma)
    return ndimage.gaussian_filter(image, axes)


def _finish(image: np.ndarray, rng: np.random.Generator, noise: float = 3.0) -> np.ndarray:
    """A camera's softness and sensor noise."""
    image = _blur(image.astype(np.float64), 0.7) + rng.normal(0.0, noise, image.shape)
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)


def _ellipse(r, c, cy, cx, ry, rx) -> np.ndarray:
    return ((r - cy) / ry) ** 2 + ((c - cx) / rx) ** 2 <= 1.0


def _paint(background: np.ndarray, mask: np.ndarray, colour) -> np.ndarray:
    return np.where(mask[..., None], np.broadcast_to(np.asarray(colour, np.float64), background.shape), background)


def _mug(r, c, cx=0.47, top=0.30, bottom=0.78, half=0.17):
    body = (np.abs(c - cx) <= half) & (r >= top) & (r <= bottom)
    ring = _ellipse(r, c, (top + bottom) / 2, cx + half, 0.14, 0.10) & ~_ellipse(r, c, (top + bottom) / 2, cx + half, 0.09, 0.055)
    return body | (ring & (c > cx + half))


def scene_studio_shadow(size: int, rng):
    r, c = _grid(size)
    bg = (235 - 25 * r)[..., None] * np.ones(3)
    obj = _ellipse(r, c, 0.48, 0.47, 0.30, 0.22)
    shadow = _blur(_ellipse(r, c, 0.80, 0.56, 0.07, 0.26).astype(np.float64), 0.03 * size)
    img = bg * (1.0 - 0.45 * shadow[..., None])
    bands = np.array([[205, 45, 40], [45, 150, 70], [50, 80, 200]], np.float64)
    colour = bands[np.clip(((r - 0.18) / 0.6 * 3).astype(int), 0, 2)]
    img = np.where(obj[..., None], colour, img)
    return _finish(img, rng), obj


def scene_cast_shadow(size: int, rng):
    """A brown object throwing a long, half-dark shadow across a light floor."""
    r, c = _grid(size)
    bg = (240 - 20 * r)[..., None] * np.ones(3)
    obj = _ellipse(r, c, 0.45, 0.45, 0.28, 0.2)
    shadow = _blur(_ellipse(r, c, 0.62, 0.62, 0.2, 0.22).astype(np.float64), 0.02 * size)
    img = bg * (1.0 - 0.5 * shadow[..., None])
    img = np.where(obj[..., None], np.array([150, 120, 100]) * (0.8 + 0.3 * r)[..., None], img)
    return _finish(img, rng), obj


def scene_silhouette(size: int, rng):
    """A black silhouette on white with a ~3% margin to the frame."""
    r, c = _grid(size)
    obj = (_ellipse(r, c, 0.62, 0.5, 0.35, 0.30) | _ellipse(r, c, 0.22, 0.5, 0.19, 0.17)
           | ((np.abs(c - 0.5) < 0.47) & (np.abs(r - 0.55) < 0.05)))
    obj &= (r > 0.03) & (r < 0.97)
    img = np.where(obj[..., None], 12.0, 250.0) * np.ones(3)
    return _finish(img, rng, noise=2.0), obj


def scene_light_on_dark(size: int, rng):
    r, c = _grid(size)
    obj = _ellipse(r, c, 0.5, 0.52, 0.33, 0.27) | ((np.abs(c - 0.52) < 0.06) & (r > 0.08) & (r < 0.5))
    bg = np.stack([25 + 15 * c, 30 + 10 * r, 60 + 20 * c], -1)
    shade = 0.85 + 0.15 * np.cos((c - 0.52) * 6)[..., None]
    img = np.where(obj[..., None], np.array([240, 225, 170]) * shade, bg)
    return _finish(img, rng), obj


def scene_wood_table(size: int, rng):
    """A mug (with a handle hole) on wood grain."""
    r, c = _grid(size)
    warp = _blur(rng.normal(0, 1, (size, size)), size / 30) * 40
    grain = 0.5 + 0.5 * np.sin((r * 45 + warp) * 2 * np.pi / 3)
    bg = np.stack([150 + 50 * grain, 95 + 35 * grain, 55 + 20 * grain], -1)
    obj = _mug(r, c)
    body = np.array([60, 110, 190]) * (0.8 + 0.2 * np.cos((c - 0.47) * 8))[..., None]
    img = np.where(obj[..., None], body, bg)
    return _finish(img, rng), obj


def scene_rug_cat(size: int, rng):
    """A furry grey-orange cat shape on a patterned rug."""
    r, c = _grid(size)
    checker = ((np.floor(r * 12) + np.floor(c * 12)) % 2)[..., None]
    rug = checker * np.array([120, 40, 45]) + (1 - checker) * np.array([175, 150, 110])
    rug = rug + _blur(rng.normal(0, 12, (size, size, 3)), 1.0)
    ear_l = (r > 0.16) & (r < 0.30) & (np.abs(c - 0.36) < (r - 0.16) * 0.6)
    ear_r = (r > 0.16) & (r < 0.30) & (np.abs(c - 0.56) < (r - 0.16) * 0.6)
    obj = _ellipse(r, c, 0.62, 0.52, 0.24, 0.32) | _ellipse(r, c, 0.34, 0.46, 0.13, 0.15) | ear_l | ear_r
    fur = np.array([110, 105, 100]) + _blur(rng.normal(0, 25, (size, size, 1)), 1.5) + (c > 0.6)[..., None] * np.array([90, 15, -50])
    img = np.where(obj[..., None], fur, rug)
    return _finish(img, rng), obj


def scene_wall_floor(size: int, rng):
    """A cup standing across the line between a wall and the floor, with a contact shadow."""
    r, c = _grid(size)
    wall = np.array([225, 215, 195]) * (0.9 + 0.1 * c)[..., None]
    floor = np.array([120, 115, 110]) + _blur(rng.normal(0, 10, (size, size, 1)), 2.0)
    bg = np.where((r < 0.6)[..., None], wall, floor)
    shadow = _blur(_ellipse(r, c, 0.80, 0.5, 0.04, 0.2).astype(np.float64), 0.02 * size)
    bg = bg * (1.0 - 0.4 * shadow[..., None])
    obj = _mug(r, c, cx=0.45, top=0.35, bottom=0.80, half=0.15)
    body = np.array([200, 60, 60]) * (0.75 + 0.25 * np.cos((c - 0.45) * 7))[..., None]
    img = np.where(obj[..., None], body, bg)
    return _finish(img, rng), obj


def scene_touching_edge(size: int, rng):
    """A person-like shape in front of a building facade, cut off by the bottom edge."""
    r, c = _grid(size)
    facade = np.array([200, 190, 175]) * (1.0 - 0.15 * r)[..., None]
    windows = ((r * 6) % 1 > 0.35) & ((r * 6) % 1 < 0.75) & ((c * 5) % 1 > 0.3) & ((c * 5) % 1 < 0.7)
    bg = np.where(windows[..., None], np.array([90, 110, 130]), facade)
    head = _ellipse(r, c, 0.30, 0.5, 0.11, 0.09)
    torso = (np.abs(c - 0.5) < 0.22 - 0.1 * np.clip(0.55 - r, 0, 1)) & (r > 0.42)
    neck = (np.abs(c - 0.5) < 0.04) & (r > 0.38) & (r <= 0.44)
    obj = head | torso | neck
    skin = np.array([220, 170, 140])
    shirt = np.array([40, 120, 90]) + _blur(rng.normal(0, 8, (size, size, 1)), 1.0)
    img = np.where(torso[..., None], shirt, np.where((head | neck)[..., None], skin, bg))
    return _finish(img, rng), obj


def scene_clutter(size: int, rng):
    """A toy on a table with small unrelated things near the edges (only the toy is the object)."""
    r, c = _grid(size)
    bg = np.stack([200 - 30 * r, 205 - 25 * r, 215 - 20 * r], -1) + _blur(rng.normal(0, 6, (size, size, 3)), 1.5)
    obj = _ellipse(r, c, 0.55, 0.5, 0.25, 0.2) | _ellipse(r, c, 0.27, 0.5, 0.1, 0.1)
    img = np.where(obj[..., None], np.array([230, 170, 30]) * (0.8 + 0.2 * r)[..., None], bg)
    for cy, cx, colour in ((0.08, 0.1, (40, 40, 40)), (0.9, 0.88, (150, 40, 150)), (0.1, 0.9, (30, 90, 40))):
        img = _paint(img, _ellipse(r, c, cy, cx, 0.035, 0.05), colour)
    return _finish(img, rng), obj


PHOTO_SCENES = {
    "studio_shadow": scene_studio_shadow,
    "cast_shadow": scene_cast_shadow,
    "silhouette_3pct": scene_silhouette,
    "light_on_dark": scene_light_on_dark,
    "wood_table": scene_wood_table,
    "rug_cat": scene_rug_cat,
    "wall_floor": scene_wall_floor,
    "touching_edge": scene_touching_edge,
    "clutter": scene_clutter,
}


def photo_scene(name: str, size: int = 384, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(RGB uint8, boolean object mask) of one named scene."""
    return PHOTO_SCENES[name](size, np.random.default_rng(seed))


# ---- a stand-in for the BiRefNet ONNX file (no weights can be downloaded in tests) -------------

def write_tiny_birefnet(folder, side: int = 1024):
    """An ONNX model with BiRefNet's signature: (1, 3, S, S) ImageNet-normalised RGB in, (1, 1, S, S)
    logits out. Its logit is a 1x1 convolution: 10 - 20 * brightness, so dark things are the object."""
    import onnx
    from onnx import TensorProto, helper

    from backend.background import model as remover_model

    mean, std = np.array(remover_model.MEAN), np.array(remover_model.STD)
    # brightness = mean over channels of (x * std + mean), x the normalised input
    weight = (-20.0 / 3.0 * std).reshape(1, 3, 1, 1).astype(np.float32)
    bias = np.array([10.0 - 20.0 / 3.0 * mean.sum()], np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input_image", "w", "b"], ["output_image"])], "tiny_birefnet",
        [helper.make_tensor_value_info("input_image", TensorProto.FLOAT, [1, 3, side, side])],
        [helper.make_tensor_value_info("output_image", TensorProto.FLOAT, [1, 1, side, side])],
        [helper.make_tensor("w", TensorProto.FLOAT, weight.shape, weight.ravel()),
         helper.make_tensor("b", TensorProto.FLOAT, bias.shape, bias)])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    path = folder / remover_model.MODEL_FILE
    onnx.save(proto, str(path))
    return path
