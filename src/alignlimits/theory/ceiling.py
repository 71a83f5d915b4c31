r"""The objective's ceiling: how far a policy got toward the optimum of its own β (DESIGN §7).

For a policy π at KL penalty β, with the base model scoring 0,

.. math::

    J(\pi) = E_\pi r - E_{\pi_0} r - \beta\,\mathrm{KL}(\pi\|\pi_0) = J^*(\beta) - \beta\,\mathrm{KL}(\pi\|\pi_\beta),
    \qquad J^*(\beta) = \beta \log E_{\pi_0} e^{(r - E_{\pi_0} r)/\beta},

so from the base samples (:math:`J^*`) and the policy's samples (gain and KL) one reads

- ``objective`` :math:`J`;
- ``objective_optimal`` :math:`J^*` (per prompt, averaged over prompts), reached only by π_β;
- ``objective_gap`` :math:`J^* - J = \beta\,\mathrm{KL}(\pi\|\pi_\beta) \ge 0`;
- ``kl_to_target`` :math:`(J^* - J)/\beta = \mathrm{KL}(\pi\|\pi_\beta)` in nats;
- ``objective_share`` :math:`J/J^*`: 1 at π_β, 0 at π0, negative when training made the objective worse.

:math:`J^* = \beta\,\mathrm{KL}(\pi_0\|\pi_\beta)` is a log-mean-exp, biased low for n base samples per
prompt; the shown :math:`J^*` is each prompt's delete-one jackknife of :math:`\Delta - \beta K` (the same
correction as the frontier's ``gain_debiased``). Intervals come from the paired prompt bootstrap of the
verdicts (:mod:`alignlimits.theory.comparison`, same replicates for the same ``random_state``): the
policy's and the base samples of a prompt move together, so :math:`J`, :math:`J^*` and their difference
share one design, and the share's interval is a Fieller set
:math:`\{\eta : |J - \eta J^*| \le t\,\mathrm{sd}(j - \eta j^*)\}`, unbounded when :math:`J^*`'s own interval
holds 0 (then it is not given, with the reason).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from alignlimits.errors import AlignLimitsError
from alignlimits.theory.comparison import _json_safe, fieller_set
from alignlimits.theory.groups import Groups
from alignlimits.theory.tilt import TiltedSamples


def optimal_objective(rewards, beta, groups: Groups | None = None, base_probs=None) -> np.ndarray:
    r"""Per prompt :math:`J^*(\beta) = \beta\log E_{\pi_0} e^{(r - E_{\pi_0} r)/\beta} = \beta\,\mathrm{KL}(\pi_0\|\pi_\beta)`,
    shape ``(B, P)``: the plug-in (log-mean-exp) estimate on samples, exact with ``base_probs``."""
    t = TiltedSamples(rewards, groups, base_probs).at(beta)
    return np.broadcast_to(t.beta, t.kl.shape) * t.kl_reverse


def optimal_objective_debiased(rewards, beta, groups: Groups | None = None) -> np.ndarray:
    r"""Per prompt, the delete-one jackknife of :math:`J^* = \beta\log\hat Z_\beta - \bar r` over the base samples,
    shape ``(B, P)``: :math:`n\hat J - (n-1)\overline{\hat J_{(-i)}}`, which removes the :math:`O(1/n)` bias of the
    log-mean-exp; each deletion computed exactly (:meth:`~alignlimits.theory.tilt.TiltedSamples.lagrangian_jackknife`)."""
    samples = TiltedSamples(rewards, groups)
    t = samples.at(beta)
    return np.broadcast_to(t.beta, t.kl.shape) * t.kl_reverse + samples.lagrangian_jackknife(beta)


def policy_objective(gain, kl, beta) -> np.ndarray:
    r""":math:`J(\pi) = (E_\pi r - E_{\pi_0} r) - \beta\,\mathrm{KL}(\pi\|\pi_0)`: 0 for the base model."""
    return np.asarray(gain, dtype=np.float64) - beta * np.asarray(kl, dtype=np.float64)


@dataclass(frozen=True)
class ObjectiveCeiling:
    """A policy's regularised objective against the most its β allows; scipy.stats-style result (JSON keys)."""

    beta: float
    objective: float
    objective_ci: tuple[float, float]
    objective_optimal: float
    objective_optimal_ci: tuple[float, float]
    objective_optimal_plain: float
    objective_gap: float
    objective_gap_ci: tuple[float, float]
    kl_to_target: float
    kl_to_target_ci: tuple[float, float]
    objective_share: float
    objective_share_ci: tuple[float, float] | None
    objective_share_note: str | None

    def to_dict(self) -> dict:
        """JSON-safe: tuples become lists, NaN and infinities None."""
        return {k: _json_safe(v) for k, v in asdict(self).items()}


def ceiling_from_replicates(beta: float, design, units, objective: float, objective_reps, optimal: float,
                            optimal_reps, optimal_plain: float) -> ObjectiveCeiling:
    """Assemble the ceiling figures of one policy from its objective and the ceiling with their paired replicates
    (R,) on a :class:`~alignlimits.theory.comparison` design."""
    j_ci, _ = design.interval(objective, objective_reps, units)
    o_ci, _ = design.interval(optimal, optimal_reps, units)
    gap_ci, gap_se = design.interval(optimal - objective, optimal_reps - objective_reps, units)
    share, share_ci, note = objective / optimal if optimal > 0 else np.nan, None, None
    spread = np.nanstd(optimal_reps - objective_reps, ddof=1)
    if np.isfinite(gap_se) and spread > 0:
        t, scale = (gap_ci[1] - (optimal - objective)) / gap_se, gap_se / spread
        share_ci = fieller_set(objective, optimal, objective_reps, optimal_reps, t, scale)
    elif spread == 0 and optimal > 0:  # e.g. π_β against an exact π0: r − β·k1 is the same on every sample
        share_ci = (float(share), float(share))
    if share_ci is None:
        note = "no interval: the ceiling J*(β) is not resolved from 0 by these base samples"
    return ObjectiveCeiling(
        beta=float(beta), objective=float(objective), objective_ci=tuple(map(float, j_ci)),
        objective_optimal=float(optimal), objective_optimal_ci=tuple(map(float, o_ci)),
        objective_optimal_plain=float(optimal_plain), objective_gap=float(optimal - objective),
        objective_gap_ci=tuple(map(float, gap_ci)), kl_to_target=float((optimal - objective) / beta),
        kl_to_target_ci=tuple(float(x / beta) for x in gap_ci), objective_share=float(share),
        objective_share_ci=share_ci, objective_share_note=note,
    )


def share_interval(objective: float, objective_se: float, ceiling: float, ceiling_se: float,
                   confidence: float = 0.95) -> tuple[float, tuple[float, float] | None]:
    r"""The share :math:`J/J^*` of two independent normal estimates, with its Fieller interval
    :math:`\{\eta : (J - \eta J^*)^2 \le z^2 (s_J^2 + \eta^2 s_{J^*}^2)\}`: between the roots of
    :math:`a\eta^2 - 2b\eta + c` with :math:`a = J^{*2} - z^2 s_{J^*}^2`, :math:`b = J J^*`,
    :math:`c = J^2 - z^2 s_J^2`; unbounded (None) when :math:`a \le 0`, i.e. when :math:`J^*`'s own interval holds 0.
    Used where the two come from different samples (a trainer's last steps against its training prompts' base
    samples), so no paired replicates exist."""
    from scipy import stats

    z2 = stats.norm.ppf(0.5 + confidence / 2) ** 2
    share = objective / ceiling if ceiling > 0 else float("nan")
    a, b, c = ceiling**2 - z2 * ceiling_se**2, objective * ceiling, objective**2 - z2 * objective_se**2
    if not (ceiling > 0 and a > 0 and np.isfinite([objective, objective_se]).all()):
        return float(share), None
    root = np.sqrt(max(b * b - a * c, 0.0))
    return float(share), (float((b - root) / a), float((b + root) / a))


def check_beta(beta) -> float:
    """β as a positive finite float, or a one-line error."""
    try:
        b = float(beta)
    except (TypeError, ValueError):
        b = float("nan")
    if not (np.isfinite(b) and b > 0):
        raise AlignLimitsError(f"the objective's ceiling needs the policy's β > 0 (got {beta!r}); "
                               "state the β it was trained at")
    return b


def objective_ceiling(frontier, rewards, k1, prompt_ids, beta, *, debiased: bool = True, footing: str = "auto",
                      confidence: float = 0.95, n_bootstrap: int = 200, random_state=0) -> ObjectiveCeiling:
    r"""A sampled policy's objective at β against the ceiling :math:`J^*(\beta)` of the same held-out prompts.

    ``rewards``, ``k1`` (:math:`\log\pi - \log\pi_0` per sequence) and ``prompt_ids`` are per policy sample, as
    for :func:`~alignlimits.theory.comparison.compare_policy`, whose bootstrap design (and so, for the same
    ``random_state``, replicates) this shares. Per prompt :math:`J_p = \bar s_p - \bar r_p - \beta\bar k_{1,p}`
    and :math:`J^*_p` (jackknifed unless ``debiased=False``; exact when the frontier was fitted on an exact
    distribution), both averaged over prompts."""
    from alignlimits.theory.comparison import _Design, _FrontierReplicates, _policy_groups

    beta = check_beta(beta)
    rewards, k1 = np.asarray(rewards, dtype=np.float64).ravel(), np.asarray(k1, dtype=np.float64).ravel()
    if rewards.shape != k1.shape or not (np.isfinite(rewards).all() and np.isfinite(k1).all()):
        raise AlignLimitsError("give one finite reward and log-ratio per policy sample")
    groups, order = _policy_groups(frontier, prompt_ids)
    design = _Design.make(frontier.n_prompts_, footing, n_bootstrap, confidence, random_state)
    fr = _FrontierReplicates(frontier, design)
    exact = bool(frontier.exact_)
    base_probs = frontier.base_probs_ if exact else None
    plain = optimal_objective(frontier.rewards_, beta, frontier.groups_, base_probs)[0]  # (P,)
    point_opt = plain if exact or not debiased else optimal_objective_debiased(frontier.rewards_, beta, frontier.groups_)[0]
    if fr.shape[0] == 1:  # the prompts footing (or an exact frontier): the base samples stay as they are
        opt_reps = design.reduce(point_opt[None, :])
    else:  # the samples footing: each replicate's resampled base samples
        per = (optimal_objective_debiased(fr.rewards, beta, fr.groups) if debiased
               else optimal_objective(fr.rewards, beta, fr.groups))[0]
        opt_reps = design.reduce(fr.per_prompt(per))
    columns = np.stack([rewards[order], k1[order]])
    point = groups.mean(columns)
    resample = design.within(groups)
    if resample is None:
        per_prompt = point[:, None, :]
    else:
        idx, stacked = resample
        per_prompt = stacked.mean(columns[:, idx]).reshape(2, design.n_bootstrap, -1)
    base_mean = fr.base_means(frontier.rewards_, frontier.groups_, frontier.base_probs_)
    j_point = float(policy_objective(point[0] - base_mean, point[1], beta).mean())
    j_reps = design.reduce(policy_objective(per_prompt[0] - fr.base_mean, per_prompt[1], beta))
    units = (groups,) if exact else (groups, frontier.groups_)
    return ceiling_from_replicates(beta, design, units, j_point, j_reps, float(point_opt.mean()), opt_reps,
                                   float(plain.mean()))


def prompts_ceiling(rewards, beta, groups: Groups, confidence: float = 0.95, n_bootstrap: int = 200,
                    random_state=0) -> tuple[float, tuple[float, float]]:
    r"""J*(β) of these prompts from a few base samples each, and its interval about these prompts: the mean of each
    prompt's jackknifed :math:`J^*_p` (plain with fewer than 3 samples) ± z·se, se from resampling the samples within
    each prompt (the prompts held fixed: the trainers' curves are measured on these very prompts)."""
    from scipy import stats

    beta = check_beta(beta)
    rewards = np.asarray(rewards, dtype=np.float64)

    def estimate(r):
        per = (optimal_objective_debiased(r, beta, groups) if groups.sizes.min() >= 3
               else optimal_objective(r, beta, groups))
        return per[0].mean()

    mean = float(estimate(rewards))
    rng = np.random.default_rng(random_state)
    reps = np.array([estimate(rewards[groups.resample_within(rng)]) for _ in range(n_bootstrap)])
    half = float(stats.norm.ppf(0.5 + confidence / 2) * reps.std(ddof=1))
    return mean, (mean - half, mean + half)
