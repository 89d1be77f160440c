"""What stands between the user and Generate, and the one button that fixes it next.

The panel shows this "Set up" box instead of letting Generate fail with a backend error. Plain
Python: the Blender layer passes in what it knows (environment status, install/download running,
the last Check's findings) and draws the answer.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from . import installer

BUNDLED = "BUNDLED"  # the add-on installs and runs its own backend environment
EXISTING = "EXISTING"  # the user points at an environment of their own (interpreter + folder)
REMOTE = "REMOTE"  # jobs go to `python -m backend serve --http` on another machine (addon/core/remote.py)

CPU_NEEDS_NO_WEIGHTS = "The CPU preview plan needs no weights."


@dataclass(frozen=True)
class Facts:
    mode: str
    plan: str  # single, multi, cpu
    env: installer.Status | None = None  # bundled mode only
    config_problem: str = ""  # BackendConfig.check()'s message, "" when it passes
    installing: bool = False
    downloading: bool = False
    weights: str = ""  # found / missing / "" (not checked yet), from the last Check
    online: bool = True


@dataclass(frozen=True)
class Advice:
    missing: list[str] = field(default_factory=list)  # short sentences, most important first
    operator: str = ""  # the next step's operator ("" when nothing to press, e.g. while installing)
    label: str = ""
    properties: dict = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return not self.missing


def advise(f: Facts) -> Advice:
    if f.installing:
        return Advice(["The backend is being installed."])
    if f.mode == BUNDLED and f.env is not None and f.env.kind != installer.READY:
        kind = f.env.kind
        missing = [f.env.text]
        if not f.online:
            missing.append("Blender's online access is off (Preferences > System > Network): "
                           "installing needs it to fetch packages.")
            return Advice(missing, "step1x3d.open_network_preferences", "Allow Online Access")
        label = {installer.MISSING: "Install Backend", installer.OUTDATED: "Update Backend",
                 installer.BROKEN: "Repair Backend", installer.FAILED: "Retry Install"}.get(kind, "Resume Install")
        props = {"repair": True} if kind == installer.BROKEN else {}
        return Advice(missing, "step1x3d.install_backend", label, props)
    if f.config_problem:
        return Advice([f.config_problem], "preferences.addon_show", "Open Preferences")
    if f.mode != REMOTE and f.plan != "cpu" and f.weights == "missing":  # a server has its own weights
        if f.downloading:
            return Advice(["The model weights are downloading."])
        missing = ["The model weights are not downloaded yet. " + CPU_NEEDS_NO_WEIGHTS.replace("needs no weights", "needs none")]
        if not f.online:
            missing.append("Blender's online access is off: allow it to download, or set a local weights folder.")
            return Advice(missing, "step1x3d.open_network_preferences", "Allow Online Access")
        return Advice(missing, "step1x3d.download_weights", "Download Weights")
    return Advice()


def weights_from_info(text: str) -> str:
    """found / missing / "" from `backend info`'s "weights:" line."""
    for line in text.splitlines():
        if line.startswith("weights:"):
            return "missing" if "missing" in line else "found"
    return ""


def annotate_info(text: str, plan: str) -> str:
    """The Check output as shown: under the CPU plan a weights line says that none are needed."""
    if plan != "cpu":
        return text
    return "\n".join(f"{line} (the CPU preview plan needs none)" if line.startswith("weights:") else line
                     for line in text.splitlines())
