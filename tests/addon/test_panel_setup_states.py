"""The sidebar through the setup path, drawn headlessly through bpy: nothing set up, installing,
installed, downloading, ready; plus greyed-out settings that say why, and measured wrapping."""
import pytest

from .blender_run import LAYOUT_RECORDER, run_bpy

SCRIPT = LAYOUT_RECORDER + """
import sys
from pathlib import Path
from addon.blender import panel, setup as bsetup, text
from addon.core import installer
from addon.core.installer import Snapshot
from addon.core.downloads import DownloadSnapshot

prefs.backend_mode, prefs.plan = "BUNDLED", "cpu"
states = {{}}
states["offline"] = drawn(panel.STEP1X3D_PT_main)
bpy.context.preferences.system.use_online_access = True  # Preferences > System > Network
states["nothing"] = drawn(panel.STEP1X3D_PT_main)

class Running:  # a task as the timer sees it: only its snapshot matters to drawing
    def __init__(self, snap): self.snap = snap
    def snapshot(self): return self.snap
    def cancel(self): pass

RUNTIME.installer = Running(Snapshot(True, "torch", "Installing PyTorch", 0.31, "torch==2.13.0",
                                     "torch-2.13.0-cp311-manylinux_2_28_x86_64.whl", 250_000_000, 900_000_000, "", ""))
states["installing"] = drawn(panel.STEP1X3D_PT_main)
RUNTIME.installer = None

layout = bsetup.layout()  # an installed environment: state file + an interpreter that runs
py = layout.python()
py.parent.mkdir(parents=True, exist_ok=True)
py.symlink_to(sys.executable)
installer.State(phase="ready", requirements_hash=installer.requirements_hash(bsetup.bundle_dir() / "requirements.txt"),
                pid=1).save(layout.state_file)
states["installed"] = drawn(panel.STEP1X3D_PT_main)

prefs.plan = "single"
RUNTIME.weights_state = "missing"
states["needs_weights"] = drawn(panel.STEP1X3D_PT_main)
RUNTIME.download = Running(DownloadSnapshot(True, "geometry/model.safetensors", 1_000_000_000, 3_000_000_000,
                                            2_000_000_000, 8_000_000_000, 0.25, 95.0, "", ""))
states["downloading"] = drawn(panel.STEP1X3D_PT_main)
RUNTIME.download = None
RUNTIME.weights_state = "found"
states["ready"] = drawn(panel.STEP1X3D_PT_main)

prefs.plan = "cpu"
geometry = drawn(panel.STAGE_PANELS[[c.bl_label for c in panel.STAGE_PANELS].index("Geometry")])
why = FakePanel()
panel.STAGE_PANELS[[c.bl_label for c in panel.STAGE_PANELS].index("Geometry")].draw(why, bpy.context)
reasons = [kw.get("value") or a for n, a, kw in why.layout.log if n == "set" and a[0] == "reason"]
measure = text.measurer(bpy.context)
result(states=states, reasons=[r[1] for n, *r in why.layout.log if n == "set" and r[0] == "reason"],
       widths=[measure("iiiiiiiiii"), measure("WWWWWWWWWW")])
"""


@pytest.fixture(scope="module")
def outcome(tmp_path_factory):
    return run_bpy(SCRIPT.format(), tmp_path_factory.mktemp("setup-states"))


def test_nothing_set_up_shows_the_setup_box(outcome):
    s = outcome["states"]["nothing"]
    assert "Set up" in s["labels"] and "step1x3d.install_backend" in s["operators"]
    assert any("not installed" in (label or "") for label in s["labels"])
    assert not any((label or "").startswith("Backend:") for label in s["labels"]), "no backend errors before setup"


def test_offline_says_so_and_offers_the_network_setting(outcome):
    s = outcome["states"]["offline"]
    assert "step1x3d.open_network_preferences" in s["operators"] and "step1x3d.install_backend" not in s["operators"]
    assert any("online access is off" in (label or "") for label in s["labels"])


def test_installing_shows_progress_package_bytes_and_cancel(outcome):
    s = outcome["states"]["installing"]
    assert s["progress"] == ["Installing PyTorch · 31 %"]
    assert any("torch==2.13.0: 250.0 MB of 900.0 MB (27 %)" == label for label in s["labels"])
    assert "step1x3d.cancel_task" in s["operators"] and "step1x3d.open_install_log" in s["operators"]


def test_installed_cpu_plan_is_ready(outcome):
    s = outcome["states"]["installed"]
    assert "Set up" not in s["labels"] and "Backend: stopped" in s["labels"]
    assert "step1x3d.generate" in s["operators"]


def test_gpu_plan_asks_for_weights_then_shows_the_download(outcome):
    s = outcome["states"]["needs_weights"]
    assert "Set up" in s["labels"] and "step1x3d.download_weights" in s["operators"]
    assert any("CPU preview plan needs none" in (label or "") for label in s["labels"])
    d = outcome["states"]["downloading"]
    assert d["progress"] == ["Weights: 2.0 GB of 8.0 GB · 1 min 35 s left"]
    assert "step1x3d.cancel_task" in d["operators"]
    assert any((label or "").startswith("geometry/model.safetensors 1.0 GB of 3.0 GB") for label in d["labels"])


def test_ready(outcome):
    s = outcome["states"]["ready"]
    assert "Set up" not in s["labels"] and "step1x3d.generate" in s["operators"]


def test_settings_the_cpu_plan_ignores_say_why(outcome):
    reasons = outcome["reasons"]
    assert reasons and all("CPU preview plan ignores" in r for r in reasons)


def test_wrapping_measures_real_text(outcome):
    narrow, wide = outcome["widths"]
    assert 0 < narrow < wide, "blf measured the strings (an i is narrower than a W)"
