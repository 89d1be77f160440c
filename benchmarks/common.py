"""Timing helpers shared by the benchmark scripts: median wall time and a device description."""
from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Callable


def device_description() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return f"{torch.cuda.get_device_name(0)} + {os.cpu_count()} CPU cores"
    except ImportError:
        pass
    return f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def median_seconds(fn: Callable[[], object], repeats: int = 3, warmup: int = 1, sync: Callable[[], None] | None = None) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if sync:
            sync()
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def print_table(title: str, rows: list[tuple], header: tuple) -> None:
    print(f"\n{title}  [{device_description()}]")
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    print("  ".join(str(h).ljust(w) for h, w in zip(header, widths)))
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))
