"""The object's custom properties follow what the GLB says was applied (addon/core/provenance.py)."""
import numpy as np
import trimesh

from addon.core import provenance
from backend.mesh import export
from backend.mesh.uv import unwrap


def test_the_glb_corrects_the_requested_provenance(tmp_path, assets):
    s = trimesh.creation.icosphere(1)
    meta = export.ExportMetadata.applied("preview", "silhouette inflation", {"seed": 5, "face_count": 3000,
                                                                              "geometry_steps": 50},
                                         ignored=["seed", "geometry_steps"])
    path = export.write_glb(tmp_path / "a.glb", unwrap(s.vertices, s.faces, 256), np.zeros((8, 8, 3), np.uint8), meta)
    extras = provenance.glb_extras(path)
    assert extras["settings"] == {"face_count": 3000}
    requested = {"job": "j1", "seed": 5, "settings": {"seed": 5, "face_count": 3000, "geometry_steps": 50},
                 "engine": "auto"}
    stamped = provenance.merged(requested, extras)
    assert stamped["job"] == "j1" and stamped["engine"] == "preview" and stamped["seed"] is None
    assert stamped["settings"] == {"face_count": 3000}
    assert stamped["ignored_settings"] == {"seed": 5, "geometry_steps": 50}
    # a GLB from elsewhere (or no GLB at all) leaves the requested provenance as it is
    assert provenance.glb_extras(assets / "meshes" / "Duck.glb") == {}
    assert provenance.glb_extras(tmp_path / "missing.glb") == {}
    assert provenance.merged(requested, {}) == requested
    assert provenance.GENERATOR == export.GENERATOR
