"""A job's progress bar by time spent, not by stage count.

The stages of a job take very different times (the preview engine's "bake" and the step1x3d
engine's "texture" are most of the job), so `stage i of n` sits still for most of a job. Each
stage gets a weight from measured stage times (benchmarks/RESULTS.md), the bar advances inside a
stage by its steps or by the time spent against the stage's expected time (whichever is further,
never past 95 % of the stage), and the expected times are rescaled by how fast this machine ran
the stages already finished.
"""
from __future__ import annotations

from dataclasses import dataclass, field

# Seconds per stage, in the order the engines report them.
# preview: benchmarks/RESULTS.md "Preview engine ... 2-core CI machine", run 1 (image, inflate,
#   clean + decimate, UV, bake + inpaint, export).
# step1x3d: "Whole pipeline", single plan, both resident, after the GPU clean-up, job 1 (H100).
STAGE_SECONDS: dict[str, dict[str, float]] = {
    "preview": {"preprocess": 0.03, "geometry": 0.16, "mesh": 1.31, "texture": 1.64, "bake": 1.67, "export": 0.96},
    "step1x3d": {"preprocess": 0.08, "geometry": 2.45, "mesh": 1.33, "texture": 11.74, "bake": 0.82, "export": 0.58},
}
INSIDE_CAP = 0.95


@dataclass
class StageClock:
    """Stage changes of one job with their times (fed by the job as progress events arrive)."""

    started: float = 0.0
    stage: str = ""
    stage_started: float = 0.0
    first_step: int = 0  # the step the stage started at: some engines count steps across the whole job
    finished: list[tuple[str, float]] = field(default_factory=list)  # (stage, seconds) in order

    def observe(self, stage: str, now: float, step: int = 0) -> None:
        if not self.started:
            self.started = now
        if stage == self.stage:
            return
        if self.stage:
            self.finished.append((self.stage, now - self.stage_started))
        self.stage, self.stage_started, self.first_step = stage, now, step

    def elapsed(self, now: float) -> float:
        return now - self.started if self.started else 0.0


def fraction(engine: str, clock: StageClock, step: int, total: int, now: float) -> float:
    """The whole job's progress, 0..1."""
    table = STAGE_SECONDS.get(engine) or STAGE_SECONDS["step1x3d"]
    full = sum(table.values())
    if not clock.stage:
        return 0.0
    seen = {name for name, _ in clock.finished}
    expected_done = sum(table.get(name, 0.0) for name in seen)
    actual_done = sum(seconds for _, seconds in clock.finished if seconds > 0)
    scale = min(20.0, max(0.25, actual_done / expected_done)) if expected_done > 0 and actual_done > 0 else 1.0
    done = sum(table.get(name, 0.0) for name in seen if name != clock.stage)  # export comes twice
    weight = table.get(clock.stage, 0.0)
    span = total - clock.first_step
    by_steps = (step - clock.first_step) / span if span > 0 else 0.0
    by_time = (now - clock.stage_started) / (weight * scale) if weight > 0 else 0.0
    inside = min(INSIDE_CAP, max(by_steps, by_time))
    return max(0.0, min(1.0, (done + weight * inside) / full))


def clock_text(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}:{seconds % 60:02d}"
