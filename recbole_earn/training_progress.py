"""How far a training run has come, in optimizer steps and in wall-clock seconds, and what follows from it: the
learning rate of the next step (warm-up, then decay), whether the time budget is spent, and a progress line.

Progress is the larger of the two fractions (steps done / steps planned, seconds spent / time budget), so a
run capped by time decays its learning rate to the end of its budget just as a run capped by epochs does.
Only time spent in optimizer steps counts: validation passes do not eat the training budget.
"""

import math
import time

SCHEDULES = ("constant", "linear", "cosine")


def lr_factor(progress, schedule="constant", warmup_ratio=0.0, min_lr_ratio=0.0):
    """Multiplier of the base learning rate at `progress` in [0, 1]: a linear warm-up from 0 over the first
    `warmup_ratio` of training, then constant, linear or cosine decay from 1 down to `min_lr_ratio`."""
    if schedule not in SCHEDULES:
        raise ValueError(f"lr_scheduler must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    if not 0.0 <= warmup_ratio < 1.0:
        raise ValueError(f"warmup_ratio must be in [0, 1), got {warmup_ratio}")
    progress = min(max(progress, 0.0), 1.0)
    if progress < warmup_ratio:
        return progress / warmup_ratio
    if schedule == "constant":
        return 1.0
    decayed = (progress - warmup_ratio) / (1.0 - warmup_ratio)  # 0 -> 1 after the warm-up
    shape = 1.0 - decayed if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * decayed))
    return min_lr_ratio + (1.0 - min_lr_ratio) * shape


class TrainingProgress:
    """Steps and seconds of one training run (`planned_steps` optimizer steps of `batch_size` examples, capped at
    `time_budget_s` seconds of stepping when that is set)."""

    def __init__(self, planned_steps, batch_size, time_budget_s=None, clock=time.perf_counter):
        if time_budget_s is not None and time_budget_s <= 0:
            raise ValueError(f"train_time_budget_s must be > 0 (or ~ for no cap), got {time_budget_s}")
        self.planned_steps = max(int(planned_steps), 1)
        self.batch_size = batch_size
        self.time_budget_s = time_budget_s
        self.clock = clock
        self.steps = 0
        self.examples = 0
        self.seconds = 0.0  # spent inside optimizer steps
        self._step_started = None

    def start_step(self):
        self._step_started = self.clock()

    def end_step(self, examples):
        self.seconds += self.clock() - self._step_started
        self.steps += 1
        self.examples += examples

    @property
    def fraction(self):
        """Progress in [0, 1]: the larger of the step and the time fractions."""
        by_steps = self.steps / self.planned_steps
        by_time = self.seconds / self.time_budget_s if self.time_budget_s else 0.0
        return min(max(by_steps, by_time), 1.0)

    @property
    def budget_spent(self):
        return self.time_budget_s is not None and self.seconds >= self.time_budget_s

    @property
    def examples_per_s(self):
        return self.examples / self.seconds if self.seconds > 0 else 0.0

    def seconds_left(self):
        """Expected seconds of stepping still to come: the planned steps at the rate so far, within the budget."""
        if self.steps == 0:
            return None
        left = (self.planned_steps - self.steps) * self.seconds / self.steps
        if self.time_budget_s is not None:
            left = min(left, self.time_budget_s - self.seconds)
        return max(left, 0.0)

    def describe(self, loss, learning_rate):
        left = self.seconds_left()
        cap = f" of {self.time_budget_s:.0f} s budget" if self.time_budget_s else ""
        return (
            f"step {self.steps}{'' if self.time_budget_s else f'/{self.planned_steps}'} | {self.examples} examples, {self.examples_per_s:.1f}/s | "
            f"loss {loss:.4f} | lr {learning_rate:.2e} | {self.seconds:.0f} s{cap}, "
            f"~{left if left is not None else float('nan'):.0f} s left"
        )
