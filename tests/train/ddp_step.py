"""One training step of a trainer in a process of a two-process gloo group (CPU): what
`accelerate launch` does, without the launcher. Rank 0 also computes the one-process reference:
the same module, each rank's sample on its own, gradients averaged."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]


def _batch(task, index: int, seed: int):
    from accelerate.utils import set_seed
    from torch.utils.data import default_collate

    set_seed(seed)  # the sample's random draws (point subsets, noise, drops) come from here
    return (task.collate or default_collate)([task.dataset[index]])


def _grads(module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in module.named_parameters() if p.requires_grad and p.grad is not None}


def step(rank: int, world: int, port: int, config_dict: dict, out: str) -> None:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    from accelerate.utils import set_seed

    from backend.train.__main__ import FIND_UNUSED, build_task
    from backend.train.config import from_dict
    from backend.train.loop import make_accelerator

    config = from_dict(config_dict)
    accelerator = make_accelerator(config, FIND_UNUSED.get(config.task, False))
    assert accelerator.num_processes == world and accelerator.distributed_type.value == "MULTI_CPU"
    set_seed(config.loop.seed)
    task = build_task(config, accelerator)
    module = accelerator.prepare(task.module)
    accelerator.backward(module(_batch(task, rank, 100 + rank))["loss"])
    result = {"ddp": {n.removeprefix("module."): g for n, g in _grads(module).items()}}
    if rank == 0:
        set_seed(config.loop.seed)
        alone = build_task(config, accelerator)
        for r in range(world):
            (alone.module(_batch(alone, r, 100 + r))["loss"] / world).backward()
        result["single"] = _grads(alone.module)
    torch.save(result, Path(out) / f"rank{rank}.pt")
    accelerator.wait_for_everyone()
