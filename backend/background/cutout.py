"""What a background remover returns: the object's alpha, which method made it, how sure it is."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Cutout:
    alpha: np.ndarray  # (H, W) float32 in [0, 1], 1 = object
    method: str  # "file" (the image's own alpha), "none", a model name, or "grabcut"
    confidence: float  # 0..1: below CONFIDENT an empty or full result is not trusted
    note: str = ""  # a sentence for the user (e.g. how to get the better remover)

    @property
    def coverage(self) -> float:
        """Share of the frame the object covers."""
        return float((self.alpha > 0.5).mean())
