"""Training configuration: one JSON or YAML file, checked strictly against these dataclasses.

    task: shape_vae | geometry_dit | texture_adapter
    output_dir: runs/my-run
    loop:  {steps, batch_size, grad_accum, mixed_precision, gradient_checkpointing, ...}
    optim: {lr, betas, eps, weight_decay, warmup_steps, max_grad_norm}   # defaults: the task's recipe
    shape_vae | geometry_dit | texture_adapter: {...}                    # the task's own section

Unknown keys are errors (a typo must not silently train with a default). Optimiser defaults follow
the reference recipes (step1x3d-reference.md §2.9, §4.13) for the chosen task.
"""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from shared.errors import BackendError

TASKS = ("shape_vae", "geometry_dit", "texture_adapter")


@dataclass
class OptimConfig:
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.99)
    eps: float = 1e-6
    weight_decay: float = 0.0
    warmup_steps: int = 0
    warmup_start: float = 1e-6  # learning-rate factor at the first warm-up step (linear to 1)
    max_grad_norm: float | None = 1.0


# The reference recipes; a config's `optim` section overrides single fields.
RECIPES: dict[str, dict] = {
    "shape_vae": dict(lr=1e-5, betas=(0.9, 0.99), eps=1e-6, max_grad_norm=None),
    "geometry_dit": dict(lr=1e-4, betas=(0.9, 0.99), eps=1e-6, max_grad_norm=None),
    "texture_adapter": dict(lr=5e-5, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, warmup_steps=2000,
                            max_grad_norm=1.0),
}


@dataclass
class LoopConfig:
    steps: int = 1000  # optimiser steps
    batch_size: int = 1  # objects per process and micro-batch
    grad_accum: int = 1
    mixed_precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | bf16 | fp16 | no
    gradient_checkpointing: bool = True
    seed: int = 0
    log_every: int = 10
    save_every: int = 1000
    keep_checkpoints: int = 2  # older checkpoint-<step> folders are deleted
    num_workers: int = 2
    resume: bool = True  # continue from output_dir/train_state when it exists
    cpu: bool = False  # train on the CPU even when a GPU is present
    # cuDNN's fused attention; off by default: its backward hit illegal memory accesses in the
    # full-size VAE and DiT on an H100 with torch 2.11 (the flash / memory-efficient kernels run)
    cudnn_attention: bool = False


@dataclass
class ShapeVAEConfig:
    data_dir: str = ""  # folder of .npz written by backend.data.prepare
    init: str | None = None  # folder or hub repo holding a released VAE; None: random init from `model`
    init_subfolder: str = "Step1X-3D-Geometry-1300m/vae"
    model: dict = field(default_factory=dict)  # ShapeVAE config overrides for a fresh model
    geometry_folder: str | None = None  # also write complete geometry folders with this VAE swapped in
    n_samples: int = 32768  # surface and sharp-edge points encoded per object
    n_supervision: int = 10000  # SDF points per object, half near-surface, half volume
    kl_weight: float = 1e-3
    flip_x: bool = True  # random mirror x -> -x of points, normals and SDF points


@dataclass
class GeometryDiTConfig:
    base: str = "stepfun-ai/Step1X-3D"  # geometry folder (model_index.json) or hub repo
    variant: str = "base"  # base | label (used when subfolder is None)
    subfolder: str | None = None
    data_dir: str = ""  # .npz from backend.data.prepare
    renders_dir: str = ""  # blender_render outputs, one folder per object id
    labels: str | None = None  # JSON {id: {pose, symmetry, geometry_quality}} for the label model
    lora: dict | None = None  # {rank, alpha, dropout}; None trains every DiT weight
    n_samples: int = 32768
    condition_drop: float = 0.1  # classifier-free guidance: each condition zeroed with this chance
    foreground_ratio: float = 0.9
    logit_mean: float = 0.0  # logit-normal timestep density
    logit_std: float = 1.0


@dataclass
class TextureAdapterConfig:
    base: str = "stabilityai/stable-diffusion-xl-base-1.0"
    vae: str = "madebyollin/sdxl-vae-fp16-fix"
    adapter: str | None = "stepfun-ai/Step1X-3D"  # fine-tune the released adapter; None: MV-Adapter init
    renders_dir: str = ""
    captions: str | None = None  # JSON {id: caption}; missing ids use `prompt`
    prompt: str = "high quality"
    resolution: int = 768
    reference_views: tuple[str, ...] = ("front", "right", "back", "left")
    # UNet parameters trained besides the T2I-adapter: names containing any of these (the release:
    # the MV-Adapter processors); "" trains the whole UNet, which is then saved as well
    trainable_modules: tuple[str, ...] = ("_mv", "_ref")
    timestep_range: tuple[int, int] = (0, 1000)  # training timesteps drawn uniformly from [low, high)
    prompt_drop: float = 0.1
    reference_drop: float = 0.1
    control_drop: float = 0.1


@dataclass
class TrainConfig:
    task: str
    output_dir: str
    loop: LoopConfig = field(default_factory=LoopConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    shape_vae: ShapeVAEConfig | None = None
    geometry_dit: GeometryDiTConfig | None = None
    texture_adapter: TextureAdapterConfig | None = None

    @property
    def section(self):
        return getattr(self, self.task)


def _convert(tp, value, where: str):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        return _convert(next(a for a in args if a is not type(None)), value, where)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise BackendError("invalid_setting", f"{where}: expected a mapping")
        return build(tp, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise BackendError("invalid_setting", f"{where}: expected a list")
        args = typing.get_args(tp)
        inner = [args[0]] * len(value) if len(args) == 2 and args[1] is Ellipsis else list(args)
        if len(inner) != len(value):
            raise BackendError("invalid_setting", f"{where}: expected {len(inner)} values")
        return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(inner, value)))
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    base = origin or tp
    if base is typing.Any or isinstance(value, base):
        return value
    raise BackendError("invalid_setting", f"{where}: expected {getattr(tp, '__name__', tp)}, got {value!r}")


def build(cls, data: Mapping[str, Any], where: str = "config"):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise BackendError("invalid_setting", f"{where}: unknown keys {unknown}; known: {sorted(names)}")
    values = {k: _convert(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**values)
    except TypeError as exc:  # a required key is missing
        raise BackendError("invalid_setting", f"{where}: {exc}") from None


def from_dict(data: Mapping[str, Any]) -> TrainConfig:
    data = dict(data)
    task = data.get("task")
    if task not in TASKS:
        raise BackendError("invalid_setting", f"config.task must be one of {', '.join(TASKS)}; got {task!r}")
    for other in TASKS:
        if other != task and data.get(other) is not None:
            raise BackendError("invalid_setting", f"config has a {other} section but task is {task}")
    data["optim"] = {**RECIPES[task], **dict(data.get("optim") or {})}
    data.setdefault(task, {})
    config = build(TrainConfig, data)
    check(config)
    return config


def check(config: TrainConfig) -> None:
    loop = config.loop
    if min(loop.steps, loop.batch_size, loop.grad_accum, loop.log_every, loop.save_every) < 1 or loop.num_workers < 0:
        raise BackendError("invalid_setting", "loop: steps, batch_size, grad_accum, log_every, save_every >= 1")
    if loop.mixed_precision not in ("auto", "bf16", "fp16", "no"):
        raise BackendError("invalid_setting", f"loop.mixed_precision must be auto, bf16, fp16 or no")
    if config.optim.lr <= 0:
        raise BackendError("invalid_setting", "optim.lr must be positive")
    if not config.output_dir:
        raise BackendError("invalid_setting", "config.output_dir is required")


def read_file(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise BackendError("input_not_found", f"config file {path} does not exist")
    text = path.read_text()
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # JSON and YAML parsers raise their own types
        raise BackendError("input_unreadable", f"{path}: {exc}") from None
    if not isinstance(data, dict):
        raise BackendError("input_unreadable", f"{path}: expected a mapping at the top level")
    return data


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """`a.b.c=value` assignments (value parsed as JSON when it parses, else kept as a string)."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise BackendError("invalid_request", f"override {item!r} is not KEY=VALUE")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = data
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise BackendError("invalid_request", f"override {item!r}: {p} is not a section")
        node[parts[-1]] = value
    return data


def load(path: str | Path, overrides: list[str] = ()) -> TrainConfig:
    return from_dict(apply_overrides(read_file(path), list(overrides)))
