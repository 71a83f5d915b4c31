r"""The frontier's intervals: one design for its gain at every budget, and for other per-prompt statistics.

The frontier's gain (plain and bias-corrected) gets the interval of the paired design
(:mod:`alignlimits.theory.paired`) that every point compared with it uses, so one number has one interval
wherever it is shown: ``estimate ± t·se`` over replicates that resample prompts (from
``MIN_PROMPTS_TO_RESAMPLE`` prompts on) or, with fewer prompts, samples within the fixed prompts, never
both (that counted within-prompt noise twice). Its coverage is measured in ``tests/theory/test_bootstrap.py``.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from alignlimits.errors import AlignLimitsError
from alignlimits.seeding import derive_seed
from alignlimits.theory.frontier_solve import fixed_kl_correction, fixed_kl_parts
from alignlimits.theory.paired import FOOTINGS, _Design, _FrontierReplicates, band_replicates, choose_footing
from alignlimits.theory.tilt import TiltedSamples

BOOTSTRAP_MODES = FOOTINGS


def bootstrap_mode(bootstrap: str, n_prompts: int) -> str:
    """What ``bootstrap`` resolves to (``"auto"``: ``"prompts"`` from 10 prompts on, ``"samples"`` below)."""
    if bootstrap == "prompts+samples":
        raise AlignLimitsError("bootstrap 'prompts+samples' was removed: resampling prompts and the samples within "
                               "them counts the samples' noise twice; use 'prompts', 'samples' (prompts held fixed) "
                               "or 'auto'")
    if bootstrap not in BOOTSTRAP_MODES:
        raise AlignLimitsError(f"bootstrap must be one of {', '.join(BOOTSTRAP_MODES)}, not {bootstrap!r}")
    return choose_footing(n_prompts, bootstrap)


class _Intervals:
    """Frontier's interval half (a mixin of :class:`~alignlimits.theory.frontier.Frontier`)."""

    @property
    def bootstrap_mode_(self) -> str:
        return bootstrap_mode(self.bootstrap, self.n_prompts_)

    def _design(self) -> _Design:
        return _Design.make(self.n_prompts_, self.bootstrap_mode_, self.n_bootstrap, self.confidence, self.random_state)

    def bootstrap_description(self) -> str:
        if self.exact_:
            return "exact distribution: no sampling error, intervals are points"
        if self.n_bootstrap < 2:
            return "no bootstrap (n_bootstrap < 2): intervals are points"
        return (self._design().describe("base samples") + "; the plain and the bias-corrected (fixed-KL jackknife) "
                "frontier each read on every replicate's own tilt (and fixed-KL correction) of its base samples")

    def _budget_intervals(self, kls: np.ndarray, gains: np.ndarray, gains_d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Intervals (E, 2) of the plain and the bias-corrected frontier at each budget (points for an exact fit or
        without a bootstrap; NaN where the estimate is)."""
        if self.exact_ or self.n_bootstrap < 2:
            return np.stack([gains, gains], axis=1), np.stack([gains_d, gains_d], axis=1)
        design = self._design()
        if self.budget == "shared":
            fr = _FrontierReplicates(self, design)  # one set of replicates for both
            reps = band_replicates(fr, kls, False), band_replicates(fr, kls, True)
        else:
            reps = self._per_prompt_replicates(kls, design)
        units = (self.groups_,)
        return design.interval(gains, reps[0], units)[0], design.interval(gains_d, reps[1], units)[0]

    def _per_prompt_replicates(self, kls: np.ndarray, design: _Design) -> tuple[np.ndarray, np.ndarray]:
        """Replicates (E, R) of the per-prompt-budget frontier, plain and corrected: each prompt at its own β."""
        betas, t, _ = self._solve_beta(kls)  # (E, P)
        resample = design.within(self.groups_)
        if resample is None:  # prompts resampled: each prompt's gain and correction stay as they are
            plain, corrected = t.gain, t.gain + self._prompt_corrections(kls)
            return design.reduce(plain[:, None, :]), design.reduce(corrected[:, None, :])
        idx, groups = resample
        samples = TiltedSamples(self.rewards_[idx], groups)
        shape = (kls.size, design.n_bootstrap, self.n_prompts_)
        b, t, _ = self._solve_beta(kls, samples=samples, start=np.tile(betas, design.n_bootstrap))
        lag, kl_var = fixed_kl_parts(samples, b)
        corrected = t.gain + fixed_kl_correction(lag, kl_var, t.variance, b, 1)
        return design.reduce(t.gain.reshape(shape)), design.reduce(corrected.reshape(shape))

    def _within_seed(self) -> int | None:
        """The seed of within-prompt resampling, a stream of its own beside the prompts' (``random_state``)."""
        return None if self.random_state is None else derive_seed(self.random_state, "within-prompts")

    def bootstrap_statistic(self, statistic, fixed_prompts: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Interval and standard error of the prompt mean of a per-prompt statistic of the samples.

        ``statistic(rewards, groups)`` returns shape ``(K, P)`` (K quantities, one value per prompt), e.g.
        best-of-N's gain and KL for K values of N. On the footing of the frontier's own intervals
        (``bootstrap_mode_``): prompts resampled, or, below 10 prompts or with ``fixed_prompts``, samples
        within the fixed prompts (the uncertainty about these prompts, the footing of a trained policy's
        prompt-stratified standard error). Intervals are estimate ± t·se (:meth:`_Design.interval`'s t and
        scale). Returns the estimate (K,), its interval (K, 2) and its standard error (K,); the interval is
        a point (se 0) for an exact fit or ``n_bootstrap`` < 2.
        """
        self._check_fitted()
        per_prompt = self._per_prompt(statistic)
        point = per_prompt.mean(axis=1)
        if self.exact_ or self.n_bootstrap < 2:
            return point, np.stack([point, point], axis=1), np.zeros_like(point)
        if fixed_prompts or self.bootstrap_mode_ == "samples":
            return (point, *self._fixed_prompts_interval(statistic, point))
        design = _Design.make(self.n_prompts_, "prompts", self.n_bootstrap, self.confidence, self.random_state)
        ci, se = design.interval(point, design.reduce(per_prompt[:, None, :]), (self.groups_,))
        return point, ci, se

    def _fixed_prompts_interval(self, statistic, point, max_prompts: int = 32) -> tuple[np.ndarray, np.ndarray]:
        r"""Interval estimate ± t·se and se of a prompt mean, prompts fixed, samples resampled within each.

        Prompts resample independently, so :math:`se^2 = \sum_p \mathrm{Var}_p / P^2`, each prompt's bootstrap
        variance scaled by :math:`n_p/(n_p-1)` (the bootstrap variance of a mean of n draws is the plug-in one,
        short of the unbiased by (n−1)/n; :class:`~alignlimits.theory.paired._Design` scales alike); t has
        :math:`\sum_p (n_p - 1)` degrees of freedom. The mean of the scaled :math:`\mathrm{Var}_p` is read off
        at most ``max_prompts`` prompts drawn at random, which bounds the cost on large tables. The interval is
        not a percentile one: resampling ties a prompt's top samples, so order-statistic estimators
        (best-of-N) are biased low on the replicates and percentile intervals miss (coverage 22% at 40
        prompts), while their spread stays right (tests/theory/test_bootstrap.py).
        """
        rng = np.random.default_rng(self._within_seed())
        P = self.n_prompts_
        members = np.arange(P) if P <= max_prompts else np.sort(rng.choice(P, max_prompts, replace=False))
        groups, rewards, _ = self._take(members)
        replicates = np.stack([np.asarray(statistic(rewards[groups.resample_within(rng)], groups))
                               for _ in range(self.n_bootstrap)])  # (R, K, members)
        n = groups.sizes.astype(float)
        se = np.sqrt((replicates.var(axis=0, ddof=1) * (n / (n - 1))).mean(axis=1) / P)
        half = stats.t.ppf(0.5 + self.confidence / 2, self.n_samples_ - P) * se
        return np.stack([point - half, point + half], axis=1), se
