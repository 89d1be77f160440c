"""The add-on's operators in background mode (`bpy` module) against the fake backend, launched the
way the add-on launches the real one (`<python> -m backend serve` in the backend folder)."""
import pytest

from .blender_run import run_bpy
from .fake_backend import install_as_backend

SETUP = """
prefs.backend_dir = {backend!r}
scene = bpy.context.scene
props = scene.step1x3d
cwd = os.getcwd()
for o in list(bpy.data.objects):  # start from an empty scene
    bpy.data.objects.remove(o)
for m in list(bpy.data.meshes):
    bpy.data.meshes.remove(m)

def attempt(op, **kw):
    try:
        return sorted(op(**kw)), ""
    except RuntimeError as err:  # bpy.ops raises with the operator's error report
        return ["CANCELLED"], str(err)

def tick_until(condition, limit=60):
    import time
    end = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < end, "timed out waiting"
        RUNTIME.tick()  # the timer callback the UI would run
        time.sleep(0.05)
"""

GENERATE = SETUP + """
props.image_path = make_png(os.path.join(cwd, "duck photo.png"))
props.seed = 11
scene.cursor.location = (2.0, 3.0, 1.0)
ret, msg = attempt(bpy.ops.step1x3d.generate)
obj = bpy.data.objects.get("duck photo")
bpy.context.view_layer.update()
lo, hi = importer.world_bounds(obj)
from addon.core import history
records = history.loads(props.history)
result(generate=dict(
    ret=ret, msg=msg, collections=[c.name for c in obj.users_collection], seed=obj["step1x3d_seed"],
    settings_seed=obj["step1x3d_settings"]["seed"], image=obj["step1x3d_image"], bottom=float(lo[2]),
    centre=[float((lo[0] + hi[0]) / 2), float((lo[1] + hi[1]) / 2)],
    leftovers=[o.name for o in bpy.data.objects if o.name != "duck photo"], meshes=len(bpy.data.meshes),
    textured=any(n.type == "TEX_IMAGE" and n.image for m in obj.data.materials for n in m.node_tree.nodes),
    state=RUNTIME.state, glb=records[0].glb, glb_in_output=records[0].glb.startswith(prefs.output_dir),
    history=len(records), history_seed=records[0].seed, active=bpy.context.view_layer.objects.active.name,
))

# cancel after the untextured preview is on screen: the scene must end as it was
before = sorted(o.name for o in bpy.data.objects)
job = RUNTIME.submit(bpy.context, label="slow one", settings=dict(records[0].settings),
                     image=make_png(os.path.join(cwd, "slow.png")))
meta = RUNTIME.meta[job.job_id]
tick_until(lambda: meta.preview)
preview_seen = meta.preview in bpy.data.objects
bpy.ops.step1x3d.cancel(job=job.job_id)
tick_until(lambda: not job.active)
result(cancel=dict(preview_seen=preview_seen, same=sorted(o.name for o in bpy.data.objects) == before,
                   job=job.state, state=RUNTIME.state, notice=RUNTIME.notice[1]))

# preview and result arriving in one timer tick: both handled, the preview replaced
images_before = len(bpy.data.images)
job = RUNTIME.submit(bpy.context, label="batched", settings=dict(records[0].settings),
                     image=os.path.join(cwd, "duck photo.png"))
import time
while not os.path.exists(job.request.output):
    time.sleep(0.05)
time.sleep(0.5)  # let the `done` line reach the queue before the first tick
tick_until(lambda: not job.active)
result(batched=dict(job=job.state, objects=sorted(o.name for o in bpy.data.objects),
                    images_added=len(bpy.data.images) - images_before))

# the backend dies mid-job, then a restart works
props.image_path = make_png(os.path.join(cwd, "crash.png"))
ret, msg = attempt(bpy.ops.step1x3d.generate)
crash = dict(ret=ret, msg=msg, state=RUNTIME.state, problem=RUNTIME.session.problem)
props.image_path = os.path.join(cwd, "duck photo.png")
ret2, msg2 = attempt(bpy.ops.step1x3d.generate)
result(crash=dict(**crash, again=ret2, again_msg=msg2, state_after=RUNTIME.state, objects=len(bpy.data.objects)))

# errors the artist can act on
with open(os.path.join(cwd, "corrupt.png"), "wb") as f:
    f.write(b"not really a png")
props.image_path = os.path.join(cwd, "corrupt.png")
corrupt = attempt(bpy.ops.step1x3d.generate)
props.image_path = os.path.join(cwd, "missing.png")
missing_image = attempt(bpy.ops.step1x3d.generate)
props.image_path = os.path.join(cwd, "duck photo.png")
prefs.python = os.path.join(cwd, "no-env", "bin", "python")
no_python = attempt(bpy.ops.step1x3d.generate)
prefs.python = sys.executable
prefs.plan, prefs.weights = "single", os.path.join(cwd, "no-weights")
bad_weights = attempt(bpy.ops.step1x3d.generate)
prefs.plan = "cpu"
result(errors=dict(corrupt=corrupt, missing_image=missing_image, no_python=no_python, bad_weights=bad_weights,
                   state=RUNTIME.state))

# opening another file cancels the jobs of the one being closed
job = RUNTIME.submit(bpy.context, label="orphan", settings=dict(records[0].settings),
                     image=make_png(os.path.join(cwd, "slow2.png")))
tick_until(lambda: job.state == "running" or not job.active)
assert job.state == "running", (job.state, job.error_message)
bpy.ops.wm.read_homefile(use_empty=True)
tick_until(lambda: not job.active)
result(load=dict(job=job.state, objects=[o.name for o in bpy.data.objects]))

bpy.ops.step1x3d.check_backend()
result(check=dict(state=RUNTIME.info_state, text=RUNTIME.info_text))
addon_utils.disable("addon", default_set=True)
result(disabled=dict(process=RUNTIME.session is None, scene_prop=hasattr(bpy.types.Scene, "step1x3d")))
"""


@pytest.fixture(scope="module")
def generated(tmp_path_factory, assets):
    tmp = tmp_path_factory.mktemp("ops")
    backend = install_as_backend(tmp / "fake-backend")
    return run_bpy(GENERATE.format(backend=str(backend)), tmp,
                   env={"FAKE_BACKEND_GLB": str(assets / "meshes" / "Duck.glb")})


def test_generate_end_to_end(generated):
    r = generated["generate"]
    assert r["ret"] == ["FINISHED"] and r["msg"] == ""
    assert r["collections"] == ["Step1X-3D"] and r["active"] == "duck photo"
    assert r["seed"] == 11 and r["settings_seed"] == 11 and r["image"].endswith("duck photo.png")
    assert r["bottom"] == pytest.approx(1.0, abs=1e-4) and r["centre"] == pytest.approx([2.0, 3.0], abs=1e-4)
    assert r["leftovers"] == [] and r["meshes"] == 1, "the untextured preview must be replaced, not left behind"
    assert r["textured"]
    assert r["state"] == "ready" and r["glb_in_output"] and r["history"] == 1 and r["history_seed"] == 11


def test_cancel_leaves_scene_unchanged_and_backend_ready(generated):
    r = generated["cancel"]
    assert r["preview_seen"] and r["same"]
    assert r["job"] == "cancelled" and r["state"] == "ready" and "cancelled" in r["notice"]


def test_preview_and_result_in_one_tick(generated):
    r = generated["batched"]
    assert r["job"] == "done" and r["objects"] == ["batched", "duck photo"]
    assert r["images_added"] == 1, "the preview's texture goes with the preview"


def test_crash_is_reported_and_restart_works(generated):
    r = generated["crash"]
    assert r["ret"] == ["CANCELLED"] and r["state"] == "crashed"
    assert "exited unexpectedly (exit code 3)" in r["msg"] and "illegal memory access" in r["msg"]
    assert "Start in the panel" in r["msg"]
    assert r["again"] == ["FINISHED"] and r["state_after"] == "ready" and r["objects"] == 3


def test_errors_have_their_messages(generated):
    r = generated["errors"]
    (ret, msg) = r["corrupt"]
    assert ret == ["CANCELLED"] and "could not be read" in msg and "corrupt.png" in msg
    (ret, msg) = r["missing_image"]
    assert ret == ["CANCELLED"] and "reference image was not found" in msg and "missing.png" in msg
    (ret, msg) = r["no_python"]
    assert ret == ["CANCELLED"] and "interpreter does not exist" in msg and "no-env" in msg
    (ret, msg) = r["bad_weights"]
    assert ret == ["CANCELLED"] and "weights were not found" in msg and "no-weights" in msg
    assert r["state"] == "ready", "input errors must not take the backend down"


def test_loading_another_file_cancels_jobs(generated):
    assert generated["load"] == {"job": "cancelled", "objects": []}


def test_check_and_disable(generated):
    assert generated["check"]["state"] == "ok" and "engines: fake" in generated["check"]["text"]
    assert generated["disabled"] == {"process": True, "scene_prop": False}
