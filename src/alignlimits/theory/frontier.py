r"""The frontier of KL-regularised alignment, estimated from base-model rewards.

:math:`\Delta^*(\varepsilon) = \max\{E_\pi r - E_{\pi_0} r : \mathrm{KL}(\pi\|\pi_0) \le \varepsilon\}
= \Delta(\beta_\varepsilon)` with :math:`K(\beta_\varepsilon) = \varepsilon`; it is increasing
and concave and :math:`d\Delta^*/d\varepsilon = \beta_\varepsilon`.

With several prompts, a budget on the prompt-averaged KL is met by one shared β
(``budget="shared"``, the default): the frontier is
:math:`(\overline{K}(\beta), \overline{\Delta}(\beta))`, means over prompts. A budget
that every prompt must meet on its own (``budget="per-prompt"``) gives a lower curve.

From n base samples per prompt the estimate is the frontier of the empirical distribution, a
ratio estimator biased low by O(1/n) for the true one. The bias-corrected ("debiased") frontier is
its delete-one jackknife at fixed KL, to second order (:mod:`alignlimits.theory.frontier_solve`).
It is not free of bias. What the tests measure on Gaussian rewards, 16 samples per prompt
(``tests/theory/test_debias.py``): at 2,000 prompts the plain estimate is 3.0%, 4.8% and 7.8% low at KL 0.1,
0.5 and 1, the corrected one +0.6%, +0.4% and −0.3% (bound: 0.8%); for one prompt at KL 0.25 the plain one
is 0.045 low and the corrected one 0.011 (bound: 0.013); at 256,000 rewards in prompts of 8, 16 and 64
samples, within 2%, 1% and 0.5% at KL 0.3 for Gaussian, uniform and Bernoulli rewards. Against a narrow
interval that residual matters: the intervals' coverage is measured within the reliable range
(``tests/theory/test_bootstrap.py``: 93–96% for 3 to 500 prompts), which is where the report draws the
corrected band.

Intervals (:mod:`alignlimits.theory.frontier_bootstrap`) come from the paired design that every point
compared with the frontier uses (:mod:`alignlimits.theory.paired`): one interval per quantity.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from alignlimits.errors import AlignLimitsError
from alignlimits.theory.frontier_bootstrap import BOOTSTRAP_MODES, _Intervals, bootstrap_mode
from alignlimits.theory.frontier_solve import _Solver, fixed_kl_correction, fixed_kl_parts
from alignlimits.theory.groups import Groups
from alignlimits.theory.stream import ChunkedSamples, PromptSummary, prompt_summary
from alignlimits.theory.tilt import Tilt, TiltedSamples, tilt

BUDGET_MODES = ("shared", "per-prompt")
__all__ = ["BOOTSTRAP_MODES", "BUDGET_MODES", "BudgetPoint", "Frontier", "bootstrap_mode"]


@dataclass(frozen=True)
class BudgetPoint:
    """The frontier at one KL budget (keys of the ``frontier`` JSON's ``budgets``)."""

    kl: float
    beta: float
    gain: float
    gain_ci: tuple[float, float]
    gain_debiased: float
    gain_debiased_ci: tuple[float, float]
    kl_reverse: float
    jeffreys: float
    sqrt_bound: float
    ess_min: float
    reliable: bool

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["gain_ci"] = [float(x) for x in self.gain_ci]
        d["gain_debiased_ci"] = [float(x) for x in self.gain_debiased_ci]
        return d


@dataclass
class Frontier(_Solver, _Intervals):
    """Estimate :math:`\\Delta^*(\\varepsilon)` from base rewards (scikit-learn style: ``fit`` returns self).

    Parameters
    ----------
    budget: ``"shared"`` (one β for all prompts, budget on the mean KL) or ``"per-prompt"``.
    n_curve: number of β values on the curve.
    min_ess: a point is reliable when every prompt's effective sample size
        :math:`1/\\sum w_i^2` is at least this.
    confidence: level of the bootstrap intervals.
    n_bootstrap: bootstrap replicates.
    bootstrap: the footing of the intervals (:mod:`alignlimits.theory.paired`): ``"prompts"``
        resamples prompts, ``"samples"`` holds the prompts fixed and resamples the samples within each;
        ``"auto"`` takes the first from 10 prompts on, the second below.
    random_state: seed of the bootstrap.

    Fitted attributes end in ``_``: ``n_prompts_``, ``n_samples_``, ``base_reward_mean_``,
    ``reward_variance_`` (mean within-prompt variance), ``base_probs_`` (the base probability of
    every sample, in the grouped order of ``rewards_``: 1/n for samples), ``curve_`` (the plain
    estimate: dict of arrays ``beta``, ``kl``, ``gain``, ``ess_min``, ``reliable``),
    ``curve_debiased_`` (the bias-corrected one: ``beta``, ``kl`` (the plain curve's KL: the
    correction is at fixed KL), ``gain``; equal to ``curve_`` for an exact fit), ``nodes_`` (per prompt
    at the curve's β: the plain tilt ``tilt``, the jackknifed one ``tilt_debiased``, the Lagrangian's
    jackknife correction ``lag`` and the plug-in KL's variance ``kl_variance``), ``base_means_`` and
    ``top_gain_per_prompt_`` (each prompt's base mean and top reward less it), ``max_kl_per_prompt_``,
    ``max_kl_`` (largest attainable KL), ``max_reliable_kl_``, ``max_gain_`` (the largest gain the
    plain frontier reaches: as β → 0 with a shared budget, each prompt's top reward less its base
    mean; at the budget ``max_kl_`` with a per-prompt one; ``kl_for_gain`` is inf above it).

    :meth:`fit` takes the rewards in memory; :meth:`fit_stream` reads them chunk by chunk
    (:class:`~alignlimits.theory.stream.ChunkedSamples`) and gives the same numbers in bounded memory.
    """

    budget: str = "shared"
    n_curve: int = 64
    min_ess: float = 10.0
    confidence: float = 0.95
    n_bootstrap: int = 200
    bootstrap: str = "auto"
    random_state: int | None = 0
    _nodes: dict = field(default=None, init=False, repr=False)

    # ------------------------------------------------------------------ fitting
    def fit(self, rewards, prompt_ids=None, base_probs=None) -> "Frontier":
        """Fit on flat rewards, grouped by ``prompt_ids`` (one prompt if omitted).

        ``base_probs`` (optional, summing to 1 within each prompt) makes the rewards the
        atoms of a known distribution instead of samples: the frontier is then exact and
        every point is reliable.
        """
        self._check_modes()
        rewards = np.asarray(rewards, dtype=np.float64).ravel()
        if rewards.size == 0:
            raise AlignLimitsError("no rewards to fit: the sample table is empty")
        if not np.isfinite(rewards).all():
            raise AlignLimitsError("rewards contain NaN or infinite values; drop or fix them first")
        if prompt_ids is None:
            groups, order = Groups.equal(1, rewards.size), np.arange(rewards.size)
            self.prompt_ids_ = np.array(["0"])
        else:
            groups, order, self.prompt_ids_ = Groups.from_labels(np.asarray(prompt_ids))
        self.rewards_ = rewards[order]
        self.groups_ = groups
        self.exact_ = base_probs is not None
        given = None if base_probs is None else np.asarray(base_probs, float).ravel()[order]
        self.base_probs_ = groups.expand(1.0 / groups.sizes) if given is None else given
        self._check_sizes()
        self._samples = TiltedSamples(self.rewards_, groups, given)
        return self._fit_summary(prompt_summary(self.rewards_, groups, self.base_probs_))

    def fit_stream(self, samples: ChunkedSamples, prompt_ids) -> "Frontier":
        """Fit on rewards read chunk by chunk (:class:`~alignlimits.theory.stream.ChunkedSamples`),
        never all in memory: every number equals :meth:`fit`'s on the same rewards in the same prompt
        order (``prompt_ids``, one per group). Each evaluation at new β is a pass over the data.

        Base samples only (no ``base_probs``), and the bootstrap must resample prompts
        (``"prompts"``, or ``"auto"`` with 10 prompts or more): resampling within prompts needs every
        reward at once. ``rewards_`` and ``base_probs_`` are None.
        """
        self._check_modes()
        self.prompt_ids_ = np.asarray(prompt_ids)
        if self.prompt_ids_.shape != (samples.groups.n_groups,):
            raise AlignLimitsError(f"{self.prompt_ids_.size} prompt ids for {samples.groups.n_groups} groups of samples")
        self.groups_, self.exact_, self.rewards_, self.base_probs_ = samples.groups, False, None, None
        if self.n_bootstrap > 1 and bootstrap_mode(self.bootstrap, samples.groups.n_groups) == "samples":
            raise AlignLimitsError("a streamed frontier resamples prompts only: with fewer than 10 prompts, or "
                                   "bootstrap='samples', fit the rewards in memory")
        self._check_sizes()
        self._samples = samples
        return self._fit_summary(samples.summary())

    def _check_modes(self) -> None:
        if self.budget not in BUDGET_MODES:
            raise AlignLimitsError(f"budget must be one of {', '.join(BUDGET_MODES)}, not {self.budget!r}")
        bootstrap_mode(self.bootstrap, 1)  # refuses an unknown (or removed) one

    def _check_sizes(self) -> None:
        groups = self.groups_
        if not self.exact_ and groups.sizes.min() < 2:
            lonely = self.prompt_ids_[groups.sizes < 2][:3]
            raise AlignLimitsError(
                f"prompt(s) {', '.join(map(str, lonely))} have a single sample; a frontier needs at least 2 "
                "samples per prompt (sample more, or drop those prompts)"
            )

    def _fit_summary(self, summary: PromptSummary) -> "Frontier":
        """Everything past grouping, from the per-prompt summary and ``_samples`` (in memory or streamed)."""
        self._summary = summary
        self.n_prompts_ = self.groups_.n_groups
        self.n_samples_ = self.groups_.n_total
        self.base_reward_mean_ = float(summary.mean.mean())
        self.reward_variance_ = float(summary.variance.mean())
        self.max_kl_per_prompt_ = -np.log(summary.top_mass)  # KL as β → 0: all mass on the top atoms
        self.base_means_, self.top_gain_per_prompt_ = summary.mean, summary.top - summary.mean
        if self.budget == "shared":
            self.max_kl_ = float(self.max_kl_per_prompt_.mean())
        else:
            self.max_kl_ = float(self.max_kl_per_prompt_.min())
        self._fit_curve()
        self.max_gain_ = self._find_max_gain()
        return self

    def _tilt(self, beta) -> Tilt:
        return self._samples.at(beta)

    def _take(self, members: np.ndarray) -> tuple[Groups, np.ndarray, np.ndarray | None]:
        """The groups, rewards and (exact fit) base probabilities of the prompts ``members`` alone."""
        if self.rewards_ is None:
            return self._samples.take(members)
        groups, flat = self.groups_.subset(members)
        return groups, self.rewards_[flat], self.base_probs_[flat] if self.exact_ else None

    def _per_prompt(self, statistic) -> np.ndarray:
        """``statistic(rewards, groups)`` of every prompt (a pass over the data when streamed)."""
        if self.rewards_ is None:
            return self._samples.map(statistic)
        return np.asarray(statistic(self.rewards_, self.groups_))

    @property
    def nodes_(self) -> dict:
        """Per-prompt values at the curve's β (see the class docstring)."""
        self._check_fitted()
        return self._nodes

    def _fit_curve(self) -> None:
        spread = float(np.max(self._summary.top - self._summary.bottom))
        if spread <= 0:
            raise AlignLimitsError("every reward is the same within each prompt: there is nothing to align toward")
        # β from 100× the largest spread (KL ≈ 5e-5) down until the mean KL is 99.9% of its maximum,
        # located on at most 256 prompts: it only sets the range of the curve
        coarse = spread * np.logspace(2, -9, 23)
        sub_groups, sub_rewards, q = self._take(np.unique(np.linspace(0, self.n_prompts_ - 1, 256).astype(int)))
        kl_mean = tilt(sub_rewards, coarse, sub_groups, q).kl.mean(axis=1)
        near_max = np.nonzero(kl_mean >= 0.999 * kl_mean.max())[0]
        beta_lo = coarse[near_max[0]] if near_max.size else coarse[-1]
        t = self._fit_nodes(np.geomspace(spread * 1e2, beta_lo, self.n_curve))
        if self.budget == "shared":
            self._fit_shared_curve(t)
        else:
            self._fit_per_prompt_curve(t)
        self.curve_["reliable"] = self.curve_["kl"] <= self.max_reliable_kl_

    def _fit_nodes(self, betas: np.ndarray) -> Tilt:
        """Per prompt at the curve's β: the plain and jackknifed tilts and the fixed-KL correction's parts."""
        if self.exact_:
            t = self._tilt(betas)
            self._nodes = {"u": np.log(betas), "tilt": t, "tilt_debiased": t, "lag": np.zeros(t.kl.shape),
                           "kl_variance": np.zeros(t.kl.shape)}
        else:
            t, t_debiased = self._samples.jackknife(betas)
            if self.rewards_ is None:  # one more pass
                lag, kl_var = self._samples.map(lambda r, g: fixed_kl_parts(r, betas, g))
            else:
                lag, kl_var = fixed_kl_parts(self._samples, betas)
            self._nodes = {"u": np.log(betas), "tilt": t, "tilt_debiased": t_debiased, "kl_variance": kl_var, "lag": lag}
        self._nodes["correction"] = {k: getattr(self._nodes["tilt_debiased"], k) - getattr(t, k)
                                     for k in ("kl", "gain", "variance")}
        return t

    def _fit_shared_curve(self, t: Tilt) -> None:
        betas, nodes = t.beta[:, 0], self._nodes
        self.curve_ = {"beta": betas, "kl": t.kl.mean(axis=1), "gain": t.gain.mean(axis=1), "ess_min": t.ess.min(axis=1)}
        correction = fixed_kl_correction(nodes["lag"].mean(axis=1), nodes["kl_variance"].mean(axis=1),
                                         t.variance.mean(axis=1), betas, self.n_prompts_)
        self._correction = None if self.exact_ else {"kl": np.maximum.accumulate(self.curve_["kl"]), "c": correction}
        self.curve_debiased_ = {"beta": betas, "kl": self.curve_["kl"],
                                "gain": self.curve_["gain"] + (0.0 if self.exact_ else correction)}
        self.max_reliable_kl_ = self.max_kl_ if self.exact_ else self._find_max_reliable_kl()

    def _fit_per_prompt_curve(self, t: Tilt) -> None:
        nodes = self._nodes
        self._correction = None if self.exact_ else {
            "kl": np.maximum.accumulate(t.kl, axis=0),
            "c": fixed_kl_correction(nodes["lag"], nodes["kl_variance"], t.variance, t.beta, 1)}
        kls = np.geomspace(1e-4, 0.995, self.n_curve) * self.max_kl_
        per_prompt_betas, tk, _ = self._solve_beta(kls)
        self.curve_ = {"beta": per_prompt_betas.mean(axis=1), "kl": kls, "gain": tk.gain.mean(axis=1),
                       "ess_min": tk.ess.min(axis=1)}
        self.curve_debiased_ = {"beta": self.curve_["beta"], "kl": kls,
                                "gain": self.curve_["gain"] + self._correction_at(kls)}
        # each prompt's largest node KL whose ESS is still enough; the budget must suit every prompt
        ok_kl = np.where(t.ess >= self.min_ess, t.kl, 0.0).max(axis=0)
        self.max_reliable_kl_ = self.max_kl_ if self.exact_ else float(min(ok_kl.min(), self.max_kl_))

    def _find_max_reliable_kl(self) -> float:
        """Largest mean KL before the smallest per-prompt ESS drops below ``min_ess``, refined between nodes."""
        ess = self.curve_["ess_min"]
        bad = np.nonzero(ess < self.min_ess)[0]
        if bad.size == 0:
            return float(self.curve_["kl"][-1])
        first_bad = bad[0]
        if first_bad == 0:
            return 0.0
        lo, hi = np.log(self.curve_["beta"][first_bad - 1]), np.log(self.curve_["beta"][first_bad])
        # 8 points between the last good node and the first bad one: 1/9 of a node interval
        t = self._tilt(np.exp(np.linspace(lo, hi, 10)[1:-1]))
        ok = t.ess.min(axis=1) >= self.min_ess
        n_ok = int(np.argmin(ok)) if not ok.all() else ok.size
        return float(t.kl.mean(axis=1)[n_ok - 1]) if n_ok > 0 else float(self.curve_["kl"][first_bad - 1])

    def _find_max_gain(self) -> float:
        """Gain as β → 0 (shared budget: every prompt's top reward less its base mean), or at the
        budget ``max_kl_`` (per-prompt: the prompts that set ``max_kl_`` are at that limit)."""
        top = self._summary.top - self._summary.mean
        if self.budget == "shared":
            return float(top.mean())
        gains = self._solve_beta(np.array([self.max_kl_]))[1].gain[0]
        return float(np.where(self.max_kl_per_prompt_ <= self.max_kl_, top, gains).mean())

    # ------------------------------------------------------------------ queries
    def _check_fitted(self):
        if self._nodes is None:
            raise AlignLimitsError("the frontier is not fitted yet: call fit() first")

    def _check_budgets(self, kls, extrapolate: bool) -> np.ndarray:
        self._check_fitted()
        kls = np.atleast_1d(np.asarray(kls, dtype=np.float64))
        if not np.isfinite(kls).all() or (kls <= 0).any():
            raise AlignLimitsError("KL budgets must be positive numbers (nats)")
        unattainable = kls >= self.max_kl_
        if unattainable.any():
            raise AlignLimitsError(
                f"KL budget {kls[unattainable][0]:g} is beyond what any reweighting of these samples reaches "
                f"(at most {self.max_kl_:.4g} nats, log of the samples per prompt); ask for less or sample more"
            )
        unreliable = kls > self.max_reliable_kl_
        if unreliable.any() and not extrapolate:
            raise AlignLimitsError(
                f"KL budget {kls[unreliable][0]:g} is above the largest KL these samples support reliably "
                f"({self.max_reliable_kl_:.4g} nats, every prompt keeping ESS ≥ {self.min_ess:g}); ask for at most "
                f"that, sample more, or pass --extrapolate"
            )
        return kls

    def beta_for_kl(self, kl, extrapolate: bool = False, debiased: bool = False) -> np.ndarray:
        """:math:`\\beta_\\varepsilon` with :math:`K(\\beta_\\varepsilon) = \\varepsilon`.

        Shared budget: one β per budget, shape ``(E,)``. Per-prompt budget: shape ``(E, P)``. ``debiased``: on
        the jackknifed KL curve (:math:`K_{JK}(\\beta) = \\varepsilon`), the β whose true π_β spends ε, which the
        plain curve (biased low in KL at a given β) overstates; NaN where that curve does not reach ε.
        """
        kls = self._check_budgets(kl, extrapolate)
        debiased = debiased and not self.exact_
        betas, _, met = self._solve_beta(kls, debiased=debiased)
        return np.where(met, betas, np.nan) if debiased else betas

    def evaluate(self, kls, extrapolate: bool = False) -> list[BudgetPoint]:
        """The frontier at each KL budget, plain and bias-corrected (fixed-KL jackknife), with intervals on the
        paired design's footing (:meth:`_budget_intervals`) and reliability."""
        kls = self._check_budgets(kls, extrapolate)
        betas, t, _ = self._solve_beta(kls)
        gains = t.gain.mean(axis=1)
        gains_d = gains + self._correction_at(kls)
        intervals, intervals_d = self._budget_intervals(kls, gains, gains_d)
        points = []
        for j, kl in enumerate(kls):
            ess_min = float(t.ess[j].min())
            points.append(BudgetPoint(
                kl=float(kl), beta=float(np.mean(betas[j])) if self.budget == "per-prompt" else float(betas[j]),
                gain=float(gains[j]), gain_ci=(float(intervals[j, 0]), float(intervals[j, 1])),
                gain_debiased=float(gains_d[j]), gain_debiased_ci=(float(intervals_d[j, 0]), float(intervals_d[j, 1])),
                kl_reverse=float(t.kl_reverse[j].mean()), jeffreys=float(t.jeffreys[j].mean()),
                sqrt_bound=float(np.sqrt(2 * self.reward_variance_ * kl)), ess_min=ess_min,
                reliable=bool(self.exact_ or (ess_min >= self.min_ess and kl <= self.max_reliable_kl_)),
            ))
        return points

    def gain_at_kl(self, kl, extrapolate: bool = False, debiased: bool = False) -> np.ndarray:
        """:math:`\\Delta^*(\\varepsilon)` at each budget (no intervals); ``debiased``: the bias-corrected
        frontier, the plain one plus its fixed-KL correction (NaN past the curve's last β node; the plain one
        for an exact fit)."""
        kls = self._check_budgets(kl, extrapolate)
        gains = self._solve_beta(kls)[1].gain.mean(axis=1)
        return gains + self._correction_at(kls) if debiased else gains

    def kl_for_gain(self, gain, debiased: bool = False) -> np.ndarray:
        """The inverse of :meth:`gain_at_kl`: the least KL at which the frontier reaches each gain.

        ``inf`` where it never does: above ``max_gain_`` for the plain frontier, which only
        reweights the samples; above the largest gain of ``curve_debiased_`` for the bias-corrected one.
        """
        self._check_fitted()
        debiased = debiased and not self.exact_
        gains = np.atleast_1d(np.asarray(gain, dtype=np.float64))
        out = np.full(gains.shape, np.inf)
        out[gains <= 0] = 0.0
        reachable = (gains > 0) & (gains < self.max_gain_)
        if debiased:
            out[gains > 0] = self._kl_for_corrected_gain(gains[gains > 0])
        elif reachable.any() and self.budget == "shared":
            out[reachable] = self._solve_beta(gains[reachable], of="gain")[1].kl.mean(axis=1)
        elif reachable.any():
            out[reachable] = self._kl_for_corrected_gain(gains[reachable], corrected=False)
        return out
