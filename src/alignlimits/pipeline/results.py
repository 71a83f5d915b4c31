"""A study's numbers: the frontier stage's JSON and the final ``results.json`` (format in the README)."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np

from alignlimits.pipeline.trainers import TRAINERS
from alignlimits.pipeline.records import FORMAT_VERSION, trained_world_size
from alignlimits.seeding import derive_seed


def frontier_stage(study) -> dict:
    """The frontier with its bands, soft best-of-N's points and the planning answers (``RUN_DIR/frontier.json``).

    The bands and every point compared with the frontier share one bootstrap footing
    (:func:`alignlimits.theory.comparison.choose_footing`): prompts resampled from 10 held-out prompts
    on, else the prompts held fixed and their samples resampled. The bands are the budgets' own gains and
    intervals (one interval for the frontier's gain wherever it is shown), at 12 KLs across the reliable range,
    where their coverage is measured.
    """
    from alignlimits.pipeline.analysis import frontier_result
    from alignlimits.theory.comparison import compare_soft_best_of_n
    from alignlimits.theory.planning import beta_grid, plan_for_gain, plan_for_kl

    frontier, seed = study.frontier, study.config.seed
    result = frontier_result(study.base_table(), study.ctx.reward_col, kls=[], frontier=frontier)
    reliable = max(frontier.max_reliable_kl_, 1e-3)
    band_kls = np.linspace(reliable / 12, reliable, 12)
    result["budgets"] = [p.to_dict() for p in frontier.evaluate(band_kls, extrapolate=True)]
    band, corrected = (_band(result["budgets"], key) for key in ("gain", "gain_debiased"))
    betas = beta_grid(frontier, band_kls[[3, 7, 11]])  # a third, two thirds and all of the reliable reach
    ns = [n for n in study.config.soft_bon_n if n <= frontier.groups_.sizes.min()]
    soft = [{**c.to_dict(), "label": f"soft best-of-{c.n} β={c.beta:.3g}"}
            for beta in betas for c in compare_soft_best_of_n(frontier, ns, float(beta),
                                                               random_state=derive_seed(seed, "soft-bon", float(beta)))]
    top_gain = result["curve"][-1]["gain"]
    plans = {
        "for_gains": [plan_for_gain(frontier, g).to_dict() for g in np.array([0.25, 0.5, 0.75]) * top_gain],
        "for_kls": [plan_for_kl(frontier, k, extrapolate=True).to_dict() for k in (reliable / 4, reliable / 2, reliable)],
    }
    for p in plans["for_gains"] + plans["for_kls"]:
        p["reliable"] = bool(np.isfinite(p["kl"]) and p["kl"] <= frontier.max_reliable_kl_)
    return {"frontier": result, "frontier_band": band, "frontier_band_debiased": corrected,
            "frontier_band_footing": frontier.bootstrap_description(), "soft_bon": soft, "plan": plans}


def _band(budgets: list[dict], key: str) -> list[dict]:
    """The ``frontier_band`` rows ``{kl, gain, lo, hi}`` of the budgets' ``gain`` or ``gain_debiased``: the same
    numbers as ``frontier.budgets``."""
    return [{"kl": b["kl"], "gain": b[key], "lo": b[f"{key}_ci"][0], "hi": b[f"{key}_ci"][1]} for b in budgets]


def method_points(study, saved: dict, evaluated: list) -> list[dict]:
    """Every method's point on the plane with its paired intervals and verdict: best-of-N, soft best-of-N and
    each evaluated policy (trained policies against the bias-corrected frontier)."""
    from alignlimits.methods.evaluation import log_ratio, place_policy
    from alignlimits.pipeline.overoptimisation import alignment_summary
    from alignlimits.theory.ceiling import objective_ceiling
    from alignlimits.theory.comparison import compare_best_of_n

    frontier, c, points = study.frontier, study.config, []
    if "bon" in c.methods:
        ns = [row["n"] for row in saved["frontier"]["bon"] if row["n"] > 1]
        points += [{**p.to_dict(), "label": f"best-of-{p.n}"}
                   for p in compare_best_of_n(frontier, ns, random_state=derive_seed(c.seed, "bon"))]
    if "soft-bon" in c.methods:
        points += saved["soft_bon"]
    col, judge = study.ctx.reward_col, policy_frontier(study) if evaluated else None
    for record, frame in evaluated:
        seed = derive_seed(c.seed, "point", record.name)
        beta = record.objective_beta
        point = place_policy(record.method, frame[col], frame["prompt_id"], frame["logp_policy"], frame["logp_base"],
                             judge, beta=beta, random_state=seed)
        entry = {**point.to_dict(), "label": record.label}
        if beta is not None:  # its ceiling from the frontier that judges it: exact on the exact task
            ceiling = objective_ceiling(judge, frame[col], log_ratio(frame["logp_policy"], frame["logp_base"]),
                                        frame["prompt_id"], beta, random_state=seed)
            entry.update(ceiling.to_dict())
            if record.beta is not None:
                entry.update(training_summary(record, study.train_ceiling(record.beta)))
                entry.update(alignment_summary(study, record, frame))
        points.append(entry)
    return points


def training_summary(record, ceiling: tuple[float, tuple[float, float]] | None) -> dict:
    """A trained policy's training state (``converged`` / ``learning`` / ``undetermined``, the stated rule) against
    ``ceiling``, J*(β) of the training prompts with its interval (the trainer's curve is measured on them; the held-out
    prompts' J* can differ, e.g. 0.77 against 0.31 on the exact task), its per-step objective relative to each
    prompt's base level with standard errors (the report's curve), where it ended (``training_share``: the last
    window's mean objective over J*(β) of the training prompts, which separates "did not reach its optimum" from
    "reached it on the prompts it trained on, not on held-out ones"), and why it stopped."""
    from alignlimits.methods.convergence import convergence, final_objective
    from alignlimits.methods.stopping import read_rows, read_stop
    from alignlimits.theory.ceiling import share_interval

    rows = read_rows(record.train_dir)
    if not rows:
        return {}
    curve = [{"step": int(r["step"]), "objective": r.get("objective_rel"), "se": r.get("objective_rel_se")}
             for r in rows if r.get("objective_rel") is not None]
    value, ci = ceiling or (float("nan"), (float("nan"), float("nan")))
    objective, se = [x["objective"] for x in curve], [x["se"] for x in curve]
    verdict = convergence(objective, value, se)
    end, end_se, window = final_objective(objective, se)
    share, share_ci = share_interval(end, end_se, value, (ci[1] - ci[0]) / (2 * 1.959964))
    return {"converged": verdict.converged, "training_state": verdict.state,
            "training_ceiling": {"objective_optimal": value, "objective_optimal_ci": list(ci), "prompts": "training"},
            "training_share": {"objective": end, "objective_se": end_se, "window": window, "share": share,
                               "share_ci": list(share_ci) if share_ci else None},
            "convergence": {"rise": verdict.rise, "noise": verdict.noise, "resolution": verdict.resolution,
                            "window": verdict.window, "rule": verdict.rule},
            "training_curve": curve, "stopped": read_stop(record.train_dir)}


def collect(study) -> dict:
    """``results.json``: the config, versions and seeds, timings, the frontier and every method's point.

    ``wall_time_s`` is the time of every stage, over all the commands that ran them (a resumed run counts once)."""
    from alignlimits.pipeline.sampling_run import package_versions

    c = study.config
    saved = json.loads((study.dir / "frontier.json").read_text())
    hacking_path = study.dir / "hacking.json"
    evaluated, timings = study.evaluated(), study.state.timings()
    return {
        "version": FORMAT_VERSION, "task": c.task, "model": study.ctx.model_spec, "reward": study.ctx.reward_col,
        "reward_description": getattr(study.ctx.rewards[0], "description", ""), "preset": c.preset,
        "config": {**asdict(c), "betas": study.betas if any(m in TRAINERS for m in c.methods) else c.betas,
                   "world_size": trained_world_size(study.dir)},
        "versions": package_versions(), "seeds": {"seed": c.seed},
        "timings": timings, "wall_time_s": round(sum(timings.values()), 1),
        "frontier": saved["frontier"], "frontier_band": saved["frontier_band"],
        "frontier_band_debiased": saved["frontier_band_debiased"], "frontier_band_footing": saved["frontier_band_footing"],
        "soft_bon": saved["soft_bon"],
        "evaluate": method_points(study, saved, evaluated), "plan": saved["plan"],
        "hacking": json.loads(hacking_path.read_text()) if hacking_path.exists() else None,
        "examples": examples(study, evaluated),
        "exact_frontier": exact_frontier(study) if c.task == "exact" else None,
        "notes": saved["frontier"].get("notes", []),
    }


def policy_frontier(study):
    """The frontier that judges sampled policies (issue 21, item 9): on the exact task the exact frontier of the
    held-out prompts, every completion enumerated (its points say ``judged_against: exact``); elsewhere the base
    samples' (bias-corrected where it reaches)."""
    if study.config.task != "exact":
        return study.frontier
    if getattr(study, "_exact_frontier", None) is None:
        from alignlimits.lm.exact import exact_distribution
        from alignlimits.theory.frontier import Frontier

        ids = list(dict.fromkeys(study.base_table().frame["prompt_id"]))
        texts = {p["prompt_id"]: p["text"] for p in study.ctx.task.prompts}
        lm = study.ctx.lm
        dist = exact_distribution(lm.model, lm.tokenizer, [{"id": i, "prompt": texts[i]} for i in ids])
        k = dist.logp.shape[1]
        study._exact_frontier = Frontier(n_bootstrap=0).fit(np.tile(dist.rewards, len(ids)), np.repeat(ids, k),
                                                            base_probs=dist.probs.ravel())
    return study._exact_frontier


def exact_frontier(study) -> list[dict]:
    """The true frontier of the exact task's held-out prompts, by enumerating every completion."""
    exact = policy_frontier(study)
    return [{"kl": float(a), "gain": float(b)} for a, b in zip(exact.curve_["kl"], exact.curve_["gain"])]


def examples(study, evaluated: list, k: int = 3) -> list[dict]:
    """The first completion of the base model and of every evaluated policy on the first ``k`` held-out prompts."""
    base = study.base_table().frame
    col = study.ctx.reward_col
    out = []
    for pid in list(dict.fromkeys(base["prompt_id"]))[:k]:
        first = base[base["prompt_id"] == pid].iloc[0]
        completions = [{"method": "base", "label": "base model", "text": str(first["completion"]),
                        "reward": float(first[col])}]
        for record, frame in evaluated:
            sub = frame[frame["prompt_id"] == pid]
            if len(sub):
                completions.append({"method": record.method, "label": record.label,
                                    "text": str(sub.iloc[0]["completion"]), "reward": float(sub.iloc[0][col])})
        out.append({"prompt_id": str(pid), "prompt": str(first.get("prompt", "")), "completions": completions})
    return out
