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


def convergence(objective, ceiling: float, se=None) -> Convergence:
    """Apply the rule above to a trainer's per-step objective (in step order) against the ceiling J*(β); ``se``:
    each step's standard error (same order), when the trainer logged it."""
    o = np.asarray([np.nan if x is None else x for x in objective], dtype=np.float64)
    se = np.full(o.shape, np.nan) if se is None else np.asarray([np.nan if x is None else x for x in se], float)
    keep = np.isfinite(o)
    o, se = o[keep], se[keep]
    window = max(2, o.size // 4)
    resolution = RESOLUTION * float(ceiling) if np.isfinite(ceiling) and ceiling > 0 else float("nan")
    if o.size < 2 * window:
        return Convergence(UNDETERMINED, float("nan"), float("nan"), resolution, window)
    prev, last = o[-2 * window:-window], o[-window:]
    spread = np.sqrt((np.sum((prev - prev.mean()) ** 2) + np.sum((last - last.mean()) ** 2)) / (2 * window - 2))
    within = se[-2 * window:]
    if np.isfinite(within).any():
        spread = max(spread, float(np.sqrt(np.nanmean(within**2))))
    noise = float(stats.t.ppf(0.95, 2 * window - 2) * spread * np.sqrt(2 / window))
    rise = float(last.mean() - prev.mean())
    if not noise < resolution:
        state = UNDETERMINED
    else:
        state = CONVERGED if rise + noise < resolution else LEARNING
    return Convergence(state, rise, noise, resolution, window)
