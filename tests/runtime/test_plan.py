import pytest

from backend.runtime.devices import GpuInfo
from backend.runtime.plan import geometry_peak_gb, make_plan, texture_peak_gb
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
    both = geometry_peak_gb(s) + texture_peak_gb(s) + 1
    tight = make_plan("multi", [gpu(0, both - 0.5), gpu(1, 70)], s)
    assert not tight.texture_on_geometry_gpu and tight.texture_devices == ("cuda:1",)
    assert make_plan("single", [gpu(0, 70)], s).texture_devices == ("cuda:0",)


def test_single_plan_fits_a_24gb_card_at_full_resolution_only_with_offload():
    s = defaults()
    card = [gpu(0, 23.0, 24)]
    assert max(geometry_peak_gb(s), texture_peak_gb(s)) + 1 <= 23.0
    assert make_plan("single", card, s).offload == "cpu"  # auto: both stages do not fit at once
    assert make_plan("single", [gpu(0, 79.0)], s).offload == "none"  # auto: an 80 GB card keeps both
    assert make_plan("single", card, s, offload="release").offload == "release"
    with pytest.raises(BackendError) as info:
        make_plan("single", card, s, offload="none")
    assert info.value.code == "out_of_memory" and "offload" in info.value.message


def test_refusal_says_what_would_fit():
    s = defaults()
    with pytest.raises(BackendError) as info:
        make_plan("single", [gpu(0, 15.0, 16)], s)
    assert info.value.code == "out_of_memory"
    assert "view_resolution 512 would fit" in info.value.message and "15.0 GB are free" in info.value.message
    ok = make_plan("single", [gpu(0, 15.0, 16)], {**s, "view_resolution": 512})
    assert ok.kind == "single"
    assert make_plan("single", [gpu(0, 9.0, 16)], {**s, "texture": False}).kind == "single"


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
    assert texture_peak_gb({**s, "view_resolution": 1024}) > texture_peak_gb(s) > texture_peak_gb({**s, "view_resolution": 512})
    assert geometry_peak_gb({**s, "octree_resolution": 512}) > geometry_peak_gb(s)
    assert geometry_peak_gb({**s, "model": "label"}) > geometry_peak_gb({**s, "model": "base"})
