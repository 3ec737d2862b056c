"""A Lightning callback that says, early in a run, how many steps it has and how long they will take.

It times a few training steps after the first (which pays for compilation, caches and worker
start-up) on the hardware the run is on, and prints one line to stderr: the total number of
optimiser steps, the measured seconds per step and the estimated time left. Rank zero only.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from lightning.pytorch.callbacks import Callback


def format_seconds(seconds: float) -> str:
    """1 h 05 min, 12 min, 40 s."""
    seconds = max(0.0, float(seconds))
    if seconds >= 3600:
        h, m = divmod(int(round(seconds / 60)), 60)
        return f"{h} h {m:02d} min"
    if seconds >= 90:
        return f"{int(round(seconds / 60))} min"
    return f"{seconds:.0f} s"


class StepTimeEstimate(Callback):
    """Print ``N steps; X s/step measured over M steps on DEVICE: about T left`` after `warmup + measure` steps."""

    def __init__(self, warmup: int = 1, measure: int = 3, stream: Any = None):
        self.warmup, self.measure, self.stream = warmup, measure, stream
        self.message: str | None = None
        self._t0: float | None = None
        self._start_step = 0

    def on_train_start(self, trainer, pl_module) -> None:
        self._start_step = trainer.global_step
        self._t0 = None
        self.message = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.message is not None:
            return
        done = trainer.global_step - self._start_step
        if done == self.warmup and self._t0 is None:
            self._t0 = time.perf_counter()
            return
        if self._t0 is None or done < self.warmup + self.measure:
            return
        per_step = (time.perf_counter() - self._t0) / self.measure
        total = trainer.estimated_stepping_batches
        total = int(total) if total not in (None, float("inf")) else None
        device = str(pl_module.device)
        if total is None:
            self.message = f"{per_step:.2f} s/step measured over {self.measure} steps on {device}"
        else:
            left = max(0, total - trainer.global_step) * per_step
            self.message = (f"{total} steps; {per_step:.2f} s/step measured over {self.measure} steps on {device}: "
                            f"about {format_seconds(left)} left")
        if trainer.is_global_zero:
            print(self.message, file=self.stream or sys.stderr, flush=True)
