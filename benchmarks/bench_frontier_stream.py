"""`alignlimits frontier` beyond memory (issue 12): the whole command on Parquet tables of P prompts × 1,024.

For each size it writes a synthetic table (string prompt ids, 1,024 samples per prompt, reward
μ_p + σ_p·N(0, 1), one row group per 1,000 prompts, written row group by row group so that the
writer's memory stays small), then runs ``alignlimits frontier TABLE --json OUT`` (default budgets,
200 prompt-bootstrap replicates, best-of-N for N = 1, 2, 4, …, 1024) in a child process and reports
its wall time, CPU time and peak RSS (``os.wait4``'s ``ru_maxrss`` of that child), with
``/proc/loadavg`` before and after (the box is shared).

The plain numpy baseline (``--baseline``) computes the same outputs the obvious way, in one child
process on the same table: pandas reads it, the rewards become a (P, n) matrix, every function
evaluation is a full pass over it (the 64-node curve with its delete-one jackknife, the largest
reliable KL and every budget by ``brentq``, the bias-corrected budgets by ``brentq`` on the
jackknifed curve), the prompt bootstrap interpolates each replicate's per-prompt curves linearly in
log β between the nodes, and best-of-N uses the order-statistic weights with a ± t·se interval from
32 prompts resampled within. Its budget gains are checked against the command's.

    python benchmarks/bench_frontier_stream.py --prompts 10000,30000,100000 --baseline 10000 \\
        [--repeats 3] [--layout contiguous|interleaved] [--dir /tmp/alignlimits-bench-frontier] [--keep]

Generated tables go to ``--dir`` (outside the repository) and are deleted at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SAMPLES = 1024
GROUP_PROMPTS = 1000  # prompts per row group


def write_table(path: Path, prompts: int, layout: str = "contiguous", seed: int = 0) -> Path:
    """P prompts × 1,024 rewards, μ_p ~ N(0, 1), σ_p ~ U(0.5, 1.5). ``contiguous``: each prompt's rows
    together, row groups of 1,000 prompts; ``interleaved``: row group k holds the k-th tenth of every
    prompt's samples, so no prompt's rows are contiguous (the streamed reader regroups them)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    mu, sigma = rng.normal(size=prompts), rng.uniform(0.5, 1.5, prompts)
    names = np.array([f"prompt-{i:07d}" for i in range(prompts)], dtype=object)
    schema = pa.schema([("prompt_id", pa.string()), ("sample_idx", pa.int32()), ("reward", pa.float64())])
    with pq.ParquetWriter(path, schema) as writer:
        if layout == "contiguous":
            for lo in range(0, prompts, GROUP_PROMPTS):
                p = np.arange(lo, min(prompts, lo + GROUP_PROMPTS))
                r = mu[p, None] + sigma[p, None] * rng.standard_normal((p.size, SAMPLES))
                writer.write_table(pa.table({"prompt_id": np.repeat(names[p], SAMPLES),
                                             "sample_idx": np.tile(np.arange(SAMPLES, dtype=np.int32), p.size),
                                             "reward": r.ravel()}, schema=schema))
        else:
            edges = np.linspace(0, SAMPLES, 11).astype(int)
            for a, b in zip(edges[:-1], edges[1:]):
                for lo in range(0, prompts, 10 * GROUP_PROMPTS):
                    p = np.arange(lo, min(prompts, lo + 10 * GROUP_PROMPTS))
                    r = mu[p, None] + sigma[p, None] * rng.standard_normal((p.size, b - a))
                    writer.write_table(pa.table({"prompt_id": np.repeat(names[p], b - a),
                                                 "sample_idx": np.tile(np.arange(a, b, dtype=np.int32), p.size),
                                                 "reward": r.ravel()}, schema=schema))
    return path


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def timed_child(args: list[str]) -> dict:
    """Run a command; its wall time, CPU time and peak RSS (this child's own ``ru_maxrss``)."""
    before = loadavg()
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode()
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {err[-2000:]}")
    return {"wall_s": round(wall, 2), "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
            "peak_rss_mib": round(usage.ru_maxrss / 1024, 1), "loadavg_before": before, "loadavg_after": loadavg()}


# ------------------------------------------------------------------------------- plain numpy baseline
def plain_numpy(path: str, out: str, min_ess: float = 10.0, n_boot: int = 200, seed: int = 0) -> None:
    """The frontier command's outputs, the obvious numpy way (see the module docstring); writes JSON."""
    import pandas as pd
    from scipy import stats
    from scipy.optimize import brentq
    from scipy.special import gammaln

    frame = pd.read_parquet(path, columns=["prompt_id", "reward"])
    codes, _ = pd.factorize(frame["prompt_id"])
    rewards = frame["reward"].to_numpy()
    del frame
    R = rewards[np.argsort(codes, kind="stable")].reshape(-1, SAMPLES)  # (P, n): equal n assumed
    del rewards, codes
    P, n = R.shape
    mean, top = R.mean(axis=1), R.max(axis=1)
    variance = ((R - mean[:, None]) ** 2).mean(axis=1)

    def tilt(beta, jackknife=False):
        a = (R - top[:, None]) / beta
        x = np.exp(a)
        s, sr, sa = x.sum(1), (x * R).sum(1), (x * a).sum(1)
        w = x / s[:, None]
        out = {"gain": sr / s - mean, "kl": sa / s - np.log(s / n), "ess": 1 / (w * w).sum(1),
               "kl_reverse": np.log(s / n) - (mean - top) / beta}
        if jackknife:  # delete-one, each sample in turn, from the sums less its term
            s_i = s[:, None] - x
            g_i = (sr[:, None] - x * R) / s_i - (mean[:, None] * n - R) / (n - 1)
            k_i = (sa[:, None] - x * a) / s_i - np.log(s_i / (n - 1))
            out["gain_jk"] = n * out["gain"] - (n - 1) * g_i.mean(1)
            out["kl_jk"] = n * out["kl"] - (n - 1) * k_i.mean(1)
        return out

    spread = float((top - R.min(axis=1)).max())
    coarse = spread * np.logspace(2, -9, 23)
    kl_coarse = np.array([tilt(b)["kl"].mean() for b in coarse])
    near = np.nonzero(kl_coarse >= 0.999 * kl_coarse.max())[0]
    betas = np.geomspace(spread * 1e2, coarse[near[0]], 64)
    with np.errstate(all="ignore"):  # delete-one sums underflow at the smallest β
        nodes = [tilt(b, jackknife=True) for b in betas]
    node = {k: np.stack([t[k] for t in nodes]) for k in nodes[0]}  # (64, P)
    lo_u, hi_u = np.log(betas[-1]) - 5, np.log(betas[0])
    bad = np.nonzero(node["ess"].min(1) < min_ess)[0]
    if bad.size == 0:
        max_reliable = float(node["kl"][-1].mean())
    else:
        # as the command does: the last of 8 points between the last good node and the first bad one
        inner = [tilt(b) for b in np.exp(np.linspace(np.log(betas[bad[0] - 1]), np.log(betas[bad[0]]), 10)[1:-1])]
        ok = [t["ess"].min() >= min_ess for t in inner]
        n_ok = ok.index(False) if False in ok else len(ok)
        max_reliable = float(inner[n_ok - 1]["kl"].mean() if n_ok else node["kl"][bad[0] - 1].mean())
    kls = [k for k in (0.1, 0.5, 1.0, 2.0) if k <= max_reliable]
    edge = float(f"{max_reliable:.2g}")
    edge = edge if edge <= max_reliable else float(f"{max_reliable * 0.99:.2g}")
    kls += [edge] if edge > (kls[-1] if kls else 0) else []

    rng = np.random.default_rng(seed)
    weights = rng.multinomial(P, np.full(P, 1 / P), size=n_boot) / P
    m = P
    tail = float(stats.norm.cdf(-np.sqrt(m / (m - 1)) * stats.t.ppf(0.975, m - 1)))
    budgets = []
    for eps in kls:
        u = brentq(lambda u: tilt(np.exp(u))["kl"].mean() - eps, lo_u, hi_u + 5, xtol=1e-12)
        t = tilt(np.exp(u), jackknife=True)
        # the correction is O(1/n): its root lies near the plain one (far below, delete-one sums underflow)
        u_d = brentq(lambda u: tilt(np.exp(u), True)["kl_jk"].mean() - eps, u - 0.5, u + 0.5, xtol=1e-12)
        t_d = tilt(np.exp(u_d), jackknife=True)
        reps = []
        for kl_key, gain_key, at, root in (("kl", "gain", t, u), ("kl_jk", "gain_jk", t_d, u_d)):
            finite = np.isfinite(node[kl_key]).all(1) & np.isfinite(node[gain_key]).all(1)
            where = np.searchsorted(-betas[finite], -np.exp(root))  # the nodes plus the budget's own β, by β
            kl_nodes = np.insert(node[kl_key][finite], where, at[kl_key], axis=0)
            gain_nodes = np.insert(node[gain_key][finite], where, at[gain_key], axis=0)
            K, D = weights @ kl_nodes.T, weights @ gain_nodes.T  # KL rising along the nodes
            reps.append([np.interp(eps, K[r], D[r]) for r in range(n_boot)])  # gain against KL, linear
        budgets.append({"kl": eps, "beta": float(np.exp(u)), "gain": float(t["gain"].mean()),
                        "gain_ci": np.quantile(reps[0], [tail, 1 - tail]).tolist(),
                        "gain_debiased": float(t_d["gain_jk"].mean()),
                        "gain_debiased_ci": np.quantile(reps[1], [tail, 1 - tail]).tolist(),
                        "kl_reverse": float(t["kl_reverse"].mean()), "jeffreys": float((t["kl"] + t["kl_reverse"]).mean()),
                        "sqrt_bound": float(np.sqrt(2 * variance.mean() * eps)), "ess_min": float(t["ess"].min())})

    Rs = np.sort(R, axis=1)
    ns = [1 << k for k in range(int(np.log2(n)) + 1)]
    i = np.arange(1, n + 1)

    def bon(rows):
        out = []
        for N in ns:
            w = np.where(i >= N, np.exp(gammaln(i) - gammaln(N) - gammaln(np.maximum(i - N + 1, 1))
                                        - (gammaln(n + 1) - gammaln(N + 1) - gammaln(n - N + 1))), 0.0)
            p = (i / n) ** N - ((i - 1) / n) ** N
            out.append([rows @ w - rows.mean(1), rows @ p - rows.mean(1), (p * np.log(np.maximum(n * p, 1e-300))).sum()
                        * np.ones(rows.shape[0])])
        return np.array(out)  # (N, 3, rows)

    point = bon(Rs).mean(axis=2)
    pick = np.sort(np.random.default_rng(seed + 1).choice(P, 32, replace=False))
    sub = R[pick]
    boot = np.stack([bon(np.sort(np.take_along_axis(sub, rng.integers(0, n, sub.shape), 1), axis=1))
                     for _ in range(n_boot)])  # (B, N, 3, 32)
    se = np.sqrt(boot.var(axis=0, ddof=1).mean(axis=2) / P)
    half = stats.t.ppf(0.975, P * n - P) * se
    bon_rows = [{"n": N, "gain_unbiased": point[j, 0], "gain_unbiased_ci": [point[j, 0] - half[j, 0], point[j, 0] + half[j, 0]],
                 "gain_empirical": point[j, 1], "kl_empirical": point[j, 2]} for j, N in enumerate(ns)]
    curve = [{"beta": float(b), "kl": float(k), "gain": float(g)}
             for b, k, g in zip(betas, node["kl"].mean(1), node["gain"].mean(1))]
    Path(out).write_text(json.dumps({"n_prompts": P, "n_samples": P * n, "base_reward_mean": float(mean.mean()),
                                     "budgets": budgets, "curve": curve, "bon": bon_rows, "max_reliable_kl": max_reliable},
                                    default=float))


# ------------------------------------------------------------------------------------------ driver
def measure(table: Path, prompts: int, command: list[str], repeats: int, baseline: bool) -> dict:
    """The command (and the baseline, alternating with it) ``repeats`` times on one table; medians."""
    out, plain_out = table.with_suffix(".json"), table.with_suffix(".plain.json")
    runs, plains = [], []
    for _ in range(repeats):
        runs.append(timed_child([*command, "frontier", str(table), "--json", str(out)]))
        if baseline:
            plains.append(timed_child([sys.executable, __file__, "--plain-numpy", str(table), str(plain_out)]))
    med = lambda rows, key: float(np.median([r[key] for r in rows]))  # noqa: E731
    result = json.loads(out.read_text())
    row = {"command": {k: med(runs, k) for k in ("wall_s", "cpu_s", "peak_rss_mib")}, "command_runs": runs,
           "budgets": [(b["kl"], round(b["gain"], 6)) for b in result["budgets"]]}
    if baseline:
        plain = json.loads(plain_out.read_text())
        row.update({"plain_numpy": {k: med(plains, k) for k in ("wall_s", "cpu_s", "peak_rss_mib")}, "plain_runs": plains})
        row["ratio_wall"] = round(row["command"]["wall_s"] / row["plain_numpy"]["wall_s"], 3)
        row["ratio_cpu"] = round(row["command"]["cpu_s"] / row["plain_numpy"]["cpu_s"], 3)
        row["plain_vs_command_max_gain_diff"] = max(abs(a["gain"] - b["gain"]) for a, b in zip(result["budgets"], plain["budgets"]))
        row["plain_vs_command_max_debiased_diff"] = max(
            abs(a["gain_debiased"] - b["gain_debiased"]) for a, b in zip(result["budgets"], plain["budgets"]))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", default="10000,30000,100000", help="comma-separated table sizes (prompts)")
    parser.add_argument("--baseline", default="10000", help="sizes at which to run the plain numpy baseline too ('' for none)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per size (command and baseline alternate); medians")
    parser.add_argument("--layout", default="contiguous", choices=["contiguous", "interleaved"])
    parser.add_argument("--dir", default="/tmp/alignlimits-bench-frontier")
    parser.add_argument("--keep", action="store_true", help="keep the generated tables")
    parser.add_argument("--plain-numpy", nargs=2, metavar=("TABLE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain_numpy:
        plain_numpy(*args.plain_numpy)
        return
    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    command = [str(Path(sys.executable).with_name("alignlimits"))]
    if not Path(command[0]).exists():
        command = [sys.executable, "-m", "alignlimits"]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, numpy {np.__version__}; load {loadavg()}")
    print(f"disk free in {folder}: {shutil.disk_usage(folder).free / 2**30:.1f} GiB")
    baseline_sizes = {int(x) for x in args.baseline.split(",") if x}
    report = []
    try:
        for prompts in (int(x) for x in args.prompts.split(",")):
            table = folder / f"frontier_{prompts}_{args.layout}.parquet"
            t0 = time.perf_counter()
            write_table(table, prompts, args.layout)
            row = {"prompts": prompts, "samples": prompts * SAMPLES, "layout": args.layout,
                   "table_mib": round(table.stat().st_size / 2**20, 1), "write_s": round(time.perf_counter() - t0, 1)}
            row.update(measure(table, prompts, command, args.repeats, prompts in baseline_sizes))
            if not args.keep:
                table.unlink()
            print(json.dumps(row), flush=True)
            report.append(row)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    for r in report[1:]:
        first = report[0]
        print(f"{r['prompts']} prompts: {r['command']['wall_s'] / first['command']['wall_s']:.2f}x the wall time, "
              f"{r['command']['cpu_s'] / first['command']['cpu_s']:.2f}x the CPU time of {first['prompts']} "
              f"(linear: {r['prompts'] / first['prompts']:.1f}x)")


if __name__ == "__main__":
    main()
