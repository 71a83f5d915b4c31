r"""A method's point against the frontier of the same held-out prompts: paired, with intervals and a verdict.

A point (gain Δ, KL K) is compared with the frontier :math:`\Delta^*` of the base samples of the same
prompts (``judged_against`` says which: the exact one where the base probabilities are known, else the
bias-corrected one for sampled policies and the plain one for laws computed on the base samples):

- efficiency :math:`\eta = \Delta / \Delta^*(K)`, with a Fieller set from the paired replicates,
  :math:`\{\eta : |\Delta - \eta\Delta^*| \le t\,\mathrm{sd}(\delta - \eta\delta^*)\}` (:func:`fieller_set`),
  which holds 100% exactly when the verdict is "on"; unbounded (null, with the reason) when the frontier's
  own gain interval holds 0;
- gain gap :math:`g = \Delta - \Delta^*(K)` (negative: below the frontier);
- KL overspend :math:`K / (\Delta^*)^{-1}(\Delta)`, NaN (with ``above_frontier``) when Δ exceeds the
  frontier's top gain, NaN when Δ ≤ 0;
- verdict at level 1 − α from g's interval: ``below`` (its upper end < 0), ``above`` (lower end > 0),
  ``on`` (it holds 0).

Every field of a point stands on one footing, so the gap is gain − the frontier's gain at its KL and the
efficiency their ratio, exactly. Best-of-N's point is its with-replacement law on the empirical distribution
of the base samples (gain and KL exact there) against the plain frontier, exact on that distribution, so
it never lies above it; the unbiased order-statistics estimate of its gain stands beside it as
``gain_unbiased``.

**Past the frontier's reach.** A frontier estimated from n base samples per prompt ends at KL
``max_kl_`` (log n for distinct rewards). Beyond it the frontier is unknown; its top gain (each prompt's
best sample less its mean, the gain of best-of-n) estimates a lower bound on it, so a ratio or a gap
against it would only bound the point's. There ``optimal_gain_at_kl``, ``efficiency`` and ``gain_gap`` are
null with ``null_reason`` (which states those bounds), and the verdict is "below" only when the gain is
below even that lower bound, else none.

**Paired bootstrap.** The unit of replication is the held-out prompt, and a replicate moves each
prompt's method samples and base samples together, so prompt difficulty cancels in g and η
(:mod:`alignlimits.theory.paired`: the footing, the frontier read on each replicate, ``estimate ± t·se``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from alignlimits.errors import AlignLimitsError
from alignlimits.theory.best_of_n import bon_empirical_reward, bon_expected_reward, bon_kl_empirical, soft_bon
from alignlimits.theory.frontier import Frontier
from alignlimits.theory.groups import Groups
from alignlimits.theory.paired import (  # re-exported (__all__): the objective's ceiling and older imports
    FOOTINGS,
    MAX_UNDEFINED,
    MIN_PROMPTS_TO_RESAMPLE,
    Band,
    _Design,
    _FrontierReplicates,
    _read_curve,
    _spread,
    choose_footing,
    frontier_band,
    frontier_gain,
    frontier_label,
)

BELOW, ON, ABOVE = "below the frontier", "on the frontier", "above the frontier (check its KL)"
UNDETERMINED = "no verdict (its interval is undefined)"
BEYOND = "no verdict (past the frontier's reach)"
__all__ = ["ABOVE", "BELOW", "BEYOND", "FOOTINGS", "MAX_UNDEFINED", "MIN_PROMPTS_TO_RESAMPLE", "ON", "UNBOUNDED",
           "UNDETERMINED", "Band", "Comparison", "_Design", "_FrontierReplicates", "_policy_groups", "_read_curve",
           "_spread", "choose_footing", "compare_best_of_n", "compare_law", "compare_policy", "compare_soft_best_of_n",
           "fieller_set", "frontier_band", "frontier_gain", "frontier_label", "k3_from_k1"]
UNBOUNDED = ("unbounded: the frontier's gain at this KL is not resolved from 0 (its interval holds 0), so every "
             "efficiency is consistent with the data")


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
    efficiency_ci: tuple[float, float] | None
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
    judged_against: str | None = None
    """Which frontier judged the point: "exact", "bias-corrected", "plain", or "lower bound" past its reach."""
    efficiency_ci_note: str | None = None
    """Why ``efficiency_ci`` is null (an unbounded Fieller set, or no interval at all)."""
    null_reason: str | None = None
    """Why ``optimal_gain_at_kl``, ``efficiency`` and ``gain_gap`` are null (past the frontier's reach), with the
    bounds the lower bound on the frontier gives."""
    gain_unbiased: float | None = None
    """Best-of-N: the unbiased order-statistics estimate of its expected gain, beside the law's own."""
    gain_unbiased_ci: tuple[float, float] | None = None

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


# ---------------------------------------------------------------- the comparisons
def _verdict(gap_ci) -> str:
    lo, hi = gap_ci
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return UNDETERMINED
    return ABOVE if lo > 0 else BELOW if hi < 0 else ON


def fieller_set(num: float, den: float, num_reps, den_reps, t: float, scale: float = 1.0) -> tuple[float, float] | None:
    r"""The Fieller set of the ratio N/D from paired replicates: :math:`\{\eta : (N - \eta D)^2 \le t^2 s(\eta)^2\}`,
    :math:`s(\eta)^2 = \mathrm{scale}^2\,\mathrm{Var}(n - \eta d) = \mathrm{scale}^2 (V_n - 2\eta C + \eta^2 V_d)`
    (replicate variances, ddof 1, over the pairs where both are finite). With
    :math:`a = D^2 - t^2\mathrm{scale}^2 V_d > 0` it is the interval between the roots of
    :math:`a\eta^2 - 2b\eta + c`, :math:`b = ND - t^2\mathrm{scale}^2 C`, :math:`c = N^2 - t^2\mathrm{scale}^2 V_n`;
    with :math:`a \le 0` (D's own interval ``D ± t·scale·sd(d)`` holds 0) it is unbounded: None. It holds
    :math:`\eta = 1` exactly when the interval ``(N − D) ± t·scale·sd(n − d)`` holds 0."""
    n, d = np.asarray(num_reps, dtype=np.float64), np.asarray(den_reps, dtype=np.float64)
    ok = np.isfinite(n) & np.isfinite(d)
    if ok.sum() < 2:
        return None
    n, d = n[ok], d[ok]
    k2 = (t * scale) ** 2
    vn, vd = n.var(ddof=1), d.var(ddof=1)
    cov = ((n - n.mean()) * (d - d.mean())).sum() / (n.size - 1)
    a, b, c = den * den - k2 * vd, num * den - k2 * cov, num * num - k2 * vn
    if not a > 0:
        return None
    root = np.sqrt(max(b * b - a * c, 0.0))
    return float((b - root) / a), float((b + root) / a)


def _beyond_reach(design: _Design, frontier: Frontier, units, *, gain, gain_ci, gain_reps, kl, kl_reps, kl_se,
                  **fields) -> Comparison:
    """A point past the frontier's reach (``max_kl_``): efficiency and gap null, with the bounds its top gain
    (a lower bound on the true frontier there) gives in ``null_reason``; "below" only below that bound."""
    fr = _FrontierReplicates(frontier, design)
    top, top_reps = frontier.max_gain_, fr.gain_at(np.full(design.n_bootstrap, np.inf), False)
    bound_ci, _ = design.interval(gain - top, gain_reps - top_reps, units)
    below = bool(np.isfinite(bound_ci).all() and bound_ci[1] < 0)
    reason = (f"its KL {kl:.3g} nats is past the frontier's reach ({frontier.max_kl_:.3g} nats, where the base samples' "
              f"tilt ends): there the frontier is only known to be at least its top gain {top:.3g} (each prompt's "
              f"best sample less its mean), so efficiency ≤ {gain / top if top > 0 else np.nan:.3g} and gap "
              f"≤ {gain - top:.3g} are bounds, not estimates")
    return Comparison(
        gain=float(gain), gain_ci=tuple(map(float, gain_ci)), kl=float(kl), kl_se=float(kl_se), optimal_gain_at_kl=np.nan,
        efficiency=np.nan, efficiency_ci=None, gain_gap=np.nan, gain_gap_ci=(np.nan, np.nan), kl_overspend=np.nan,
        above_frontier=bool(gain > top), verdict=BELOW if below else BEYOND, reliable=False,
        n_prompts=int(frontier.n_prompts_), judged_against="lower bound", null_reason=reason,
        efficiency_ci_note="no efficiency past the frontier's reach", **fields,
    )


def _assemble(design: _Design, frontier: Frontier, units: tuple[Groups, ...], debiased: bool, *, gain, gain_reps, kl,
              kl_reps, optimal, optimal_reps, **fields) -> Comparison:
    """Intervals, efficiency (Fieller set), gap, overspend and verdict of one point from its estimates and their
    replicates (R,): every field from the one gain and the one frontier given."""
    gain_ci, _ = design.interval(gain, gain_reps, units)
    _, kl_se = design.interval(kl, kl_reps, units)
    if not frontier.exact_ and kl >= frontier.max_kl_:
        return _beyond_reach(design, frontier, units, gain=gain, gain_ci=gain_ci, gain_reps=gain_reps, kl=kl,
                             kl_reps=kl_reps, kl_se=kl_se, **fields)
    gap = gain - optimal
    gap_ci, _ = design.interval(gap, gain_reps - optimal_reps, units)
    efficiency = gain / optimal if optimal > 0 else np.nan
    t, scale = design.t_and_scale(units)
    efficiency_ci = fieller_set(gain, optimal, gain_reps, optimal_reps, t, scale) if np.isfinite(gap_ci).all() else None
    note = None if efficiency_ci is not None else UNBOUNDED if np.isfinite(gap_ci).all() else "no interval: its gap's is undefined"
    above = bool(gain > frontier.max_gain_)
    needed = float(frontier.kl_for_gain(gain, debiased=debiased)[0]) if 0 < gain and not above else np.nan
    overspend = kl / needed if np.isfinite(needed) and needed > 0 else np.nan
    judge = "exact" if frontier.exact_ else "bias-corrected" if debiased else "plain"
    return Comparison(
        gain=float(gain), gain_ci=tuple(map(float, gain_ci)), kl=float(kl), kl_se=float(kl_se),
        optimal_gain_at_kl=float(optimal), efficiency=float(efficiency), efficiency_ci=efficiency_ci,
        gain_gap=float(gap), gain_gap_ci=tuple(map(float, gap_ci)), kl_overspend=float(overspend), above_frontier=above,
        verdict=_verdict(gap_ci), reliable=bool(kl <= frontier.max_reliable_kl_), n_prompts=int(frontier.n_prompts_),
        judged_against=judge, efficiency_ci_note=note, **fields,
    )


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
    label = frontier_label(frontier, debiased)
    if not np.isfinite(optimal) or np.isnan(optimal_reps).mean() > MAX_UNDEFINED:
        debiased, optimal, optimal_reps = False, float(frontier_gain(frontier, kl)[0]), fr.gain_at(kl_reps, False)
        label = "the plain frontier: the bias-corrected one does not reach this KL"
    return _assemble(
        design, frontier, units, debiased, gain=gain, gain_reps=gain_reps, kl=kl, kl_reps=kl_reps, optimal=optimal,
        optimal_reps=optimal_reps, method=method, beta=beta, kl_k3=k3, kl_k3_se=float(k3_se),
        n_samples=int(rewards.size), footing=design.describe("policy samples and base samples") + "; against " + label,
        estimator="policy samples on the held-out prompts: gain = policy mean − base mean per prompt, KL = mean "
                  "sequence k1 = log π − log π0 per prompt (k3 beside it), both averaged over prompts",
    )


def compare_law(frontier: Frontier, law, *, method: str, estimator: str, ns=None, beta: float | None = None,
                unbiased_gain=None, debiased: bool = False, footing: str = "auto", confidence: float = 0.95,
                n_bootstrap: int = 200, random_state=0) -> list[Comparison]:
    """Points of K policies computed from the base samples themselves (best-of-N, soft best-of-N).

    ``law(rewards, groups)`` returns (gain, kl), each (K, P): per prompt, the law's gain over the base mean
    and its KL; every field of the point comes from them. ``unbiased_gain(rewards, groups)`` (K, P), when
    given, is another estimate of the gain, shown beside as ``gain_unbiased`` with its interval and used for
    nothing else. ``ns`` (K values) labels the rows.
    """
    if frontier.exact_:
        raise AlignLimitsError("laws such as best-of-N are computed from base samples; fit the frontier on samples, "
                               "not on an exact distribution")
    design = _Design.make(frontier.n_prompts_, footing, n_bootstrap, confidence, random_state)
    fr = _FrontierReplicates(frontier, design)

    def values(r, g):
        gain, kl = (np.atleast_2d(np.asarray(v, dtype=np.float64)) for v in law(r, g))
        other = gain if unbiased_gain is None else np.atleast_2d(np.asarray(unbiased_gain(r, g), dtype=np.float64))
        return np.stack([gain, kl, other])  # (3, K, prompts)

    point = values(frontier.rewards_, frontier.groups_).mean(axis=-1)  # (3, K)
    reps = design.reduce(fr.per_prompt(values(fr.rewards, fr.groups)))  # (3, K, R)
    ns = [None] * point.shape[1] if ns is None else [int(n) for n in np.atleast_1d(ns)]
    optimal = frontier_gain(frontier, point[1], debiased)
    unit = (frontier.groups_,)
    describe = design.describe("base samples (and so the law computed from them)") + "; against " + frontier_label(frontier, debiased)
    out = []
    for k in range(point.shape[1]):
        other = {}
        if unbiased_gain is not None:
            other = {"gain_unbiased": float(point[2, k]),
                     "gain_unbiased_ci": tuple(map(float, design.interval(point[2, k], reps[2, k], unit)[0]))}
        out.append(_assemble(design, frontier, unit, debiased, gain=point[0, k], gain_reps=reps[0, k], kl=point[1, k],
                             kl_reps=reps[1, k], optimal=optimal[k], optimal_reps=fr.gain_at(reps[1, k], debiased),
                             method=method, n=ns[k], beta=beta, n_samples=int(frontier.n_samples_), footing=describe,
                             estimator=estimator, **other))
    return out


def compare_best_of_n(frontier: Frontier, ns, **options) -> list[Comparison]:
    """Best-of-N for each N on one footing, the empirical distribution of the base samples: the gain and the
    tie-aware KL of its with-replacement law there (exact on that distribution), against the plain frontier
    (exact there too, and never below such a law). The unbiased order-statistics estimate of best-of-N's
    expected gain (sampling without replacement, the population's best-of-N) stands beside it as
    ``gain_unbiased``. ``options``: of :func:`compare_law`."""
    ns = np.atleast_1d(np.asarray(ns))
    return compare_law(
        frontier, lambda r, g: (bon_empirical_reward(r, ns, g) - g.mean(r), bon_kl_empirical(r, ns, g)),
        unbiased_gain=lambda r, g: bon_expected_reward(r, ns, g) - g.mean(r), method="bon", ns=ns,
        estimator="best-of-N's with-replacement law on the empirical distribution of the base samples: its gain and "
                  "its exact KL there (ties merged; log N − (N−1)/N is only a bound), against the plain frontier, "
                  "exact on the same distribution (one footing); gain_unbiased: the unbiased order-statistics "
                  "estimate of the population's best-of-N gain, beside it",
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
