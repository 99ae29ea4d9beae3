"""The time budget (``max_train_minutes``) as a step plan, decided on ONE clock and shared.

After each step the main process measures its speed (from the ``WARMUP``-th step of this invocation on: the first
steps are slower) and plans how many steps fit in what is left of the budget, never more than ``cap`` (``max_steps``,
or the steps of ``num_epochs``). The plan and "time is up" are broadcast from the main process, so every process
ends at the same step with the same cosine horizon; each process deciding on its own clock would let one leave the
loop while the others wait in the next collective.
"""

from __future__ import annotations

import time

import torch
from accelerate.utils import broadcast


class TimeBudget:
    WARMUP = 3  # steps of this invocation before the speed is measured, then measured over at least as many
    clock = staticmethod(time.perf_counter)  # read on the main process only

    def __init__(self, accelerator, minutes: float, cap: int, initial: int | None = None):
        """``initial``: the plan until the speed is measured (a resumed run's saved plan); default ``cap``."""
        self.accelerator, self.seconds, self.cap = accelerator, minutes * 60, cap
        self.initial = min(initial or cap, cap)
        self._start = self._ref = None
        self._start_step = 0

    def start(self, step: int, spent: float = 0.0) -> None:
        """Start the clock at ``step``, ``spent`` seconds of the budget already used (a resumed run's)."""
        self._start, self._start_step, self._ref = self.clock() - spent, step, None

    def update(self, step: int) -> tuple[int, bool]:
        """After ``step`` steps: (planned total steps, time is up), the same on every process. The plan is at most
        ``cap`` and at least ``step``; with time up, it is ``step``."""
        plan, up = self.initial, False
        if self.accelerator.is_main_process:
            plan, up = self._plan(step)
        shared = broadcast(torch.tensor([plan, int(up)], dtype=torch.int64, device=self.accelerator.device))
        plan, up = shared.tolist()
        return plan, bool(up)

    def _plan(self, step: int) -> tuple[int, bool]:
        now = self.clock()
        elapsed = now - self._start
        if step - self._start_step == self.WARMUP:
            self._ref = (now, step)
        plan = self.initial
        if self._ref is not None and step - self._ref[1] >= self.WARMUP:
            per_step = (now - self._ref[0]) / (step - self._ref[1])
            fit = step + int((self.seconds - elapsed) / per_step)  # the steps that still end within the budget
            plan = max(step, min(fit, self.cap))
        up = elapsed >= self.seconds or plan <= step < self.cap
        return (step if up else plan), up


__all__ = ["TimeBudget"]
