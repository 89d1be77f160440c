"""Opt-in fast paths for the two denoising networks (the texture UNet and the geometry DiT).

Chosen with `STEP1X3D_FAST` (comma list; empty or "off" = the eager path, the default):

* `compile`  - torch.compile the network's forward (inductor, static shapes). The stage objects the
  model cache keeps across jobs keep the compiled code, so a server pays compilation once per
  process (the first job is the cold one); inductor's on-disk cache shortens it in later processes.
  The texture UNet's once-per-job reference pass stays eager (another batch size, run once).
* `cudnn` / `flash` / `efficient` / `math` - the SDPA backend every attention call uses (default:
  torch's own choice).
* `fuse`     - one GEMM for the six input projections of every MV-Adapter attn1 layer
  (backend/texture/fused_projections.py).

`apply` wraps a loaded module in place and is idempotent. Integer timesteps (the texture loop
passes Python ints) become device tensors cached per value, so the compiled graph is not
specialised on, and recompiled for, every timestep. Every fast path computes the eager function up
to rounding: tests/texture/test_fast_paths.py and tests/geometry/test_fast_paths.py hold the bounds.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from shared.errors import BackendError

ENV = "STEP1X3D_FAST"
ATTENTION = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
             "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}


@dataclass(frozen=True)
class FastPaths:
    compile: bool = False
    attention: str = "auto"
    fuse: bool = False

    @classmethod
    def parse(cls, text: str) -> FastPaths:
        words = [w.strip().lower() for w in text.split(",") if w.strip()]
        if words in ([], ["off"]):
            return cls()
        unknown = [w for w in words if w not in ("compile", "fuse", *ATTENTION)]
        attention = [w for w in words if w in ATTENTION]
        if unknown or len(attention) > 1:
            raise BackendError("invalid_setting", f"{ENV}={text!r}: expected a comma list of compile, fuse and "
                                                  f"one of {', '.join(ATTENTION)}")
        return cls(compile="compile" in words, attention=attention[0] if attention else "auto", fuse="fuse" in words)

    @classmethod
    def from_env(cls) -> FastPaths:
        return cls.parse(os.environ.get(ENV, ""))

    @property
    def enabled(self) -> bool:
        return self != FastPaths()

    def describe(self) -> str:
        parts = (["compile"] if self.compile else []) + ([self.attention] if self.attention != "auto" else []) + (
            ["fuse"] if self.fuse else [])
        return ",".join(parts) or "off"

    def attention_context(self):
        return sdpa_kernel([ATTENTION[self.attention]]) if self.attention in ATTENTION else contextlib.nullcontext()


def _is_reference_pass(kwargs: dict) -> bool:
    mv = (kwargs.get("cross_attention_kwargs") or {}).get("mv")
    return mv is not None and mv.mode == "record"


def apply(module: torch.nn.Module, paths: FastPaths, compile_backend="inductor") -> torch.nn.Module:
    """Install `paths` on `module` (the texture UNet or the geometry denoiser) in place.
    `compile_backend` is torch.compile's (tests use a cheap one to check the capture)."""
    if getattr(module, "_fast_paths", FastPaths()) == paths:
        return module
    eager = module.__dict__.get("_eager_forward") or module.forward
    from backend.texture.fused_projections import fuse_projections, refresh, unfuse

    if paths.fuse:
        fuse_projections(module)
    else:
        unfuse(module)
        refresh = None
    if paths.compile:
        # inductor's on-disk cache (kernels and graphs) outlives the process: a restarted server
        # compiles in seconds instead of minutes. Its default lives under /tmp; keep it with the
        # user's caches unless the caller chose a place.
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(
            os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "step1x3d", "inductor"))
    compiled = torch.compile(eager, dynamic=False, backend=compile_backend) if paths.compile else eager
    timesteps: dict[tuple[int, torch.device], torch.Tensor] = {}

    def forward(*args, **kwargs):
        if len(args) > 1 and isinstance(args[1], int):
            key = (args[1], args[0].device)
            if key not in timesteps:  # the tensor the UNet would build for an int, made once
                timesteps[key] = torch.tensor([args[1]], dtype=torch.int64, device=args[0].device)
            args = (args[0], timesteps[key], *args[2:])
        if refresh is not None:
            refresh(module)
        with paths.attention_context():
            return (eager if _is_reference_pass(kwargs) else compiled)(*args, **kwargs)

    module._eager_forward = eager
    module.forward = forward if paths.enabled else eager
    module._fast_paths = paths
    return module
