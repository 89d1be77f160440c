"""A stand-in for `python -m backend serve` that speaks the real protocol (shared/protocol.py).

It copies a given GLB instead of generating anything, so the add-on's process handling can be
tested quickly and without the engines. What a job does is chosen by words in the image's file
name: `crash` exits mid-job, `hang` stops answering entirely, `corrupt` fails with
`input_unreadable`, `stubborn` ignores cancel, `slow` takes a few seconds. Run with the repository
root on PYTHONPATH, or through `install_as_backend()` as `python -m backend serve|info|download --json`.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import queue
import shutil
import struct
import sys
import threading
import time
from pathlib import Path

from shared import protocol, settings
from shared.errors import BackendError

OUT = sys.stdout
_write_lock = threading.Lock()
hung = threading.Event()


def emit(name: str, **fields) -> None:
    if hung.is_set():
        return
    with _write_lock:
        OUT.write(protocol.event(name, **fields))
        OUT.flush()


class Worker(threading.Thread):
    def __init__(self, glb: Path, step_delay: float, steps: int):
        super().__init__(daemon=True)
        self.steps = steps
        self.glb = glb
        self.step_delay = step_delay
        self.jobs: queue.Queue = queue.Queue()
        self.cancelled: set[str] = set()
        self.current: str | None = None
        self.outstanding = 0  # accepted and not yet finished
        self.lock = threading.Lock()

    def step(self, job: str, stage: str, i: int, n: int, delay: float, honour_cancel: bool) -> None:
        if honour_cancel and job in self.cancelled:
            raise BackendError("cancelled", f"job {job} was cancelled")
        emit("progress", job=job, stage=stage, step=i, total=n)
        time.sleep(delay)

    def run(self) -> None:
        while True:
            msg = self.jobs.get()
            job = msg.get("job")
            self.current = job
            try:
                self.generate(msg)
            except BackendError as err:
                emit("error", job=job, code=err.code, message=err.message)
            self.current = None
            with self.lock:
                self.outstanding -= 1

    def generate(self, msg: protocol.Message) -> None:
        job, image = msg.get("job"), msg.get("image") or msg.get("mesh")
        name = Path(image).name
        values = settings.resolve(msg.get("settings"))
        if not Path(image).exists():
            raise BackendError("input_not_found", f"input not found: {image}")
        if "corrupt" in name:
            raise BackendError("input_unreadable", f"not a readable image: {image}")
        delay = 0.5 if "slow" in name else self.step_delay
        stubborn = "stubborn" in name
        started = time.monotonic()
        for i in range(1, self.steps + 1):
            if "crash" in name and i == 3:
                print("fake backend: simulated crash (CUDA error: an illegal memory access)", file=sys.stderr, flush=True)
                os._exit(3)
            if "hang" in name and i == 3:
                hung.set()
                time.sleep(3600)
            self.step(job, "geometry", i, self.steps, delay, not stubborn)
        output = Path(msg.get("output"))
        output.parent.mkdir(parents=True, exist_ok=True)
        if values["texture"]:
            preview = output.with_name(output.stem + ".mesh.glb")
            shutil.copyfile(self.glb, preview)
            emit("artifact", job=job, kind="mesh", paths=[str(preview)])
            for i in range(1, 4):
                self.step(job, "texture", i, 3, delay, not stubborn)
        tmp = output.with_name(output.name + ".part")
        mesh = msg.get("mesh")
        if mesh and mesh.lower().endswith(".glb"):  # texture-only: the given shape, re-centred and re-scaled
            normalise_glb(Path(mesh), tmp)
        else:
            shutil.copyfile(self.glb, tmp)
        os.replace(tmp, output)
        emit("done", job=job, path=str(output), seconds=round(time.monotonic() - started, 3),
             metadata={"engine": "fake", "seed": values["seed"], "settings": values})


def normalise_glb(source: Path, target: Path) -> None:
    """Copy a GLB under a new root node that centres it and scales its largest extent to 1, the
    frame the real backend delivers (bounds from the POSITION accessors' min/max)."""
    data = source.read_bytes()
    json_len = struct.unpack_from("<I", data, 12)[0]
    gltf = json.loads(data[20:20 + json_len])
    rest = data[20 + json_len:]
    lo, hi = [math.inf] * 3, [-math.inf] * 3
    for mesh in gltf["meshes"]:
        for prim in mesh["primitives"]:
            acc = gltf["accessors"][prim["attributes"]["POSITION"]]
            lo = [min(a, b) for a, b in zip(lo, acc["min"])]
            hi = [max(a, b) for a, b in zip(hi, acc["max"])]
    scale = 1.0 / max(h - l for l, h in zip(lo, hi))
    scene = gltf["scenes"][gltf.get("scene", 0)]
    gltf["nodes"].append({"name": "normalise", "children": scene["nodes"], "scale": [scale] * 3,
                          "translation": [-(l + h) / 2 * scale for l, h in zip(lo, hi)]})
    scene["nodes"] = [len(gltf["nodes"]) - 1]
    chunk = json.dumps(gltf).encode()
    chunk += b" " * (-len(chunk) % 4)
    body = struct.pack("<II", len(chunk), 0x4E4F534A) + chunk + rest
    target.write_bytes(struct.pack("<III", 0x46546C67, 2, 12 + len(body)) + body)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--glb", default=os.environ.get("FAKE_BACKEND_GLB"), help="the GLB every job 'generates'")
    parser.add_argument("--step-delay", type=float, default=0.02)
    parser.add_argument("--steps", type=int, default=4, help="geometry steps per job (at least 3)")
    parser.add_argument("--ready-delay", type=float, default=0.0)
    parser.add_argument("--protocol", type=int, default=protocol.PROTOCOL_VERSION)
    parser.add_argument("--no-ready", action="store_true", help="never report ready")
    parser.add_argument("--noise", action="store_true", help="print a non-protocol line first")
    parser.add_argument("--args-file", help="write the command line and selected env here (for tests)")
    args, _ = parser.parse_known_args(sys.argv[1:] + os.environ.get("FAKE_BACKEND_ARGS", "").split())
    if sys.argv[1:2] == ["info"]:
        print("engines: fake\nGPUs: none (CPU only)\nweights: not needed")
        return 0
    if sys.argv[1:3] == ["download", "--json"]:  # the JSON-lines contract of `backend download --json`
        done = 0
        for name, size in (("geometry/model.safetensors", 300), ("texture/unet.safetensors", 500)):
            done += size
            print(json.dumps({"event": "progress", "file": name, "bytes": size, "total": size,
                              "done_bytes": done, "total_bytes": 800}), flush=True)
        print(json.dumps({"event": "done", "message": "all weights found"}), flush=True)
        return 0
    if args.args_file:
        Path(args.args_file).write_text(repr((sys.argv, {k: os.environ.get(k) for k in
                                                         ("HF_HUB_OFFLINE", "CUDA_VISIBLE_DEVICES")})))
    if args.noise:
        print("Loading checkpoint shards: 100%", flush=True)
    time.sleep(args.ready_delay)
    if not args.no_ready:
        emit("ready", protocol=args.protocol, version="fake-1", engines=["preview"])
    worker = Worker(Path(args.glb), args.step_delay, args.steps)
    worker.start()
    for raw in sys.stdin.buffer:
        if hung.is_set():
            continue
        if not raw.strip():
            continue
        try:
            msg = protocol.decode_request(raw)
        except BackendError as err:
            emit("error", job=None, code=err.code, message=err.message)
            continue
        if msg.kind == "generate":
            with worker.lock:
                position, worker.outstanding = worker.outstanding, worker.outstanding + 1
            emit("accepted", job=msg.get("job"), engine="fake", queue_position=position)
            worker.jobs.put(msg)
        elif msg.kind == "cancel":
            worker.cancelled.add(msg.get("job"))
        elif msg.kind == "status":
            emit("status", state="busy" if worker.current else "idle", job=worker.current, queue=[])
        elif msg.kind == "shutdown":
            emit("bye")
            return 0
    return 0


SHIM = """import os, runpy, sys
sys.path.insert(0, {root!r})
runpy.run_path({script!r}, run_name="__main__")
"""


def install_as_backend(folder: Path) -> Path:
    """Make `folder` hold a `backend` package whose `python -m backend` is this fake, so the
    add-on's real launch path (interpreter + backend folder) runs it."""
    package = folder / "backend"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("")
    root = str(Path(__file__).resolve().parents[2])
    (package / "__main__.py").write_text(SHIM.format(root=root, script=str(Path(__file__).resolve())))
    return folder


if __name__ == "__main__":
    sys.exit(main())
