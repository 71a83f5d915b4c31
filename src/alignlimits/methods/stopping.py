"""When a trainer stops, and what each step's rollouts say of its objective, for every trainer alike.

A trainer stops at its step count, at a time budget (``max_minutes``), or once its objective curve has
converged by the rule of :mod:`alignlimits.methods.convergence` against a ceiling J*(β) it was given
(``stop_at_ceiling``). Why it stopped goes to ``OUTPUT_DIR/stop.json`` (``reason``: ``steps``,
``time budget`` or ``converged``; ``step``; ``seconds``, the training time summed over ``metrics.jsonl``,
so a resumed run counts its earlier time).

Every step's row carries ``objective_rel`` = mean of r − b(x) − β·k1 over its rollouts, with b(x) the base
level of the rollout's prompt (:class:`StepRecorder` for the TRL trainers; PPO computes it itself), and its
standard error, so the curve shows learning rather than the mix of prompts a step drew.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from alignlimits.errors import AlignLimitsError
from alignlimits.methods import distributed
from alignlimits.methods.convergence import convergence

STOP_FILE = "stop.json"


@dataclass(frozen=True)
class StopRule:
    """A time budget in minutes and/or a ceiling J*(β) whose converged curve ends training (None: off)."""

    max_minutes: float | None = None
    ceiling: float | None = None

    def __post_init__(self):
        for name in ("max_minutes", "ceiling"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise AlignLimitsError(f"{name} must be a number > 0 (got {v!r})")

    def reason(self, rows: Sequence[Mapping]) -> str | None:
        """``time budget`` or ``converged`` when the metrics rows so far say stop, else None."""
        if self.max_minutes is not None and elapsed_seconds(rows) >= 60 * self.max_minutes:
            return "time budget"
        if self.ceiling is not None:
            curve = [r.get("objective_rel") for r in rows]
            if convergence(curve, self.ceiling, [r.get("objective_rel_se") for r in rows]).converged:
                return "converged"
        return None


def elapsed_seconds(rows: Sequence[Mapping]) -> float:
    return float(sum(r.get("seconds") or 0.0 for r in rows))


def read_rows(output_dir: Path) -> list[dict]:
    path = Path(output_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_stop(output_dir: Path, reason: str, step: int) -> dict:
    record = {"reason": reason, "step": int(step), "seconds": round(elapsed_seconds(read_rows(output_dir)), 1)}
    (Path(output_dir) / STOP_FILE).write_text(json.dumps(record))
    return record


def read_stop(output_dir: Path) -> dict | None:
    path = Path(output_dir) / STOP_FILE
    return json.loads(path.read_text()) if path.exists() else None


class StepRecorder:
    """Collects a TRL trainer's rollout rewards (per prompt) and sequence k1 between two log rows, and turns them
    into the row's ``objective_rel`` and its standard error. The rewards and k1 are not paired sample by sample,
    so the error adds their two variances (the covariance of r and k1, usually positive, is left out: it can
    only make the error larger than it is, never smaller)."""

    def __init__(self, baselines: Mapping[str, float], beta: float):
        self.baselines, self.beta = dict(baselines), float(beta)
        self.rel, self.k1 = [], []

    def rewards(self, prompts: Sequence[str], rewards: Sequence[float]) -> None:
        missing = [p for p in prompts if p not in self.baselines]
        if missing:
            raise AlignLimitsError(f"no base level for training prompt {missing[0][:60]!r}; sample the base model on "
                                   "every training prompt first")
        self.rel += [r - self.baselines[p] for p, r in zip(prompts, rewards)]

    def sequence_kl(self, values: Sequence[float]) -> None:
        self.k1 += list(values)

    def flush(self) -> dict:
        """The row's ``objective_rel`` and ``objective_rel_se`` (empty when nothing was recorded); under a launcher
        over every process's rewards (the trainer gathers k1 itself), so every process calls it at each log row."""
        rel, k1 = np.asarray(distributed.gather(self.rel), float), np.asarray(self.k1, float)
        self.rel, self.k1 = [], []
        if rel.size < 2 or k1.size < 2:
            return {}
        var = rel.var(ddof=1) / rel.size + self.beta**2 * k1.var(ddof=1) / k1.size
        return {"objective_rel": float(rel.mean() - self.beta * k1.mean()), "objective_rel_se": float(np.sqrt(var))}
