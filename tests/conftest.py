import os
import sys
import tempfile
import threading
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
    config.addinivalue_line("markers", "numpy2: reruns the backend's tests on numpy 2 (tests/test_numpy2.py)")
    if os.environ.get("STEP1X_NUMPY2_RUN"):  # inside that rerun: numpy 2 for real, its deprecations fatal
        import numpy

        if int(numpy.__version__.split(".")[0]) < 2:
            pytest.exit(f"the numpy 2 run found numpy {numpy.__version__}", returncode=3)
        config.addinivalue_line("filterwarnings", "error:.*deprecated in NumPy:DeprecationWarning")
    config.addinivalue_line("filterwarnings", "ignore:The TBB threading layer requires TBB version")


def pytest_unconfigure(config):
    """Should the interpreter still not exit 5 minutes after the summary (a thread or an exit hook
    waiting forever), print every thread's stack and exit with status 1: a red run that says why,
    instead of a CI job that times out with every test green."""
    import faulthandler

    faulthandler.dump_traceback_later(300, exit=True)


def pytest_collection_modifyitems(config, items):
    if _has_cuda():
        return
    skip = pytest.mark.skip(reason="no CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


def _exit_blocking_threads() -> set[threading.Thread]:
    """Threads the interpreter waits for at exit. Executor threads are left out: their own exit
    hook stops them once their work is done."""
    from concurrent.futures import process, thread

    return {t for t in threading.enumerate()
            if t.is_alive() and not t.daemon and t is not threading.main_thread()
            and getattr(t, "_target", None) is not thread._worker
            and not isinstance(t, process._ExecutorManagerThread)}


@pytest.fixture(autouse=True)
def no_thread_outlives_its_test():
    """A non-daemon thread left waiting keeps pytest from exiting after its summary (CI then times
    out with every test green): fail the test that left it, naming the thread."""
    before = _exit_blocking_threads()
    yield
    left = _exit_blocking_threads() - before
    for _ in range(50):  # a thread that was told to stop may need a moment
        if not left:
            return
        threading.Event().wait(0.1)
        left = {t for t in left if t.is_alive()}
    pytest.fail("left running, and would block the interpreter's exit: " + ", ".join(sorted(t.name for t in left)))


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
