"""Scalar logging for training runs: a CSV file always, TensorBoard events when it is installed.

The CSV (`metrics.csv`: step plus one column per scalar, columns fixed by the first row) needs
nothing to read; TensorBoard (`tensorboard --logdir OUTPUT/logs`) gives the live curves.
"""
from __future__ import annotations

import csv
from pathlib import Path


def tensorboard_available() -> bool:
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        return False
    return True


class ScalarLog:
    def __init__(self, folder: Path, tensorboard: bool | None = None):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.csv_path = self.folder / "metrics.csv"
        self._fields: list[str] | None = None
        if self.csv_path.is_file() and self.csv_path.stat().st_size:  # a resumed run appends
            with open(self.csv_path, newline="") as f:
                self._fields = next(csv.reader(f), None)
        self._file = open(self.csv_path, "a", newline="")
        self._writer = None
        self.tensorboard = None
        if tensorboard if tensorboard is not None else tensorboard_available():
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(str(self.folder))

    def log(self, step: int, scalars: dict[str, float]) -> None:
        if self._fields is None:
            self._fields = ["step", *scalars]
            csv.writer(self._file).writerow(self._fields)
        row = {"step": step, **{k: f"{v:.6g}" for k, v in scalars.items()}}
        csv.DictWriter(self._file, self._fields, extrasaction="ignore").writerow(row)
        self._file.flush()
        if self.tensorboard is not None:
            for key, value in scalars.items():
                self.tensorboard.add_scalar(key, value, step)

    def close(self) -> None:
        self._file.close()
        if self.tensorboard is not None:
            self.tensorboard.close()


def read_metrics(folder: Path) -> list[dict[str, float]]:
    with open(Path(folder) / "metrics.csv", newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]
