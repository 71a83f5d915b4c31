"""Speed and memory of the theory engine at scale (issue: 10,000 prompts × 1,024 samples).

Stages, each in a fresh child process so that its peak memory (max RSS) is its own:
  main       fit (64-point curve, reliability), 8 budgets, best-of-N for N = 1..1024
  bootstrap  the same 8 budgets with 200 bootstrap replicates (time reported beyond `main`)
and a ratio against the simplest correct implementation (a Python loop over prompts),
both run on the same subset of prompts in the same process; and soft best-of-N's bootstrap
interval as ``run exact`` computes it (3 prompts × 256 samples of the exact task's tied
rewards, 200 replicates, N = 2, 4, 16, at the study's 3 β), alone with ``--soft-bon-only``.

    python benchmarks/bench_theory.py [--prompts 10000] [--samples 1024] [--subset 200] [--soft-bon-only]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import resource
import time

import numpy as np
from scipy.optimize import brentq
from scipy.special import gammaln

BUDGETS = [0.05, 0.1, 0.2, 0.5, 1.0, 1.5, 2.0, 3.0]


def make_rewards(prompts: int, samples: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    scale = rng.uniform(0.5, 1.5, (prompts, 1))
    rewards = (rng.normal(size=(prompts, 1)) + scale * rng.standard_normal((prompts, samples))).ravel()
    return rewards, np.repeat(np.arange(prompts), samples)


def vectorised(rewards, ids, n_bootstrap: int) -> dict:
    from alignlimits.pipeline.analysis import bon_rows
    from alignlimits.theory.frontier import Frontier

    t0 = time.perf_counter()
    f = Frontier(n_bootstrap=n_bootstrap, min_ess=1.0).fit(rewards, ids)
    t_fit = time.perf_counter()
    points = f.evaluate(BUDGETS, extrapolate=True)
    t_budgets = time.perf_counter()
    bon = bon_rows(f, np.arange(1, int(f.groups_.sizes.min()) + 1))
    t_bon = time.perf_counter()
    return {
        "fit_s": t_fit - t0, "budgets_s": t_budgets - t_fit, "bon_s": t_bon - t_budgets, "total_s": t_bon - t0,
        "gains": [p.gain for p in points], "bon_gain_last": bon[-1]["gain_unbiased"],
    }


def python_loop(rewards, ids, n_bon: int) -> dict:
    """Simplest correct implementation: per prompt, per β, per N, in Python."""
    P = int(ids.max()) + 1
    groups = [rewards[ids == p] for p in range(P)]

    def mean_kl_gain(beta):
        kls, gains = [], []
        for r in groups:
            a = r / beta
            w = np.exp(a - a.max())
            w /= w.sum()
            kls.append(np.sum(w * np.log(len(r) * w + 1e-300)))
            gains.append(w @ r - r.mean())
        return np.mean(kls), np.mean(gains)

    t0 = time.perf_counter()
    spread = max(r.max() - r.min() for r in groups)
    for beta in spread * np.geomspace(1e2, 1e-3, 64):
        mean_kl_gain(beta)
    gains = []
    for eps in BUDGETS:
        beta = np.exp(brentq(lambda u: mean_kl_gain(np.exp(u))[0] - eps, np.log(spread) - 15, np.log(spread) + 5, xtol=1e-10))
        gains.append(mean_kl_gain(beta)[1])
    bon_last = 0.0
    for r in groups:
        s = np.sort(r)
        n = len(s)
        i = np.arange(1, n + 1)
        for N in range(1, n_bon + 1):
            log_w = gammaln(i) - gammaln(N) - gammaln(np.maximum(i - N + 1, 1)) - (gammaln(n + 1) - gammaln(N + 1) - gammaln(n - N + 1))
            e = np.where(i >= N, np.exp(log_w), 0.0) @ s
        bon_last += e - s.mean()
    return {"total_s": time.perf_counter() - t0, "gains": gains, "bon_gain_last": bon_last / P}


def soft_bon_bootstrap(repeats: int) -> dict:
    """Median time of the study's soft best-of-N intervals (``Study.fit_frontier``) on exact-task-sized data."""
    from alignlimits.lm.exact import enumerate_completions, reward_of_ids
    from alignlimits.theory.best_of_n import soft_bon
    from alignlimits.theory.frontier import Frontier

    rng = np.random.default_rng(0)
    table = np.array([reward_of_ids(c) for c in enumerate_completions()])  # 40 outcomes, tied rewards
    rewards = np.concatenate([rng.choice(table, 256, p=rng.dirichlet(np.full(table.size, 0.5))) for _ in range(3)])
    frontier = Frontier(n_bootstrap=200).fit(rewards, np.repeat(np.arange(3), 256))
    reliable = max(frontier.max_reliable_kl_, 1e-3)
    betas = frontier.beta_for_kl(np.linspace(reliable / 12, reliable, 12)[[3, 7, 11]], extrapolate=True)
    ns = [2, 4, 16]
    times, rows = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        rows = [frontier.bootstrap_statistic(lambda r, g, b=float(b): np.concatenate(soft_bon(r, ns, b, g)),
                                             fixed_prompts=True)[0] for b in betas]
        times.append(time.perf_counter() - t0)
    return {"soft_bon_bootstrap_median_s": float(np.median(times)), "betas": [float(b) for b in betas],
            "gains_n2_n4_n16": [row[:3].round(6).tolist() for row in rows]}


def stage(name, prompts, samples, queue):
    rewards, ids = make_rewards(prompts, samples)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = vectorised(rewards, ids, n_bootstrap=200 if name == "bootstrap" else 0)
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["data_rss_mib"] = base_rss / 1024
    queue.put(out)


def in_child(name, prompts, samples):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=stage, args=(name, prompts, samples, queue))
    proc.start()
    out = queue.get()
    proc.join()
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--subset", type=int, default=200, help="prompts for the Python-loop comparison")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--soft-bon-only", action="store_true", help="time soft best-of-N's bootstrap alone")
    args = parser.parse_args()

    print(f"machine: {platform.processor() or platform.machine()}, {mp.cpu_count()} cores, numpy {np.__version__}")
    soft = soft_bon_bootstrap(args.repeats)
    if args.soft_bon_only:
        print(json.dumps(soft, indent=2))
        return
    mains = [in_child("main", args.prompts, args.samples) for _ in range(args.repeats)]
    boots = [in_child("bootstrap", args.prompts, args.samples) for _ in range(args.repeats)]
    med = lambda rows, k: float(np.median([r[k] for r in rows]))  # noqa: E731
    report = {
        "size": f"{args.prompts} prompts x {args.samples} samples",
        "main_median_s": med(mains, "total_s"),
        "main_parts_median_s": {k: med(mains, k) for k in ("fit_s", "budgets_s", "bon_s")},
        "main_peak_rss_mib": max(r["peak_rss_mib"] for r in mains),
        "bootstrap_extra_median_s": med(boots, "total_s") - med(mains, "total_s"),
        "bootstrap_peak_rss_mib": max(r["peak_rss_mib"] for r in boots),
        "data_alone_rss_mib": mains[0]["data_rss_mib"],
    }
    rewards, ids = make_rewards(args.subset, args.samples, seed=1)
    loop = python_loop(rewards, ids, args.samples)
    vec = [vectorised(rewards, ids, 0) for _ in range(args.repeats)]
    report["subset"] = f"{args.subset} prompts x {args.samples} samples"
    report["subset_python_loop_s"] = loop["total_s"]
    report["subset_vectorised_median_s"] = med(vec, "total_s")
    report["speedup_vs_python_loop"] = loop["total_s"] / report["subset_vectorised_median_s"]
    report["max_abs_gain_difference"] = float(np.max(np.abs(np.array(loop["gains"]) - np.array(vec[0]["gains"]))))
    report.update(soft)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
