"""python -m backend.train CONFIG [--set key=value ...]   (accelerate launch -m backend.train ... for DDP)"""
from __future__ import annotations

import argparse
import sys

from shared.cli import run_command


def build_task(config, accelerator):
    """The task's module (`backend.train.<task>`) builds it; only that task's imports are paid."""
    import importlib

    return importlib.import_module(f"{__package__}.{config.task}").build(config, accelerator)


FIND_UNUSED = {"texture_adapter": True}  # a dropped reference leaves the _ref projections unused


def run(config):
    from .loop import make_accelerator, train

    accelerator = make_accelerator(config, FIND_UNUSED.get(config.task, False))
    from accelerate.utils import set_seed

    set_seed(config.loop.seed)
    task = build_task(config, accelerator)
    return train(config, task, accelerator)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backend.train", description=__doc__)
    parser.add_argument("config", help="JSON or YAML training configuration")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set loop.steps=10 (JSON values)")
    ns = parser.parse_args(argv)
    from .config import load

    def body() -> int:
        result = run(load(ns.config, ns.overrides))
        print(f"done: {result.steps} steps; model in {result.final_dir}")
        return 0

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
