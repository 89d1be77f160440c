"""The release's own outputs on tiny weights (../shared/reference/parity beside the checkout).

Every test here loads the folders through our loaders unchanged, feeds the `in/` arrays and
compares with the `out/` arrays by the reference's measure, rel = ||got - ref|| / ||ref|| over the
whole tensor, at the tolerances its README states.
"""
from pathlib import Path

import numpy as np
import pytest
import torch

PARITY = Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "parity"
# the reference's README: one forward 1e-5 (fp32) / 1e-6 (fp64); a sampling loop 1e-4 (fp32)
FORWARD_FP32, FORWARD_FP64, LOOP_FP32 = 1e-5, 1e-6, 1e-4


def rel(got, ref) -> float:
    got = torch.as_tensor(got).double().cpu()
    ref = torch.as_tensor(np.asarray(ref)).double()
    assert got.shape == ref.shape, f"shape {tuple(got.shape)} != reference {tuple(ref.shape)}"
    return float((got - ref).norm() / ref.norm())


def folder(*parts: str) -> Path:
    path = PARITY.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"parity reference not found at {path} (it lives beside the checkout in shared/)")
    return path


@pytest.fixture(autouse=True)
def one_thread(single_thread_torch):
    """Tiny models on one torch thread (tests/conftest.py says why)."""
