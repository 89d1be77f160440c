"""The backend on numpy 2: its in-process tests rerun with numpy 2 in front of the test
environment's numpy 1.26 (which bpy needs), numpy's deprecation warnings turned into errors.

Every compiled package the backend uses is built against the numpy 2 ABI, which also runs on
1.26, so only numpy itself changes. numpy is installed once per user and Python version, into a
folder of its own under ~/.cache (PYTHONPATH puts it first). The rerun leaves out the tests
that start the backend as a subprocess or need bpy (they run the same code as tests/backend/
test_preview.py in-process), the step1x3d engine's (the geometry and texture stages it composes
are in) and the job queue's (threads, no arrays): they took most of the time."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PIN = (ROOT / "tests" / "requirements-numpy2.txt").read_text().split("numpy==")[1].split()[0]
OVERLAY = (Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "step1x3d-tests"
           / f"numpy-{PIN}-py{sys.version_info[0]}{sys.version_info[1]}")
SUITES = ["tests/data", "tests/geometry", "tests/mesh", "tests/runtime", "tests/shared", "tests/texture",
          "tests/backend/test_preview.py", "tests/backend/test_imaging.py"]


def overlay() -> Path:
    if not (OVERLAY / "numpy").is_dir():
        OVERLAY.parent.mkdir(parents=True, exist_ok=True)
        staging = OVERLAY.with_name(f"{OVERLAY.name}.tmp-{os.getpid()}")
        done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                               "--no-deps", "--target", str(staging), f"numpy=={PIN}"],
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        try:
            os.replace(staging, OVERLAY)  # whole or not at all
        except OSError:  # another run placed it first
            shutil.rmtree(staging, ignore_errors=True)
    return OVERLAY


@pytest.mark.numpy2
def test_backend_tests_pass_on_numpy_2():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(overlay()), str(ROOT)]), "STEP1X_NUMPY2_RUN": "1"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not cuda",
                           *SUITES], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
