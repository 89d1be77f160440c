"""The panel's cut-out thumbnail: what the backend will cut out of the reference image, shown as
soon as an image is picked, before Generate, with the foreground ratio beside it.

`python -m backend prepare-image` runs in the backend's environment on a worker thread (the add-on
never imports the backend); drawing only reads the result, and a main-thread timer redraws the
panel when it arrives. Results are kept per image file, file version and framing settings.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import bpy

from ..core import messages
from ..shared.errors import CODES
from . import prefs, text
from .images import temp_folder

POLL = 0.25  # seconds between checks for a finished preview
TIMEOUT = 300.0  # a BiRefNet pass on a slow CPU takes tens of seconds


@dataclass
class Preview:
    state: str = "running"  # running, ready, error
    checker: str = ""  # the cut-out over a checkerboard: the thumbnail
    cutout: str = ""  # the RGBA the models will see
    ratio: float = 0.0  # share of the frame the object fills after framing
    method: str = ""
    confidence: float = 0.0
    text: str = ""  # the error, or the backend's note (e.g. how to get the better remover)

    def summary(self) -> str:
        return f"Cut-out: fills {self.ratio:.0%} of the frame (ratio {self.ratio:.2f}), {self.method}"


class Cutouts:
    def __init__(self):
        self._entries: dict[tuple, Preview] = {}
        self._threads: list[threading.Thread] = []

    def get(self, config, path: str, settings: dict) -> Preview | None:
        """The preview of `path` with these settings, starting it when it is new (never waits)."""
        try:
            key = (path, Path(path).stat().st_mtime_ns, settings["remove_background"],
                   round(float(settings["foreground_ratio"]), 4), config.python, config.backend_dir)
        except OSError:
            return None
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = Preview()
            thread = threading.Thread(target=_prepare, args=(config, path, settings, entry, key), daemon=True,
                                      name="step1x3d-cutout")
            self._threads.append(thread)
            thread.start()
            if not bpy.app.background:
                bpy.app.timers.register(_redraw_when_done(entry), first_interval=POLL)
        return entry

    def wait(self, timeout: float = TIMEOUT) -> None:
        """Background mode (no timers): let the running previews finish."""
        for thread in self._threads:
            thread.join(timeout)
        self._threads = [t for t in self._threads if t.is_alive()]


def _prepare(config, path: str, settings: dict, entry: Preview, key: tuple) -> None:
    """Worker thread: run the backend's prepare-image and fill `entry` (no Blender data touched)."""
    stem = hashlib.sha1(repr(key).encode()).hexdigest()[:16]
    out, checker = temp_folder() / f"cutout-{stem}.png", temp_folder() / f"cutout-{stem}-checker.png"
    device = "cpu" if config.plan == "cpu" else f"cuda:{config.geometry_gpu}"
    cmd = [str(Path(config.python).expanduser()), "-m", "backend", "prepare-image", path, "-o", str(out),
           "--checker", str(checker), "--json", "--device", device,
           "--remove-background", str(settings["remove_background"]),
           "--foreground-ratio", repr(float(settings["foreground_ratio"]))]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, cwd=config.cwd,
                              env=config.environment(restrict_gpus=False), stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        entry.text, entry.state = f"the cut-out preview could not run: {exc}", "error"
        return
    if done.returncode == 0:
        try:
            data = json.loads(done.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            data = None
        if data:
            entry.cutout, entry.checker = data["path"], data["checker"] or ""
            entry.ratio, entry.method = float(data["foreground_ratio"]), data["method"]
            entry.confidence, entry.text = float(data["confidence"]), data.get("note", "")
            entry.state = "ready"
            return
    entry.text = _error_text(done.stderr)
    entry.state = "error"


def _error_text(stderr: str) -> str:
    """`error [code] message` from the backend as advice, else its last lines."""
    for line in reversed(stderr.strip().splitlines()):
        if line.startswith("error [") and "]" in line:
            code, _, detail = line[len("error ["):].partition("] ")
            if code in CODES:
                return messages.explain(code, detail)
    tail = " / ".join(stderr.strip().splitlines()[-3:])
    return f"the cut-out preview failed: {tail or 'no output'}"


def _redraw_when_done(entry: Preview):
    def check():
        if entry.state == "running":
            return POLL
        from .runtime import redraw

        redraw()
        return None
    return check


CUTOUTS = Cutouts()


def image_file(props) -> str:
    """The reference image's file when it can be read as it is (no copy is made while drawing)."""
    if props.image_source == "FILE":
        path = bpy.path.abspath(props.image_path) if props.image_path else ""
        return path if path and Path(path).is_file() else ""
    image = props.image
    if image is None or image.source != "FILE" or image.packed_file or image.is_dirty:
        return ""
    path = bpy.path.abspath(image.filepath, library=image.library)
    return path if Path(path).is_file() else ""


def draw(layout, context, props, runtime) -> None:
    """The cut-out thumbnail with its foreground ratio; the image itself until the cut-out is ready."""
    path = image_file(props)
    if not path:
        return
    try:
        config = prefs.get(context).config()
        config.check()
    except Exception:  # no usable backend yet: show the picture as it is
        config = None
    entry = CUTOUTS.get(config, path, {name: getattr(props, name) for name in ("remove_background",
                                                                                "foreground_ratio")}) if config else None
    shown = entry.checker if entry is not None and entry.state == "ready" and entry.checker else path
    icon = runtime.thumbnail(shown)
    if icon and (props.image_source == "FILE" or shown != path):  # a Blender image shows its own preview above
        layout.template_icon(icon_value=icon, scale=7.0)
    if entry is None:
        return
    if entry.state == "running":
        layout.label(text="Cutting out the object...", icon="SORTTIME")
    elif entry.state == "ready":
        layout.label(text=entry.summary(), icon="IMAGE_RGB_ALPHA")
        if entry.text:
            text.label(layout, context, entry.text, icon="INFO")
    else:
        text.label(layout, context, entry.text, icon="ERROR")
