"""One line per step of a job: where it is, how long it has run, about how long is left.

``[4/10] deactivate bbc_topic's task neurons, evaluate 3 tasks  (elapsed 2m10s, ~3m left)``. The estimate
is the mean duration of the steps done so far times the steps left (steps reused from an earlier run
take no time and are left out of the mean). Lightning's per-batch bar may still run beneath it.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _fmt(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"


class JobProgress:
    """Counts the steps of one job and prints a line as each starts."""

    def __init__(self, total: int, stream: TextIO | None = None):
        self.total = max(int(total), 1)
        self.done = 0
        self.stream = stream or sys.stdout
        self.t0 = time.monotonic()
        self._step_t0: float | None = None
        self._timed: list[float] = []  # durations of steps that did work
        self._reused = False  # whether the running step was taken from an earlier run

    def _close_step(self, now: float) -> None:
        if self._step_t0 is not None:
            if not self._reused:
                self._timed.append(now - self._step_t0)
            self.done += 1
            self._step_t0 = None

    def step(self, description: str, reused: bool = False) -> None:
        """Start the next step (ends the previous one)."""
        now = time.monotonic()
        self._close_step(now)
        self._reused = reused
        n = min(self.done + 1, self.total)
        left = self.total - self.done
        if reused:
            eta = "reused from an earlier run"
        elif self._timed:
            eta = f"~{_fmt(sum(self._timed) / len(self._timed) * left)} left"
        else:
            eta = "estimating"
        print(f"[{n}/{self.total}] {description}  (elapsed {_fmt(now - self.t0)}, {eta})", file=self.stream, flush=True)
        self._step_t0 = now

    def finish(self) -> None:
        now = time.monotonic()
        self._close_step(now)
        print(f"[done] {self.done} steps in {_fmt(now - self.t0)}", file=self.stream, flush=True)
