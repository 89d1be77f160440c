"""The add-on's Install Backend, timed: the installer's own code path (addon/core/installer.py) from
an empty folder to a verified environment with the pinned requirements.

Run: python3 -m benchmarks.install --root /tmp/step1x3d-env [--torch auto|cuda|cpu] [--python python3.11]

Prints seconds per step and the environment's size on disk. Heavy (torch alone is GBs with CUDA):
run it once, into a scratch folder.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import threading
import time
from pathlib import Path

from addon.core import installer

from .common import print_table

ROOT = Path(__file__).resolve().parents[1]


def disk_usage(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="scratch folder for the environment (emptied first)")
    parser.add_argument("--torch", default="auto", choices=("auto", "cuda", "cpu"))
    parser.add_argument("--python", default=sys.executable, help="interpreter that creates the venv")
    args = parser.parse_args()
    root = Path(args.root)
    shutil.rmtree(root, ignore_errors=True)
    machine = installer.this_machine()
    plan = installer.Plan(installer.Layout(root), ROOT / "requirements.txt", ROOT, args.python, machine,
                          installer.choose_torch(machine, args.torch))
    run = installer.Installer(plan)
    times: dict[str, float] = {}
    done = threading.Event()

    def watch() -> None:
        step, since = "", time.perf_counter()
        while not done.wait(0.2):
            snap = run.snapshot()
            if snap.step != step:
                now = time.perf_counter()
                if step:
                    times[step] = now - since
                step, since = snap.step, now
        if step:
            times[step] = time.perf_counter() - since

    watcher = threading.Thread(target=watch)
    watcher.start()
    start = time.perf_counter()
    result = run.run()
    total = time.perf_counter() - start
    done.set()
    watcher.join()
    rows = [(name, f"{times.get(name, 0.0):.1f}") for name, _ in installer.STEPS]
    rows.append(("total", f"{total:.1f}"))
    print(f"result: {result} ({run.snapshot().message}); torch: {plan.torch.reason}")
    print_table("Install Backend", rows, ("step", "seconds"))
    print(f"environment on disk: {disk_usage(installer.Layout(root).venv) / 1e9:.2f} GB")
    return 0 if result == installer.READY else 1


if __name__ == "__main__":
    sys.exit(main())
