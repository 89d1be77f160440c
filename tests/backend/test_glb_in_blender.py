"""The preview engine's GLB imports into Blender (bpy module) with its texture wired up."""
import json
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

from backend.context import JobContext
from backend.engines.preview.engine import PreviewEngine
from backend.jobs import make_spec

from .synth import striped_ellipse

ROOT = Path(__file__).resolve().parents[2]

CHECK = r"""
import bpy, json, sys
bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.ops.import_scene.gltf(filepath=sys.argv[1])
meshes = [o for o in bpy.context.scene.objects if o.type == "MESH"]
mat = meshes[0].active_material
bsdf = next(n for n in mat.node_tree.nodes if n.type == "BSDF_PRINCIPLED")
link = bsdf.inputs["Base Color"].links[0]
image_node = link.from_node
while image_node.type != "TEX_IMAGE":
    image_node = image_node.inputs[0].links[0].from_node
img = image_node.image
dims = [max(v.co[i] for v in meshes[0].data.vertices) - min(v.co[i] for v in meshes[0].data.vertices) for i in range(3)]
print(json.dumps({"meshes": len(meshes), "image": list(img.size), "colorspace": img.colorspace_settings.name,
                  "metallic": bsdf.inputs["Metallic"].default_value, "dims": dims,
                  "smooth": any(p.use_smooth for p in meshes[0].data.polygons)}))
"""


def test_blender_imports_the_textured_glb(tmp_path):
    rgb, _ = striped_ellipse(128)
    Image.fromarray(rgb).save(tmp_path / "e.png")
    spec = make_spec(image=str(tmp_path / "e.png"), output=str(tmp_path / "e.glb"), engine="preview",
                     settings={"texture_resolution": 512, "face_count": 4000})
    PreviewEngine().run(JobContext(spec=spec, work_dir=tmp_path))
    # bpy in its own process: it must not share one with pymeshlab (conflicting embree builds)
    proc = subprocess.run([sys.executable, "-c", CHECK, str(spec.output)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    assert data["meshes"] == 1 and data["image"] == [512, 512]
    assert data["colorspace"] == "sRGB" and data["metallic"] == 0.0 and data["smooth"]
    # glTF +Y up becomes Blender +Z up: the ellipse is taller (Z) than wide (X)
    assert max(data["dims"]) == data["dims"][2]
    assert abs(max(data["dims"]) - 1.0) < 1e-3
