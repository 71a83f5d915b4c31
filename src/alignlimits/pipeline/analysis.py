"""The analyses behind `alignlimits frontier | hacking | plan`: sample table in, JSON-ready dict out.

The dicts follow DESIGN §2 (``frontier`` and ``hacking`` schemas); extra keys document how
each number was computed.
"""

from __future__ import annotations

import math

import numpy as np

from alignlimits.samples import SampleTable, StreamedTable
from alignlimits.errors import AlignLimitsError
from alignlimits.theory.best_of_n import (
    bon_empirical_reward,
    bon_expected_reward,
    bon_kl_bound,
    bon_kl_empirical,
)
from alignlimits.theory.frontier import Frontier
from alignlimits.theory.groups import Groups
from alignlimits.theory.hacking import TILT_KEYS, CurveEvaluator, aggregate_proxies, summarise
from alignlimits.theory.planning import gain_limits, plan_for_gain, plan_for_kl
from alignlimits.theory.stream import ChunkedSamples

DEFAULT_BUDGETS = (0.1, 0.5, 1.0, 2.0)
SQRT_BOUND_NOTE = (
    "sqrt_bound = sqrt(2 * s2 * KL) with s2 the mean within-prompt sample variance of the reward: the frontier's "
    "small-KL limit and its value for Gaussian rewards. It bounds the frontier only for sub-Gaussian rewards with "
    "variance proxy s2; with the sample variance in its place it is a comparison curve, not a bound."
)


def default_min_ess(n_min: int) -> float:
    """The reliability threshold when none is given: min(10, max(2, n // 3)), n the fewest samples of a prompt.

    A prompt's ESS never exceeds its n, so a fixed 10 made every budget unreliable below 10 samples;
    a third of n leaves a usable range and matches `run` (16 samples: 5; 30 or more: 10).
    """
    return float(min(10, max(2, int(n_min) // 3)))


MIN_ESS_RULE = "default min(10, max(2, n // 3)) for the fewest samples n of a prompt"


def json_safe(value):
    """A copy that strict JSON parsers accept: every NaN or ±inf becomes null, and the dict holding it
    gains ``<key>_null_reason`` saying what it was (unless the dict already has that key)."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            out[key] = json_safe(item)
            reason = _nonfinite_reason(item)
            if reason and f"{key}_null_reason" not in value:
                out[f"{key}_null_reason"] = reason
        return out
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def _nonfinite_reason(value) -> str | None:
    items = value if isinstance(value, (list, tuple, np.ndarray)) else [value]
    bad = [float(v) for v in items if isinstance(v, (float, np.floating)) and not math.isfinite(v)]
    if not bad:
        return None
    kinds = sorted({"NaN (undefined)" if math.isnan(v) else "infinite" for v in bad})
    return f"the value was {' and '.join(kinds)}; JSON has no such number, so it is written as null"


def default_bon_grid(n_min: int) -> list[int]:
    """1, 2, 4, ... up to the smallest number of samples per prompt (that n included)."""
    grid = [1 << k for k in range(int(np.log2(n_min)) + 1)]
    return grid if grid[-1] == n_min else grid + [n_min]


def fewest_samples(table: SampleTable | StreamedTable) -> int:
    if isinstance(table, StreamedTable):
        return int(table.sizes.min())
    return int(np.unique(table.prompt_ids, return_counts=True)[1].min())


def fit_frontier(table: SampleTable | StreamedTable, reward_col: str, min_ess: float | None = None,
                 **options) -> Frontier:
    """The frontier of ``table``; ``min_ess=None`` takes :func:`default_min_ess` of its fewest samples per prompt.
    A :class:`StreamedTable` is fitted chunk by chunk (:meth:`Frontier.fit_stream`): the same numbers in
    bounded memory (its ``reward_col`` is the one it was scanned for)."""
    if min_ess is None:
        min_ess = default_min_ess(fewest_samples(table))
    frontier = Frontier(min_ess=min_ess, **options)
    if isinstance(table, StreamedTable):
        if reward_col != table.reward_col:
            raise AlignLimitsError(f"{table.source} was scanned for {table.reward_col!r}, not {reward_col!r}")
        return frontier.fit_stream(ChunkedSamples(table.blocks, table.sizes), table.prompt_ids)
    return frontier.fit(table.rewards(reward_col), table.prompt_ids)


def default_budgets(frontier: Frontier, extrapolate: bool) -> tuple[list[float], list[str]]:
    """The budgets 0.1, 0.5, 1, 2 the samples support, plus the edge of the reliable range when some were
    left out; and one sentence for what was left out and how to get it."""
    n_min, ess = int(frontier.groups_.sizes.min()), frontier.min_ess
    reliable = frontier.max_reliable_kl_
    limit = frontier.max_kl_ if extrapolate else reliable
    kls = [k for k in DEFAULT_BUDGETS if k < limit or (not extrapolate and k == limit)]
    dropped = [k for k in DEFAULT_BUDGETS if k not in kls]
    if not dropped:
        return kls, []
    digits = 1 - int(np.floor(np.log10(reliable))) if reliable > 0 else 0
    edge = float(np.floor(reliable * 10.0**digits) / 10.0**digits)  # the reliable range's end, 2 digits, rounded down
    if not extrapolate and edge > (kls[-1] if kls else 0):
        kls.append(edge)
    left_out = ", ".join(f"{k:g}" for k in dropped)
    if extrapolate:
        return kls, [f"budgets {left_out} nats were left out: beyond the largest KL any reweighting of these samples "
                     f"reaches ({frontier.max_kl_:.3g} = log of {n_min} samples per prompt); sample more per prompt"]
    if reliable <= 0:
        return kls, [f"no KL budget is reliable: any tilt drops some prompt's effective sample size below "
                     f"--min-ess {ess:g} ({n_min} samples per prompt); lower --min-ess (below {n_min}), pass "
                     "--extrapolate to see the frontier flagged unreliable, or draw more samples per prompt"]
    return kls, [f"budgets {left_out} nats were left out: above the largest reliable KL {reliable:.3g} (every prompt "
                 f"keeping ESS ≥ {ess:g}); pass --extrapolate to show them flagged unreliable, lower --min-ess, "
                 "or draw more samples per prompt"]


def bon_rows(frontier: Frontier, ns) -> list[dict]:
    """Best-of-N on the fitted frontier's samples: unbiased and empirical-law gain, KL bound and exact
    empirical KL; gains with the frontier's bootstrap interval, the empirical KL with its bootstrap se."""
    ns = np.asarray(sorted(set(int(n) for n in ns)))
    k = ns.size

    def per_prompt(r, g):
        mean = g.mean(r)
        return np.concatenate([bon_expected_reward(r, ns, g) - mean, bon_empirical_reward(r, ns, g) - mean,
                               bon_kl_empirical(r, ns, g)])

    values, ci, se = frontier.bootstrap_statistic(per_prompt, fixed_prompts=True)
    return [
        {"n": int(n), "gain_unbiased": float(values[i]), "gain_unbiased_ci": ci[i].tolist(),
         "gain_empirical": float(values[k + i]), "gain_empirical_ci": ci[k + i].tolist(),
         "kl_bound": float(b), "kl_empirical": float(values[2 * k + i]), "kl_empirical_se": float(se[2 * k + i])}
        for i, (n, b) in enumerate(zip(ns, bon_kl_bound(ns)))
    ]


def frontier_result(table: SampleTable | StreamedTable, reward_col: str, kls=None, bon=None,
                    extrapolate: bool = False, frontier: Frontier | None = None, **options) -> dict:
    """The ``frontier`` JSON of DESIGN §2. Without ``kls``, the default budgets the samples support.
    ``frontier``: one already fitted on ``table`` (else fitted here with ``options``)."""
    rule = MIN_ESS_RULE if frontier is None and options.get("min_ess") is None else "given"
    if frontier is None:
        frontier = fit_frontier(table, reward_col, **options)
    notes = list(table.notes)
    if kls is None:
        kls, left_out = default_budgets(frontier, extrapolate)
        notes += left_out
    n_min = int(frontier.groups_.sizes.min())
    bon = default_bon_grid(n_min) if bon is None else list(bon)
    if bon and max(bon) > n_min:
        raise AlignLimitsError(f"best-of-{max(bon)} needs {max(bon)} samples per prompt but a prompt has {n_min}; use --bon with N ≤ {n_min}")
    points = frontier.evaluate(kls, extrapolate=extrapolate) if len(kls) else []
    curve = frontier.curve_
    return {
        "reward_col": reward_col,
        "n_prompts": frontier.n_prompts_,
        "n_samples": frontier.n_samples_,
        "samples_per_prompt": {"min": n_min, "max": int(frontier.groups_.sizes.max())},
        "base_reward_mean": frontier.base_reward_mean_,
        "reward_variance": frontier.reward_variance_,
        "budget": frontier.budget,
        "budgets": [p.to_dict() for p in points],
        "curve": [
            {"beta": float(b), "kl": float(k), "gain": float(d), "ess_min": float(e), "reliable": bool(ok)}
            for b, k, d, e, ok in zip(curve["beta"], curve["kl"], curve["gain"], curve["ess_min"], curve["reliable"])
        ],
        "bon": bon_rows(frontier, bon) if bon else [],
        "max_reliable_kl": frontier.max_reliable_kl_,
        "max_kl": frontier.max_kl_,
        "min_ess": frontier.min_ess,
        "min_ess_rule": rule,
        "ci_method": frontier.bootstrap_description(),
        "sqrt_bound_note": SQRT_BOUND_NOTE,
        "estimator": (
            "self-normalised tilt of the base samples, w = softmax(r/beta) per prompt; gain = sum w r - mean r, "
            "KL = sum w log(n w) (capped at log n); shared beta across prompts"
            if frontier.budget == "shared" else
            "self-normalised tilt of the base samples, one beta per prompt so that each prompt's KL meets the budget"
        ),
        "notes": notes,
    }


def hacking_result(table: SampleTable, gold: str, proxies: list[str], ensembles=("mean",), betas=None,
                   bon=None, lam: float | None = None, ddof: int = 0) -> dict:
    """The ``hacking`` JSON of DESIGN §2: per proxy, per ensemble, per β; plus best-of-N by proxy. Point estimates
    of :class:`alignlimits.theory.hacking.CurveEvaluator` (the engine of `alignlimits hack`), on its default β grid
    unless ``betas``; ``lam=None``: λ = 1 / the gold reward's within-prompt std, as in `alignlimits hack`."""
    if not proxies:
        raise AlignLimitsError("give at least one --proxy column")
    ids, gold_r = table.prompt_ids, table.rewards(gold)
    groups, order, _ = Groups.from_labels(ids)
    ns = default_bon_grid(int(groups.sizes.min())) if bon is None else list(bon)
    ev = CurveEvaluator(gold_r, ids, betas, ns, n_bootstrap=0)
    lam_default = lam is None
    lam = 1.0 / np.sqrt(ev.gold_frontier.reward_variance_) if lam_default else lam
    values = {name: table.rewards(name) for name in proxies}
    for name, v in values.items():
        if np.all(groups.max(v[order]) == -groups.max(-v[order])):
            raise AlignLimitsError(f"proxy {name!r} is constant within every prompt: it carries no ranking information")

    def entry(v: np.ndarray) -> dict:
        return {"correlation": float(np.corrcoef(gold_r, v)[0, 1]), "curve": summarise(ev.tilt_curves(v), TILT_KEYS, None)}

    per_ensemble = [{"aggregate": how, "k": len(proxies), **entry(aggregate_proxies(np.stack(list(values.values())), how, lam=lam, ddof=ddof))}
                    for how in ensembles] if len(proxies) > 1 else []
    bon_keys = ("n", "kl_bound", "proxy_gain", "gold_gain", "gold_gain_by_gold")
    return {
        "gold": gold, "proxies": list(proxies), "n_prompts": ev.gold_frontier.n_prompts_, "n_samples": ev.gold_frontier.n_samples_,
        "per_proxy": [{"proxy": name, **entry(v)} for name, v in values.items()],
        "ensembles": per_ensemble,
        "bon_by_proxy": [{"proxy": name, **row} for name, v in values.items() for row in summarise(ev.bon_curves(v), bon_keys, None)],
        "uwo": {"lambda": float(lam), "lambda_default": "1 / gold_within_prompt_sd" if lam_default else None,
                "variance": "population (ddof=0)" if ddof == 0 else "unbiased (ddof=1)"},
        "notes": list(table.notes),
    }


def plan_result(table: SampleTable, reward_col: str, target_gain: float | None = None, kl: float | None = None,
                extrapolate: bool = False, **options) -> dict:
    """The ``plan`` JSON: the answer, what the samples can answer at all (``max_gain``, ``max_reliable_gain``,
    ``max_reliable_kl``, ``max_kl``) and, for a question they cannot answer, ``refused`` (the reason; the
    answer's numbers are then null). Refused like `frontier` refuses budgets: beyond reach always, beyond
    the reliable range unless ``extrapolate``."""
    if (target_gain is None) == (kl is None):
        raise AlignLimitsError("give exactly one of --target-gain and --kl")
    if target_gain is not None and (not np.isfinite(target_gain) or target_gain <= 0):
        raise AlignLimitsError("--target-gain must be a positive number (in reward units)")
    if kl is not None and (not np.isfinite(kl) or kl <= 0):
        raise AlignLimitsError("--kl must be a positive number of nats, e.g. 0.5")
    rule = MIN_ESS_RULE if options.get("min_ess") is None else "given"
    frontier = fit_frontier(table, reward_col, n_bootstrap=0, **options)
    limits = gain_limits(frontier)
    out = {"question": "target_gain" if target_gain is not None else "kl", "reward_col": reward_col,
           "kl": kl, "beta": None, "gain": target_gain, "bon_n": None, "bon_gain": None, "bon_kl_bound": None,
           "reliable": False, "refused": _plan_refusal(frontier, limits, target_gain, kl, extrapolate),
           "max_gain": limits.max_gain, "max_reliable_gain": limits.max_reliable_gain,
           "max_reliable_kl": frontier.max_reliable_kl_, "max_kl": frontier.max_kl_, "min_ess": frontier.min_ess,
           "min_ess_rule": rule, "base_reward_mean": frontier.base_reward_mean_, "notes": list(table.notes)}
    if out["refused"]:
        return out
    plan = plan_for_gain(frontier, target_gain) if target_gain is not None else plan_for_kl(frontier, kl, extrapolate)
    out.update(plan.to_dict())
    out["reliable"] = bool(plan.kl <= frontier.max_reliable_kl_)
    return out


def _plan_refusal(frontier: Frontier, limits, target_gain, kl, extrapolate: bool) -> str | None:
    """Why a plan question is beyond these samples (None when it is not)."""
    reach = (f"the largest reachable gain is {limits.max_gain:.3g} (each prompt's best sample, at KL up to "
             f"{frontier.max_kl_:.3g} nats)")
    reliable = (f"the largest KL these samples support reliably is {frontier.max_reliable_kl_:.3g} nats (every prompt "
                f"keeping ESS ≥ {frontier.min_ess:g}), where the gain is {limits.max_reliable_gain:.3g}")
    fixes = "ask for less, lower --min-ess, draw more samples per prompt, or pass --extrapolate"
    if target_gain is not None:
        if target_gain >= limits.max_gain:
            return f"a gain of {target_gain:g} is beyond any reweighting of these samples: {reach}; ask for less or sample more"
        if target_gain > limits.max_reliable_gain and not extrapolate:
            needed = float(frontier.kl_for_gain(target_gain)[0])
            return f"a gain of {target_gain:g} needs KL {needed:.3g}, beyond the reliable range: {reliable}; {fixes}"
        return None
    if kl >= frontier.max_kl_:
        return f"KL budget {kl:g} is beyond any reweighting of these samples: {reach}; ask for less or sample more"
    if kl > frontier.max_reliable_kl_ and not extrapolate:
        return f"KL budget {kl:g} is beyond the reliable range: {reliable}; {fixes}"
    return None
