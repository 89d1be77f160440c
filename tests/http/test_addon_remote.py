"""The add-on's remote mode through bpy against a real HTTP server (preview engine)."""
from __future__ import annotations


from tests.addon.blender_run import run_bpy

from .conftest import TOKEN_A, ServerProcess, free_port

SCRIPT = """
import time
from addon.core import history
prefs.backend_mode = "REMOTE"
prefs.server_url = {url!r}
prefs.server_token = {token!r}
scene = bpy.context.scene
props = scene.step1x3d
props.face_count, props.texture, props.texture_resolution = 500, False, 256
props.image_path = {image!r}
props.randomize_seed = False
props.seed = 11

bpy.ops.step1x3d.check_backend()
check = dict(state=RUNTIME.info_state, text=RUNTIME.info_text)

ret = bpy.ops.step1x3d.generate(timeout=240)
records = history.loads(scene.step1x3d.history)
obj = bpy.data.objects[records[0].object_name]
generate = dict(ret=sorted(ret), glb=records[0].glb, exists=os.path.isfile(records[0].glb), seed=obj.get("step1x3d_seed"), ignored=obj["step1x3d_ignored_settings"].to_dict(),
                faces=len(obj.data.polygons), engine=obj["step1x3d_engine"], state=RUNTIME.state,
                in_blend="server_token" in str(scene.step1x3d.history))

def tick_until(condition, limit=240):
    end = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < end, "timed out waiting"
        RUNTIME.tick()
        time.sleep(0.05)

before = sorted(o.name for o in bpy.data.objects)
settings = dict(face_count=500, texture=False, texture_resolution=256, seed=3)
job = RUNTIME.submit(bpy.context, label="to cancel", settings=settings, image=props.image_path)
tick_until(lambda: job.state == "running" or not job.active)
bpy.ops.step1x3d.cancel(job=job.job_id)
tick_until(lambda: not job.active)
cancel = dict(job=job.state, same=sorted(o.name for o in bpy.data.objects) == before)

failures = {{}}
for name, url, token in (("token", {url!r}, "not-the-token-" + "x" * 20), ("refused", {dead!r}, "")):
    prefs.server_url, prefs.server_token = url, token
    try:
        bpy.ops.step1x3d.generate(timeout=60)
    except RuntimeError:
        pass
    last = [j for j in RUNTIME.session.jobs.values()][-1]
    failures[name] = dict(code=last.error_code, notice=RUNTIME.notice[1])
result(check=check, generate=generate, cancel=cancel, failures=failures)
"""


def test_remote_mode_through_bpy(tmp_path, png):
    server = ServerProcess(tmp_path / "data", "--no-web", tokens=(TOKEN_A,))
    try:
        r = run_bpy(SCRIPT.format(url=server.url, token=TOKEN_A, image=str(png), dead=f"http://127.0.0.1:{free_port()}"),
                    tmp_path, timeout=400)
    finally:
        server.kill()
    assert r["check"]["state"] == "ok" and "engines: preview, step1x3d" in r["check"]["text"]
    g = r["generate"]
    assert g["ret"] == ["FINISHED"] and g["exists"] and g["glb"].startswith(str(tmp_path / "generations"))
    # the preview engine has no randomness: the panel's seed reaches it and is recorded as ignored, not applied
    assert g["seed"] is None and g["ignored"].get("seed") == 11 and g["engine"] == "preview" and 0 < g["faces"] <= 500 and not g["in_blend"]
    assert g["state"] == "ready"
    assert r["cancel"] == {"job": "cancelled", "same": True}
    assert r["failures"]["token"]["code"] == "unauthorized" and "token" in r["failures"]["token"]["notice"]
    assert r["failures"]["refused"]["code"] == "server_unreachable"
