"""GLB export with a glTF PBR material, written atomically, with provenance.

Choices that viewers get wrong otherwise (anchors-mesh.md §6): metallicFactor and roughnessFactor
are always written (glTF's default metallic is 1.0, which renders a plain albedo as dark metal);
normals come from the welded mesh so UV seams do not crease the shading; the base-colour image is
stored unchanged as sRGB; trimesh flips V on export, so UVs are kept in the OBJ convention here.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import trimesh
from PIL import Image

from shared.errors import BackendError

from .uv import UVMesh

GENERATOR = "Step1X-3D for Blender"


@dataclass
class ExportMetadata:
    """Provenance written into the glTF asset block (`asset.extras`).

    `settings` holds only what the engine applied; `ignored` the requested settings it did not
    use (with their values), so nobody reads a setting off an asset that never influenced it."""

    engine: str
    model: str
    settings: dict[str, Any]
    seed: int | None = None
    source_image: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    ignored: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def applied(cls, engine: str, model: str, settings: dict[str, Any], ignored: Iterable[str] = (),
                source_image: str | None = None, **extra: Any) -> "ExportMetadata":
        """Split the job's `settings` into applied and `ignored`; the seed is recorded only when applied."""
        used, skipped = split_settings(settings, ignored)
        return cls(engine, model, used, seed=used.get("seed"), source_image=source_image, extra=extra,
                   ignored=skipped)

    def as_extras(self) -> dict[str, Any]:
        return {
            "ai_generated": True,
            "engine": self.engine,
            "model": self.model,
            "seed": self.seed,
            "settings": self.settings,
            "ignored_settings": self.ignored,
            "source_image": self.source_image,
            **self.extra,
        }


def split_settings(settings: dict[str, Any], ignored: Iterable[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(applied, ignored) halves of `settings`."""
    names = set(ignored)
    return ({k: v for k, v in settings.items() if k not in names},
            {k: v for k, v in settings.items() if k in names})


def _material(texture: np.ndarray | None, name: str) -> trimesh.visual.material.PBRMaterial:
    image = None if texture is None else Image.fromarray(np.ascontiguousarray(texture[..., :3]), "RGB")
    return trimesh.visual.material.PBRMaterial(
        name=name,
        baseColorTexture=image,
        baseColorFactor=[255, 255, 255, 255] if image is not None else [200, 200, 200, 255],
        metallicFactor=0.0,
        roughnessFactor=1.0,
        doubleSided=False,
    )


def _trimesh(mesh: UVMesh, material: trimesh.visual.material.PBRMaterial) -> trimesh.Trimesh:
    tm = trimesh.Trimesh(mesh.vertices, mesh.faces, vertex_normals=mesh.normals, process=False)
    tm.visual = trimesh.visual.TextureVisuals(uv=mesh.uv, material=material)
    return tm


def write_glb(
    path: str | os.PathLike,
    mesh: UVMesh,
    texture: np.ndarray | None,
    metadata: ExportMetadata,
    lods: list[UVMesh] | None = None,
    name: str = "asset",
) -> Path:
    """Write `mesh` (+ optional coarser LODs sharing the texture) as one GLB; returns the path.

    LOD meshes become sibling nodes named `<name>_LOD1..n` so importers keep them apart and a game
    engine's LOD group can pick them up by suffix.
    """
    path = Path(path)
    material = _material(texture, f"{name}_material")
    scene = trimesh.Scene()
    scene.add_geometry(_trimesh(mesh, material), node_name=name, geom_name=name)
    for level, lod in enumerate(lods or [], start=1):
        scene.add_geometry(_trimesh(lod, material), node_name=f"{name}_LOD{level}", geom_name=f"{name}_LOD{level}")

    def provenance(tree: dict) -> None:
        tree["asset"]["generator"] = GENERATOR
        tree["asset"]["extras"] = metadata.as_extras()

    data = trimesh.exchange.gltf.export_glb(scene, include_normals=True, tree_postprocessor=provenance)
    write_atomically(path, data)
    return path


def write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename: readers never see half a file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    except OSError as exc:
        raise BackendError("output_unwritable", f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; a result is an ordinary file
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise BackendError("output_unwritable", f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
