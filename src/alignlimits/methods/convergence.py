r"""When has a trainer stopped improving? A stated rule on its per-step objective.

Each step's rollouts give an estimate :math:`o_t` of the regularised objective
:math:`E_\pi[r] - \beta\,\mathrm{KL}(\pi\|\pi_0)` (``objective`` in ``metrics.jsonl``). With a window of
:math:`K = \max(2, \lfloor T/4 \rfloor)` steps, the last window's mean :math:`\bar o_{\text{last}}` is
compared with the window before it, :math:`\bar o_{\text{prev}}`:

.. math::  \text{converged} \iff \bar o_{\text{last}} - \bar o_{\text{prev}} \le z_{0.95}\, s\,\sqrt{2/K},

with :math:`s` the standard deviation of the :math:`2K` per-step values about their own window means:
the objective has stopped rising by more than its step-to-step noise. Fewer than :math:`2K` logged
steps cannot tell, and count as not converged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Convergence:
    converged: bool
    rise: float
    """Mean objective of the last window minus the one before it."""
    noise: float
    """The one-sided 95% noise level of that rise."""
    window: int
    rule: str = ("converged when the mean per-step objective E r − β·KL of the last K steps exceeds that of the K "
                 "before by no more than 1.645 standard errors (K = max(2, steps/4))")


def convergence(objective) -> Convergence:
    """Apply the rule above to a trainer's per-step objective (in step order)."""
    o = np.asarray([x for x in objective if np.isfinite(x)], dtype=np.float64)
    window = max(2, o.size // 4)
    if o.size < 2 * window:
        return Convergence(False, float("nan"), float("nan"), window)
    prev, last = o[-2 * window:-window], o[-window:]
    spread = np.sqrt((np.sum((prev - prev.mean()) ** 2) + np.sum((last - last.mean()) ** 2)) / (2 * window - 2))
    noise = float(stats.norm.ppf(0.95) * spread * np.sqrt(2 / window))
    rise = float(last.mean() - prev.mean())
    return Convergence(bool(rise <= noise), rise, noise, window)
