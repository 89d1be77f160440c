import os
import sys
from pathlib import Path

import pytest

from addon.core.process import BackendProcess

ROOT = Path(__file__).resolve().parents[2]
FAKE = Path(__file__).with_name("fake_backend.py")


def fake_command(glb: Path, *extra: str) -> list[str]:
    return [sys.executable, str(FAKE), "--glb", str(glb), *extra]


def fake_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


@pytest.fixture
def glb(tmp_path) -> Path:
    """Any file: the fake backend only copies it."""
    path = tmp_path / "source.glb"
    path.write_bytes(b"glTF fake payload")
    return path


@pytest.fixture
def launcher(glb):
    """launcher(*extra_args) -> a callable that makes a BackendProcess running the fake backend."""
    def make(*extra: str):
        return lambda: BackendProcess(fake_command(glb, *extra), env=fake_env())
    return make
