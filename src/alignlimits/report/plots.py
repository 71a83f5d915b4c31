"""Plots a person can read: the KL–reward plane and the hacking view (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def save_figure(fig, path, dpi: int = 110, **options) -> Path:
    """Write ``fig`` to ``path`` (its folder made), close it, and return the path; ``options`` go to ``savefig``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, **options)
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
        # best-of-N on one footing with the frontier drawn: its with-replacement law on the base samples, gain and
        # tie-aware KL (the bound log N − (N−1)/N overstates it whenever rewards tie); never above the curve
        bon = result["bon"]
        ax.plot([r["kl_empirical"] for r in bon], [r["gain_empirical"] for r in bon], "s-", color="C3", ms=4, lw=1,
                label="best-of-N (its law on the base samples)")
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
    return save_figure(fig, path, dpi=130, bbox_inches="tight")


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
    return save_figure(fig, path, dpi=130, bbox_inches="tight")


def plot_training(results: dict, path) -> Path | None:
    """Each trained policy's per-step objective relative to its prompts' base levels (± 1.96 se), the curve its
    training state reads, under the training prompts' ceiling J*(β) and its band; one panel per trained policy."""
    trained = [p for p in results.get("evaluate") or [] if isinstance(p, dict) and p.get("training_curve")]
    if not trained:
        return None
    cols = min(2, len(trained))
    rows = -(-len(trained) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.2 * rows), squeeze=False, sharex=True)
    for k, (ax, p) in enumerate(zip(axes.ravel(), trained)):
        curve = [c for c in p["training_curve"] if c.get("objective") is not None]
        steps = np.array([c["step"] for c in curve])
        obj = np.array([c["objective"] for c in curve], float)
        se = np.array([np.nan if c.get("se") is None else c["se"] for c in curve], float)
        ax.errorbar(steps, obj, yerr=1.96 * se, fmt="o-", ms=3, lw=1, color=f"C{k}", ecolor=f"C{k}", alpha=0.8,
                    label="objective r − b(x) − β·KL of the step")
        train = p.get("training_ceiling") or {}
        ceiling, band = train.get("objective_optimal"), train.get("objective_optimal_ci") or [None, None]
        if ceiling is not None:
            ax.axhline(ceiling, color="k", lw=1.2, label="ceiling J*(β) of the training prompts (band: their few base samples, approximate)")
            if None not in band:
                ax.axhspan(band[0], band[1], color="k", alpha=0.12, lw=0)
        ax.axhline(0, color="grey", lw=0.8, ls=":", label="base model")
        ax.set_title(f"{p.get('label', p.get('method'))}: {p.get('training_state', '?')}", fontsize=9)
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(trained):]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("training step")
    axes[0, 0].set_ylabel("objective (base model = 0)")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path, dpi=130, bbox_inches="tight")
