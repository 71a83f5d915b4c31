"""The trainers' progress bar: steps done, time spent and left, the last step's reward, and the rollouts'
sequence KL as a running mean over the last steps with its standard error (one batch's mean k1 is noise:
it ran from −0.2 to 0.49 across one run's steps while the policy's measured KL was 0.25)."""

from __future__ import annotations

import math
from collections import deque


def training_progress(enabled: bool = True):
    """A rich ``Progress`` (use as a context manager); a no-op display when not ``enabled``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=False,
    )


class RunningKL:
    """The mean of the last ``window`` steps' rollout KL (k1) and its standard error."""

    def __init__(self, window: int = 8):
        self.steps = deque(maxlen=window)

    def add(self, kl: float, se: float | None = None) -> None:
        if kl is not None and math.isfinite(kl):
            self.steps.append((kl, se if se is not None and math.isfinite(se) else float("nan")))

    def __str__(self) -> str:
        if not self.steps:
            return "?"
        k = len(self.steps)
        mean = sum(x for x, _ in self.steps) / k
        ses = [s for _, s in self.steps]
        if all(math.isfinite(s) for s in ses):
            se = math.sqrt(sum(s * s for s in ses)) / k
        elif k > 1:
            se = math.sqrt(sum((x - mean) ** 2 for x, _ in self.steps) / (k - 1) / k)
        else:
            return f"{mean:.3f}"
        return f"{mean:.3f} ± {se:.3f}"


def step_description(method: str, beta: float, reward: float | None = None, kl: RunningKL | None = None) -> str:
    text = f"{method} β={beta:g}"
    if reward is not None:
        text += f" reward {reward:.3f}"
    if kl is not None and kl.steps:
        text += f" KL (last {len(kl.steps)} steps) {kl}"
    return text
