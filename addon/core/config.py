"""How to launch the backend: interpreter, where its code and weights are, which devices it uses.

The add-on never imports the backend (Blender's Python has no torch); it runs
`<python> -m backend serve|info` in the backend's own environment. Problems a user can fix in the
preferences (a missing interpreter, a weights folder that does not exist) are caught here, before
anything is spawned, each with its own code and a message naming the path.
"""
from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..shared.errors import BackendError

PLANS = ("single", "multi", "cpu")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class BackendConfig:
    python: str  # interpreter of the backend's environment
    backend_dir: str = ""  # folder holding the `backend` package; "" when it is installed in that environment
    weights: str = ""  # local folder or Hugging Face hub id; "" for the backend's default
    plan: str = "single"  # single GPU, multi GPU, or cpu (the preview engine, no weights)
    geometry_gpu: int = 0
    texture_gpu: int = 1
    online: bool = False  # Blender's "Allow Online Access"; off means the backend must not download

    @property
    def engine(self) -> str:
        return "preview" if self.plan == "cpu" else "step1x3d"

    def weights_is_path(self) -> bool:
        w = self.weights.strip()
        if not w:
            return False
        return Path(w).expanduser().is_absolute() or w.startswith((".", "~")) or not _HUB_ID.match(w)

    def check(self) -> None:
        """Raise the error a user would otherwise only see after a failed start."""
        python = self.python.strip()
        if not python:
            raise BackendError("backend_unavailable", "no backend interpreter is set: choose the Python of the "
                                                      "backend's environment in the add-on preferences")
        path = Path(python).expanduser()
        if not path.is_file():
            raise BackendError("backend_unavailable", f"the backend interpreter does not exist: {path}")
        if not os.access(path, os.X_OK):
            raise BackendError("backend_unavailable", f"the backend interpreter is not executable: {path}")
        if self.backend_dir and not (Path(self.backend_dir).expanduser() / "backend" / "__init__.py").is_file():
            raise BackendError("backend_unavailable", f"no backend package in the backend folder {self.backend_dir}")
        if self.plan not in PLANS:
            raise BackendError("invalid_setting", f"unknown device plan {self.plan!r}; expected one of {PLANS}")
        if self.plan == "multi" and self.geometry_gpu == self.texture_gpu:
            raise BackendError("invalid_setting", "the multi-GPU plan needs two different GPUs for geometry and texture")
        if self.plan != "cpu" and self.weights_is_path():
            folder = Path(self.weights).expanduser()
            if not folder.is_dir():
                raise BackendError("weights_not_found", f"the weights folder does not exist: {folder}")

    def command(self, *args: str) -> list[str]:
        """`python -m backend <args...>` with the weights flag where the subcommand takes it."""
        cmd = [str(Path(self.python).expanduser()), "-m", "backend", *args]
        if self.weights.strip() and self.plan != "cpu":
            cmd += ["--weights", str(Path(self.weights).expanduser()) if self.weights_is_path() else self.weights.strip()]
        return cmd

    def serve_command(self) -> list[str]:
        """The plan is named explicitly; with the environment's CUDA_VISIBLE_DEVICES the backend
        sees the geometry GPU as cuda:0 and the texture GPU as cuda:1, its defaults."""
        plan = () if self.plan == "cpu" else ("--plan", self.plan)
        return self.command("serve", "--engine", self.engine, *plan)

    def info_command(self) -> list[str]:
        return self.command("info")

    def environment(self, base: dict[str, str] | None = None, restrict_gpus: bool = True) -> dict[str, str]:
        """The backend's environment; `restrict_gpus` hides the GPUs the plan does not use."""
        env = dict(os.environ if base is None else base)
        for name in ("PYTHONHOME", "PYTHONSTARTUP", "PYTHONEXECUTABLE"):  # Blender's, not the backend's
            env.pop(name, None)
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONIOENCODING"] = "utf-8"
        if self.backend_dir:
            folder = str(Path(self.backend_dir).expanduser())
            env["PYTHONPATH"] = os.pathsep.join(p for p in (folder, env.get("PYTHONPATH", "")) if p)
        if not self.online:
            env["HF_HUB_OFFLINE"] = "1"
        if restrict_gpus:  # multi: geometry becomes cuda:0 and texture cuda:1 inside the backend
            env["CUDA_VISIBLE_DEVICES"] = {
                "single": str(self.geometry_gpu),
                "multi": f"{self.geometry_gpu},{self.texture_gpu}",
            }.get(self.plan, "")
        return env

    @property
    def cwd(self) -> str | None:
        return str(Path(self.backend_dir).expanduser()) if self.backend_dir else None


def run_info(config: BackendConfig, timeout: float = 120.0) -> str:
    """Output of `python -m backend info` (engines, GPUs, free memory, weights); raises on failure."""
    config.check()
    try:
        done = subprocess.run(config.info_command(), capture_output=True, text=True, timeout=timeout,
                              cwd=config.cwd, env=config.environment(restrict_gpus=False), stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise BackendError("backend_unavailable", f"`backend info` did not answer within {timeout:g} s") from None
    except OSError as exc:
        raise BackendError("backend_unavailable", f"cannot run the backend interpreter: {exc}") from None
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-6:]
        raise BackendError("backend_unavailable", f"`backend info` failed (exit code {done.returncode}): "
                           + " / ".join(tail))
    return done.stdout.strip()
