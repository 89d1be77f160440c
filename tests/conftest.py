import os
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT.parent / "shared" / "assets"  # read-only third-party test meshes beside the checkout

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# No test sees a background-remover model a developer downloaded: the GrabCut fallback is the default
# here, and tests of the model path point these at a folder holding their own tiny model.
_NO_REMOVER = tempfile.mkdtemp(prefix="step1x3d-no-remover-")
os.environ["STEP1X3D_REMOVER_HOME"] = os.environ["U2NET_HOME"] = _NO_REMOVER


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU; skipped without one")
    config.addinivalue_line("filterwarnings", "ignore:The TBB threading layer requires TBB version")


def pytest_collection_modifyitems(config, items):
    if _has_cuda():
        return
    skip = pytest.mark.skip(reason="no CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def assets() -> Path:
    if not ASSETS.is_dir():
        pytest.skip(f"shared test assets not found at {ASSETS}")
    return ASSETS


@pytest.fixture
def single_thread_torch():
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine the thread
    pool's spinning makes them 10-30x slower. Folders of tiny-model tests use it for every test."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
