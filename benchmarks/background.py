"""Background removal: time per image at 1024 px, and the GrabCut fallback's IoU on photo-like scenes.

    python -m benchmarks.background [--size 1024] [--repeats 3]

Rows: the GrabCut fallback; the rembg/onnxruntime path on the tiny BiRefNet-signature model the
tests use (its cost is the pipeline around the network: 1024 px resize, normalisation, the run,
resize back); the real BiRefNet file when `python -m backend download` has fetched it. Device
"cuda:0" rows appear when onnxruntime has the CUDA provider.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from backend.background import grabcut_cutout
from backend.background import model as remover_model
from tests.backend.synth import PHOTO_SCENES, photo_scene, write_tiny_birefnet

from .common import print_table, time_calls


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import onnxruntime as ort

    devices = ["cpu"] + (["cuda:0"] if "CUDAExecutionProvider" in ort.get_available_providers() else [])
    image, _ = photo_scene("wall_floor", args.size)
    rows = [("grabcut fallback", "cpu", time_calls(lambda: grabcut_cutout(image), args.repeats).s())]
    with tempfile.TemporaryDirectory() as tmp:
        tiny = write_tiny_birefnet(Path(tmp))
        models = [("tiny BiRefNet-signature ONNX", tiny)]
        real = remover_model.model_path()
        if real is not None:
            models.append((f"{remover_model.MODEL_NAME} ONNX", real))
        for label, path in models:
            for device in devices:
                remover = remover_model.ModelRemover(path, device)
                seconds = time_calls(lambda: remover(image), args.repeats)  # ONNX Runtime returns host arrays
                rows.append((label, "+".join(p if isinstance(p, str) else p[0] for p in remover.providers),
                             seconds.s()))
    print_table(f"background remover, seconds per {args.size}x{args.size} image ({args.repeats} timed after 1 warm-up)",
                rows, ("remover", "providers", "seconds min / median / max"))

    table = []
    for name in PHOTO_SCENES:
        rgb, mask = photo_scene(name, args.size)
        cut = grabcut_cutout(rgb)
        table.append((name, f"{_iou(cut.alpha > 0.5, mask):.3f}", f"{cut.confidence:.2f}"))
    print_table(f"GrabCut fallback on photo-like scenes at {args.size} px (IoU vs the known mask)", table,
                ("scene", "IoU", "confidence"))


if __name__ == "__main__":
    main()
