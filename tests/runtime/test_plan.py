from pathlib import Path

import pytest

from backend.runtime.devices import GpuInfo
from backend.runtime.plan import MARGIN_GIB, MEASURED_GIB, geometry_peak_gib, make_plan, texture_peak_gib
from shared.errors import BackendError
from shared.settings import defaults

GIB = 1024**3


def gpu(index, free_gb, total_gb=80):
    return GpuInfo(index, "GPU", int(total_gb * GIB), int(free_gb * GIB))


def test_auto_picks_by_gpu_count():
    s = defaults()
    assert make_plan("auto", [], s).kind == "cpu"
    single = make_plan("auto", [gpu(0, 70)], s)
    assert (single.kind, single.geometry_device, single.texture_device) == ("single", "cuda:0", "cuda:0")
    multi = make_plan("auto", [gpu(0, 70), gpu(1, 70)], s)
    assert (multi.kind, multi.geometry_device, multi.texture_device) == ("multi", "cuda:0", "cuda:1")
    swapped = make_plan("multi", [gpu(0, 70), gpu(1, 70)], s, geometry_gpu=1, texture_gpu=0)
    assert (swapped.geometry_device, swapped.texture_device) == ("cuda:1", "cuda:0")


def test_multi_plan_paints_on_the_geometry_gpu_only_when_both_stages_fit_there():
    s = defaults()
    roomy = make_plan("multi", [gpu(0, 70), gpu(1, 70)], s)
    assert roomy.texture_on_geometry_gpu and roomy.texture_devices == ("cuda:1", "cuda:0")
    assert "when it has no geometry to run" in roomy.describe()
    both = geometry_peak_gib(s) + texture_peak_gib(s) + MARGIN_GIB
    tight = make_plan("multi", [gpu(0, both - 0.5), gpu(1, 70)], s)
    assert not tight.texture_on_geometry_gpu and tight.texture_devices == ("cuda:1",)
    assert make_plan("single", [gpu(0, 70)], s).texture_devices == ("cuda:0",)


# plan.py's MEASURED_GIB: benchmarks/RESULTS.md, "One H200, 2026-12-04", "Memory and smaller cards"
# (benchmarks/memory.py, base model, octree 384, 768 px). An emulated card of N GiB shows the plan N - context free.
M = MEASURED_GIB
CONTEXT = M["context"]
MEASURED = {  # what the estimate should reproduce: (estimate, measured GiB, tolerance GiB)
    "texture 768 px, torch reserved under a 15.3 GiB cap (completes)": ("texture", M["texture_reserved_capped"], 0.3),
    "geometry, torch reserved under the cap": ("geometry", M["geometry_reserved_capped"], 0.3),
}
BASE = {"model": "base", "octree_resolution": 384, "view_resolution": 768}


def emulated(card_gib):
    return [gpu(0, card_gib - CONTEXT, card_gib)]


def test_the_recorded_figures_are_the_measured_ones():
    """Each figure the estimates are fitted to stands in RESULTS.md, where a command printed it."""
    results = (Path(__file__).resolve().parents[2] / "benchmarks" / "RESULTS.md").read_text()
    assert all(f"{value:.2f}" in results for value in M.values()), M


@pytest.mark.parametrize("name", MEASURED)
def test_estimates_agree_with_the_measurements(name):
    stage, measured, tolerance = MEASURED[name]
    s = {**defaults(), **BASE}
    estimate = geometry_peak_gib(s) if stage == "geometry" else texture_peak_gib(s)
    assert abs(estimate - measured) <= tolerance, (name, estimate, measured)


def test_estimates_cover_what_the_device_held():
    s = {**defaults(), **BASE}
    assert geometry_peak_gib(s) >= M["geometry_allocated"]  # the geometry stage's own max_memory_allocated
    # Memory outside torch's reserve at the emulated 16 GiB card's peak must fit in the margin; the context
    # itself is not charged (the free reading lacks it).
    assert M["card16_device_peak"] - CONTEXT - M["texture_reserved_capped"] <= MARGIN_GIB <= 1.0
    # Both stages resident on the whole H200 (fast paths), context included at the device.
    assert geometry_peak_gib(s) + texture_peak_gib(s) + MARGIN_GIB >= M["resident_device_peak"] - CONTEXT
    # Uncapped, the caching allocator keeps more than the capped estimate: a cap is what the plan models.
    assert texture_peak_gib(s) < M["texture_reserved_uncapped"]


def test_a_24gib_card_keeps_offloading_at_full_resolution():
    s = defaults()
    card = emulated(24)
    assert make_plan("single", card, s).offload == "cpu"  # auto: both stages do not fit at once (measured: completes)
    assert make_plan("single", card, {**s, **BASE}).offload == "cpu"
    assert make_plan("single", [gpu(0, 79.0)], s).offload == "none"  # auto: an 80 GB card keeps both
    assert make_plan("single", card, s, offload="release").offload == "release"
    with pytest.raises(BackendError) as info:
        make_plan("single", card, s, offload="none")
    assert info.value.code == "out_of_memory" and "offload" in info.value.message


def test_a_16gib_card_runs_768_px_with_offload():
    s = defaults()
    plan = make_plan("single", emulated(16), s)  # measured: completes, device peak 15.78 GiB
    assert (plan.kind, plan.offload) == ("single", "cpu")
    assert make_plan("single", emulated(16), s, offload="cpu").offload == "cpu"
    with pytest.raises(BackendError) as info:
        make_plan("single", emulated(16), s, offload="none")
    assert info.value.code == "out_of_memory" and "offload" in info.value.message


def test_refusal_says_what_would_fit():
    s = defaults()
    with pytest.raises(BackendError) as info:
        make_plan("single", [gpu(0, 15.0, 16)], s)  # a 16 GiB card with a display on it
    assert info.value.code == "out_of_memory"
    assert "view_resolution 640 would fit" in info.value.message and "15.0 GiB are free" in info.value.message
    assert make_plan("single", [gpu(0, 15.0, 16)], {**s, "view_resolution": 640}).kind == "single"
    with pytest.raises(BackendError) as info:
        make_plan("single", emulated(8), s)
    assert info.value.code == "out_of_memory" and "7.3 GiB are free" in info.value.message
    assert "no view resolution fits, only the cpu plan would fit" in info.value.message
    with pytest.raises(BackendError) as info:
        make_plan("single", [gpu(0, 9.5, 12)], {**s, **BASE})
    assert "geometry alone (texture off) would fit" in info.value.message
    assert make_plan("single", [gpu(0, 9.5, 12)], {**s, **BASE, "texture": False}).kind == "single"
    with pytest.raises(BackendError) as info:
        make_plan("single", emulated(8), {**s, "texture": False})
    assert "only the cpu plan would fit" in info.value.message


@pytest.mark.parametrize("kind, gpus, kwargs, code", [
    ("single", [], {}, "engine_unavailable"),
    ("multi", [gpu(0, 70)], {}, "engine_unavailable"),
    ("multi", [gpu(0, 70), gpu(1, 70)], {"geometry_gpu": 1, "texture_gpu": 1}, "invalid_setting"),
    ("single", [gpu(0, 70)], {"geometry_gpu": 3}, "invalid_setting"),
    ("multi", [gpu(0, 70), gpu(1, 5)], {}, "out_of_memory"),
    ("fastest", [gpu(0, 70)], {}, "invalid_setting"),
])
def test_impossible_plans_are_refused_up_front(kind, gpus, kwargs, code):
    with pytest.raises(BackendError) as info:
        make_plan(kind, gpus, defaults(), **kwargs)
    assert info.value.code == code


def test_memory_estimates_grow_with_resolution():
    s = defaults()
    assert texture_peak_gib({**s, "view_resolution": 1024}) > texture_peak_gib(s) > texture_peak_gib({**s, "view_resolution": 512})
    assert geometry_peak_gib({**s, "octree_resolution": 512}) > geometry_peak_gib(s)
    assert geometry_peak_gib({**s, "model": "label"}) > geometry_peak_gib({**s, "model": "base"})


def test_plan_choices_say_which_plan_fits_which_goal():
    from backend.runtime.plan import plan_choices

    s = defaults()
    two = {c.kind: c for c in plan_choices([gpu(0, 70), gpu(1, 70)], s)}
    assert [k for k, c in two.items() if c.fits] == ["single", "multi", "split", "cpu"]
    assert "throughput" in two["multi"].goal and "latency" in two["split"].goal
    assert two["split"].detail == make_plan("split", [gpu(0, 70), gpu(1, 70)], s).describe()
    one = {c.kind: c for c in plan_choices([gpu(0, 70)], s)}
    assert [k for k, c in one.items() if c.fits] == ["single", "cpu"]
    assert "needs two GPUs" in one["split"].detail and "needs two GPUs" in one["multi"].detail
    small = {c.kind: c for c in plan_choices([gpu(0, 8, 8), gpu(1, 8, 8)], s)}
    assert [k for k, c in small.items() if c.fits] == ["cpu"]
    assert "needs about" in small["single"].detail  # what it needs, as make_plan refuses it
