r"""When has a trainer stopped improving? A stated rule on its per-step objective that cannot fire on noise.

Each step's rollouts give :math:`o_t`, the objective relative to each prompt's base level,
:math:`\overline{r - b(x)} - \beta\,\overline{k_1}` (``objective_rel`` in ``metrics.jsonl``; b(x) is the mean
reward of a few base samples of the training prompt x, so the mix of prompts a step draws does not move
it). With a window of :math:`K = \max(2, \lfloor T/4 \rfloor)` steps, the rise of the last window's mean over
the window before it, :math:`\delta = \bar o_{\text{last}} - \bar o_{\text{prev}}`, has standard error
:math:`s\sqrt{2/K}`, with :math:`s` the larger of the spread of the :math:`2K` values about their window means
and the steps' own standard errors (root mean square of ``objective_rel_se``, from each step's rollouts: a
floor that a few steps' spread, itself noisy, cannot undercut). The curve
*resolves* a rise of :math:`\rho = J^*(\beta)/4` (a quarter of the ceiling) when its one-sided 95% noise
:math:`t_{0.95,\,2K-2}\,s\sqrt{2/K} < \rho`. Then:

- ``converged`` when :math:`\delta + t_{0.95,\,2K-2}\,s\sqrt{2/K} < \rho`: the last window added less than a quarter
  of the ceiling, at 95%;
- ``learning`` when it may still be rising by that much;
- ``undetermined`` when the curve cannot resolve such a rise (or has fewer than :math:`2K` steps): never
  "converged" from noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

CONVERGED, LEARNING, UNDETERMINED = "converged", "learning", "undetermined"
RESOLUTION = 0.25
"""The rise the rule must resolve, as a share of the ceiling J*(β)."""
RULE = ("converged when the last K steps' mean objective (relative to each prompt's base level) rose over the K "
        "before by less than a quarter of the ceiling J*(β) at 95% (K = max(2, steps/4)); undetermined when the "
        "curve's noise cannot resolve such a rise")


@dataclass(frozen=True)
class Convergence:
    state: str
    """``converged``, ``learning`` or ``undetermined``."""
    rise: float
    """Mean objective of the last window minus the one before it."""
    noise: float
    """The one-sided 95% noise level of that rise."""
    resolution: float
    """The rise the rule must resolve: a quarter of the ceiling."""
    window: int
    rule: str = RULE

    @property
    def converged(self) -> bool:
        return self.state == CONVERGED


def _clean(objective, se) -> tuple[np.ndarray, np.ndarray]:
    o = np.asarray([np.nan if x is None else x for x in objective], dtype=np.float64)
    se = np.full(o.shape, np.nan) if se is None else np.asarray([np.nan if x is None else x for x in se], float)
    keep = np.isfinite(o)
    return o[keep], se[keep]


def _spread(values: np.ndarray, windows: int, se: np.ndarray) -> float:
    """One step's noise: the spread of ``values`` about their ``windows`` window means, floored by the steps' own
    standard errors (root mean square)."""
    parts = np.split(values, windows)
    spread = np.sqrt(sum(np.sum((w - w.mean()) ** 2) for w in parts) / (values.size - windows))
    if np.isfinite(se).any():
        spread = max(spread, float(np.sqrt(np.nanmean(se**2))))
    return float(spread)


def convergence(objective, ceiling: float, se=None) -> Convergence:
    """Apply the rule above to a trainer's per-step objective (in step order) against the ceiling J*(β); ``se``:
    each step's standard error (same order), when the trainer logged it."""
    o, se = _clean(objective, se)
    window = max(2, o.size // 4)
    resolution = RESOLUTION * float(ceiling) if np.isfinite(ceiling) and ceiling > 0 else float("nan")
    if o.size < 2 * window:
        return Convergence(UNDETERMINED, float("nan"), float("nan"), resolution, window)
    prev, last = o[-2 * window:-window], o[-window:]
    spread = _spread(o[-2 * window:], 2, se[-2 * window:])
    noise = float(stats.t.ppf(0.95, 2 * window - 2) * spread * np.sqrt(2 / window))
    rise = float(last.mean() - prev.mean())
    if not noise < resolution:
        state = UNDETERMINED
    else:
        state = CONVERGED if rise + noise < resolution else LEARNING
    return Convergence(state, rise, noise, resolution, window)


def final_objective(objective, se=None) -> tuple[float, float, int]:
    """Where training ended: the mean objective of the last window of K = max(2, steps/4) steps (the window the rule
    reads), its standard error spread/√K (the spread floored by the steps' own errors, as in the rule) and K; NaN
    with fewer than 2 steps. The steps' base levels b(x) come from a few base samples of each prompt, and a prompt
    met twice in the window brings the same error twice: with many more prompts than the window draws, as on the
    built-in tasks, that correlation is small."""
    o, se = _clean(objective, se)
    window = max(2, o.size // 4)
    if o.size < window:
        return float("nan"), float("nan"), window
    last = o[-window:]
    return float(last.mean()), _spread(last, 1, se[-window:]) / float(np.sqrt(window)), window
