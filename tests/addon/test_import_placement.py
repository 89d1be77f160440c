"""GLB import and placement on real third-party GLBs (wrapper empties, cameras, nested meshes)."""
import pytest

from .blender_run import run_bpy

SCRIPT = """
import numpy as np
for name in {names!r}:
  bpy.ops.wm.read_factory_settings(use_empty=True)
  addon_utils.enable("addon", default_set=True)
  scene = bpy.context.scene
  path = os.path.join({folder!r}, name)

  # reference: what the raw importer gives (world-space vertices of every mesh)
  bpy.ops.import_scene.gltf(filepath=path)
  bpy.context.view_layer.update()
  ref = np.concatenate([np.array([o.matrix_world @ v.co for v in o.data.vertices]) for o in bpy.data.objects if o.type == "MESH"])
  for o in list(bpy.data.objects):
      bpy.data.objects.remove(o)
  before = set(bpy.data.objects)
  cameras_before = len(bpy.data.cameras)

  scene.cursor.location = (1.5, -2.0, 0.75)
  obj = importer.bring_in(path, "duck photo", provenance={{"seed": 42, "settings": {{"seed": 42, "texture": True, "model": "label", "bad": None}}, "job": "abc"}})
  bpy.context.view_layer.update()
  new = set(bpy.data.objects) - before
  world = np.array([obj.matrix_world @ v.co for v in obj.data.vertices])
  lo, hi = world.min(0), world.max(0)
  shift = (world.mean(0) - ref.mean(0))
  result(**{{name: dict(
      new=[o.type for o in new], name=obj.name, data=obj.data.name, parent=obj.parent is not None,
      collections=[c.name for c in obj.users_collection], in_scene="Step1X-3D" in [c.name for c in scene.collection.children],
      centre=[float((lo[0] + hi[0]) / 2), float((lo[1] + hi[1]) / 2)], bottom=float(lo[2]),
      count=len(world), ref_count=len(ref), same_shape=bool(np.allclose(world - shift, ref, atol=1e-4)),
      selected=[o.name for o in bpy.context.selected_objects], active=bpy.context.view_layer.objects.active.name,
      seed=obj["step1x3d_seed"], settings=obj["step1x3d_settings"].to_dict(), job=obj["step1x3d_job"],
      cameras=len(bpy.data.cameras) - cameras_before, images=[i.name for i in bpy.data.images],
      textured=any(n.type == "TEX_IMAGE" and n.image for m in obj.data.materials if m and m.node_tree for n in m.node_tree.nodes),
  )}})
"""


CASES = {"Duck.glb": True, "CesiumMilkTruck.glb": True, "nested.glb": False}  # name -> has a texture


@pytest.fixture(scope="module")
def imported(assets, tmp_path_factory):
    """One bpy process imports every case (each into a fresh empty file)."""
    return run_bpy(SCRIPT.format(names=list(CASES), folder=str(assets / "meshes")), tmp_path_factory.mktemp("import"))


@pytest.mark.parametrize("name, textured", CASES.items())
def test_bring_in_places_one_clean_object(imported, name, textured):
    r = imported[name]
    assert r["new"] == ["MESH"], "wrapper empties, cameras and extra nodes must be gone"
    assert r["name"] == r["data"] == "duck photo" and not r["parent"]
    assert r["collections"] == ["Step1X-3D"] and r["in_scene"]
    assert r["centre"] == pytest.approx([1.5, -2.0], abs=1e-4)
    assert r["bottom"] == pytest.approx(0.75, abs=1e-4)
    assert r["count"] == r["ref_count"] and r["same_shape"], "joining and unparenting must keep the world shape"
    assert r["selected"] == ["duck photo"] and r["active"] == "duck photo"
    assert r["seed"] == 42 and r["job"] == "abc"
    assert r["settings"] == {"seed": 42, "texture": True, "model": "label"}
    assert r["cameras"] == 0
    assert r["textured"] == textured
