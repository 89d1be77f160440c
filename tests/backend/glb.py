"""Reading a GLB the backend wrote back into the toolkit's types, for render-based checks."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import trimesh

from backend.mesh.uv import UVMesh


def load_textured(path: Path) -> tuple[UVMesh, np.ndarray | None]:
    scene = trimesh.load(path)
    mesh = next(iter(scene.geometry.values()))
    material = mesh.visual.material
    texture = None
    if getattr(material, "baseColorTexture", None) is not None:
        texture = np.asarray(material.baseColorTexture.convert("RGB"), np.float32) / 255.0
    uv = UVMesh(np.asarray(mesh.vertices, np.float32), np.asarray(mesh.faces, np.int32),
                np.asarray(mesh.visual.uv, np.float32), np.arange(len(mesh.vertices)),
                np.asarray(mesh.vertex_normals, np.float32))
    return uv, texture


def gltf_json(path: Path) -> dict:
    data = Path(path).read_bytes()
    magic, version, _ = struct.unpack_from("<4sII", data)
    assert magic == b"glTF" and version == 2
    length, kind = struct.unpack_from("<I4s", data, 12)
    assert kind == b"JSON"
    return json.loads(data[20:20 + length])
