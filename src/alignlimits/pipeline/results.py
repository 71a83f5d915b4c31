"""A study's numbers: the frontier stage's JSON and the final ``results.json`` (format in the README)."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np

from alignlimits.pipeline.records import FORMAT_VERSION


def frontier_stage(study) -> dict:
    """The frontier with its band, soft best-of-N's laws and the planning answers (``RUN_DIR/frontier.json``)."""
    from alignlimits.pipeline.analysis import frontier_result
    from alignlimits.theory.best_of_n import soft_bon
    from alignlimits.theory.planning import plan_for_gain, plan_for_kl

    frontier = study.frontier
    result = frontier_result(study.base_table(), study.ctx.reward_col, kls=[], frontier=frontier)
    reliable = max(frontier.max_reliable_kl_, 1e-3)
    band_kls = np.linspace(reliable / 12, reliable, 12)
    band = frontier.evaluate(band_kls, extrapolate=True)
    result["budgets"] = [p.to_dict() for p in band]
    betas = frontier.beta_for_kl(band_kls[[3, 7, 11]], extrapolate=True)
    ns = [n for n in study.config.soft_bon_n if n <= frontier.groups_.sizes.min()]
    soft = []
    for beta in betas:
        values, ci, se = frontier.bootstrap_statistic(lambda r, g, b=float(beta): np.concatenate(soft_bon(r, ns, b, g)),
                                                      fixed_prompts=True)
        k = len(ns)
        soft += [{"n": int(n), "beta": float(beta), "gain": float(values[i]), "gain_ci": ci[i].tolist(),
                  "kl": float(values[k + i]), "kl_se": float(se[k + i])} for i, n in enumerate(ns)]
    top_gain = result["curve"][-1]["gain"]
    plans = {
        "for_gains": [plan_for_gain(frontier, g).to_dict() for g in np.array([0.25, 0.5, 0.75]) * top_gain],
        "for_kls": [plan_for_kl(frontier, k, extrapolate=True).to_dict() for k in (reliable / 4, reliable / 2, reliable)],
    }
    for p in plans["for_gains"] + plans["for_kls"]:
        p["reliable"] = bool(np.isfinite(p["kl"]) and p["kl"] <= frontier.max_reliable_kl_)
    return {"frontier": result, "frontier_band": [{"kl": p.kl, "lo": p.gain_ci[0], "hi": p.gain_ci[1]} for p in band],
            "soft_bon": soft, "plan": plans}


def _law_point(frontier, method, label, n, beta, kl, kl_se, gain, gain_ci, estimator) -> dict:
    from alignlimits.theory.hacking import frontier_gain_at

    optimal = float(frontier_gain_at(frontier, np.array([kl]))[0])
    needed = float(frontier.kl_for_gain(gain)[0])
    return {
        "method": method, "label": label, "n": n, "beta": beta,
        "kl": kl, "kl_se": kl_se, "kl_k3": None, "kl_k3_se": None,
        "gain": gain, "gain_ci": gain_ci, "optimal_gain_at_kl": optimal,
        "efficiency": gain / optimal if optimal > 0 else float("nan"),
        "kl_overspend": float(kl / needed) if needed > 0 else float("inf"),
        "reliable": kl <= frontier.max_reliable_kl_,
        "n_prompts": frontier.n_prompts_, "n_samples": frontier.n_samples_, "estimator": estimator,
    }


def method_points(study, saved: dict) -> list[dict]:
    """Every method's point on the plane: best-of-N, soft best-of-N and each evaluated policy."""
    from alignlimits.methods.evaluation import place_policy

    frontier, methods, points = study.frontier, study.config.methods, []
    if "bon" in methods:
        points += [_law_point(frontier, "bon", f"best-of-{row['n']}", row["n"], None, row["kl_empirical"],
                              row["kl_empirical_se"], row["gain_empirical"], row["gain_empirical_ci"],
                              "exact best-of-N law on the empirical distribution of the base samples")
                   for row in saved["frontier"]["bon"] if row["n"] > 1]
    if "soft-bon" in methods:
        points += [_law_point(frontier, "soft-bon", f"soft best-of-{row['n']} β={row['beta']:.3g}", row["n"],
                              row["beta"], row["kl"], row["kl_se"], row["gain"], row["gain_ci"],
                              "exact law of sampling-importance-resampling on the empirical distribution")
                   for row in saved["soft_bon"]]
    col = study.ctx.reward_col
    for record, frame in study.evaluated():
        point = place_policy(record.method, frame[col], frame["prompt_id"], frame["logp_policy"], frame["logp_base"],
                             frontier, beta=record.beta)
        points.append({**point.to_dict(), "label": record.label, "n": None,
                       "estimator": "policy samples on held-out prompts; KL per sequence (k1, k3)"})
    return points


def collect(study, wall_time: float) -> dict:
    """``results.json``: the config, versions and seeds, timings, the frontier and every method's point."""
    from alignlimits.pipeline.sampling_run import package_versions

    c = study.config
    saved = json.loads((study.dir / "frontier.json").read_text())
    hacking_path = study.dir / "hacking.json"
    return {
        "version": FORMAT_VERSION, "task": c.task, "model": study.ctx.model_spec, "reward": study.ctx.reward_col,
        "reward_description": getattr(study.ctx.rewards[0], "description", ""), "preset": c.preset,
        "config": asdict(c), "versions": package_versions(), "seeds": {"seed": c.seed},
        "timings": study.state.timings(), "wall_time_s": round(wall_time, 1),
        "frontier": saved["frontier"], "frontier_band": saved["frontier_band"], "soft_bon": saved["soft_bon"],
        "evaluate": method_points(study, saved), "plan": saved["plan"],
        "hacking": json.loads(hacking_path.read_text()) if hacking_path.exists() else None,
        "examples": examples(study),
        "exact_frontier": exact_frontier(study) if c.task == "exact" else None,
        "notes": saved["frontier"].get("notes", []),
    }


def exact_frontier(study) -> list[dict]:
    """The true frontier of the exact task's held-out prompts, by enumerating every completion."""
    from alignlimits.lm.exact import exact_distribution
    from alignlimits.theory.frontier import Frontier

    ids = list(dict.fromkeys(study.base_table().frame["prompt_id"]))
    texts = {p["prompt_id"]: p["text"] for p in study.ctx.task.prompts}
    lm = study.ctx.lm
    dist = exact_distribution(lm.model, lm.tokenizer, [{"id": i, "prompt": texts[i]} for i in ids])
    k = dist.logp.shape[1]
    exact = Frontier(n_bootstrap=0).fit(np.tile(dist.rewards, len(ids)), np.repeat(ids, k), base_probs=dist.probs.ravel())
    return [{"kl": float(a), "gain": float(b)} for a, b in zip(exact.curve_["kl"], exact.curve_["gain"])]


def examples(study, k: int = 3) -> list[dict]:
    """The first completion of the base model and of every policy on the first ``k`` held-out prompts."""
    base = study.base_table().frame
    col = study.ctx.reward_col
    evaluated = study.evaluated()
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
