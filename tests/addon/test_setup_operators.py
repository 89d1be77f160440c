"""Install Backend and Download Weights as operators under `blender -b` (the blocking path): a real
venv and a real install of a tiny requirements set into the extension's user folder, then the
download against the fake backend's `download --json`."""
from .blender_run import run_bpy
from .fake_backend import install_as_backend

SCRIPT = """
from pathlib import Path
from addon.blender import setup as bsetup
from addon.core import installer
bundle = Path({bundle!r})
bsetup.bundle_dir = lambda: bundle  # the fake backend and its tiny requirements stand in for the bundle
installer.pinned_torch = lambda path: "tomli==2.2.1"  # torch is GBs: the same step with a tiny package
prefs.backend_mode, prefs.plan = "BUNDLED", "cpu"
try:
    bpy.ops.step1x3d.install_backend()
    offline = "ran"
except RuntimeError as err:
    offline = str(err)
bpy.context.preferences.system.use_online_access = True
ret = bpy.ops.step1x3d.install_backend()
status = bsetup.status()
config = prefs.config()
prefs.plan = "single"
got = bpy.ops.step1x3d.download_weights()
snap = RUNTIME.download.snapshot()
result(offline=offline, ret=sorted(ret), kind=status.kind, python=config.python, root=str(bsetup.layout().root),
       info=RUNTIME.info_state, weights=RUNTIME.weights_state, download=sorted(got),
       bytes=[snap.done_bytes, snap.total_bytes], file=snap.file)
"""


def test_install_and_download_block_in_background(tmp_path):
    bundle = install_as_backend(tmp_path / "bundle")
    (bundle / "requirements.txt").write_text("six==1.17.0\n")
    r = run_bpy(SCRIPT.format(bundle=str(bundle)), tmp_path, env={"PIP_CACHE_DIR": str(tmp_path / "pip-cache")})
    assert "online access is off" in r["offline"].lower(), "offline, Install refuses and says why"
    assert r["ret"] == ["FINISHED"] and r["kind"] == "ready"
    assert r["python"].startswith(r["root"]) and "blender-user" in r["root"], "the venv lives in the user folder"
    assert r["info"] == "ok" and r["weights"] == "found", "a Check ran on the new environment"
    assert r["download"] == ["FINISHED"] and r["bytes"] == [800, 800] and r["file"] == "texture/unet.safetensors"
