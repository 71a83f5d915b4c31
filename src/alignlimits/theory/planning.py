r"""Questions a user asks before training: what does a gain cost, what does a budget buy.

- For a target gain :math:`\Delta`: the least KL :math:`\varepsilon = \Delta^{*-1}(\Delta)`,
  the β to set (:math:`\beta_\varepsilon`, the frontier's slope there), and the smallest N
  whose best-of-N reaches the gain.
- For a KL budget ε: the frontier's gain, its β, and the best-of-N of equal KL
  (largest N with :math:`\log N - (N-1)/N \le \varepsilon`) with that N's gain.
- What the samples can answer at all: the largest gain any reweighting reaches, and the
  largest the reliable range reaches (:func:`gain_limits`).
"""

from __future__ import annotations

from dataclasses import dataclass, asdict

import numpy as np
from scipy.optimize import brentq

from alignlimits.theory.best_of_n import bon_expected_reward, bon_kl_bound
from alignlimits.theory.frontier import Frontier


@dataclass(frozen=True)
class Plan:
    kl: float
    beta: float | None
    gain: float
    bon_n: int | None
    bon_gain: float | None
    bon_kl_bound: float | None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class GainLimits:
    max_gain: float
    max_reliable_gain: float


def gain_limits(frontier: Frontier) -> GainLimits:
    r"""The gains a fitted frontier can answer for.

    ``max_gain`` is its supremum ``max_gain_`` (β → 0, each prompt's top sample:
    :math:`\frac1P\sum_x \max_i r_{xi} - \bar r_0`); no target at or above it is reachable.
    ``max_reliable_gain`` is :math:`\Delta^*(\varepsilon_{rel})` at ``max_reliable_kl_``
    (0 when no KL is reliable); targets above it need extrapolation.
    """
    top = float(frontier.max_gain_)
    reliable_kl = frontier.max_reliable_kl_
    if reliable_kl <= 0:
        reliable = 0.0
    elif reliable_kl >= frontier.max_kl_:
        reliable = top
    else:
        reliable = float(frontier.gain_at_kl(reliable_kl)[0])
    return GainLimits(max_gain=top, max_reliable_gain=reliable)


def bon_n_for_kl(kl: float) -> float:
    r"""The (real) N at which :math:`\log N - (N-1)/N = \varepsilon`."""
    if kl <= 0:
        return 1.0
    return brentq(lambda N: np.log(N) - (N - 1) / N - kl, 1.0, np.exp(kl + 1) + 1)


def _bon_gain(frontier: Frontier, N: int) -> float:
    """Prompt-averaged unbiased best-of-N gain over the base mean."""
    expected = bon_expected_reward(frontier.rewards_, [N], frontier.groups_).mean()
    return float(expected - frontier.base_reward_mean_)


def _smallest_bon_n(frontier: Frontier, target_gain: float) -> int | None:
    """Bisection over N: the best-of-N gain grows with N."""
    lo, hi = 1, int(frontier.groups_.sizes.min())
    if _bon_gain(frontier, hi) < target_gain:
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if _bon_gain(frontier, mid) < target_gain else (lo, mid)
    return lo


def plan_for_gain(frontier: Frontier, target_gain: float) -> Plan:
    """KL, β and best-of-N needed for ``target_gain`` (``inf``/None where the samples can't reach it)."""
    kl = float(frontier.kl_for_gain(target_gain)[0])
    beta = float(np.mean(frontier.beta_for_kl(kl, extrapolate=True))) if 0 < kl < np.inf else None
    n = _smallest_bon_n(frontier, target_gain)
    return Plan(
        kl=kl,
        beta=beta,
        gain=float(target_gain),
        bon_n=n,
        bon_gain=_bon_gain(frontier, n) if n else None,
        bon_kl_bound=float(bon_kl_bound(n)[0]) if n else None,
    )


def plan_for_kl(frontier: Frontier, kl: float, extrapolate: bool = False) -> Plan:
    """Gain and β of the frontier at ``kl``, and the best-of-N of equal KL."""
    point = frontier.evaluate([kl], extrapolate=extrapolate)[0]
    n_max = int(frontier.groups_.sizes.min())
    n = int(min(np.floor(bon_n_for_kl(kl) + 1e-9), n_max))
    return Plan(
        kl=float(kl),
        beta=point.beta,
        gain=point.gain,
        bon_n=n,
        bon_gain=_bon_gain(frontier, n),
        bon_kl_bound=float(bon_kl_bound(n)[0]),
    )


def beta_grid(frontier: Frontier, kls, digits: int | None = None) -> np.ndarray:
    r"""The project's one way to choose β: :math:`\beta_\varepsilon` of the frontier's optimal policies at each KL
    ε of ``kls`` (:math:`K(\beta_\varepsilon) = \varepsilon`, read past the reliable range too), in their order,
    rounded to ``digits`` significant figures when given. The trained methods take it at fractions of the
    reliable reach, soft best-of-N at a third, two thirds and all of it, the hacking curves at fractions of the
    largest attainable KL (:func:`alignlimits.theory.hacking.hacking_betas`): β sets the reward's scale, so no
    fixed grid fits every reward."""
    betas = frontier.beta_for_kl(kls, extrapolate=True)
    return betas if digits is None else np.array([float(f"{b:.{digits}g}") for b in betas])
