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

from blender_render import dataset

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
    meta = dataset.load_meta(out)
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
        meta = dataset.load_meta(out)
        assert meta["render"]["device"]["device"] == "GPU"
        assert all(v["checks"]["color_coverage"] > 0.95 for v in meta["views"])
