"""Texture Selection, history actions, panel drawing and what a saved .blend keeps (bpy module,
fake backend)."""
import pytest

from .blender_run import LAYOUT_RECORDER, run_bpy
from .fake_backend import install_as_backend

SCRIPT = LAYOUT_RECORDER + """
import math, time
import numpy as np
from addon.blender import panel
from addon.core import history
from addon.shared import settings as schema
prefs.backend_dir = {backend!r}
scene = bpy.context.scene
props = scene.step1x3d
cwd = os.getcwd()
for o in list(bpy.data.objects):
    bpy.data.objects.remove(o)
props.image_path = make_png(os.path.join(cwd, "ref.png"))

def tick_until(condition, limit=60):
    end = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < end, "timed out waiting"
        RUNTIME.tick()
        time.sleep(0.05)

def world_vertices(obj):
    bpy.context.view_layer.update()
    dg = bpy.context.evaluated_depsgraph_get()
    ev = obj.evaluated_get(dg)
    mesh = ev.to_mesh()
    pts = np.array([obj.matrix_world @ v.co for v in mesh.vertices])
    ev.to_mesh_clear()
    return pts

# --- texture selection: a rotated, scaled, parented monkey with a modifier --------------------
bpy.ops.mesh.primitive_monkey_add()
monkey = bpy.context.active_object
monkey.rotation_euler = (0.3, -0.7, 1.1)
monkey.scale = (0.5, 1.5, 0.8)
monkey.modifiers.new("bevel", "BEVEL")
parent = bpy.data.objects.new("rig", None)
scene.collection.objects.link(parent)
parent.location = (3.0, -1.0, 2.0)
parent.rotation_euler = (0.0, 0.0, math.radians(30))
monkey.parent = parent
source = world_vertices(monkey)
ret = bpy.ops.step1x3d.texture_selection()
res = bpy.data.objects["Suzanne textured"]
got = world_vertices(res)
dist = np.sqrt(((got[:, None, :] - source[None, :, :]) ** 2).sum(-1)).min(1)
result(texture=dict(ret=sorted(ret), hidden=monkey.hide_get(), hidden_render=monkey.hide_render,
                    parent=res.parent.name if res.parent else None, max_dist=float(dist.max()),
                    lo=np.round(got.min(0), 4).tolist(), src_lo=np.round(source.min(0), 4).tolist(),
                    collections=[c.name for c in res.users_collection], mesh_prop=res.get("step1x3d_job") is not None))

# --- history: re-import at the cursor, use these settings --------------------------------------
props.seed = 77
props.texture_resolution = 1024
bpy.ops.step1x3d.generate()
records = history.loads(props.history)
props.seed, props.texture_resolution, props.randomize_seed = 1, 512, True
applied = bpy.ops.step1x3d.history_apply(index=0)
scene.cursor.location = (-4.0, 0.0, 0.5)
reimported = bpy.ops.step1x3d.history_import(index=0)
obj = bpy.context.active_object
lo, hi = importer.world_bounds(obj)
result(history=dict(count=len(records), labels=[r.label for r in records], seed=props.seed,
                    tex=props.texture_resolution, randomize=props.randomize_seed, image=props.image_path,
                    reimport=sorted(reimported), name=obj.name, bottom=float(lo[2]),
                    centre=float((lo[0] + hi[0]) / 2), seed_prop=obj["step1x3d_seed"]))

# --- panel drawing while a job runs (layout recorded, no UI needed) --------------------------
slow = props.image_path.replace("ref", "slow")
import shutil; shutil.copyfile(props.image_path, slow)
job = RUNTIME.submit(bpy.context, label="drawn", settings=schema.resolve({{}}), image=slow)
tick_until(lambda: job.state == "running" or not job.active)
assert job.state == "running", (job.state, job.error_message)
main = FakePanel()
panel.STEP1X3D_PT_main.draw(main, bpy.context)
progress = [kw for name, args, kw in main.layout.log if name == "progress"]
labels = [kw.get("text") for name, args, kw in main.layout.log if name == "label"]
thumbnails = list(RUNTIME._previews.keys())  # icon ids stay 0 without a UI, so check what was loaded
drawn = []
for cls in panel.classes()[1:-1]:
    fake = FakePanel()
    cls.draw(fake, bpy.context)
    drawn += [args[1] for name, args, kw in fake.layout.log if name == "prop" and args[1] != "randomize_seed"]
hist = FakePanel()
panel.STEP1X3D_PT_history.draw(hist, bpy.context)
ops = [args[0] for name, args, kw in hist.layout.log if name == "operator"]

# --- saving while busy: the file keeps settings and history, never runtime state -------------
path = os.path.join(cwd, "busy.blend")
bpy.ops.wm.save_as_mainfile(filepath=path)
stored = sorted(scene.step1x3d.keys())
RUNTIME.cancel()
tick_until(lambda: not job.active)
result(panel=dict(progress=progress, labels=labels, thumbnails=thumbnails, drawn=drawn, history_ops=ops, stored=stored,
                  parents=[c.bl_parent_id for c in panel.classes()[1:]],
                  registered=[c.__name__ for c in panel.classes() if getattr(bpy.types, c.__name__, None) is c],
                  where={{(c.bl_space_type, c.bl_region_type, c.bl_category) for c in panel.classes()}} ==
                        {{("VIEW_3D", "UI", "Step1X-3D")}}))
"""


@pytest.fixture(scope="module")
def outcome(tmp_path_factory, assets):
    tmp = tmp_path_factory.mktemp("panel")
    backend = install_as_backend(tmp / "fake-backend")
    return run_bpy(SCRIPT.format(backend=str(backend)), tmp, env={"FAKE_BACKEND_GLB": str(assets / "meshes" / "Duck.glb")})


def test_texture_selection_takes_the_source_place(outcome):
    r = outcome["texture"]
    assert r["ret"] == ["FINISHED"] and r["hidden"] and r["hidden_render"]
    assert r["parent"] == "rig" and r["collections"] == ["Step1X-3D"] and r["mesh_prop"]
    assert r["max_dist"] < 1e-4, "every result vertex must sit on the source's (evaluated) surface"
    assert r["lo"] == pytest.approx(r["src_lo"], abs=1e-3)


def test_history_reimport_and_use_settings(outcome):
    r = outcome["history"]
    assert r["count"] == 2 and r["labels"] == ["ref", "Suzanne textured"]
    assert r["seed"] == 77 and r["tex"] == 1024 and not r["randomize"] and r["image"].endswith("ref.png")
    assert r["reimport"] == ["FINISHED"] and r["name"].startswith("ref") and r["seed_prop"] == 77
    assert r["bottom"] == pytest.approx(0.5, abs=1e-4) and r["centre"] == pytest.approx(-4.0, abs=1e-4)


def test_panel_draws_progress_and_every_setting(outcome):
    from shared import settings

    r = outcome["panel"]
    assert len(r["progress"]) == 1 and 0 <= r["progress"][0]["factor"] <= 1
    assert r["progress"][0]["type"] == "BAR" and r["progress"][0]["text"].startswith(("Geometry", "Texture"))
    assert "Backend: busy" in r["labels"]
    assert len(r["thumbnails"]) == 1 and r["thumbnails"][0].split(":")[0].endswith("ref.png"), \
        "the reference image's thumbnail is loaded"
    assert sorted(r["drawn"]) == sorted(s.name for s in settings.SETTINGS), "each schema setting drawn once"
    assert r["history_ops"].count("step1x3d.history_import") == 2
    assert set(r["parents"]) == {"STEP1X3D_PT_main"}
    assert r["where"] and {"STEP1X3D_PT_main", "STEP1X3D_PT_geometry", "STEP1X3D_PT_texture",
                           "STEP1X3D_PT_history"} <= set(r["registered"])


def test_saved_file_holds_no_runtime_state(outcome):
    from shared import settings

    stored = set(outcome["panel"]["stored"])
    assert {"history", "image_path", "seed"} <= stored  # saved while a job ran
    assert stored <= {s.name for s in settings.SETTINGS} | {"image_source", "image_path", "image", "randomize_seed",
                                                          "history"}
