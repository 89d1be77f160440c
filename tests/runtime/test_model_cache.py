"""ModelCache's prefetch: a stage's models load on a background thread while the job goes on; the
job's own `get` waits for that load instead of starting a second one."""
import threading

import pytest

from backend.runtime.models import ModelCache
from backend.runtime.plan import DevicePlan
from backend.runtime.weights import WeightsStatus
from shared.errors import BackendError

WAIT_S = 30


class Loader:
    """A model loader that blocks until released and records the thread it ran on."""

    def __init__(self, fail_first: bool = False):
        self.release, self.started = threading.Event(), threading.Event()
        self.threads: list[str] = []
        self.fail_first = fail_first

    def __call__(self, device):
        self.threads.append(threading.current_thread().name)
        self.started.set()
        assert self.release.wait(WAIT_S)
        if self.fail_first and len(self.threads) == 1:
            raise BackendError("weights_not_found", "the texture weights are cut short")
        return {"device": str(device), "load": len(self.threads)}


def cache(kind: str = "cpu", offload: str = "none") -> ModelCache:
    return ModelCache(DevicePlan(kind, "cpu", "cpu", offload), WeightsStatus("tiny"))


def test_get_waits_for_the_prefetch_and_loads_once():
    models, load = cache(), Loader()
    models.register("texture", "texture", load, lambda m: [])
    assert models.prefetch("texture")
    assert load.started.wait(WAIT_S)
    assert not models.prefetch("texture")  # already loading: not twice
    got = {}
    getter = threading.Thread(target=lambda: got.update(model=models.get("texture")), daemon=True)
    getter.start()
    getter.join(0.2)
    assert getter.is_alive(), "get returned before the load it depends on had ended"
    load.release.set()
    getter.join(WAIT_S)
    assert got["model"] == {"device": "cpu", "load": 1}
    assert load.threads == ["load-texture"] and models.loads == 1
    assert not models.prefetch("texture")  # loaded


def test_a_failed_prefetch_is_loaded_again_by_get_which_reports_its_own_error():
    models, load = cache(), Loader(fail_first=True)
    models.register("texture", "texture", load, lambda m: [])
    load.release.set()
    assert models.prefetch("texture")
    assert models.get("texture") == {"device": "cpu", "load": 2}
    assert load.threads == ["load-texture", threading.current_thread().name] and models.loads == 1

    broken = cache()
    broken.register("texture", "texture", lambda device: (_ for _ in ()).throw(
        BackendError("weights_not_found", "cut short")), lambda m: [])
    assert broken.prefetch("texture")
    with pytest.raises(BackendError) as info:
        broken.get("texture")
    assert info.value.code == "weights_not_found" and broken.loads == 0


def test_offloading_plans_load_one_stage_at_a_time():
    models, load = cache("single", "cpu"), Loader()
    models.register("texture", "texture", load, lambda m: [])
    assert not models.prefetch("texture")
    assert not load.started.is_set() and models.loads == 0
    resident = cache("single", "none")
    resident.register("texture", "texture", Loader(), lambda m: [])
    assert resident.prefetch("texture")  # both stages fit: the texture loads early
    resident._slots[("texture", "cpu")].load.release.set()
    resident.close()


def test_close_waits_for_a_load_in_flight_and_keeps_nothing():
    models, load = cache(), Loader()
    models.register("texture", "texture", load, lambda m: [])
    assert models.prefetch("texture")
    assert load.started.wait(WAIT_S)
    closer = threading.Thread(target=models.close, daemon=True)
    closer.start()
    closer.join(0.2)
    assert closer.is_alive(), "close returned while a model was still loading"
    load.release.set()
    closer.join(WAIT_S)
    assert not closer.is_alive()
    assert all(slot.model is None and slot.where == "unloaded" for slot in models._slots.values())


def test_loads_take_turns_so_accelerates_empty_weights_patch_is_undone():
    """Two loads that overlap under accelerate's `init_empty_weights` leave
    `nn.Module.register_parameter` swapped for good (later models built on the meta device)."""
    import torch
    from accelerate import init_empty_weights

    original = torch.nn.Module.register_parameter
    a_in, b_in = threading.Event(), threading.Event()

    def load_a(device):
        with init_empty_weights():
            a_in.set()
            b_in.wait(1.0)  # the other load enters meanwhile unless loads take turns
            return torch.nn.Linear(2, 2)

    def load_b(device):
        a_in.wait(WAIT_S)
        with init_empty_weights():
            b_in.set()
            threading.Event().wait(0.1)
            return torch.nn.Linear(2, 2)

    models = cache()
    models.register("a", "geometry", load_a, lambda m: [])
    models.register("b", "texture", load_b, lambda m: [])
    try:
        assert models.prefetch("a") and models.prefetch("b")
        assert models.get("a").weight.is_meta and models.get("b").weight.is_meta
        assert torch.nn.Module.register_parameter is original
        assert not torch.nn.Linear(2, 2).weight.is_meta
    finally:
        torch.nn.Module.register_parameter = original
