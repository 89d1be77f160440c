"""Coarser levels of detail that share the full-resolution mesh's texture.

Each level halves the face count of the previous one with pymeshlab's texture-aware quadric
collapse, which carries per-corner (wedge) UVs through the collapses and penalises moving them,
so the coarse meshes keep sampling the same atlas. pymeshlab takes the seam-split mesh with
per-vertex UVs, moves them to the corners and re-welds the exact duplicates (the input is welded
by `backend.mesh.clean` first, so only seam copies coincide); seams are recovered afterwards by
splitting a vertex wherever its corners disagree on the UV.
"""
from __future__ import annotations

import numpy as np

from backend.mesh.uv import UVMesh, smooth_vertex_normals

WELD_PERCENT = 1e-6  # of the bounding-box diagonal: merges only the seam copies of one vertex
UV_DECIMALS = 6  # corners closer than this in UV are one vertex (1e-6 is far below a texel of 8192)
UV_WEIGHT = 4.0  # weight of UV distortion in the collapse cost; 4 moved half as many pixels' UVs as 1


def from_wedges(vertices: np.ndarray, faces: np.ndarray, wedge_uv: np.ndarray) -> UVMesh:
    """A seam-split UVMesh from a welded mesh with per-corner UVs (F * 3, 2)."""
    corner_vertex = faces.reshape(-1).astype(np.int64)
    key = np.concatenate([corner_vertex[:, None].astype(np.float64), np.round(wedge_uv, UV_DECIMALS)], axis=1)
    unique, inverse = np.unique(key, axis=0, return_inverse=True)
    vmapping = unique[:, 0].astype(np.int64)
    normals = smooth_vertex_normals(vertices, faces.astype(np.int64))
    return UVMesh(vertices=vertices[vmapping].astype(np.float32), faces=inverse.reshape(-1, 3).astype(np.int32),
                  uv=unique[:, 1:].astype(np.float32), vmapping=vmapping, normals=normals[vmapping])


def decimate_with_uvs(mesh: UVMesh, face_budget: int) -> UVMesh:
    import pymeshlab  # imported lazily: it clashes with bpy when loaded first in one process

    ms = pymeshlab.MeshSet()
    ms.add_mesh(pymeshlab.Mesh(np.asarray(mesh.vertices, np.float64), np.asarray(mesh.faces, np.int32),
                               v_tex_coords_matrix=np.asarray(mesh.uv, np.float64)))
    ms.compute_texcoord_transfer_vertex_to_wedge()
    ms.meshing_merge_close_vertices(threshold=pymeshlab.PercentageValue(WELD_PERCENT))
    ms.meshing_decimation_quadric_edge_collapse_with_texture(
        targetfacenum=int(face_budget), qualitythr=0.3, extratcoordw=UV_WEIGHT, preserveboundary=True,
        optimalplacement=True, preservenormal=True)
    ms.meshing_remove_unreferenced_vertices()
    m = ms.current_mesh()
    return from_wedges(m.vertex_matrix(), m.face_matrix(), m.wedge_tex_coord_matrix())


def lod_chain(mesh: UVMesh, levels: int, ratio: float = 0.5) -> list[UVMesh]:
    """Up to `levels` meshes, each with about `ratio` times the faces of the one before; the chain
    stops where a mesh cannot be coarsened (many small open parts whose boundaries are kept)."""
    chain, current = [], mesh
    for _ in range(levels):
        target = max(int(len(current.faces) * ratio), 4)
        if target >= len(current.faces):
            break
        coarser = decimate_with_uvs(current, target)
        if len(coarser.faces) >= len(current.faces):
            break
        chain.append(current := coarser)
    return chain
