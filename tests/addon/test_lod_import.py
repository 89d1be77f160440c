"""A GLB with levels of detail imports as one object with hidden LOD children, not one joined mesh."""
import numpy as np
import pytest
import trimesh

from backend.mesh import export
from backend.mesh.uv import unwrap

from .blender_run import run_bpy

SCRIPT = """
import numpy as np
from mathutils import Matrix
for o in list(bpy.data.objects):
    bpy.data.objects.remove(o)

def bounds(o):
    w = np.array([o.matrix_world @ v.co for v in o.data.vertices])
    return [w.min(0).tolist(), w.max(0).tolist()]

def describe(obj):
    bpy.context.view_layer.update()
    return dict(faces=len(obj.data.polygons), bounds=bounds(obj),
                children=[dict(name=c.name, faces=len(c.data.polygons), hidden=c.hide_get(), render=c.hide_render,
                               bounds=bounds(c), collections=[k.name for k in c.users_collection])
                          for c in sorted(obj.children, key=lambda c: c.name)])

obj = importer.bring_in({path!r}, "thing", cursor=(1.0, 2.0, 3.0))
standing = describe(obj)
bpy.ops.mesh.primitive_cube_add(size=2.0, location=(-4.0, 0.5, 1.0), rotation=(0.3, 0.0, 0.7))
source = bpy.context.active_object
placed = describe(importer.bring_in({path!r}, "other", source=source))
importer.remove_object("thing")
result(standing=standing, placed=placed, left=sorted(o.name for o in bpy.data.objects))
"""


def test_lods_become_hidden_children_that_follow_the_object(tmp_path):
    meshes = [unwrap(s.vertices, s.faces, 256) for s in (trimesh.creation.icosphere(k) for k in (3, 2, 1))]
    path = export.write_glb(tmp_path / "thing.glb", meshes[0], np.zeros((8, 8, 3), np.uint8),
                            export.ExportMetadata("preview", "test", {}), lods=meshes[1:], name="thing")
    r = run_bpy(SCRIPT.format(path=str(path)), tmp_path)
    for case, name in (("standing", "thing"), ("placed", "other")):
        got = r[case]
        assert got["faces"] == len(meshes[0].faces), "the LODs must not be joined into the object"
        assert [c["name"] for c in got["children"]] == [f"{name}_LOD1", f"{name}_LOD2"]
        assert [c["faces"] for c in got["children"]] == [len(m.faces) for m in meshes[1:]]
        for child in got["children"]:
            assert child["hidden"] and child["render"] and child["collections"] == ["Step1X-3D"]
            # the icospheres of every level are centred alike: the LODs sit where the object is, at its size
            lod, main = np.array(child["bounds"]), np.array(got["bounds"])
            assert np.allclose(lod.mean(0), main.mean(0), atol=1e-4), (case, lod, main)
            assert np.allclose(lod[1] - lod[0], main[1] - main[0], atol=0.1), (case, lod, main)
    assert r["standing"]["bounds"][0][2] == pytest.approx(3.0, abs=1e-4)
    assert r["left"] == ["Cube", "other", "other_LOD1", "other_LOD2"]
