"""Checks every trainer's options share (PPO, GRPO, RLOO, DPO), each failing with one line."""

from __future__ import annotations

from typing import Any, Callable, Iterable

REPORT_TO = ("tensorboard", "wandb")


def check_common_options(options: Any, bad: Callable[[str], None], counts: Iterable[str]) -> None:
    """β > 0, each of ``counts`` ≥ 1, learning rate > 0, save_steps ≥ 0 and known ``report_to`` loggers."""
    if not options.beta > 0:
        bad(f"beta must be > 0 (got {options.beta}); the KL penalty defines the target policy")
    for name in counts:
        if int(getattr(options, name)) < 1:
            bad(f"{name} must be >= 1 (got {getattr(options, name)})")
    if not options.learning_rate > 0:
        bad(f"learning_rate must be > 0 (got {options.learning_rate})")
    if options.save_steps < 0:
        bad(f"save_steps must be >= 0 (got {options.save_steps})")
    unknown = set(options.report_to) - set(REPORT_TO)
    if unknown:
        bad(f"unknown report_to {sorted(unknown)}; use 'tensorboard' and/or 'wandb'")
