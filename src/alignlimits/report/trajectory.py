"""A training run's path on the KL–reward plane over the frontier: each measurement of
:class:`alignlimits.integrations.trl.FrontierCallback` (or PPO's yardstick) is a point, joined in step order, with
its ±1.96·se KL and gain interval, coloured by step; the frontier is drawn as in :mod:`alignlimits.report.plane`."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from alignlimits.report.plane import _clean_frontier, _finite, num  # noqa: E402
from alignlimits.report.plots import draw_frontier, save_figure  # noqa: E402


def plot_trajectory(rows: list[dict], frontier: dict | None, path, title: str = "training run") -> Path:
    """Draw ``rows`` (the JSONL's measurements, any order) over ``frontier`` (the frontier JSON, or None) into
    ``path`` (PNG); returns the path."""
    points = sorted((r for r in rows if _finite(r.get("kl"), r.get("gain"))), key=lambda r: r.get("step", 0))
    fig, ax = plt.subplots(figsize=(9, 5.6))
    clean = _clean_frontier(frontier) if frontier else None
    if clean is not None:
        clean["bon"] = []
        draw_frontier(ax, clean, label="frontier Δ*(KL) from base samples")
    xs, ys = [num(p["kl"]) for p in points], [num(p["gain"]) for p in points]
    ax.plot(xs, ys, color="0.35", lw=1.2, zorder=2, label="the run, in step order")
    steps = [p.get("step", 0) for p in points]
    dots = ax.scatter(xs, ys, c=steps, cmap="viridis", s=36, zorder=3, edgecolors="black", linewidths=0.4)
    for p, x, y in zip(points, xs, ys):
        lo, hi = (p.get("gain_ci") or [None, None])[:2]
        se = num(p.get("kl_se"))
        ax.errorbar(x, y, xerr=1.96 * se if math.isfinite(se) else None,
                    yerr=[[y - num(lo)], [num(hi) - y]] if _finite(lo, hi) else None, color="0.6", lw=0.8, zorder=1)
    for i in {0, len(points) - 1} if points else ():
        ax.annotate(f"step {steps[i]}", (xs[i], ys[i]), textcoords="offset points", xytext=(6, -12), fontsize=8)
    if points:
        fig.colorbar(dots, ax=ax, label="training step")
    last = points[-1] if points else {}
    verdict = f" — last: {last['verdict']}" if last.get("verdict") else ""
    ax.axhline(0, color="0.3", lw=0.8)
    ax.set_xlabel("KL(π ‖ π0)  [nats, sequence level, measured on held-out prompts]")
    ax.set_ylabel("gain in reward over the base mean")
    ax.set_title(f"{title}: {len(points)} measurements{verdict}", fontsize=10)
    ax.set_xlim(left=min([0.0] + xs))
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_paths(results: dict, path) -> Path | None:
    """Each trained policy measured as it trained (``path`` in results.json): its gold gain against KL, and with a
    proxy (``align_to``) the proxy's gain on the same samples, over the gold frontier; one panel per policy. None
    when no policy was measured."""
    measured = [p for p in results.get("evaluate") or [] if isinstance(p, dict) and (p.get("path") or {}).get("path")]
    if not measured:
        return None
    clean = _clean_frontier(results.get("frontier")) if results.get("frontier") else None
    fig, axes = plt.subplots(1, len(measured), figsize=(6.2 * len(measured), 4.4), squeeze=False)
    for ax, p in zip(axes[0], measured):
        exact = results.get("exact_frontier") or []
        if exact:
            ax.plot([num(c["kl"]) for c in exact], [num(c["gain"]) for c in exact], "k-", lw=1.5, label="gold frontier (exact)")
        elif clean is not None:
            clean["bon"] = []
            draw_frontier(ax, clean, label="gold frontier")
        rows = p["path"]["path"]
        kl = [0.0] + [num(r["kl"]) for r in rows]
        gold = [0.0] + [num(r["gain"]) for r in rows]
        ax.errorbar(kl, gold, yerr=[0.0] + [1.96 * num(r.get("gain_se")) for r in rows], fmt="o-", ms=4, lw=1.4,
                    color="C3", label="gold gain (judges the point)")
        if p["path"].get("proxy"):
            proxy = [0.0] + [num(r.get("proxy_gain")) for r in rows]
            ax.plot(kl, proxy, "s--", ms=4, lw=1.2, color="C0", label=f"proxy gain ({p.get('aligned_to')}, trained on)")
        peak = p["path"]
        ax.annotate(f"gold peak, step {peak['peak_step']}", (num(peak["peak_kl"]), num(peak["peak_gain"])),
                    textcoords="offset points", xytext=(4, 8), fontsize=8)
        ax.axhline(0, color="0.3", lw=0.8)
        ax.set_title(f"{p.get('label', p.get('method'))}" + (": gold turned down" if peak.get("turned_down") else ""),
                     fontsize=9)
        ax.set_xlabel("KL(π ‖ π0)  [nats, held-out prompts]")
        ax.set_ylabel("gain over the base mean")
        ax.set_xlim(0, 1.3 * max(kl))
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return save_figure(fig, path)
