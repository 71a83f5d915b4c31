"""The trainers' progress bar: steps done, time spent and left, and the last step's reward and KL."""

from __future__ import annotations


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


def step_description(method: str, beta: float, reward: float | None = None, kl: float | None = None) -> str:
    text = f"{method} β={beta:g}"
    if reward is not None:
        text += f" reward {reward:.3f}"
    if kl is not None:
        text += f" KL {kl:.3f}"
    return text
