"""What every benchmark script shares: one timer (warm-up, device sync, repeats, min/median/max),
one memory probe (allocator and device peaks, each named), the device description and the table.

The timer synchronises CUDA before starting and before stopping the clock, so asynchronous GPU work
is charged to the call that queued it. Memory is reported two ways because they differ by gigabytes:
torch's allocator (`allocated` = live tensors, `reserved` = what the caching allocator holds) and the
device's own used memory (NVML, else cudaMemGetInfo), which also counts the CUDA context, cuBLAS/cuDNN
workspaces and other libraries' allocations (warp) - the number a card's size must cover.
"""
from __future__ import annotations

import os
import platform
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

GIB = 1024**3


def device_description() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return f"{torch.cuda.get_device_name(0)} + {os.cpu_count()} CPU cores"
    except ImportError:
        pass
    return f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def commit() -> str:
    """$BENCH_COMMIT when set (a copy of the tree run elsewhere, e.g. on a lent GPU machine), else the
    checked-out commit (with '+dirty' when tracked files differ), else 'unknown'."""
    if os.environ.get("BENCH_COMMIT"):
        return os.environ["BENCH_COMMIT"]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if head.returncode:
        return "unknown"
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def sync(device=None) -> None:
    """Wait for queued GPU work (no-op on the CPU or without torch)."""
    try:
        import torch
    except ImportError:
        return
    if torch.cuda.is_available() and (device is None or getattr(device, "type", str(device)).startswith("cuda")):
        torch.cuda.synchronize(device)


@dataclass
class Timing:
    """Seconds of each timed call."""

    times: list[float]

    @property
    def min(self) -> float:
        return min(self.times)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def max(self) -> float:
        return max(self.times)

    def ms(self) -> str:
        """'min / median / max' in milliseconds."""
        return f"{self.min * 1e3:.1f} / {self.median * 1e3:.1f} / {self.max * 1e3:.1f}"

    def s(self) -> str:
        return f"{self.min:.2f} / {self.median:.2f} / {self.max:.2f}"


def time_calls(fn: Callable[[], object], repeats: int = 3, warmup: int = 1, device=None,
               keep: list | None = None) -> Timing:
    """Call `fn` `warmup` times untimed, then `repeats` times timed, syncing `device` (default: every
    CUDA device in use, when there is one) around each timed call. The last result goes into `keep`."""
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    for _ in range(warmup):
        fn()
    times = []
    out = None
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    if keep is not None:
        keep.append(out)
    return Timing(times)


def device_used_reader(index: int) -> tuple[str, Callable[[], int]] | None:
    """A reader of the device's used bytes: NVML (whole device) when nvidia-ml-py is present, else
    cudaMemGetInfo (total - free, the same quantity seen from this process's context)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        return "NVML", lambda: int(pynvml.nvmlDeviceGetMemoryInfo(handle).used)
    except Exception:  # no library, no driver, or not an NVIDIA device
        pass
    try:
        import torch

        if torch.cuda.is_available():
            def used() -> int:
                free, total = torch.cuda.mem_get_info(index)
                return total - free
            return "cudaMemGetInfo", used
    except ImportError:
        pass
    return None


@dataclass
class MemoryPeak:
    """Peaks over one probed region, GiB. `device_used` is the whole device's used memory at its
    peak (context and every library included); `device_over_idle` subtracts what was in use
    before the process touched the GPU (`idle`, measured once per process, see `idle_device_bytes`)."""

    allocated: float = float("nan")
    reserved: float = float("nan")
    device_used: float = float("nan")
    device_over_idle: float = float("nan")
    source: str = "none"

    def row(self) -> tuple[str, str, str, str]:
        return (f"{self.allocated:.2f}", f"{self.reserved:.2f}", f"{self.device_used:.2f}", f"{self.device_over_idle:.2f}")

    HEADER = ("allocated GiB (torch)", "reserved GiB (torch)", "device used GiB", "device over idle GiB")


_IDLE: dict[int, int] = {}


def idle_device_bytes(index: int = 0) -> int:
    """The device's used bytes before this process creates its CUDA context. Call it first thing in a
    benchmark; once a context exists it only returns the remembered value (or 0 if never read)."""
    if index not in _IDLE:
        reader = device_used_reader(index) if _nvml_only() else None
        _IDLE[index] = reader[1]() if reader else 0
    return _IDLE[index]


def _nvml_only() -> bool:
    try:
        import pynvml  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass
class MemoryProbe:
    """Context manager: resets torch's peak statistics, samples the device's used memory every
    `interval` seconds in a thread, and on exit fills `peak`."""

    index: int = 0
    interval: float = 0.01
    peak: MemoryPeak = field(default_factory=MemoryPeak)

    def __enter__(self) -> MemoryProbe:
        import torch

        self._stop = threading.Event()
        self._max = 0
        self._reader = None
        if torch.cuda.is_available():
            torch.cuda.synchronize(self.index)
            torch.cuda.reset_peak_memory_stats(self.index)
            self._reader = device_used_reader(self.index)
        if self._reader:
            self._max = self._reader[1]()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        read = self._reader[1]
        while not self._stop.wait(self.interval):
            self._max = max(self._max, read())

    def __exit__(self, *exc) -> None:
        import torch

        if not torch.cuda.is_available():
            return
        torch.cuda.synchronize(self.index)
        if self._reader:
            self._stop.set()
            self._thread.join()
            self._max = max(self._max, self._reader[1]())
        idle = _IDLE.get(self.index, 0)
        self.peak = MemoryPeak(
            allocated=torch.cuda.max_memory_allocated(self.index) / GIB,
            reserved=torch.cuda.max_memory_reserved(self.index) / GIB,
            device_used=self._max / GIB if self._reader else float("nan"),
            device_over_idle=(self._max - idle) / GIB if self._reader else float("nan"),
            source=self._reader[0] if self._reader else "none",
        )


def print_table(title: str, rows: list[tuple], header: tuple) -> None:
    print(f"\n{title}  [{device_description()}, commit {commit()}]")
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    print("  ".join(str(h).ljust(w) for h, w in zip(header, widths)))
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))
