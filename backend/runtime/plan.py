"""Device plans: which device runs which stage, and whether the plan fits before any job starts.

- `single`: one GPU, stages in turn; when both stages do not fit at once, the idle stage's models
  go to page-locked host memory (backend/runtime/offload.py) or are freed, so the peak is the
  larger stage, not the sum. offload=auto keeps
  both resident when they fit (moving 9 GB of weights per job costs seconds).
- `multi`: geometry and texture on two GPUs, both resident; jobs are pipelined (backend/lanes.py),
  and when the geometry GPU also fits a texture copy it paints whenever it has no geometry to run,
  since texturing takes about four times as long as geometry and would otherwise bound throughput.
- `split`: one job on two GPUs: both stages on the first, and each denoising step's conditional
  half of the classifier-free-guidance batch on a replica on the second (backend/runtime/cfg_split.py):
  the lowest latency for one job; `multi` gives more jobs per minute.
- `cpu`: everything on the CPU in float32 (tests, tiny configurations).
A plan that cannot fit is refused up front with what would fit instead, rather than failing with
out-of-memory halfway through a job.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from shared.errors import BackendError

from .devices import GpuInfo

PLANS = ("auto", "single", "multi", "split", "cpu")
# What each plan is for, as `info` tells it (auto picks single on one GPU, multi on two).
GOALS = {
    "single": "one GPU, jobs one after another",
    "multi": "two GPUs, throughput of many jobs (geometry and texture apart, jobs pipelined)",
    "split": "two GPUs, latency of one job (each guided step halved across them)",
    "cpu": "no GPU, float32 on the CPU (tiny configurations; far too slow for the full models)",
}
OFFLOAD = ("auto", "cpu", "release", "none")
GIB = 1024**3

# What the estimates below are fitted to, in GiB (2**30 bytes): benchmarks/RESULTS.md, "One H200,
# 2026-12-04", "Memory and smaller cards" (benchmarks/memory.py: full-size random weights, base model,
# octree 384, 768 px views, 2 jobs; an emulated card caps torch's allocator at the card minus the context).
MEASURED_GIB = {
    "context": 0.70,  # CUDA context + cuBLAS, outside torch's allocator; mem_get_info's free reading excludes it
    "geometry_allocated": 6.55,  # geometry benchmark, max_memory_allocated of the whole stage
    "geometry_reserved_capped": 8.75,  # torch reserved in the geometry stage, --card 16 and --card 24
    "texture_reserved_capped": 14.70,  # --card 16 --offload cpu: allocator capped at 15.3 GiB; completes
    "texture_reserved_uncapped": 17.66,  # --card 24: the caching allocator keeps what it may
    "card16_device_peak": 15.78,  # --card 16, job 1, device used over idle (context included), under 16 GiB
    "resident_device_peak": 23.14,  # both stages resident, fast paths, whole H200, device used over idle
}
# Memory the device holds at the peak beyond torch's reserve and the context (workspaces, warp):
# 15.78 - 0.70 - 14.70 = 0.38 GiB on the emulated 16 GiB card, rounded up with some slack. The context
# itself is not charged: the plan compares against the free reading, which already lacks it.
MARGIN_GIB = 0.5


def geometry_peak_gib(settings: Mapping[str, Any]) -> float:
    """bf16 weights (DiT 2.4, VAE 0.4, DINO 0.55 GiB; label model: + CLIP 0.85) + the float32 SDF lattice,
    which grows with the cube of the octree resolution, + activations and the allocator's cache, fitted so
    that the base model at octree 384 gives the reserve measured under a cap (MEASURED_GIB)."""
    weights = 3.35 + (0.85 if settings.get("model", "label") == "label" else 0.0)
    lattice = (int(settings.get("octree_resolution", 384)) + 1) ** 3 * 4 * 3 / GIB
    return weights + 4.76 + lattice


def texture_peak_gib(settings: Mapping[str, Any]) -> float:
    """fp16 weights (UNet 4.75, text encoders 1.5, adapter 1.65, VAE 0.3 GiB) + the batch-12 UNet
    activations and the reference cache, both proportional to the view area, fitted so that 768 px gives
    the reserve measured under a 15.3 GiB cap (MEASURED_GIB; uncapped the allocator keeps more)."""
    if not settings.get("texture", True):
        return 0.0
    area = (int(settings.get("view_resolution", 768)) / 768.0) ** 2
    return 8.2 + 6.5 * area


@dataclass(frozen=True)
class DevicePlan:
    kind: str
    geometry_device: str
    texture_device: str
    offload: str = "none"
    texture_on_geometry_gpu: bool = False  # multi: a second texture copy on the geometry GPU
    cfg_device: str = ""  # split: where the conditional half of each guided step runs

    @property
    def texture_devices(self) -> tuple[str, ...]:
        """Where texturing may run, preferred first."""
        spare = (self.geometry_device,) if self.texture_on_geometry_gpu else ()
        return (self.texture_device, *spare)

    @property
    def on_gpu(self) -> bool:
        return self.geometry_device.startswith("cuda")

    def describe(self) -> str:
        if self.kind == "cpu":
            return "cpu: every stage on the CPU (float32)"
        if self.kind == "single":
            idle = "both stages resident" if self.offload == "none" else f"idle models offloaded ({self.offload})"
            return f"single: geometry then texture on {self.geometry_device}, {idle}"
        if self.kind == "split":
            return (f"split: geometry then texture on {self.geometry_device}, the conditional half of every guided "
                    f"step on {self.cfg_device}, all resident")
        spare = f" (and on {self.geometry_device} when it has no geometry to run)" if self.texture_on_geometry_gpu else ""
        return f"multi: geometry on {self.geometry_device}, texture on {self.texture_device}{spare}, all resident"


def _free_gib(gpu: GpuInfo) -> float:
    return gpu.free_bytes / GIB


def _largest_view_that_fits(budget_gib: float, settings: Mapping[str, Any]) -> int | None:
    for size in (1024, 896, 768, 640, 512, 384):
        if texture_peak_gib({**settings, "view_resolution": size}) + MARGIN_GIB <= budget_gib:
            return size
    return None


def _what_fits(gpu: GpuInfo, settings: Mapping[str, Any]) -> str:
    """The nearest setting that would fit this GPU, as advice for a refusal."""
    if not settings.get("texture", True):
        return "; only the cpu plan would fit"
    size = _largest_view_that_fits(_free_gib(gpu), settings)
    if size:
        return f"; view_resolution {size} would fit"
    if geometry_peak_gib(settings) + MARGIN_GIB <= _free_gib(gpu):
        return "; no view resolution fits, geometry alone (texture off) would fit"
    return "; no view resolution fits, only the cpu plan would fit"


def _refuse(what: str, need: float, gpu: GpuInfo, settings: Mapping[str, Any], hint: str = "") -> BackendError:
    return BackendError("out_of_memory",
                        f"{what} needs about {need:.1f} GiB on cuda:{gpu.index} and {_free_gib(gpu):.1f} GiB are free"
                        f"{_what_fits(gpu, settings)}{hint}")


def make_plan(kind: str, gpus: list[GpuInfo], settings: Mapping[str, Any], *, geometry_gpu: int | None = None,
              texture_gpu: int | None = None, offload: str = "auto") -> DevicePlan:
    """Choose or check a plan for `settings` on `gpus`; raises a coded error saying what would fit."""
    if kind not in PLANS:
        raise BackendError("invalid_setting", f"device plan must be one of {', '.join(PLANS)}; got {kind!r}")
    if offload not in OFFLOAD:
        raise BackendError("invalid_setting", f"offload must be one of {', '.join(OFFLOAD)}; got {offload!r}")
    if kind == "auto":
        kind = "cpu" if not gpus else ("multi" if len(gpus) >= 2 else "single")
    if kind == "cpu":
        return DevicePlan("cpu", "cpu", "cpu", "none")
    by_index = {g.index: g for g in gpus}
    if not gpus:
        raise BackendError("engine_unavailable", f"the {kind} plan needs a CUDA GPU and none was found; use the cpu plan")
    geo = by_index.get(geometry_gpu if geometry_gpu is not None else gpus[0].index)
    if geo is None:
        raise BackendError("invalid_setting", f"no GPU cuda:{geometry_gpu}; found {', '.join(str(i) for i in by_index)}")
    geo_need, tex_need = geometry_peak_gib(settings), texture_peak_gib(settings)
    if kind == "single":
        if offload == "auto":
            offload = "none" if geo_need + tex_need + MARGIN_GIB <= _free_gib(geo) else "cpu"
        need = (max(geo_need, tex_need) if offload != "none" else geo_need + tex_need) + MARGIN_GIB
        if need > _free_gib(geo):
            raise _refuse("the single plan", need, geo, settings,
                          "" if offload != "none" else "; offloading idle models (offload cpu) would lower the peak")
        return DevicePlan("single", f"cuda:{geo.index}", f"cuda:{geo.index}", offload)
    if len(gpus) < 2:
        raise BackendError("engine_unavailable", f"the {kind} plan needs two GPUs and one was found; use the single plan")
    default_tex = next(g.index for g in gpus if g.index != geo.index)
    tex = by_index.get(texture_gpu if texture_gpu is not None else default_tex)
    if tex is None or tex.index == geo.index:
        raise BackendError("invalid_setting", f"the {kind} plan needs two different GPUs")
    if kind == "split":  # both stages resident on each GPU (the second holds the networks' replicas)
        for gpu in (geo, tex):
            if geo_need + tex_need + MARGIN_GIB > _free_gib(gpu):
                raise _refuse("the split plan", geo_need + tex_need + MARGIN_GIB, gpu, settings)
        return DevicePlan("split", f"cuda:{geo.index}", f"cuda:{geo.index}", "none", cfg_device=f"cuda:{tex.index}")
    if geo_need + MARGIN_GIB > _free_gib(geo):
        raise _refuse("geometry", geo_need + MARGIN_GIB, geo, settings)
    if tex_need + MARGIN_GIB > _free_gib(tex):
        raise _refuse("texture", tex_need + MARGIN_GIB, tex, settings)
    spare = geo_need + tex_need + MARGIN_GIB <= _free_gib(geo)
    return DevicePlan("multi", f"cuda:{geo.index}", f"cuda:{tex.index}", "none", texture_on_geometry_gpu=spare)


@dataclass(frozen=True)
class PlanChoice:
    """One plan as `info` lists it: what it is for, and whether it fits this machine."""

    kind: str
    goal: str
    fits: bool
    detail: str  # the plan's description, or why it is refused


def plan_choices(gpus: list[GpuInfo], settings: Mapping[str, Any], *, geometry_gpu: int | None = None,
                 texture_gpu: int | None = None, offload: str = "auto") -> list[PlanChoice]:
    """Every plan for `settings` on `gpus`, checked as `make_plan` checks it."""
    choices = []
    for kind, goal in GOALS.items():
        try:
            plan = make_plan(kind, gpus, settings, geometry_gpu=geometry_gpu, texture_gpu=texture_gpu, offload=offload)
            choices.append(PlanChoice(kind, goal, True, plan.describe()))
        except BackendError as err:
            choices.append(PlanChoice(kind, goal, False, err.message))
    return choices
