"""Shared training fixtures: two small objects rendered by blender_render and prepared by
backend.data.prepare under the same ids, the way a user builds a dataset."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import trimesh

from backend.data.prepare import PrepareOptions, run_batch
from backend.data.watertight import WatertightOptions

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def one_thread(single_thread_torch):
    """Every test of this folder on one torch thread (tests/conftest.py says why)."""


@pytest.fixture(scope="session")
def sources(tmp_path_factory):
    """A box and an egg as GLB files."""
    folder = tmp_path_factory.mktemp("train-sources")
    trimesh.creation.box((0.9, 0.6, 0.5)).export(folder / "box.glb")
    egg = trimesh.creation.icosphere(3, 0.5)
    egg.vertices[:, 1] *= 1.4
    egg.export(folder / "egg.glb")
    return folder


@pytest.fixture(scope="session")
def prepared(sources, tmp_path_factory):
    """backend.data.prepare output (coarse samples) for the sources."""
    out = tmp_path_factory.mktemp("train-npz")
    options = PrepareOptions(watertight=WatertightOptions(resolution=32, views=8, view_resolution=64),
                             num_surface=2000, num_sharp=2000, num_near=1000, num_volume=1000)
    assert run_batch(sources, out, options) == (2, 0)
    return out


@pytest.fixture(scope="session")
def dataset(sources, prepared, tmp_path_factory):
    """(npz folder, renders folder): the samples plus 64 px blender_render renders, same ids."""
    if importlib.util.find_spec("bpy") is None:  # never import bpy here: pymeshlab may already be loaded
        pytest.skip("the bpy module is not installed")
    renders = tmp_path_factory.mktemp("train-renders")
    done = subprocess.run([sys.executable, "-m", "blender_render.batch", str(sources), str(renders), "--workers", "1",
                           "--resolution", "64", "--samples", "1"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return prepared, renders


def loop(steps: int, **extra) -> dict:
    return {"steps": steps, "batch_size": 2, "log_every": 10, "save_every": 10_000, "num_workers": 0,
            "resume": False, "gradient_checkpointing": False, **extra}


def fall(history: list[dict]) -> float:
    """First logged loss over the last one (each the mean over `log_every` steps)."""
    return history[0]["loss"] / history[-1]["loss"]
