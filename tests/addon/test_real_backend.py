"""End to end against the real `python -m backend serve --engine preview` (CPU, no weights)."""
import pytest

from .blender_run import ROOT, run_bpy

SCRIPT = """
import signal, time
prefs.backend_dir = {root!r}
prefs.python = {python!r}
scene = bpy.context.scene
props = scene.step1x3d
for o in list(bpy.data.objects):
    bpy.data.objects.remove(o)
# small settings keep the CPU preview quick
props.texture_resolution, props.face_count, props.octree_resolution, props.view_resolution = 512, 3000, 96, 256
props.image_path = {image!r}
props.seed = 5
scene.cursor.location = (0.0, 0.0, -1.0)

def tick_until(condition, limit=240):
    end = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < end, "timed out waiting"
        RUNTIME.tick()
        time.sleep(0.05)

ret = bpy.ops.step1x3d.generate(timeout=240)
obj = bpy.data.objects["robot"]
bpy.context.view_layer.update()
lo, hi = importer.world_bounds(obj)
images = [n.image for m in obj.data.materials for n in m.node_tree.nodes if n.type == "TEX_IMAGE" and n.image]
result(generate=dict(
    ret=sorted(ret), collections=[c.name for c in obj.users_collection], seed=obj.get("step1x3d_seed"),
    ignored=obj["step1x3d_ignored_settings"].to_dict(), applied=obj["step1x3d_settings"].to_dict(),
    engine=obj["step1x3d_engine"], bottom=float(lo[2]), faces=len(obj.data.polygons),
    image_size=list(images[0].size) if images else None, state=RUNTIME.state,
    extent=float(max(hi - lo)), centre=[float((lo[0] + hi[0]) / 2), float((lo[1] + hi[1]) / 2)],
))

settings = {{name: getattr(props, name) for name in ("seed", "texture_resolution", "face_count",
                                                    "octree_resolution", "view_resolution")}}
before = sorted(o.name for o in bpy.data.objects)
job = RUNTIME.submit(bpy.context, label="to cancel", settings=settings, image=props.image_path)
tick_until(lambda: job.state == "running" or not job.active)
assert job.state == "running", (job.state, job.error_message)
bpy.ops.step1x3d.cancel(job=job.job_id)
tick_until(lambda: not job.active)
result(cancel=dict(job=job.state, same=sorted(o.name for o in bpy.data.objects) == before, state=RUNTIME.state))

job = RUNTIME.submit(bpy.context, label="to kill", settings=settings, image=props.image_path)
tick_until(lambda: job.state == "running" or not job.active)
assert job.state == "running", (job.state, job.error_message)
os.kill(RUNTIME.session.process.pid, signal.SIGKILL)
tick_until(lambda: not job.active)
killed = dict(job=job.state, notice=RUNTIME.notice[1], state=RUNTIME.state,
              same=sorted(o.name for o in bpy.data.objects) == before)
ret = bpy.ops.step1x3d.generate(timeout=240)
with open("corrupt.png", "wb") as f:
    f.write(bytes.fromhex("89504e470d0a1a0a") + bytes(64))  # a PNG signature with nothing behind it
props.image_path = os.path.abspath("corrupt.png")
try:
    bpy.ops.step1x3d.generate(timeout=240)
    corrupt = ""
except RuntimeError as err:
    corrupt = str(err)
bpy.ops.step1x3d.check_backend()
result(check=dict(state=RUNTIME.info_state, text=RUNTIME.info_text, corrupt=corrupt, state_after=RUNTIME.state))
result(kill=dict(**killed, again=sorted(ret), state_after=RUNTIME.state, robots=sorted(o.name for o in bpy.data.objects)))
"""


@pytest.mark.skipif(not (ROOT / "backend" / "server.py").is_file(), reason="backend server not present")
def test_real_preview_backend(tmp_path):
    image = ROOT / "examples" / "robot.png"
    r = run_bpy(SCRIPT.format(root=str(ROOT), python=str(ROOT / ".venv" / "bin" / "python"), image=str(image)),
                tmp_path, timeout=600)
    g = r["generate"]
    assert g["ret"] == ["FINISHED"] and g["collections"] == ["Step1X-3D"]
    assert g["engine"] == "preview" and g["state"] == "ready"
    # the preview uses no randomness: the seed is listed as ignored, never stamped as applied
    assert g["seed"] is None and g["ignored"]["seed"] == 5 and "seed" not in g["applied"]
    assert g["applied"]["face_count"] == 3000 and "octree_resolution" in g["ignored"]
    assert g["bottom"] == pytest.approx(-1.0, abs=1e-4) and g["centre"] == pytest.approx([0.0, 0.0], abs=1e-4)
    assert 0 < g["faces"] <= 3000 and g["image_size"] == [512, 512]
    assert g["extent"] == pytest.approx(1.0, abs=0.02), "the backend's unit-size asset keeps its scale"
    assert r["cancel"] == {"job": "cancelled", "same": True, "state": "ready"}
    k = r["kill"]
    assert k["job"] == "failed" and k["state"] == "crashed" and k["same"]
    assert "the backend was killed by signal 9" in k["notice"] and "Start in the panel" in k["notice"]
    c = r["check"]
    assert "could not be read" in c["corrupt"] and "corrupt.png" in c["corrupt"] and c["state_after"] == "ready"
    assert c["state"] == "ok" and "engines:" in c["text"] and "GPUs:" in c["text"]
    assert k["again"] == ["FINISHED"] and k["state_after"] == "ready" and k["robots"] == ["robot", "robot.001"]
