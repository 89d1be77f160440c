"""build_addon.py makes a zip that Blender's validator accepts and that installs, works and
uninstalls as an extension in the `bpy` module, importing only its vendored copy of shared/."""
import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from .blender_run import ROOT, run_bpy
from .fake_backend import install_as_backend


def bpy_scripts() -> Path:
    """Blender's bundled scripts folder, found without importing bpy here."""
    spec = importlib.util.find_spec("bpy")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the bpy module is not installed")
    package = Path(list(spec.submodule_search_locations)[0])
    found = sorted(package.glob("[0-9]*.[0-9]*/scripts"))
    assert found, f"no scripts folder in {package}"
    return found[-1]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, str(ROOT / "build_addon.py"), "-o", str(out)], capture_output=True,
                          text=True, check=True)
    return Path(proc.stdout.strip())


def test_zip_layout_and_reproducibility(built, tmp_path):
    names = zipfile.ZipFile(built).namelist()
    assert built.name == "step1x3d-0.1.0.zip"
    assert "blender_manifest.toml" in names and "__init__.py" in names
    assert {"shared/protocol.py", "shared/settings.py", "shared/errors.py", "core/session.py",
            "blender/panel.py"} <= set(names)
    assert not any("__pycache__" in n or n.endswith(".pyc") or n.startswith(("tests/", "backend/")) for n in names)
    # the bundled backend: generation code, its shared/, the pinned requirements; no training code
    bundle = {n[len("bundle/"):] for n in names if n.startswith("bundle/")}
    assert {"backend/__main__.py", "backend/cli.py", "backend/engines/preview/engine.py", "shared/protocol.py",
            "requirements.txt"} <= bundle
    assert not any(n.startswith(("backend/train/", "backend/data/")) for n in bundle)
    assert zipfile.ZipFile(built).read("bundle/requirements.txt") == (ROOT / "requirements.txt").read_bytes()
    again = subprocess.run([sys.executable, str(ROOT / "build_addon.py"), "-o", str(tmp_path)], capture_output=True,
                           text=True, check=True)
    assert Path(again.stdout.strip()).read_bytes() == built.read_bytes(), "same sources must give the same zip"


def test_manifest_rules(built):
    """What extensions.blender.org's validator checks strictly, on the manifest inside the zip."""
    import tomllib

    data = tomllib.loads(zipfile.ZipFile(built).read("blender_manifest.toml").decode())
    terse = [data["tagline"], *data["permissions"].values()]
    assert all(len(t) <= 64 and (t[-1].isalnum() or t[-1] in ")]}") for t in terse), terse
    assert set(data["permissions"]) <= {"files", "network", "clipboard", "camera", "microphone"}
    assert data["blender_version_min"] >= "4.2.0" and data["type"] == "add-on"
    assert "network" in data["permissions"], "Install Backend and Download Weights go online"
    names = zipfile.ZipFile(built).namelist()
    assert all(n.isascii() and "\\" not in n and not n.startswith("/") for n in names)
    assert sum(i.file_size for i in zipfile.ZipFile(built).infolist()) < 5_000_000, "the zip carries code, not wheels"


def test_blender_validator_accepts_the_zip(built):
    scripts = bpy_scripts()
    proc = subprocess.run([sys.executable, str(scripts / "addons_core/bl_pkg/cli/blender_ext.py"), "validate",
                           str(built), "--valid-tags", str(scripts / "modules/_bpy_internal/extensions/tags.py")],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "Success" in proc.stdout, proc.stdout + proc.stderr


INSTALL = """
import os, sys, time
import bpy, addon_utils
from pathlib import Path
before = set(bpy.context.preferences.addons.keys())
bpy.ops.extensions.package_install_files(filepath={zip!r}, repo="user_default", enable_on_install=True)
name = "bl_ext.user_default.step1x3d"
added = sorted(set(bpy.context.preferences.addons.keys()) - before)
package = sys.modules[name]
protocol = sys.modules[name + ".shared.protocol"]
prefs = bpy.context.preferences.addons[name].preferences
mode = prefs.backend_mode  # an installed zip defaults to its bundled backend
prefs.backend_mode = "EXISTING"  # the same zip also runs an environment of the user's own
prefs.python, prefs.backend_dir, prefs.plan = sys.executable, {backend!r}, "cpu"
scene = bpy.context.scene
img = bpy.data.images.new("photo", 16, 16)
img.generated_color = (0.2, 0.6, 0.9, 1.0)
scene.step1x3d.image_source, scene.step1x3d.image = "IMAGE", img  # a generated image: saved to a temp file
ret = bpy.ops.step1x3d.generate(timeout=60)
obj = bpy.data.objects.get("photo")
runtime = sys.modules[name + ".blender.runtime"].RUNTIME
glb = obj["step1x3d_glb"]
state = runtime.state
addon_utils.disable(name, default_set=True)
import json
print("RESULT " + json.dumps(dict(
    added=added, package_file=package.__file__, default_mode=mode, torch_loaded="torch" in sys.modules,
    backend_loaded=any(m == "backend" or m.startswith("backend.") or ".bundle" in m for m in sys.modules), protocol_file=protocol.__file__,
    repo_shared_imported="shared" in sys.modules, glb=glb, ret=sorted(ret), placed=obj is not None and
    obj.users_collection[0].name == "Step1X-3D", state=state,
    after_disable=dict(scene_prop=hasattr(bpy.types.Scene, "step1x3d"),
                       operator=hasattr(bpy.types, "STEP1X3D_OT_generate"),
                       panel=hasattr(bpy.types, "STEP1X3D_PT_main"),
                       backend_stopped=runtime.session is None),
)))
"""


def test_zip_installs_runs_and_uninstalls(built, tmp_path, assets):
    backend = install_as_backend(tmp_path / "fake-backend")
    r = run_bpy(INSTALL.format(zip=str(built), backend=str(backend)), tmp_path, enable=False,
                env={"FAKE_BACKEND_GLB": str(assets / "meshes" / "BoxTextured.glb")})
    user = tmp_path / "blender-user" / "extensions" / "user_default" / "step1x3d"
    assert r["added"] == ["bl_ext.user_default.step1x3d"]
    assert r["default_mode"] == "BUNDLED", "installed from the zip, the add-on runs the backend it carries"
    assert not r["torch_loaded"] and not r["backend_loaded"], "Blender's own Python never imports the backend"
    assert Path(r["package_file"]).parent == user
    assert Path(r["protocol_file"]) == user / "shared" / "protocol.py", "the vendored shared/ must be used"
    assert not r["repo_shared_imported"]
    assert r["ret"] == ["FINISHED"] and r["placed"] and r["state"] == "ready"
    extension_user = tmp_path / "blender-user" / "extensions" / ".user" / "user_default" / "step1x3d"
    assert Path(r["glb"]).parent == extension_user / "generations", "results default to the extension's user folder"
    assert r["after_disable"] == {"scene_prop": False, "operator": False, "panel": False, "backend_stopped": True}
