"""The training loop shared by every task: accelerate, AdamW, warm-up, logging, checkpoints.

One process per GPU (`accelerate launch -m backend.train CONFIG` for DDP; plain
`python -m backend.train CONFIG` for one device). A task hands over one module whose forward
takes a batch and returns scalars including "loss" - every trainable parameter lives in it, so
DDP's gradient hooks see every backward. Mixed precision is accelerate's autocast with fp32
trainable weights; the tasks cast their frozen parts to the compute dtype themselves.

Output folder: `checkpoint-<step>/` and `final/` in the official layouts (the task decides),
`train_state.pt` (trainable weights, optimizer, RNG, step) to resume after a stop, `logs/metrics.csv` + TensorBoard.
"""
from __future__ import annotations

import json
import math
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .config import LoopConfig, OptimConfig, TrainConfig
from .metrics import ScalarLog

STATE_FILE = "train_state.pt"
FINAL_DIR = "final"


@dataclass
class TrainTask:
    module: nn.Module  # forward(batch) -> {"loss": tensor, other scalars...}
    dataset: Dataset
    save: Callable[[nn.Module, Path], None]  # the unwrapped module -> official layout in a folder
    collate: Callable | None = None
    find_unused_parameters: bool = False  # DDP: some steps leave trainable parts unused
    description: str = ""

    def trainable(self) -> list[nn.Parameter]:
        return [p for p in self.module.parameters() if p.requires_grad]


@dataclass
class TrainResult:
    steps: int
    output_dir: Path
    final_dir: Path
    history: list[dict] = field(default_factory=list)  # the logged rows (main process)


def mixed_precision(loop: LoopConfig) -> str:
    if loop.mixed_precision != "auto":
        return loop.mixed_precision
    if not loop.cpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "no"


def compute_dtype(precision: str) -> torch.dtype:
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)


def make_accelerator(config: TrainConfig, find_unused_parameters: bool):
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    return Accelerator(
        mixed_precision=mixed_precision(config.loop),
        gradient_accumulation_steps=config.loop.grad_accum,
        cpu=config.loop.cpu,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=find_unused_parameters)],
    )


def warmup_factor(optim: OptimConfig) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if optim.warmup_steps <= 0:
            return 1.0
        t = min(1.0, step / optim.warmup_steps)
        return optim.warmup_start + (1.0 - optim.warmup_start) * t

    return factor


def _forever(loader: DataLoader):
    epoch = 0
    while True:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        for batch in loader:
            yield batch
        epoch += 1


def _prune(output_dir: Path, keep: int) -> None:
    ckpts = sorted((p for p in output_dir.glob("checkpoint-*") if p.is_dir()), key=lambda p: int(p.name.split("-")[1]))
    for old in ckpts[:-keep] if keep > 0 else ckpts:
        shutil.rmtree(old, ignore_errors=True)


def _save_atomically(save: Callable[[nn.Module, Path], None], module: nn.Module, folder: Path) -> None:
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save(module, tmp)
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)


def train(config: TrainConfig, task: TrainTask, accelerator) -> TrainResult:
    loop, optim = config.loop, config.optim
    out = Path(config.output_dir)
    main = accelerator.is_main_process
    if main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(_jsonable(config), indent=2))
    if not loop.cudnn_attention:
        torch.backends.cuda.enable_cudnn_sdp(False)
    params = task.trainable()
    if not params:
        raise ValueError("the task has no trainable parameters")
    optimizer = torch.optim.AdamW(params, lr=optim.lr, betas=optim.betas, eps=optim.eps,
                                  weight_decay=optim.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_factor(optim))
    generator = torch.Generator().manual_seed(loop.seed)
    loader = DataLoader(task.dataset, batch_size=loop.batch_size, shuffle=True, num_workers=loop.num_workers,
                        collate_fn=task.collate, drop_last=len(task.dataset) >= loop.batch_size,
                        generator=generator, persistent_workers=loop.num_workers > 0)
    module, optimizer, loader = accelerator.prepare(task.module, optimizer, loader)
    state = TrainState(accelerator, module, optimizer, schedule)

    start = 0
    if loop.resume and (out / STATE_FILE).is_file():
        start = state.load(out / STATE_FILE)
    log = ScalarLog(out / "logs") if main else None
    history: list[dict] = []
    n_params = sum(p.numel() for p in params)
    accelerator.print(f"{config.task}: {task.description}; {n_params / 1e6:.2f} M trainable parameters; "
                      f"{len(task.dataset)} objects; {accelerator.num_processes} process(es), "
                      f"{accelerator.mixed_precision} precision; steps {start}..{loop.steps}")

    from tqdm.auto import tqdm

    tty = sys.stderr.isatty()  # in a log file, a progress line every 30 s instead of a redraw per step
    bar = tqdm(total=loop.steps, initial=start, disable=not main, unit="step", dynamic_ncols=tty,
               mininterval=0.1 if tty else 30.0)
    batches = _forever(loader)
    module.train()
    window: dict[str, list[float]] = {}
    t_window, samples = time.perf_counter(), 0
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    step = start
    try:
        while step < loop.steps:
            for _ in range(loop.grad_accum):
                batch = next(batches)
                with accelerator.accumulate(module):
                    scalars = module(batch)
                    loss = scalars["loss"]
                    if not torch.isfinite(loss):
                        raise FloatingPointError(f"the loss became {loss.item()} at step {step}")
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and optim.max_grad_norm:
                        accelerator.clip_grad_norm_(params, optim.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                for k, v in scalars.items():
                    window.setdefault(k, []).append(float(v.detach()))
                samples += loop.batch_size * accelerator.num_processes
            schedule.step()
            step += 1
            bar.update(1)
            if step % loop.log_every == 0 or step == loop.steps:
                means = {k: sum(v) / len(v) for k, v in window.items()}
                reduced = accelerator.reduce(torch.tensor(list(means.values()), device=accelerator.device), "mean")
                row = dict(zip(means, reduced.tolist()))
                elapsed = time.perf_counter() - t_window
                row["lr"] = schedule.get_last_lr()[0]
                row["samples_per_second"] = samples / max(elapsed, 1e-9)
                if torch.cuda.is_available() and accelerator.device.type == "cuda":
                    row["peak_memory_gb"] = torch.cuda.max_memory_allocated(accelerator.device) / 1e9
                if main:
                    log.log(step, row)
                    history.append({"step": step, **row})
                    bar.set_postfix(loss=f"{row['loss']:.4g}")
                window, t_window, samples = {}, time.perf_counter(), 0
            if step % loop.save_every == 0 and step < loop.steps:
                _checkpoint(accelerator, task, state, out, step, loop.keep_checkpoints)
        _checkpoint(accelerator, task, state, out, step, loop.keep_checkpoints, final=True)
    finally:
        bar.close()
        if log is not None:
            log.close()
    return TrainResult(step, out, out / FINAL_DIR, history)


class TrainState:
    """What a resumed run needs: the trainable weights (not the frozen ones), optimizer, schedule,
    step and RNG states, in one file written by the main process (temp name, then rename)."""

    def __init__(self, accelerator, module, optimizer, schedule):
        self.accelerator, self.module, self.optimizer, self.schedule = accelerator, module, optimizer, schedule

    def save(self, path: Path, step: int) -> None:
        if not self.accelerator.is_main_process:
            return
        model = self.accelerator.unwrap_model(self.module)
        payload = {
            "step": step,
            "trainable": {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad},
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
        }
        if self.accelerator.scaler is not None:
            payload["scaler"] = self.accelerator.scaler.state_dict()
        tmp = path.with_name(path.name + ".tmp")
        torch.save(payload, tmp)
        tmp.replace(path)

    def load(self, path: Path) -> int:
        payload = torch.load(path, map_location="cpu", weights_only=False)
        model = self.accelerator.unwrap_model(self.module)
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in payload["trainable"].items():
                if name not in params:
                    raise ValueError(f"{path}: parameter {name} is not in this model (another task or config?)")
                params[name].copy_(value)
        self.optimizer.load_state_dict(payload["optimizer"])
        self.schedule.load_state_dict(payload["schedule"])
        torch.set_rng_state(payload["rng"]["torch"])
        if payload["rng"]["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(payload["rng"]["cuda"])
        if "scaler" in payload and self.accelerator.scaler is not None:
            self.accelerator.scaler.load_state_dict(payload["scaler"])
        return int(payload["step"])


def _checkpoint(accelerator, task: TrainTask, state: TrainState, out: Path, step: int, keep: int,
                final: bool = False) -> None:
    accelerator.wait_for_everyone()
    state.save(out / STATE_FILE, step)
    if accelerator.is_main_process:
        target = out / (FINAL_DIR if final else f"checkpoint-{step}")
        _save_atomically(task.save, accelerator.unwrap_model(state.module), target)
        if not final:
            _prune(out, keep)
    accelerator.wait_for_everyone()


def _jsonable(obj):
    from dataclasses import asdict, is_dataclass

    if is_dataclass(obj):
        return _jsonable(asdict(obj))
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    return obj
