"""Plots a person can read: the KL–reward plane and the hacking view (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return path


def draw_frontier(ax, result: dict, label: str = "frontier (tilt of base samples)") -> None:
    """The estimated frontier, its unreliable part dashed and shaded, the √ curve, budgets with CIs, BoN."""
    curve = result["curve"]
    kl = np.array([c["kl"] for c in curve])
    gain = np.array([c["gain"] for c in curve])
    reliable = np.array([c["reliable"] for c in curve])
    max_rel = result["max_reliable_kl"]
    ax.plot(kl[reliable], gain[reliable], color="C0", lw=2, label=label)
    if (~reliable).any():
        start = max(0, int(np.argmax(~reliable)) - 1)
        ax.plot(kl[start:], gain[start:], color="C0", lw=1.5, ls="--", label="frontier, unreliable (ESS too small)")
        ax.axvspan(max_rel, max(kl.max(), max_rel) * 1.05, color="0.85", alpha=0.6, lw=0)
    grid = np.linspace(0, kl.max(), 200)
    ax.plot(grid, np.sqrt(2 * result["reward_variance"] * grid), color="0.4", ls=":",
            label=r"$\sqrt{2\hat\sigma^2\,\mathrm{KL}}$ (bound only if sub-Gaussian)")
    if result.get("budgets"):
        b = result["budgets"]
        bk = np.array([p["kl"] for p in b])
        bg = np.array([p["gain"] for p in b])
        lo = np.array([p["gain_ci"][0] for p in b])
        hi = np.array([p["gain_ci"][1] for p in b])
        ax.errorbar(bk, bg, yerr=[bg - lo, hi - bg], fmt="o", color="C0", ms=4, capsize=3, label="budgets (95% CI)")
    if result.get("bon"):
        # best-of-N's unbiased gain at the tie-aware KL of its law (the bound log N − (N−1)/N overstates
        # it whenever rewards tie)
        bon = result["bon"]
        ax.plot([r["kl_empirical"] for r in bon], [r["gain_unbiased"] for r in bon], "s-", color="C3", ms=4, lw=1,
                label="best-of-N (unbiased gain, tie-aware KL)")
    ax.set_xlabel("KL(π ‖ π0)  [nats]")
    ax.set_ylabel(f"reward gain over base  ({result.get('reward_col', 'reward')})")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)


def plot_frontier(result: dict, path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.8))
    draw_frontier(ax, result)
    ax.set_title(f"KL–reward frontier: {result['n_prompts']} prompts, {result['n_samples']} samples")
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def plot_hacking(result: dict, path) -> Path:
    """Left: gold gain of proxy-optimal tilts against the gold frontier; right: the gap against β."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.6))
    series = [(p["proxy"], p["curve"]) for p in result["per_proxy"]]
    series += [(f"{e['aggregate']} of {e['k']}", e["curve"]) for e in result["ensembles"]]
    first = series[0][1]
    order = np.argsort([c["kl"] for c in first])
    left.plot([first[i]["kl"] for i in order], [first[i]["optimal_gold_gain"] for i in order], color="k", lw=2,
              label="gold frontier")
    for k, (name, curve) in enumerate(series):
        kl = [c["kl"] for c in curve]
        left.plot(kl, [c["gold_gain"] for c in curve], "o-", color=f"C{k}", ms=3, label=f"{name}: gold gain")
        left.plot(kl, [c["proxy_gain"] for c in curve], ":", color=f"C{k}", lw=1)
        right.plot([c["beta"] for c in curve], [c["gap"] for c in curve], "o-", color=f"C{k}", ms=3, label=name)
    left.set_xlabel("KL(π̂_β ‖ π0)  [nats]")
    left.set_ylabel(f"gain in gold reward ({result['gold']}); dotted: proxy's own gain")
    left.grid(alpha=0.3)
    left.legend(fontsize=8)
    right.set_xscale("log")
    right.set_xlabel("β")
    right.set_ylabel("hacking gap (gold frontier − gold gain)")
    right.grid(alpha=0.3)
    right.legend(fontsize=8)
    return _save(fig, path)


def plot_training(results: dict, path) -> Path | None:
    """Each trained policy's per-step objective E r − β·KL (its rollouts), the curve its ``converged`` flag reads."""
    trained = [p for p in results.get("evaluate") or [] if isinstance(p, dict) and p.get("training_curve")]
    if not trained:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for k, p in enumerate(trained):
        steps = [c["step"] for c in p["training_curve"]]
        objective = [c["objective"] for c in p["training_curve"]]
        state = "converged" if p.get("converged") else "not converged"
        ax.plot(steps, objective, "o-", ms=3, lw=1, color=f"C{k}", label=f"{p.get('label', p.get('method'))} ({state})")
    ax.set_xlabel("training step")
    ax.set_ylabel("objective E r − β·KL of the step's rollouts")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)
