"""Run a script in a fresh process with the `bpy` module and the add-on enabled from the repository.

Each test gets its own Blender user folder (BLENDER_USER_RESOURCES), so nothing touches the real
user configuration and installed extensions do not leak between tests.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PRELUDE = """
import json, os, sys
sys.path.insert(0, {root!r})
import bpy, addon_utils
assert addon_utils.enable("addon", default_set=True, handle_error=None) is not None, "the add-on did not enable"
from addon.blender.runtime import RUNTIME
from addon.blender import importer
prefs = bpy.context.preferences.addons["addon"].preferences
prefs.python = sys.executable
prefs.plan = "cpu"
prefs.output_dir = os.path.join(os.getcwd(), "generations")

def make_png(path, w=48, h=32, color=(0.8, 0.3, 0.1, 1.0)):
    img = bpy.data.images.new("tmp-png", w, h, alpha=True)
    img.generated_color = color
    img.save(filepath=path, save_copy=True)
    bpy.data.images.remove(img)
    return path

def result(**values):
    print("RESULT " + json.dumps(values), flush=True)
"""


def run_bpy(body: str, cwd: Path, *, enable: bool = True, env: dict[str, str] | None = None,
            timeout: float = 300) -> dict:
    """Run `body` (after the prelude); fails with the script's output unless it exits 0. Returns
    the values the script passed to `result(...)`."""
    code = (PRELUDE.format(root=str(ROOT)) if enable else "") + textwrap.dedent(body)
    full_env = {**os.environ, "BLENDER_USER_RESOURCES": str(cwd / "blender-user"), **(env or {})}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env,
                          cwd=cwd, timeout=timeout)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"bpy script failed (exit {proc.returncode}):\n{output[-6000:]}"
    values: dict = {}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            values.update(json.loads(line[len("RESULT "):]))
    return values


# Paste into a bpy script: records what a panel's draw() asks of its layout, without a UI.
LAYOUT_RECORDER = """
class Rec:
    def __init__(self, log):
        object.__setattr__(self, "log", log)
    def __getattr__(self, name):
        def call(*args, **kw):
            self.log.append((name, args, kw))
            return Rec(self.log)
        return call
    def __setattr__(self, name, value):
        self.log.append(("set", name, value))

class FakePanel:
    def __init__(self):
        self.layout = Rec([])

def drawn(cls):
    panel = FakePanel()
    cls.draw(panel, bpy.context)
    log = panel.layout.log
    return dict(labels=[kw.get("text") for n, a, kw in log if n == "label"],
                operators=[a[0] for n, a, kw in log if n == "operator"],
                progress=[kw.get("text") for n, a, kw in log if n == "progress"])
"""
