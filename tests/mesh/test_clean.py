"""The torch clean-up against plain references: scipy's connected components, numpy's unique rows,
and the same clean-up on the GPU against the CPU."""
import numpy as np
import pytest
import torch
import trimesh
from scipy import sparse
from scipy.sparse import csgraph

from backend.mesh.clean import clean, face_components, large_parts, weld


def _scipy_face_labels(faces: np.ndarray, vertex_count: int) -> np.ndarray:
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]]])
    graph = sparse.coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(vertex_count,) * 2)
    return csgraph.connected_components(graph, directed=False)[1][faces[:, 0]]


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Two labelings group the faces alike when each label of one maps to exactly one of the other."""
    pairs = np.unique(np.stack([a, b], 1), axis=0)
    return len(pairs) == len(np.unique(a)) == len(np.unique(b))


@pytest.mark.parametrize("seed", range(6))
def test_components_match_scipy_on_random_graphs(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 3000))
    # sparse random faces give many components; a shuffled long strip gives a deep one
    faces = rng.integers(0, n, size=(int(rng.integers(1, n // 2)), 3))
    strip = rng.permutation(n)
    faces = np.concatenate([faces, np.stack([strip[:-2], strip[1:-1], strip[2:]], 1)[: int(rng.integers(0, n))]])
    labels = face_components(faces, n).numpy()
    reference = _scipy_face_labels(faces, n)
    assert _same_partition(labels, reference)
    # labels are the smallest vertex id of their component
    for label in np.unique(labels)[:20]:
        assert label == faces[labels == label].min()


def test_weld_without_packing_matches_unique_rows():
    """A tolerance so fine that cell indices need more than 21 bits takes the unique-rows path."""
    s = trimesh.creation.icosphere(2)
    soup = s.vertices[s.faces].reshape(-1, 3)
    v, f = weld(soup, np.arange(len(soup)).reshape(-1, 3), tolerance=1e-9)
    assert len(v) == len(np.unique(soup.astype(np.float32), axis=0)) == len(s.vertices)
    np.testing.assert_allclose(v.numpy()[f.numpy()].reshape(-1, 3), soup, atol=1e-6)


@pytest.mark.cuda
def test_clean_on_the_gpu_equals_the_cpu():
    s = trimesh.creation.torus(0.6, 0.2, major_sections=64, minor_sections=32)
    speck = trimesh.creation.icosphere(1, radius=0.01)
    soup = np.concatenate([s.vertices[s.faces].reshape(-1, 3), speck.vertices + 2.0])
    faces = np.concatenate([np.arange(len(s.faces) * 3).reshape(-1, 3), speck.faces + len(s.faces) * 3])
    cpu = clean(soup, faces)
    gpu = clean(torch.from_numpy(soup).cuda(), torch.from_numpy(faces).cuda())
    np.testing.assert_array_equal(cpu[1], gpu[1])
    np.testing.assert_allclose(cpu[0], gpu[0], atol=1e-7)
    assert len(cpu[1]) == len(s.faces)


def _parts(rng: np.random.Generator):
    """A multi-part mesh with its vertices shared, as after welding: a large open sheet, closed
    spheres of several sizes, big flat parts with few faces, and small parts that touch another
    part at a single vertex only (separate parts for MeshLab, which connects faces by edges)."""
    def sheet(n, scale, offset):
        xs = np.linspace(0, 1, n + 1)
        gx, gy = np.meshgrid(xs, xs)
        v = np.stack([gx.ravel(), gy.ravel(), np.zeros(gx.size)], 1) * scale + offset
        i = np.arange((n + 1) ** 2).reshape(n + 1, n + 1)
        a, b, c, d = i[:-1, :-1].ravel(), i[:-1, 1:].ravel(), i[1:, 1:].ravel(), i[1:, :-1].ravel()
        return v, np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])

    def fan(k, centre, tip):
        """k triangles around `tip` (its vertex 0), raised out of the sheet's plane."""
        ang = np.linspace(0, np.pi, k + 1)
        rim = np.stack([np.cos(ang), np.sin(ang), np.ones_like(ang)], 1) * 0.01 + centre
        return np.concatenate([[tip], rim]), np.stack([np.zeros(k, int), np.arange(1, k + 1), np.arange(2, k + 2)], 1)

    pieces = [sheet(int(rng.integers(60, 90)), 1.0, 0.0)]
    for _ in range(int(rng.integers(3, 8))):
        s = trimesh.creation.icosphere(int(rng.integers(0, 3)), radius=float(rng.uniform(0.001, 0.05)))
        pieces.append((s.vertices + rng.uniform(2, 5, 3), s.faces))
    pieces.append(sheet(2, 100.0, 10.0))  # 8 faces of huge area
    v, f = np.concatenate([p[0] for p in pieces]), np.concatenate(
        [p[1] + n for p, n in zip(pieces, np.cumsum([0] + [len(p[0]) for p in pieces[:-1]]))])
    for k in (int(rng.integers(1, 30)), int(rng.integers(1, 30))):  # fans sharing one sheet vertex
        tip = int(rng.integers(0, len(pieces[0][0])))
        fv, ff = fan(k, v[tip] + [0, 0, 0.02], v[tip])
        ff = np.where(ff == 0, tip, ff - 1 + len(v))
        v, f = np.concatenate([v, fv[1:]]), np.concatenate([f, ff])
    return v, f


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("ratio", [0.001, 0.002, 0.01])
def test_floater_rule_is_pymeshlabs_small_component_selection(seed, ratio):
    """The release's remove_floater: pymeshlab selects the parts with fewer faces than `ratio`
    times the largest part's (nbfaceratio) and removes them; area plays no part."""
    import pymeshlab

    v, f = _parts(np.random.default_rng(seed))
    ms = pymeshlab.MeshSet()
    ms.add_mesh(pymeshlab.Mesh(v, f))
    ms.apply_filter("compute_selection_by_small_disconnected_components_per_face", nbfaceratio=ratio)
    dropped = ms.current_mesh().face_selection_array()
    kept = np.zeros(len(f), bool)
    kept[large_parts(f, len(v), ratio).numpy()] = True
    assert dropped.any() and not dropped.all()
    np.testing.assert_array_equal(kept, ~dropped)


def test_small_parts_by_face_count_not_by_area():
    """A 5120-face body with a 20-face button (tiny area) and a 4-face panel (large area): at the
    release's 0.1 % the button stays and the panel goes."""
    body = trimesh.creation.icosphere(4)  # 5120 faces
    button = trimesh.creation.icosphere(0, radius=0.002)  # 20 faces, 1e-6 of the body's area
    panel = trimesh.Trimesh([[0, 0, 0], [9, 0, 0], [9, 9, 0], [0, 9, 0], [4, 4, 0]],
                            [[0, 1, 4], [1, 2, 4], [2, 3, 4], [3, 0, 4]])  # 4 faces, 25x the body's area
    parts = [body, button.apply_translation([0, 0, 1.01]), panel.apply_translation([3, 0, 0])]
    mesh = trimesh.util.concatenate(parts)
    v, f = clean(mesh.vertices, mesh.faces, min_part_fraction=0.001)
    assert len(f) == len(body.faces) + len(button.faces)
