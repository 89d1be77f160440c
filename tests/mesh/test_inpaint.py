import numpy as np
import scipy.ndimage as ndi
import scipy.sparse as sp

from backend.mesh.bake import BakeOptions, bake
from backend.mesh.inpaint import inpaint, nearest_fill, propagate_vertex_colours, vertex_graph
from backend.mesh.uv import unwrap
from shared.views import CANONICAL_VIEWS

from .meshes import sphere


def _two_spheres():
    """A visible sphere and a small one hidden inside it: no view sees the inner one."""
    outer_v, outer_f = sphere(0.45, 24)
    inner_v, inner_f = sphere(0.1, 8)
    return np.concatenate([outer_v, inner_v]), np.concatenate([outer_f, inner_f + len(outer_v)])


def test_front_only_bake_is_completed_everywhere():
    verts, faces = _two_spheres()
    mesh = unwrap(verts, faces, 256)
    colour = np.array([0.3, 0.6, 0.9], np.float32)
    baked = bake(mesh, [np.broadcast_to(colour, (128, 128, 3))], [CANONICAL_VIEWS[0]], 256,
                 options=BakeOptions(edge_px=2))
    result = inpaint(mesh, baked)
    chart = result.chart
    assert result.baked.sum() > 0.2 * chart.sum()  # the front hemisphere of the outer sphere
    assert result.mesh_filled.sum() > 0.3 * chart.sum()  # the back, reached over the mesh
    assert result.image_filled.any()  # the hidden sphere: no seen vertex connects to it
    # no uncovered texel inside the charts, and no texel anywhere left unset
    assert (result.baked | result.mesh_filled | result.image_filled)[chart].all()
    assert not (result.baked & result.mesh_filled).any()
    # a constant colour stays constant through propagation, inpainting and padding
    np.testing.assert_allclose(result.texture, np.broadcast_to(colour, result.texture.shape), atol=1e-5)


def test_propagation_grows_fronts_over_the_graph():
    # path 0-1-2-3-4 with unit weights, plus vertex 5 on its own
    i, j = np.array([0, 1, 2, 3]), np.array([1, 2, 3, 4])
    graph = sp.coo_matrix((np.ones(8), (np.r_[i, j], np.r_[j, i])), shape=(6, 6)).tocsr()
    colours = np.zeros((6, 1))
    colours[0], colours[4] = 0.0, 1.0
    known = np.array([True, False, False, False, True, False])
    out, have = propagate_vertex_colours(graph, colours, known, relax_iterations=0)
    assert have.tolist() == [True] * 5 + [False]
    np.testing.assert_allclose(out[:5, 0], [0.0, 0.0, 0.5, 1.0, 1.0])  # two fronts meet at 2
    relaxed, _ = propagate_vertex_colours(graph, colours, known, relax_iterations=200)
    np.testing.assert_allclose(relaxed[:5, 0], [0.0, 0.25, 0.5, 0.75, 1.0], atol=1e-6)  # harmonic


def test_nearest_fill_takes_a_nearest_known_value():
    rng = np.random.default_rng(4)
    known = rng.random((64, 80)) < 0.03
    image = rng.random((64, 80, 2)).astype(np.float32)
    filled = nearest_fill(image.copy(), known)
    np.testing.assert_array_equal(filled[known], image[known])
    dist = ndi.distance_transform_edt(~known)
    rows, cols = np.nonzero(~known)
    for r, c in zip(rows[::37], cols[::37]):
        kr, kc = np.nonzero(known & np.all(image == filled[r, c], axis=-1))
        assert len(kr)  # the value comes from a known texel ...
        assert np.hypot(kr - r, kc - c).min() <= dist[r, c] * 1.1 + 1.0  # ... about the nearest one


def test_vertex_graph_weights_each_edge_once():
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 2, 0], [1, 1, 0]], float)
    graph = vertex_graph(v, np.array([[0, 1, 2], [1, 3, 2]])).toarray()  # edge 1-2 is shared
    want = np.zeros((4, 4))
    for a, b, w in ((0, 1, 1.0), (0, 2, 0.25), (1, 2, 0.2), (1, 3, 1.0), (2, 3, 0.5)):
        want[a, b] = want[b, a] = w
    np.testing.assert_allclose(graph, want)
