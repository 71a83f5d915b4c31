r"""The frontier of KL-regularised alignment, estimated from base-model rewards.

:math:`\Delta^*(\varepsilon) = \max\{E_\pi r - E_{\pi_0} r : \mathrm{KL}(\pi\|\pi_0) \le \varepsilon\}
= \Delta(\beta_\varepsilon)` with :math:`K(\beta_\varepsilon) = \varepsilon`; it is increasing
and concave and :math:`d\Delta^*/d\varepsilon = \beta_\varepsilon`.

With several prompts, a budget on the prompt-averaged KL is met by one shared β
(``budget="shared"``, the default): the frontier is
:math:`(\overline{K}(\beta), \overline{\Delta}(\beta))`, means over prompts. A budget
that every prompt must meet on its own (``budget="per-prompt"``) gives a lower curve.

From n base samples per prompt the estimate is the frontier of the empirical distribution, a
ratio estimator biased low by O(1/n) for the true one. The bias-corrected ("debiased") frontier
jackknifes each prompt's KL and gain curves over its samples
(:meth:`~alignlimits.theory.tilt.TiltedSamples.jackknife`, bias O(1/n²)) and inverts the
corrected curve at the budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from alignlimits.errors import AlignLimitsError
from alignlimits.seeding import derive_seed
from alignlimits.theory.groups import Groups
from alignlimits.theory.stream import ChunkedSamples, PromptSummary, prompt_summary
from alignlimits.theory.tilt import Tilt, TiltedSamples, tilt

BUDGET_MODES = ("shared", "per-prompt")
BOOTSTRAP_MODES = ("auto", "prompts", "prompts+samples")


def bootstrap_mode(bootstrap: str, n_prompts: int) -> str:
    """What ``bootstrap="auto"`` resolves to: resampling prompts with 30 prompts or more, also samples below."""
    if bootstrap != "auto":
        return bootstrap
    return "prompts" if n_prompts >= 30 else "prompts+samples"


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


def _hermite(u, u0, u1, f0, f1, d0, d1, slope: bool = False):
    """Cubic Hermite interpolation on [u0, u1] from values and derivatives (all broadcastable);
    ``slope``: its derivative in u instead."""
    h = u1 - u0
    t = (u - u0) / h
    t2, t3 = t * t, t * t * t
    if slope:
        return (6 * t2 - 6 * t) * (f0 - f1) / h + (3 * t2 - 4 * t + 1) * d0 + (3 * t2 - 2 * t) * d1
    return (
        (2 * t3 - 3 * t2 + 1) * f0
        + (t3 - 2 * t2 + t) * h * d0
        + (-2 * t3 + 3 * t2) * f1
        + (t3 - t2) * h * d1
    )


@dataclass
class Frontier:
    """Estimate :math:`\\Delta^*(\\varepsilon)` from base rewards (scikit-learn style: ``fit`` returns self).

    Parameters
    ----------
    budget: ``"shared"`` (one β for all prompts, budget on the mean KL) or ``"per-prompt"``.
    n_curve: number of β values on the curve.
    min_ess: a point is reliable when every prompt's effective sample size
        :math:`1/\\sum w_i^2` is at least this.
    confidence: level of the bootstrap intervals.
    n_bootstrap: bootstrap replicates.
    bootstrap: ``"prompts"`` resamples prompts; ``"prompts+samples"`` also resamples samples
        within each prompt (a full pass over the data per replicate); ``"auto"`` takes the
        first with 30 prompts or more, the second below.
    random_state: seed of the bootstrap.

    Fitted attributes end in ``_``: ``n_prompts_``, ``n_samples_``, ``base_reward_mean_``,
    ``reward_variance_`` (mean within-prompt variance), ``base_probs_`` (the base probability of
    every sample, in the grouped order of ``rewards_``: 1/n for samples), ``curve_`` (the plain
    estimate: dict of arrays ``beta``, ``kl``, ``gain``, ``ess_min``, ``reliable``),
    ``curve_debiased_`` (the bias-corrected one: ``beta``, ``kl``, ``gain``; NaN where a
    prompt's corrected curve does not reach the KL; equal to ``curve_`` for an exact fit),
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

        Base samples only (no ``base_probs``), and the bootstrap must resample prompts alone
        (``"prompts"``, or ``"auto"`` with 30 prompts or more): resampling within prompts needs every
        reward at once. ``rewards_`` and ``base_probs_`` are None.
        """
        self._check_modes()
        self.prompt_ids_ = np.asarray(prompt_ids)
        if self.prompt_ids_.shape != (samples.groups.n_groups,):
            raise AlignLimitsError(f"{self.prompt_ids_.size} prompt ids for {samples.groups.n_groups} groups of samples")
        self.groups_, self.exact_, self.rewards_, self.base_probs_ = samples.groups, False, None, None
        if self.n_bootstrap > 0 and bootstrap_mode(self.bootstrap, samples.groups.n_groups) == "prompts+samples":
            raise AlignLimitsError("a streamed frontier resamples prompts only: with fewer than 30 prompts, or "
                                   "bootstrap='prompts+samples', fit the rewards in memory")
        self._check_sizes()
        self._samples = samples
        return self._fit_summary(samples.summary())

    def _check_modes(self) -> None:
        if self.budget not in BUDGET_MODES:
            raise AlignLimitsError(f"budget must be one of {', '.join(BUDGET_MODES)}, not {self.budget!r}")
        if self.bootstrap not in BOOTSTRAP_MODES:
            raise AlignLimitsError(f"bootstrap must be one of {', '.join(BOOTSTRAP_MODES)}, not {self.bootstrap!r}")

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
        betas = np.geomspace(spread * 1e2, beta_lo, self.n_curve)
        t, t_debiased = (self._tilt(betas),) * 2 if self.exact_ else self._samples.jackknife(betas)
        self._nodes = {"u": np.log(betas), "tilt": t, "tilt_debiased": t_debiased,
                       "correction": {k: getattr(t_debiased, k) - getattr(t, k) for k in ("kl", "gain", "variance")}}
        if self.budget == "shared":
            self.curve_ = {"beta": betas, "kl": t.kl.mean(axis=1), "gain": t.gain.mean(axis=1), "ess_min": t.ess.min(axis=1)}
            self.curve_debiased_ = {"beta": betas, "kl": t_debiased.kl.mean(axis=1),
                                    "gain": t_debiased.gain.mean(axis=1)}
            self.max_reliable_kl_ = self.max_kl_ if self.exact_ else self._find_max_reliable_kl()
        else:
            kls = np.geomspace(1e-4, 0.995, self.n_curve) * self.max_kl_
            solvers = [self._newton(kls, "kl", None, None, d) for d in ([False] if self.exact_ else [False, True])]
            (per_prompt_betas, tk, _), *debiased = self._solve_together(solvers)
            self.curve_ = {"beta": per_prompt_betas.mean(axis=1), "kl": kls, "gain": tk.gain.mean(axis=1), "ess_min": tk.ess.min(axis=1)}
            self.curve_debiased_ = {"beta": self.curve_["beta"], "kl": kls, "gain": self.curve_["gain"]}
            if debiased:
                betas_d, td, ok = debiased[0]
                self.curve_debiased_ = {"beta": betas_d.mean(axis=1), "kl": kls, "gain": _mean_gain(td, ok)}
            # each prompt's largest node KL whose ESS is still enough; the budget must suit every prompt
            ok_kl = np.where(t.ess >= self.min_ess, t.kl, 0.0).max(axis=0)
            self.max_reliable_kl_ = self.max_kl_ if self.exact_ else float(min(ok_kl.min(), self.max_kl_))
        self.curve_["reliable"] = self.curve_["kl"] <= self.max_reliable_kl_

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

    def beta_for_kl(self, kl, extrapolate: bool = False) -> np.ndarray:
        """:math:`\\beta_\\varepsilon` with :math:`K(\\beta_\\varepsilon) = \\varepsilon`.

        Shared budget: one β per budget, shape ``(E,)``. Per-prompt budget: shape ``(E, P)``.
        """
        return self._solve_beta(self._check_budgets(kl, extrapolate))[0]

    def _solve_beta(
        self, targets: np.ndarray, of: str = "kl", samples: TiltedSamples | None = None, prompt_weights=None,
        start=None, debiased: bool = False,
    ) -> tuple[np.ndarray, Tilt, np.ndarray]:
        """β at which the (prompt-weighted) mean KL or gain equals each target: safeguarded Newton in log β
        (:meth:`_newton`) on ``samples`` (default: the fitted ones). Returns β, the tilt there, and whether
        each target was met (a jackknifed curve need not reach every target)."""
        return self._solve_together([self._newton(targets, of, prompt_weights, start, debiased)], samples)[0]

    def _solve_together(self, solvers: list, samples=None) -> list[tuple[np.ndarray, Tilt, np.ndarray]]:
        """Run :meth:`_newton` solvers in lockstep: each round evaluates the plain tilt once at the β of every
        solver still running (streamed samples: one pass over the data for all of them). A solver's iterates
        are those it has alone, so its answer is too."""
        samples = self._samples if samples is None else samples
        asks = {i: next(solver) for i, solver in enumerate(solvers)}
        answers: list = [None] * len(solvers)
        while asks:
            running = list(asks)
            t = samples.at(np.concatenate([asks[i] for i in running], axis=0))
            ends = np.cumsum([0] + [asks[i].shape[0] for i in running])
            for i, lo, hi in zip(running, ends[:-1], ends[1:]):
                rows = Tilt(**{k: v[lo:hi] for k, v in vars(t).items()})
                try:
                    asks[i] = solvers[i].send(rows)
                except StopIteration as done:
                    answers[i] = done.value
                    del asks[i]
        return answers

    def _newton(self, targets: np.ndarray, of: str, prompt_weights, start, debiased: bool):
        """A generator: yields the β (E,) or (E, P) at which it needs the plain tilt, is sent that tilt, and
        returns β, the tilt there and which targets were met (see :meth:`_solve_beta`).

        Both quantities fall as β grows, with exact derivatives ``dkl_dlog_beta`` and
        ``dgain_dlog_beta``. The start comes from the curve nodes unless given. ``debiased``: of the
        jackknifed curves of the fitted samples (:meth:`_debiased_at`).
        """
        per_prompt = self.budget == "per-prompt"
        w = None if prompt_weights is None else np.asarray(prompt_weights, float) / np.sum(prompt_weights)

        def reduce(x):
            if per_prompt:
                return x
            return (x.mean(axis=1) if w is None else x @ w)[:, None]

        deriv = "dkl_dlog_beta" if of == "kl" else "dgain_dlog_beta"
        u = self._nodes["u"]
        lo = np.full((targets.size, 1), u.min() - 30.0)
        hi = np.full((targets.size, 1), u.max() + 30.0)
        if start is None:
            # cubic Hermite between the curve nodes, with exact derivatives, then bisection on it
            t_nodes: Tilt = self._nodes["tilt_debiased" if debiased else "tilt"]
            f_nodes, d_nodes = reduce(getattr(t_nodes, of)), reduce(getattr(t_nodes, deriv))  # rise along nodes
            idx = np.clip((f_nodes[None, :, :] < targets[:, None, None]).sum(axis=1), 1, u.size - 1)
            cols = np.arange(f_nodes.shape[1])[None, :]
            knots = (u[idx - 1], u[idx], f_nodes[idx - 1, cols], f_nodes[idx, cols], d_nodes[idx - 1, cols], d_nodes[idx, cols])
            a, b = u[idx - 1], u[idx]  # u falls along the nodes
            for _ in range(50):
                mid = 0.5 * (a + b)
                too_big = _hermite(mid, *knots) > targets[:, None]  # too much: β must grow, root above mid
                a, b = np.where(too_big, a, mid), np.where(too_big, mid, b)
            x = 0.5 * (a + b)
        else:
            x = np.log(np.asarray(start, float)).reshape(targets.size, -1)
        tol = 1e-12 * np.maximum(1.0, np.abs(targets[:, None]))
        for _ in range(100):
            t = yield np.exp(x) if per_prompt else np.exp(x[:, 0])
            t = self._debias(t) if debiased else t
            err = reduce(getattr(t, of)) - targets[:, None]
            if np.all(np.abs(err) <= tol):
                break
            # too much KL (or gain) means β is too small: the root lies above x
            lo, hi = np.where(err > 0, x, lo), np.where(err > 0, hi, x)
            newton = x - err / np.minimum(reduce(getattr(t, deriv)), -1e-300)
            inside = (newton > lo) & (newton < hi) & np.isfinite(newton)
            x = np.where(inside, newton, 0.5 * (lo + hi))
        betas, met = np.exp(x), np.abs(err) <= 1e3 * tol
        return (betas, t, met) if per_prompt else (betas[:, 0], t, met[:, 0])

    def _debiased_at(self, beta) -> Tilt:
        """The jackknifed tilt at any β: the plain tilt plus each prompt's jackknife correction, exact
        at the curve's nodes and cubic-Hermite interpolated in log β between them (with its slopes
        there, from the variance's correction; ends held constant). The correction is O(1/n) and
        smooth, so this is the jackknife to ~1e-4 of the correction, at the cost of the plain tilt.
        The variance returned is the one the interpolated KL's slope implies, so Newton steps on it
        are exact."""
        return self._debias(self._samples.at(beta))

    def _debias(self, t: Tilt) -> Tilt:
        """The plain tilt ``t`` made the jackknifed one (:meth:`_debiased_at`)."""
        if self.exact_:
            return t
        u_nodes, corr = self._nodes["u"][::-1], {k: v[::-1] for k, v in self._nodes["correction"].items()}
        u = np.clip(np.log(t.beta), u_nodes[0], u_nodes[-1])
        hi = np.clip(np.searchsorted(u_nodes, u), 1, u_nodes.size - 1)
        lo, cols = hi - 1, np.arange(u.shape[1])[None, :]
        b0, b1 = np.exp(u_nodes[lo]), np.exp(u_nodes[hi])
        v0, v1 = corr["variance"][lo, cols], corr["variance"][hi, cols]
        out = {}
        for name, power in (("kl", 2), ("gain", 1)):
            c = corr[name]
            knots = (u, u_nodes[lo], u_nodes[hi], c[lo, cols], c[hi, cols], -v0 / b0**power, -v1 / b1**power)
            out[name] = getattr(t, name) + _hermite(*knots)
            if name == "kl":
                out["variance"] = t.variance - t.beta**2 * _hermite(*knots, slope=True)
        return Tilt(beta=t.beta, kl_reverse=t.kl_reverse, ess=t.ess, **out)

    def evaluate(self, kls, extrapolate: bool = False) -> list[BudgetPoint]:
        """The frontier at each KL budget, plain and bias-corrected, with bootstrap intervals and reliability."""
        kls = self._check_budgets(kls, extrapolate)
        if self.exact_:
            betas, t, _ = self._solve_beta(kls)
            betas_d, t_d, met_d = betas, t, np.ones(betas.shape, bool)
        else:  # the plain and the bias-corrected budgets in lockstep: one evaluation per round for both
            (betas, t, _), (betas_d, t_d, met_d) = self._solve_together(
                [self._newton(kls, "kl", None, None, False), self._newton(kls, "kl", None, None, True)])
        intervals, intervals_d = self._bootstrap(kls, betas, t, betas_d, t_d)
        gains, gains_d = t.gain.mean(axis=1), _mean_gain(t_d, met_d)
        intervals_d[~np.isfinite(gains_d)] = np.nan
        points = []
        for j, kl in enumerate(kls):
            ess_min = float(t.ess[j].min())
            points.append(
                BudgetPoint(
                    kl=float(kl),
                    beta=float(np.mean(betas[j])) if self.budget == "per-prompt" else float(betas[j]),
                    gain=float(gains[j]),
                    gain_ci=(float(intervals[j, 0]), float(intervals[j, 1])),
                    gain_debiased=float(gains_d[j]),
                    gain_debiased_ci=(float(intervals_d[j, 0]), float(intervals_d[j, 1])),
                    kl_reverse=float(t.kl_reverse[j].mean()),
                    jeffreys=float(t.jeffreys[j].mean()),
                    sqrt_bound=float(np.sqrt(2 * self.reward_variance_ * kl)),
                    ess_min=ess_min,
                    reliable=bool(self.exact_ or (ess_min >= self.min_ess and kl <= self.max_reliable_kl_)),
                )
            )
        return points

    def gain_at_kl(self, kl, extrapolate: bool = False, debiased: bool = False) -> np.ndarray:
        """:math:`\\Delta^*(\\varepsilon)` at each budget (no intervals); ``debiased``: the bias-corrected
        frontier (NaN where its curve does not reach the budget; the plain one for an exact fit)."""
        kls = self._check_budgets(kl, extrapolate)
        debiased = debiased and not self.exact_
        _, t, met = self._solve_beta(kls, debiased=debiased)
        return _mean_gain(t, met) if debiased else t.gain.mean(axis=1)

    def kl_for_gain(self, gain, debiased: bool = False) -> np.ndarray:
        """The inverse of :meth:`gain_at_kl`: the least KL at which the frontier reaches each gain.

        ``inf`` where it never does: above ``max_gain_`` for the plain frontier, which only
        reweights the samples (the debiased one: where its curve does not reach the gain).
        """
        self._check_fitted()
        debiased = debiased and not self.exact_
        gains = np.atleast_1d(np.asarray(gain, dtype=np.float64))
        out = np.full(gains.shape, np.inf)
        out[gains <= 0] = 0.0
        reachable = (gains > 0) & (gains < (np.inf if debiased else self.max_gain_))
        if reachable.any() and self.budget == "shared":
            _, t, met = self._solve_beta(gains[reachable], of="gain", debiased=debiased)
            out[reachable] = np.where(met | (not debiased), t.kl.mean(axis=1), np.inf)
        elif reachable.any():
            out[reachable] = self._per_prompt_kl_for_gain(gains[reachable], debiased)
        return out

    def _per_prompt_kl_for_gain(self, gains: np.ndarray, debiased: bool) -> np.ndarray:
        """Budget ε with :math:`G(\\varepsilon) = \\overline{\\Delta_x(\\beta_x(\\varepsilon))}` equal to each gain,
        every prompt at its own :math:`\\beta_x`: safeguarded Newton in ε,
        :math:`dG/d\\varepsilon = \\overline{\\beta_x}`."""
        curve = self.curve_debiased_ if debiased else self.curve_
        known = np.isfinite(curve["gain"])
        eps = np.interp(gains, curve["gain"][known], curve["kl"][known])
        lo, hi = np.zeros(gains.shape), np.full(gains.shape, self.max_kl_)
        betas, tol = None, 1e-12 * np.maximum(1.0, np.abs(gains))
        for _ in range(100):
            betas, t, met = self._solve_beta(eps, start=betas, debiased=debiased)
            err = t.gain.mean(axis=1) - gains
            if np.all(np.abs(err) <= tol):
                break
            lo, hi = np.where(err < 0, eps, lo), np.where(err > 0, eps, hi)
            newton = eps - err / betas.mean(axis=1)
            eps = np.where((newton > lo) & (newton < hi), newton, 0.5 * (lo + hi))
        met = met.all(axis=1) & (np.abs(err) <= 1e3 * tol)
        return np.where(met | (not debiased), eps, np.inf)

    # ---------------------------------------------------------------- bootstrap
    @property
    def bootstrap_mode_(self) -> str:
        return bootstrap_mode(self.bootstrap, self.n_prompts_)

    def bootstrap_description(self) -> str:
        level = f"{100 * self.confidence:g}% expanded-percentile (Hesterberg 2015)"
        if self.exact_:
            return "exact distribution: no sampling error, intervals are points"
        if self.bootstrap_mode_ == "prompts":
            return (
                f"{level} percentile bootstrap, {self.n_bootstrap} replicates resampling prompts with replacement; "
                "each replicate's frontier is interpolated (cubic Hermite in log β with exact derivatives) between "
                f"{self.n_curve} exact β nodes plus the budgets' own β; the bias-corrected frontier's interval "
                "comes from the same replicates of its jackknifed per-prompt curves"
            )
        return (
            f"{level} percentile bootstrap, {self.n_bootstrap} replicates resampling prompts and, within each prompt, "
            "samples with replacement; each replicate's budget is re-solved exactly (Newton in log β); "
            "the bias-corrected frontier's interval is the same replicates shifted by the jackknife's correction"
        )

    def _bootstrap(self, kls: np.ndarray, betas, t_budgets: Tilt, betas_d, t_debiased: Tilt
                   ) -> tuple[np.ndarray, np.ndarray]:
        """Intervals of the plain and the debiased frontier at each budget, from the same replicates."""
        points = (t_budgets.gain.mean(axis=1), t_debiased.gain.mean(axis=1))
        if self.exact_ or self.n_bootstrap <= 0:
            return tuple(np.stack([p, p], axis=1) for p in points)
        rng = np.random.default_rng(self.random_state)
        P = self.n_prompts_
        weights = rng.multinomial(P, np.full(P, 1.0 / P), size=self.n_bootstrap) / P  # (R, P)
        if self.bootstrap_mode_ == "prompts+samples":
            plain = self._resample_within(kls, weights, betas)
            # the jackknife's O(1/n) correction varies far less than the estimate: shift by it
            replicates = (plain, plain + (points[1] - points[0]))
        elif self.budget == "per-prompt":
            replicates = (weights @ t_budgets.gain.T, weights @ t_debiased.gain.T)  # each prompt keeps its own β
        else:
            nodes = self._nodes
            replicates = (self._bootstrap_prompts_shared(kls, weights, betas, t_budgets, nodes["tilt"]),
                          self._bootstrap_prompts_shared(kls, weights, betas_d, t_debiased, nodes["tilt_debiased"]))
        tail = self._expanded_tail()
        return tuple(np.quantile(r, [tail, 1 - tail], axis=0).T for r in replicates)

    def _within_seed(self) -> int | None:
        """The seed of within-prompt resampling, a stream of its own beside the prompts' (``random_state``)."""
        return None if self.random_state is None else derive_seed(self.random_state, "within-prompts")

    def _expanded_tail(self) -> float:
        r"""Tail probability of Hesterberg's expanded percentile interval.

        Percentile intervals from m independent units (prompts; samples when there is one
        prompt) are too narrow for small m; the expansion uses the tail level
        :math:`\Phi(-\sqrt{m/(m-1)}\, t_{m-1, 1-\alpha/2})` instead of α/2.
        """
        m = self.n_prompts_ if self.n_prompts_ > 1 else int(self.groups_.sizes[0])
        alpha = 1 - self.confidence
        return float(stats.norm.cdf(-np.sqrt(m / (m - 1)) * stats.t.ppf(1 - alpha / 2, m - 1)))

    def _bootstrap_prompts_shared(self, kls, weights, betas, t_budgets: Tilt, t_nodes: Tilt) -> np.ndarray:
        """Replicates of a prompt-resampled shared-β frontier, without another pass over the samples.

        A replicate's mean KL and gain at any β are ``weights @ per-prompt values``; the
        per-prompt values and their derivatives in log β are known exactly at the curve nodes
        and the budgets' β, and the replicate's curve is cubic-Hermite interpolated between them.
        """
        u = np.concatenate([self._nodes["u"], np.log(betas)])
        order = np.argsort(u)
        u = u[order]

        def stacked(name):
            return np.concatenate([getattr(t_nodes, name), getattr(t_budgets, name)], axis=0)[order]

        K = weights @ stacked("kl").T  # (R, G)
        dK = weights @ stacked("dkl_dlog_beta").T
        D = weights @ stacked("gain").T
        dD = weights @ stacked("dgain_dlog_beta").T
        R = weights.shape[0]
        out = np.empty((R, kls.size))
        rows = np.arange(R)
        for j, eps in enumerate(kls):
            # u ascending = β ascending = KL descending; first node whose KL falls below eps
            idx = np.clip((K >= eps).sum(axis=1), 1, u.size - 1)
            lo, hi = u[idx - 1], u[idx]
            args = (K[rows, idx - 1], K[rows, idx], dK[rows, idx - 1], dK[rows, idx])
            a, b = lo.copy(), hi.copy()
            for _ in range(60):
                mid = 0.5 * (a + b)
                too_big = _hermite(mid, lo, hi, *args) > eps
                a, b = np.where(too_big, mid, a), np.where(too_big, b, mid)
            x = 0.5 * (a + b)
            out[:, j] = _hermite(x, lo, hi, D[rows, idx - 1], D[rows, idx], dD[rows, idx - 1], dD[rows, idx])
        return out

    def _resample_within(self, kls, weights, betas) -> np.ndarray:
        """Replicates that also resample samples within prompts: one exact re-solve per replicate."""
        rng = np.random.default_rng(self._within_seed())
        g = self.groups_
        sample_of_prompt = np.repeat(1.0 / g.sizes, g.sizes)
        out = np.empty((weights.shape[0], kls.size))
        for r, w in enumerate(weights):
            q = np.bincount(g.resample_within(rng), minlength=g.n_total) * sample_of_prompt
            samples = TiltedSamples(self.rewards_, g, q)
            out[r] = self._solve_beta(kls, samples=samples, prompt_weights=w, start=betas)[1].gain @ w / w.sum()
        return out

    def bootstrap_statistic(self, statistic, fixed_prompts: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Interval and standard error of the prompt mean of a per-prompt statistic of the samples.

        ``statistic(rewards, groups)`` returns shape ``(K, P)`` (K quantities, one value per
        prompt), e.g. best-of-N's gain and KL for K values of N.  Resampled like the frontier's
        band (prompts, and samples within prompts when ``bootstrap_mode_`` says so; expanded
        percentile interval), or, with ``fixed_prompts``, samples within prompts only: the
        uncertainty about these prompts, the footing of a trained policy's prompt-stratified
        standard error (interval estimate ± t·se, t with Σ_p (n_p − 1) degrees of freedom).
        Returns the estimate (K,), its interval (K, 2) and its bootstrap standard error (K,); the
        interval is a point (se 0) for an exact fit or ``n_bootstrap = 0``.
        """
        self._check_fitted()
        per_prompt = self._per_prompt(statistic)
        point = per_prompt.mean(axis=1)
        if self.exact_ or self.n_bootstrap <= 0:
            return point, np.stack([point, point], axis=1), np.zeros_like(point)
        if fixed_prompts:
            return (point, *self._fixed_prompts_interval(statistic, point))
        rng = np.random.default_rng(self.random_state)
        P = self.n_prompts_
        weights = rng.multinomial(P, np.full(P, 1.0 / P), size=self.n_bootstrap) / P  # (R, P)
        if self.bootstrap_mode_ == "prompts":
            replicates = weights @ per_prompt.T
        else:
            rng_within = np.random.default_rng(self._within_seed())
            replicates = np.stack([
                np.asarray(statistic(self.rewards_[self.groups_.resample_within(rng_within)], self.groups_)) @ w
                for w in weights
            ])
        se = replicates.std(axis=0, ddof=1)
        tail = self._expanded_tail()
        return point, np.quantile(replicates, [tail, 1 - tail], axis=0).T, se

    def _fixed_prompts_interval(self, statistic, point, max_prompts: int = 32) -> tuple[np.ndarray, np.ndarray]:
        """Interval estimate ± t·se and se of a prompt mean, prompts fixed, samples resampled within each.

        Prompts resample independently, so se² = Σ_p Var_p / P²; the mean of Var_p is read off at
        most ``max_prompts`` prompts drawn at random, which bounds the cost on large tables.  The
        interval is not a percentile one: resampling ties a prompt's top samples, so order-statistic
        estimators (best-of-N) are biased low on the replicates and percentile intervals miss
        (coverage 22% at 40 prompts), while their spread stays right (tests/theory/test_bootstrap.py).
        """
        rng = np.random.default_rng(self._within_seed())
        P = self.n_prompts_
        members = np.arange(P) if P <= max_prompts else np.sort(rng.choice(P, max_prompts, replace=False))
        groups, rewards, _ = self._take(members)
        replicates = np.stack([np.asarray(statistic(rewards[groups.resample_within(rng)], groups))
                               for _ in range(self.n_bootstrap)])  # (R, K, members)
        se = np.sqrt(replicates.var(axis=0, ddof=1).mean(axis=1) / P)
        half = stats.t.ppf(0.5 + self.confidence / 2, self.n_samples_ - P) * se
        return np.stack([point - half, point + half], axis=1), se



def _mean_gain(t: Tilt, met: np.ndarray) -> np.ndarray:
    """The prompt mean of the gain at each budget, NaN where a budget was not met (by any prompt)."""
    return np.where(met if met.ndim == 1 else met.all(axis=1), t.gain.mean(axis=1), np.nan)
