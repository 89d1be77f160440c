"""The torch clean-up against plain references: scipy's connected components, numpy's unique rows,
and the same clean-up on the GPU against the CPU."""
import numpy as np
import pytest
import torch
import trimesh
from scipy import sparse
from scipy.sparse import csgraph

from backend.mesh.clean import clean, face_components, weld


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
