r"""A method's point against the frontier of the same held-out prompts: paired, with intervals and a verdict.

A point (gain Δ, KL K) is compared with the frontier :math:`\Delta^*` of the base samples of the same
prompts:

- efficiency :math:`\eta = \Delta / \Delta^*(K)`;
- gain gap :math:`g = \Delta - \Delta^*(K)` (negative: below the frontier);
- KL overspend :math:`K / (\Delta^*)^{-1}(\Delta)`, NaN (with ``above_frontier``) when Δ exceeds the
  frontier's top gain, NaN when Δ ≤ 0;
- verdict at level 1 − α from g's interval: ``below`` (its upper end < 0), ``above`` (lower end > 0),
  ``on`` (it holds 0).

**Paired bootstrap.** The unit of replication is the held-out prompt, and a replicate moves each
prompt's method samples and base samples together, so prompt difficulty cancels in g and η. Its footing:

- ``"prompts"`` (the default from ``MIN_PROMPTS_TO_RESAMPLE`` prompts on): prompts resampled with
  replacement, the prompts a sample of a population. Each prompt's samples stay as they are: resampling
  them as well would count their noise twice (it is already in the spread of the prompt means);
- ``"samples"`` (fewer prompts, where resampling prompts means nothing): the prompts held fixed, the
  method's samples and the base samples resampled with replacement within each prompt; the intervals
  are about these prompts only.

A replicate's frontier is its own tilt of the (resampled) base samples on the frontier's β nodes,
read at the replicate's KL by cubic Hermite interpolation in K with the exact slope
:math:`d\Delta^*/dK = \beta`. Replicates of order-statistic and ratio estimators on resampled data are
biased (resampling ties the top samples), while their spread is right, so every interval is
``estimate ± t·se`` with the bootstrap se (see ``_Design.interval``), not a percentile one. The
bias-corrected frontier's replicates are the same reading of each replicate's jackknifed tilt curves,
so the correction's own noise is counted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

from alignlimits.errors import AlignLimitsError
from alignlimits.theory.best_of_n import bon_empirical_reward, bon_expected_reward, bon_kl_empirical, soft_bon
from alignlimits.theory.frontier import Frontier
from alignlimits.theory.groups import Groups
from alignlimits.theory.tilt import TiltedSamples

FOOTINGS = ("auto", "prompts", "samples")
MIN_PROMPTS_TO_RESAMPLE = 10
BELOW, ON, ABOVE = "below the frontier", "on the frontier", "above the frontier (estimate biased?)"
UNDETERMINED = "no verdict (its interval is undefined)"


@dataclass(frozen=True)
class Comparison:
    """One method's point against the frontier (keys of the ``evaluate`` JSON); scipy.stats-style result."""

    method: str
    gain: float
    gain_ci: tuple[float, float]
    kl: float
    kl_se: float
    optimal_gain_at_kl: float
    efficiency: float
    efficiency_ci: tuple[float, float]
    gain_gap: float
    gain_gap_ci: tuple[float, float]
    kl_overspend: float
    above_frontier: bool
    verdict: str
    reliable: bool
    n_prompts: int
    n_samples: int
    footing: str
    estimator: str
    kl_k3: float | None = None
    kl_k3_se: float | None = None
    n: int | None = None
    beta: float | None = None

    def to_dict(self) -> dict:
        """JSON-safe: tuples become lists, NaN and infinities become None."""
        return {k: _json_safe(v) for k, v in asdict(self).items()}


def _json_safe(v):
    if isinstance(v, (tuple, list)):
        return [_json_safe(x) for x in v]
    if isinstance(v, (float, np.floating)):
        return float(v) if np.isfinite(v) else None
    return v


def k3_from_k1(k1) -> np.ndarray:
    r"""The non-negative unbiased KL estimate per sequence, :math:`k_3 = e^{-k_1} - 1 + k_1`, from :math:`k_1 = \log\pi - \log\pi_0`."""
    k1 = np.asarray(k1, dtype=np.float64)
    return np.expm1(-k1) + k1


def choose_footing(n_prompts: int, footing: str = "auto") -> str:
    """``"prompts"`` from ``MIN_PROMPTS_TO_RESAMPLE`` prompts on, ``"samples"`` below (for ``"auto"``)."""
    if footing not in FOOTINGS:
        raise AlignLimitsError(f"footing must be one of {', '.join(FOOTINGS)}, not {footing!r}")
    if footing != "auto":
        return footing
    return "prompts" if n_prompts >= MIN_PROMPTS_TO_RESAMPLE else "samples"


# ---------------------------------------------------------------- the bootstrap's design
MAX_UNDEFINED = 0.1
"""Above this share of undefined (NaN) replicates, an interval is undefined."""


def _spread(replicates: np.ndarray) -> np.ndarray:
    """Standard deviation (ddof 1) over the last axis of the finite replicates; NaN unless 90% of them are finite."""
    finite = np.isfinite(replicates)
    k = finite.sum(axis=-1)
    mean = np.where(finite, replicates, 0.0).sum(axis=-1) / np.maximum(k, 1)
    var = (np.where(finite, replicates - mean[..., None], 0.0) ** 2).sum(axis=-1) / np.maximum(k - 1, 1)
    return np.where(k >= (1 - MAX_UNDEFINED) * replicates.shape[-1], np.sqrt(var), np.nan)


@dataclass(frozen=True)
class _Design:
    """The replicates of one comparison: prompt weights (R, P), rows summing to 1, and the RNG of the within-prompt resamples."""

    footing: str
    weights: np.ndarray
    rng: np.random.Generator
    confidence: float

    @classmethod
    def make(cls, n_prompts: int, footing: str, n_bootstrap: int, confidence: float, random_state) -> "_Design":
        if n_bootstrap < 2:
            raise AlignLimitsError(f"a bootstrap needs at least 2 replicates (got n_bootstrap={n_bootstrap})")
        if not 0 < confidence < 1:
            raise AlignLimitsError(f"confidence must lie strictly between 0 and 1 (got {confidence})")
        rng = np.random.default_rng(random_state)
        footing = choose_footing(n_prompts, footing)
        if footing == "prompts":
            weights = rng.multinomial(n_prompts, np.full(n_prompts, 1.0 / n_prompts), size=n_bootstrap) / n_prompts
        else:
            weights = np.full((n_bootstrap, n_prompts), 1.0 / n_prompts)
        return cls(footing, weights, rng, confidence)

    @property
    def n_bootstrap(self) -> int:
        return self.weights.shape[0]

    def within(self, groups: Groups) -> tuple[np.ndarray, Groups] | None:
        """Flat indices (R·N,) of R resamples within each prompt and their stacked groups; None on the prompt footing."""
        if self.footing == "prompts":
            return None
        R = self.n_bootstrap
        start, size = groups.expand(groups.starts), groups.expand(groups.sizes)
        idx = start + np.minimum(np.floor(self.rng.random((R, groups.n_total)) * size), size - 1).astype(np.int64)
        return idx.ravel(), Groups(np.tile(groups.sizes, R))

    def reduce(self, per_prompt: np.ndarray) -> np.ndarray:
        """Replicate means of per-prompt values (..., R, P), or (..., 1, P) when every replicate has the same: (..., R)."""
        if per_prompt.shape[-2] == 1:
            return per_prompt[..., 0, :] @ self.weights.T
        return (per_prompt * self.weights).sum(axis=-1)

    def interval(self, estimate, replicates, units: tuple[Groups, ...]) -> tuple[np.ndarray, np.ndarray]:
        r"""``estimate ± t·se`` and se (NaN where over 10% of the replicates are): se the replicates' standard deviation (last axis).

        The bootstrap se of a mean of m units is the plug-in one, short of the unbiased one by
        :math:`\sqrt{(m-1)/m}`; it is scaled back, and t has m − 1 degrees of freedom: m = P prompts on
        the prompt footing; on the sample footing, the fewest samples of a prompt among ``units`` for the
        scale and :math:`\sum_p (n_p - 1)` (the fewest over ``units``) for t.
        """
        if self.footing == "prompts":
            m = df = self.weights.shape[1] - 1
        else:
            m = min(int(g.sizes.min()) for g in units) - 1
            df = min(g.n_total - g.n_groups for g in units)
        se = _spread(replicates) * (np.sqrt((m + 1) / m) if m > 0 else 1.0)
        half = stats.t.ppf(0.5 + self.confidence / 2, max(df, 1)) * se
        return np.stack([estimate - half, estimate + half], axis=-1), se

    def describe(self, what: str) -> str:
        P, R, level = self.weights.shape[1], self.n_bootstrap, f"{100 * self.confidence:g}%"
        how = f"{level} interval = estimate ± t·(bootstrap se), {R} replicates"
        if self.footing == "prompts":
            return (f"paired bootstrap over the {P} held-out prompts, resampled with replacement (a sample of a "
                    f"population of prompts), each prompt's {what} moving together; {how}, se scaled by √(P/(P−1)), "
                    f"t with {P - 1} df")
        return (f"paired bootstrap with the {P} held-out prompts held fixed (too few to resample): {what} resampled "
                f"with replacement within each prompt; {how}; about these prompts only")


# ---------------------------------------------------------------- frontier replicates
def _curve_nodes(samples: TiltedSamples, betas: np.ndarray, debiased: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Per prompt, KL and gain at each β (descending): (G', P) each, and the slopes dΔ/dK = β (G',).

    The plain curve ends with its β → 0 limit (top atoms), :math:`K = -\log \pi_0(r = \max r)`,
    :math:`\Delta = \max r - E_{\pi_0} r`. The bias-corrected one is each prompt's delete-one jackknife
    of the tilt (:meth:`TiltedSamples.jackknife`), whose slope is β too; it has no such limit.
    """
    if debiased:
        t = samples.jackknife(betas)[1]
        return t.kl, t.gain, betas
    t, g, r = samples.at(betas), samples.groups, samples.rewards
    q = g.expand(1.0 / g.sizes) if samples.q is None else samples.q
    top = g.max(r)
    k_max = -np.log(g.sum(q * (r == g.expand(top))))
    d_max = top - g.sum(q * r)
    return np.vstack([t.kl, k_max]), np.vstack([t.gain, d_max]), np.concatenate([betas, [0.0]])


def _read_curve(K: np.ndarray, D: np.ndarray, slopes: np.ndarray, x: np.ndarray, beyond: np.ndarray) -> np.ndarray:
    r"""Δ at KL ``x`` (R,) on each replicate's curve, nodes K, D (R, G) with K ascending and slopes dΔ/dK (G,).

    Cubic Hermite in K between nodes; below the first node :math:`\Delta_0\sqrt{x/K_0}` (the small-KL
    limit :math:`\sqrt{2\sigma^2 K}`); 0 at x ≤ 0; ``beyond`` (R,) past the last node.
    """
    rows, G = np.arange(K.shape[0]), K.shape[1]
    idx = np.clip((K < x[:, None]).sum(axis=1), 1, G - 1)
    k0, k1, f0, f1 = K[rows, idx - 1], K[rows, idx], D[rows, idx - 1], D[rows, idx]
    h = k1 - k0
    t = np.clip(np.where(h > 0, (x - k0) / np.where(h > 0, h, 1.0), 0.0), 0.0, 1.0)
    t2, t3 = t * t, t * t * t
    out = ((2 * t3 - 3 * t2 + 1) * f0 + (t3 - 2 * t2 + t) * h * slopes[idx - 1]
           + (-2 * t3 + 3 * t2) * f1 + (t3 - t2) * h * slopes[idx])
    out = np.where(x < K[:, 0], D[:, 0] * np.sqrt(np.maximum(x, 0.0) / K[:, 0]), out)
    return np.where(x > K[:, -1], beyond, out)


class _FrontierReplicates:
    """The frontier's replicates on a design: base means and curves per replicate, read at any KL."""

    def __init__(self, frontier: Frontier, design: _Design):
        if frontier.budget != "shared":
            raise AlignLimitsError("points are compared with the shared-β frontier (a budget on the prompt-averaged KL); "
                                   "fit it with budget='shared'")
        self.frontier, self.design = frontier, design
        resample = None if frontier.exact_ else design.within(frontier.groups_)
        if resample is None:
            r, g, q = frontier.rewards_, frontier.groups_, frontier.base_probs_
            self.shape = (1, frontier.n_prompts_)
        else:
            (idx, g), q = resample, None
            r = frontier.rewards_[idx]
            self.shape = (design.n_bootstrap, frontier.n_prompts_)
        self.rewards, self.groups = r, g  # the base samples of every replicate, stacked
        self.base_mean = self.base_means(r, g, q).reshape(self.shape)
        self._samples = TiltedSamples(r, g, None if q is None or not frontier.exact_ else q)
        self._curves = {}

    def curve(self, debiased: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each replicate's curve: K (R, G') made non-decreasing (a jackknifed curve can turn back), Δ and slopes."""
        debiased = debiased and not self.frontier.exact_
        if debiased not in self._curves:
            K, D, slopes = _curve_nodes(self._samples, np.asarray(self.frontier.curve_["beta"], float), debiased)
            K = np.maximum.accumulate(self.design.reduce(K.reshape(-1, *self.shape)).T, axis=1)
            self._curves[debiased] = (K, self.design.reduce(D.reshape(-1, *self.shape)).T, slopes)
        return self._curves[debiased]

    @staticmethod
    def base_means(rewards: np.ndarray, groups: Groups, base_probs=None) -> np.ndarray:
        """Base mean reward per prompt."""
        q = groups.expand(1.0 / groups.sizes) if base_probs is None else base_probs
        return groups.sum(q * rewards)

    def per_prompt(self, values: np.ndarray) -> np.ndarray:
        """A law's values on the stacked base samples (..., R·P or P), shaped (..., R|1, P) for ``reduce``."""
        return values.reshape(*values.shape[:-1], *self.base_mean.shape)

    def gain_at(self, kl: np.ndarray, debiased: bool) -> np.ndarray:
        """Each replicate's frontier gain at its own KL (R,): plain (its top gain past its reach) or bias-corrected
        (NaN past its reach)."""
        K, D, slopes = self.curve(debiased)
        return _read_curve(K, D, slopes, kl, np.nan if slopes[-1] > 0 else D[:, -1])


def frontier_gain(frontier: Frontier, kl, debiased: bool = False) -> np.ndarray:
    """The frontier's gain (plain or bias-corrected) at any KL: 0 at KL ≤ 0, reliable or not, held at its value
    next to the largest attainable KL beyond it; NaN where the bias-corrected curve does not reach the KL."""
    kl = np.atleast_1d(np.asarray(kl, dtype=np.float64))
    out = np.zeros(kl.shape)
    inside = kl > 0
    if inside.any():
        capped = np.minimum(kl[inside], frontier.max_kl_ * (1 - 1e-9))
        out[inside] = frontier.gain_at_kl(capped, extrapolate=True, debiased=debiased)
    return out


# ---------------------------------------------------------------- the comparisons
def _verdict(gap_ci) -> str:
    lo, hi = gap_ci
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return UNDETERMINED
    return ABOVE if lo > 0 else BELOW if hi < 0 else ON


def _assemble(design: _Design, frontier: Frontier, units: tuple[Groups, ...], debiased: bool, *, gain, gain_reps, footing_gain,
              footing_gain_reps, kl, kl_reps, optimal, optimal_reps, **fields) -> Comparison:
    """Intervals, efficiency, gap, overspend and verdict of one point from its estimates and their replicates (R,)."""
    gain_ci, _ = design.interval(gain, gain_reps, units)
    _, kl_se = design.interval(kl, kl_reps, units)
    defined = optimal > 0 and not (optimal_reps <= 0).any()
    efficiency = footing_gain / optimal if optimal > 0 else np.nan
    if defined:
        efficiency_ci, _ = design.interval(efficiency, footing_gain_reps / optimal_reps, units)
    else:  # the KL interval reaches 0, where efficiency is undefined
        efficiency_ci = np.array([np.nan, np.nan])
    gap = footing_gain - optimal
    gap_ci, _ = design.interval(gap, footing_gain_reps - optimal_reps, units)
    above = bool(footing_gain > frontier.max_gain_)
    needed = float(frontier.kl_for_gain(footing_gain, debiased=debiased)[0]) if 0 < footing_gain and not above else np.nan
    overspend = kl / needed if np.isfinite(needed) and needed > 0 else np.nan
    return Comparison(
        gain=float(gain), gain_ci=tuple(map(float, gain_ci)), kl=float(kl), kl_se=float(kl_se),
        optimal_gain_at_kl=float(optimal), efficiency=float(efficiency), efficiency_ci=tuple(map(float, efficiency_ci)),
        gain_gap=float(gap), gain_gap_ci=tuple(map(float, gap_ci)), kl_overspend=float(overspend), above_frontier=above,
        verdict=_verdict(gap_ci), reliable=bool(kl <= frontier.max_reliable_kl_), n_prompts=int(frontier.n_prompts_),
        **fields,
    )


def _frontier_label(frontier: Frontier, debiased: bool) -> str:
    if frontier.exact_:
        return "the exact frontier (base probabilities known)"
    return ("the bias-corrected frontier (gain_debiased)" if debiased
            else "the plain frontier (ratio estimator, exact on the empirical distribution)")


def _policy_groups(frontier: Frontier, prompt_ids) -> tuple[Groups, np.ndarray]:
    """The policy samples grouped in the frontier's prompt order: (groups, order of the flat samples)."""
    fids = np.asarray(frontier.prompt_ids_).astype(str)
    pid = np.asarray(prompt_ids).astype(str)
    sorter = np.argsort(fids)
    pos = sorter[np.minimum(np.searchsorted(fids, pid, sorter=sorter), fids.size - 1)]
    unknown = fids[pos] != pid
    if unknown.any():
        raise AlignLimitsError(f"evaluation prompt {pid[unknown][0]!r} has no base samples; sample the base model on "
                               "the same held-out prompts as the policy")
    counts = np.bincount(pos, minlength=fids.size)
    if (counts == 0).any():
        raise AlignLimitsError(f"held-out prompt {fids[counts == 0][0]!r} has base samples but no policy samples; "
                               "evaluate the policy on every prompt the frontier was fitted on")
    return Groups(counts), np.argsort(pos, kind="stable")


def compare_policy(frontier: Frontier, rewards, k1, prompt_ids, *, method: str = "policy", beta: float | None = None,
                   debiased: bool = True, footing: str = "auto", confidence: float = 0.95, n_bootstrap: int = 200,
                   random_state=0) -> Comparison:
    r"""A sampled policy's point against the frontier fitted on base samples of the same prompts.

    ``rewards``, ``k1`` (:math:`\log\pi(y|x) - \log\pi_0(y|x)` per sequence) and ``prompt_ids`` are per
    policy sample. Gain :math:`\frac1P\sum_p(\bar s_p - \bar r_p)` (policy mean minus base mean of the same
    prompt), KL :math:`\frac1P\sum_p \bar k_{1,p}` (and :math:`k_3`), against the bias-corrected frontier
    (``debiased``) or the plain one.
    """
    rewards, k1 = np.asarray(rewards, dtype=np.float64).ravel(), np.asarray(k1, dtype=np.float64).ravel()
    if rewards.shape != k1.shape or rewards.size != np.asarray(prompt_ids).size:
        raise AlignLimitsError(f"{rewards.size} rewards, {k1.size} log-ratios and {np.asarray(prompt_ids).size} prompt ids; "
                               "give one of each per policy sample")
    if not (np.isfinite(rewards).all() and np.isfinite(k1).all()):
        raise AlignLimitsError("a policy reward or log-ratio is not finite; drop or fix those samples")
    groups, order = _policy_groups(frontier, prompt_ids)
    columns = np.stack([rewards[order], k1[order], k3_from_k1(k1[order])])  # (3, M)
    design = _Design.make(frontier.n_prompts_, footing, n_bootstrap, confidence, random_state)
    fr = _FrontierReplicates(frontier, design)
    point_base = fr.base_means(frontier.rewards_, frontier.groups_, frontier.base_probs_)
    point = groups.mean(columns)  # (3, P)
    resample = design.within(groups)
    if resample is None:
        per_prompt = point[:, None, :]
    else:
        idx, stacked = resample
        per_prompt = stacked.mean(columns[:, idx]).reshape(3, design.n_bootstrap, -1)
    gain_reps = design.reduce(per_prompt[0] - fr.base_mean)
    (kl_reps, k3_reps) = design.reduce(per_prompt[1:])
    gain, kl, k3 = float((point[0] - point_base).mean()), float(point[1].mean()), float(point[2].mean())
    units = (groups,) if frontier.exact_ else (groups, frontier.groups_)
    _, k3_se = design.interval(k3, k3_reps, units)
    optimal = float(frontier_gain(frontier, kl, debiased)[0])
    optimal_reps = fr.gain_at(kl_reps, debiased)
    label = _frontier_label(frontier, debiased)
    if not np.isfinite(optimal) or np.isnan(optimal_reps).mean() > MAX_UNDEFINED:
        debiased, optimal, optimal_reps = False, float(frontier_gain(frontier, kl)[0]), fr.gain_at(kl_reps, False)
        label = "the plain frontier: the bias-corrected one does not reach this KL"
    return _assemble(
        design, frontier, units, debiased, gain=gain, gain_reps=gain_reps, footing_gain=gain, footing_gain_reps=gain_reps,
        kl=kl, kl_reps=kl_reps, optimal=optimal,
        optimal_reps=optimal_reps, method=method, beta=beta, kl_k3=k3, kl_k3_se=float(k3_se),
        n_samples=int(rewards.size), footing=design.describe("policy samples and base samples") + "; against " + label,
        estimator="policy samples on the held-out prompts: gain = policy mean − base mean per prompt, KL = mean "
                  "sequence k1 = log π − log π0 per prompt (k3 beside it), both averaged over prompts",
    )


def compare_law(frontier: Frontier, law, *, method: str, estimator: str, ns=None, beta: float | None = None,
                shown_gain=None, debiased: bool = False, footing: str = "auto", confidence: float = 0.95,
                n_bootstrap: int = 200, random_state=0) -> list[Comparison]:
    """Points of K policies computed from the base samples themselves (best-of-N, soft best-of-N).

    ``law(rewards, groups)`` returns (gain, kl), each (K, P): per prompt, the law's gain over the base mean
    and its KL. ``shown_gain(rewards, groups)`` (K, P), when given, is the gain shown with its interval
    (e.g. an unbiased estimate), while efficiency, gap and overspend stay on the law's own footing.
    ``ns`` (K values) labels the rows.
    """
    if frontier.exact_:
        raise AlignLimitsError("laws such as best-of-N are computed from base samples; fit the frontier on samples, "
                               "not on an exact distribution")
    design = _Design.make(frontier.n_prompts_, footing, n_bootstrap, confidence, random_state)
    fr = _FrontierReplicates(frontier, design)

    def values(r, g):
        gain, kl = (np.atleast_2d(np.asarray(v, dtype=np.float64)) for v in law(r, g))
        shown = gain if shown_gain is None else np.atleast_2d(np.asarray(shown_gain(r, g), dtype=np.float64))
        return np.stack([shown, gain, kl])  # (3, K, prompts)

    point = values(frontier.rewards_, frontier.groups_).mean(axis=-1)  # (3, K)
    reps = design.reduce(fr.per_prompt(values(fr.rewards, fr.groups)))  # (3, K, R)
    ns = [None] * point.shape[1] if ns is None else [int(n) for n in np.atleast_1d(ns)]
    optimal = frontier_gain(frontier, point[2], debiased)
    describe = design.describe("base samples (and so the law computed from them)") + "; against " + _frontier_label(frontier, debiased)
    return [
        _assemble(design, frontier, (frontier.groups_,), debiased, gain=point[0, k], gain_reps=reps[0, k], footing_gain=point[1, k],
                  footing_gain_reps=reps[1, k], kl=point[2, k], kl_reps=reps[2, k], optimal=optimal[k],
                  optimal_reps=fr.gain_at(reps[2, k], debiased), method=method, n=ns[k], beta=beta,
                  n_samples=int(frontier.n_samples_), footing=describe, estimator=estimator)
        for k in range(point.shape[1])
    ]


def compare_best_of_n(frontier: Frontier, ns, **options) -> list[Comparison]:
    """Best-of-N for each N: gain shown as the unbiased order-statistics estimate, placed at the tie-aware KL of
    best-of-N's law on the empirical distribution; efficiency, gap and overspend from that empirical law's gain
    against the plain frontier (both exact on the empirical distribution: one footing). ``options``: of
    :func:`compare_law`."""
    ns = np.atleast_1d(np.asarray(ns))
    return compare_law(
        frontier, lambda r, g: (bon_empirical_reward(r, ns, g) - g.mean(r), bon_kl_empirical(r, ns, g)),
        shown_gain=lambda r, g: bon_expected_reward(r, ns, g) - g.mean(r), method="bon", ns=ns,
        estimator="gain: unbiased order-statistics estimate of best-of-N's expected reward; KL: exact KL of best-of-N's "
                  "law on the empirical distribution of the base samples (ties merged), the estimate of its true KL "
                  "(log N − (N−1)/N is only a bound); efficiency, gain_gap, kl_overspend: gain of that empirical "
                  "(with-replacement) law against the plain frontier, one footing",
        **options,
    )


def compare_soft_best_of_n(frontier: Frontier, ns, beta: float, **options) -> list[Comparison]:
    """Soft best-of-N (sampling-importance-resampling) at β for each N: its exact law on the empirical distribution
    of the base samples, against the plain frontier. ``options``: of :func:`compare_law`."""
    ns = np.atleast_1d(np.asarray(ns))
    return compare_law(
        frontier, lambda r, g: soft_bon(r, ns, beta, g), method="soft-bon", ns=ns, beta=float(beta),
        estimator="exact law of soft best-of-N on the empirical distribution of the base samples (gain and KL); "
                  "against the plain frontier, one footing",
        **options,
    )


@dataclass(frozen=True)
class Band:
    """The frontier with its interval at KL budgets, on a comparison's footing."""

    kl: np.ndarray
    gain: np.ndarray
    gain_ci: np.ndarray
    footing: str

    def to_list(self) -> list[dict]:
        """The ``frontier_band`` JSON: one ``{kl, gain, lo, hi}`` per budget."""
        return [{"kl": float(k), "gain": float(g), "lo": float(lo), "hi": float(hi)}
                for k, g, (lo, hi) in zip(self.kl, self.gain, self.gain_ci)]


def frontier_band(frontier: Frontier, kls, *, debiased: bool = False, footing: str = "auto", confidence: float = 0.95,
                  n_bootstrap: int = 200, random_state=0) -> Band:
    """The frontier's gain at each KL budget with its interval, bootstrapped on the footing of the points compared
    with it (:func:`compare_policy`, :func:`compare_law` with the same ``footing``)."""
    kls = np.atleast_1d(np.asarray(kls, dtype=np.float64))
    design = _Design.make(frontier.n_prompts_, footing, n_bootstrap, confidence, random_state)
    fr = _FrontierReplicates(frontier, design)
    gain = frontier_gain(frontier, kls, debiased)
    reps = np.stack([fr.gain_at(np.full(design.n_bootstrap, k), debiased) for k in kls])  # (E, R)
    ci, _ = design.interval(gain, reps, (frontier.groups_,))
    return Band(kls, gain, ci, design.describe("base samples") + "; " + _frontier_label(frontier, debiased))
