"""The single-object command lines: `python -m blender_render` and the `blender -b -P` script
form (emulated: the script file run as __main__ with Blender's argv), exit codes, atomic output,
failed checks, HDRI lighting and the up-axis option."""
import json
import random
import textwrap

import cv2
import numpy as np
import pytest
import trimesh

from backend.data import renders

from .helpers import ROOT, needs_bpy, run

pytestmark = needs_bpy


def _blender_style(args: list[str]):
    """What `blender -b -P blender_render/render_views.py -- ARGS` does: run the file as __main__
    with Blender's argv (the script parses what follows '--')."""
    code = textwrap.dedent(f"""
        import runpy, sys
        import bpy
        sys.argv = ["blender", "-b", "-P", "blender_render/render_views.py", "--", *{args!r}]
        runpy.run_path("{ROOT / 'blender_render' / 'render_views.py'}", run_name="__main__")
    """)
    return run(["-c", code])


def test_blender_script_form_hdri_up_axis_and_overwrite(assets, tmp_path):
    hdri = tmp_path / "sky.hdr"
    sky = np.zeros((16, 32, 3), np.float32)
    sky[:8] = (2.0, 1.5, 1.0)
    sky[8:] = (0.2, 0.3, 0.5)
    cv2.imwrite(str(hdri), sky)
    src = assets / "meshes" / "bunny.ply"
    out = tmp_path / "bunny"
    args = [str(src), str(out), "--resolution", "32", "--samples", "1", "--passes", "color,normal,mask",
            "--up", "y", "--hdri", str(hdri), "--hdri-rotation", "random", "--seed", "3", "--hdri-strength", "2"]
    proc = _blender_style(args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    meta = renders.load_meta(out)
    light = meta["render"]["lighting"]
    assert light["type"] == "hdri" and light["strength"] == 2.0
    assert light["rotation_deg"] == random.Random("hdri-rotation-3").uniform(0.0, 360.0)
    # --up y: the file's +Y becomes Blender's +Z
    v = np.asarray(trimesh.load(str(src), process=False).vertices)
    lo, hi = np.array(meta["normalization"]["source_bbox_min"]), np.array(meta["normalization"]["source_bbox_max"])
    np.testing.assert_allclose(hi - lo, [np.ptp(v[:, 0]), np.ptp(v[:, 2]), np.ptp(v[:, 1])], rtol=1e-5)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{p}_{i:03d}.png" for p in ("color", "normal", "mask") for i in range(6)] + ["meta.json"])

    again = _blender_style(args)
    assert again.returncode == 8 and "already exists" in again.stderr  # output_unwritable
    replaced = run(["-m", "blender_render", str(src), str(out), "--resolution", "32", "--passes", "mask",
                    "--overwrite"])
    assert replaced.returncode == 0, replaced.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == sorted([f"mask_{i:03d}.png" for i in range(6)] + ["meta.json"])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_bad_input_and_settings_exit_with_stable_codes(tmp_path):
    proc = run(["-m", "blender_render", str(tmp_path / "nope.glb"), str(tmp_path / "o")])
    assert proc.returncode == 3 and "[input_not_found]" in proc.stderr
    bad = tmp_path / "bad.xyz"
    bad.write_text("x")
    proc = run(["-m", "blender_render", str(bad), str(tmp_path / "o"), "--passes", "albedo"])
    assert proc.returncode == 2 and "[invalid_setting]" in proc.stderr
    proc = run(["-m", "blender_render", str(bad), str(tmp_path / "o")])
    assert proc.returncode == 4 and "unsupported format" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.xyz"]


def test_failed_checks_keep_nothing_unless_asked(tmp_path):
    """A triangle far outside every view (no normalisation): the masks are empty."""
    far = tmp_path / "far.ply"
    trimesh.Trimesh([[10, 10, 10], [11, 10, 10], [10, 11, 10]], [[0, 1, 2]], process=False).export(str(far))
    out = tmp_path / "far"
    common = [str(far), str(out), "--normalize", "none", "--resolution", "16", "--passes", "normal,mask"]
    proc = run(["-m", "blender_render", *common])
    assert proc.returncode == 20 and "[check_failed]" in proc.stderr and "empty mask" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["far.ply"]
    proc = run(["-m", "blender_render", *common, "--keep-failed"])
    assert proc.returncode == 20
    meta = json.loads((tmp_path / "far.failed" / "meta.json").read_text())
    assert meta["status"] == "failed" and len(meta["failures"]) == 6 and not out.exists()


@pytest.mark.cuda
def test_gpu_cycles_and_eevee(assets, tmp_path):
    """On a CUDA machine: Cycles on the GPU, and EEVEE (which needs a GPU to be practical)."""
    src = assets / "meshes" / "Duck.glb"
    for engine in ("cycles", "eevee"):
        out = tmp_path / engine
        proc = run(["-m", "blender_render", str(src), str(out), "--device", "gpu", "--engine", engine,
                    "--resolution", "512", "--samples", "64", "--passes", "all"], timeout=900)
        assert proc.returncode == 0, proc.stderr[-2000:]
        meta = renders.load_meta(out)
        assert meta["render"]["device"]["device"] == "GPU"
        assert all(v["checks"]["color_coverage"] > 0.95 for v in meta["views"])


def test_blend_file_with_collection_instance_and_animation(tmp_path):
    """A .blend whose geometry is a collection instance (the source collection is not in the
    scene) plus an animated cube: the bounding box, and so the normalisation, must see both as
    they are at the first frame."""
    blend = tmp_path / "scene.blend"
    code = textwrap.dedent(f"""
        import bpy
        bpy.ops.wm.read_factory_settings(use_empty=True)
        scene = bpy.context.scene
        mesh = bpy.data.meshes.new("cube")
        mesh.from_pydata([(x, y, z) for x in (0, 1) for y in (0, 1) for z in (0, 1)], [],
                         [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)])
        hidden = bpy.data.collections.new("source")  # never linked into the scene
        hidden.objects.link(bpy.data.objects.new("src", mesh))
        holder = bpy.data.objects.new("instance", None)
        holder.instance_type = "COLLECTION"
        holder.instance_collection = hidden
        holder.location = (3.0, 0.0, 0.0)
        scene.collection.objects.link(holder)
        moving = bpy.data.objects.new("moving", mesh)
        scene.collection.objects.link(moving)
        scene.frame_start = 1
        for frame, x in ((1, -2.0), (20, 9.0)):
            moving.location = (x, 0.0, 0.0)
            moving.keyframe_insert("location", frame=frame)
        bpy.ops.wm.save_as_mainfile(filepath={str(blend)!r})
    """)
    made = run(["-c", code])
    assert made.returncode == 0, made.stderr[-2000:]
    out = tmp_path / "out"
    proc = run(["-m", "blender_render", str(blend), str(out), "--resolution", "32", "--passes", "position,mask"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    meta = renders.load_meta(out)
    norm = meta["normalization"]
    np.testing.assert_allclose(norm["source_bbox_min"], [-2, 0, 0], atol=1e-6)
    np.testing.assert_allclose(norm["source_bbox_max"], [4, 1, 1], atol=1e-6)
    assert meta["scene"]["animated"] and meta["scene"]["triangles"] == 24
    front = renders.load_view(out, 0, meta)
    x = front.position[front.mask][:, 0]
    assert x.min() < -0.45 and x.max() > 0.45  # both pieces rendered, spanning the unit cube


def test_flat_and_smooth_shading_modes(tmp_path):
    """--normals flat gives one normal per visible triangle, smooth a different one per pixel."""
    mesh = tmp_path / "ico.ply"
    trimesh.creation.icosphere(subdivisions=2).export(str(mesh))  # 320 triangles, no stored normals
    unique = {}
    for mode in ("flat", "smooth"):
        out = tmp_path / mode
        proc = run(["-m", "blender_render", str(mesh), str(out), "--resolution", "64", "--passes", "normal,mask",
                    "--normals", mode, "--exr"])
        assert proc.returncode == 0, proc.stderr[-2000:]
        view = renders.load_view(out, 0, exr=True)
        unique[mode] = (len(np.unique(np.round(view.normal[view.mask], 5), axis=0)), view.mask.sum())
    assert unique["flat"][0] <= 320 // 2 and unique["smooth"][0] == unique["smooth"][1]
