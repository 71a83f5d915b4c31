"""The headline figure of a run: every method on one KL–reward plane against the frontier.

``plot_plane(results, path)`` reads the run's ``results.json`` dict (see
:mod:`alignlimits.report.html` for the keys it uses) and draws

- the frontier estimated from base samples (solid where reliable, dashed beyond, the unreliable
  KL range shaded), its bootstrap confidence band and the √(2σ̂²KL) comparison curve
  (:func:`alignlimits.report.plots.draw_frontier` draws these and the best-of-N curves);
- soft best-of-N points;
- every evaluated policy (PPO, GRPO, and the evaluated best-of-N / soft best-of-N) with 2-D error
  bars: x ±1.96 standard errors of the sequence-level KL, y the gain's confidence interval, each
  labelled, and a dotted line up to the frontier at its KL (the gain it left on the table).

Missing, empty, NaN or infinite values are skipped, never fatal: the figure shows what there is.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from alignlimits.report.plots import draw_frontier  # noqa: E402

#: colour and marker per evaluated method (anything else gets the last entry)
METHOD_STYLE = {
    "ppo": ("C1", "o", "PPO"),
    "grpo": ("C2", "^", "GRPO"),
    "bon": ("C3", "*", "best-of-N (evaluated)"),
    "soft-bon": ("C4", "P", "soft best-of-N (evaluated)"),
    "other": ("C5", "v", "other"),
}


def num(x) -> float:
    """A JSON number as a float; ``None``, strings and other junk become NaN."""
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


def _finite(*xs) -> bool:
    return all(math.isfinite(num(x)) for x in xs)


def method_label(p: dict) -> str:
    """The label a person reads: the run's own, else method and β/N."""
    if p.get("label"):
        return str(p["label"])
    name = METHOD_STYLE.get(p.get("method"), (None, None, str(p.get("method", "?"))))[2]
    bits = [name]
    if p.get("n") is not None:
        bits.append(f"N={p['n']}")
    if p.get("beta") is not None:
        bits.append(f"β={num(p['beta']):g}")
    return " ".join(bits)


def _clean_frontier(frontier: dict) -> dict | None:
    """A copy of the frontier JSON that :func:`draw_frontier` can draw: non-finite rows dropped."""
    if not isinstance(frontier, dict):
        return None
    curve = [c for c in frontier.get("curve") or [] if _finite(c.get("kl"), c.get("gain"))]
    if not curve:
        return None
    curve = sorted(curve, key=lambda c: num(c["kl"]))
    for c in curve:
        c.setdefault("reliable", True)
    out = dict(frontier)
    out["curve"] = curve
    max_rel = num(frontier.get("max_reliable_kl"))
    out["max_reliable_kl"] = max_rel if math.isfinite(max_rel) else max(num(c["kl"]) for c in curve)
    var = num(frontier.get("reward_variance"))
    out["reward_variance"] = var if math.isfinite(var) and var >= 0 else 0.0
    out["budgets"] = [b for b in frontier.get("budgets") or []
                      if _finite(b.get("kl"), b.get("gain")) and len(b.get("gain_ci") or []) == 2 and _finite(*b["gain_ci"])]
    out["bon"] = [b for b in frontier.get("bon") or []
                  if _finite(b.get("kl_bound"), b.get("gain_unbiased"), b.get("kl_empirical"), b.get("gain_empirical"))]
    return out


def _ci(p: dict) -> tuple[float, float]:
    ci = p.get("gain_ci") or [None, None]
    lo, hi = (num(ci[0]), num(ci[1])) if len(ci) == 2 else (float("nan"), float("nan"))
    return lo, hi


def plot_plane(results: dict, path) -> Path:
    """Draw the run's KL–reward plane into ``path`` (PNG); returns the path."""
    frontier = results.get("frontier") or {}
    clean = _clean_frontier(frontier)
    fig, ax = plt.subplots(figsize=(11, 6.2))
    xs: list[float] = [0.0]  # every x that must be visible
    ys: list[float] = [0.0]

    if clean is not None:
        if len([b for b in results.get("frontier_band") or [] if _finite(b.get("kl"), b.get("lo"), b.get("hi"))]) >= 2:
            clean["budgets"] = []  # the band below shows the same bootstrap intervals, continuously
        draw_frontier(ax, clean, label="frontier Δ*(KL) from base samples")
        xs += [num(c["kl"]) for c in clean["curve"]]
        ys += [num(c["gain"]) for c in clean["curve"]]
        xs += [num(b["kl_bound"]) for b in clean["bon"]]
        ys += [num(b["gain_unbiased"]) for b in clean["bon"]]
    else:
        ax.text(0.5, 0.5, "no frontier in results.json", transform=ax.transAxes, ha="center", color="0.4")

    band = sorted((b for b in results.get("frontier_band") or [] if _finite(b.get("kl"), b.get("lo"), b.get("hi"))),
                  key=lambda b: num(b["kl"]))
    if len(band) >= 2:
        ax.fill_between([num(b["kl"]) for b in band], [num(b["lo"]) for b in band], [num(b["hi"]) for b in band],
                        color="C0", alpha=0.18, lw=0, label="frontier 95% CI (bootstrap)")
        ys += [num(b["hi"]) for b in band]

    soft = [s for s in results.get("soft_bon") or [] if _finite(s.get("kl"), s.get("gain"))]
    by_beta: dict[float, list[dict]] = {}
    for s in soft:
        by_beta.setdefault(num(s.get("beta")), []).append(s)
    soft_markers = "Dosv^<>p"
    for j, (beta, group) in enumerate(sorted(by_beta.items(), key=lambda kv: -kv[0] if math.isfinite(kv[0]) else 0)):
        group.sort(key=lambda s: num(s["kl"]))
        shade = plt.cm.Purples(0.45 + 0.5 * j / max(len(by_beta) - 1, 1))
        ax.plot([num(s["kl"]) for s in group], [num(s["gain"]) for s in group], "--", marker=soft_markers[j % 8],
                color=shade, ms=4.5, lw=0.8, mfc="white", label=f"soft best-of-N, β={beta:.3g} (numbers: N)")
        for s in group:
            ax.annotate(str(s.get("n", "")), (num(s["kl"]), num(s["gain"])), fontsize=6.5, color=shade,
                        xytext=(3, 4), textcoords="offset points")
        xs += [num(s["kl"]) for s in group]
        ys += [num(s["gain"]) for s in group]

    # evaluated points that are the very rows already drawn (best-of-N and soft best-of-N on the empirical law
    # of the base samples) are only labelled, not drawn twice
    def key_of(*vals) -> tuple:
        return tuple(round(num(v), 9) for v in vals)

    drawn_soft = {key_of(s.get("n"), s.get("beta"), s.get("kl")) for s in soft}
    drawn_bon = {key_of(b["n"], b["kl_empirical"], b["gain_empirical"]) for b in (clean or {}).get("bon", [])}
    points = [p for p in results.get("evaluate") or [] if _finite(p.get("kl"), p.get("gain"))]
    bons = [p for p in points if p.get("method") == "bon"]
    largest_bon = max(bons, key=lambda p: num(p.get("n")) if math.isfinite(num(p.get("n"))) else -1) if bons else None
    seen: set[str] = set()
    for i, p in enumerate(points):
        kl, gain = num(p["kl"]), num(p["gain"])
        method = p.get("method")
        if method == "soft-bon" and key_of(p.get("n"), p.get("beta"), kl) in drawn_soft:
            continue
        if method == "bon" and key_of(p.get("n"), kl, gain) in drawn_bon:
            big = p is largest_bon
            ax.annotate(method_label(p) if big else str(p.get("n", "")), (kl, gain), fontsize=8.5 if big else 7,
                        color="C3", fontweight="bold" if big else "normal", xytext=(6, -12 if big else -10),
                        textcoords="offset points", zorder=6)
            xs.append(kl)
            ys.append(gain)
            continue
        key = method if method in METHOD_STYLE else "other"
        color, marker, legend = METHOD_STYLE[key]
        if key == "other":
            key, legend = f"other:{method}", str(method or "other")
        se = num(p.get("kl_se"))
        xerr = 1.96 * se if math.isfinite(se) and se > 0 else 0.0
        lo, hi = _ci(p)
        yerr = [[max(gain - lo, 0.0) if math.isfinite(lo) else 0.0], [max(hi - gain, 0.0) if math.isfinite(hi) else 0.0]]
        ax.errorbar([kl], [gain], xerr=[[xerr], [xerr]], yerr=yerr, fmt=marker, color=color,
                    ms=11 if marker == "*" else 8, mec="black", mew=0.6, capsize=3, elinewidth=1.2, zorder=5,
                    label=None if key in seen else (legend + " (±1.96 se KL, gain CI)"))
        seen.add(key)
        opt = num(p.get("optimal_gain_at_kl"))
        if math.isfinite(opt):
            ax.plot([kl, kl], [gain, opt], ":", color=color, lw=1.2, zorder=4)
            ys.append(opt)
        ax.annotate(method_label(p), (kl, gain), fontsize=8.5, color=color, fontweight="bold",
                    xytext=(6, 5), textcoords="offset points", zorder=6)
        xs += [kl + xerr, kl - xerr]
        ys += [lo if math.isfinite(lo) else gain, hi if math.isfinite(hi) else gain]

    exact = sorted(((num(e.get("kl")), num(e.get("gain"))) for e in results.get("exact_frontier") or []
                    if isinstance(e, dict) and _finite(e.get("kl"), e.get("gain"))))
    if exact:
        x_end = max(x for x in xs if math.isfinite(x))
        # under the estimate: where the two agree, the estimate covers it
        ax.plot([e[0] for e in exact], [e[1] for e in exact], color="black", lw=1.2, ls="-.", zorder=1.9,
                label="exact frontier (every sequence enumerated)")
        ys += [e[1] for e in exact if e[0] <= x_end * 1.08]

    xs = [x for x in xs if math.isfinite(x)]
    ys = [y for y in ys if math.isfinite(y)]
    xmax = max(xs) * 1.08 if max(xs) > 0 else 1.0
    ymin, ymax = min(ys), max(ys)
    pad = 0.06 * (ymax - ymin) if ymax > ymin else 1.0
    ax.set_xlim(min(0.0, min(xs)), xmax)
    ax.set_ylim(ymin - pad if ymin < 0 else 0.0, ymax + pad)
    if clean is not None:
        # draw_frontier shades the unreliable KL range up to the end of the curve: carry it to the axis' end
        kl_end = max(num(c["kl"]) for c in clean["curve"])
        max_rel = clean["max_reliable_kl"]
        shaded_to = max(kl_end, max_rel) * 1.05
        if any(not c["reliable"] for c in clean["curve"]) or max_rel < xmax:
            if not any(not c["reliable"] for c in clean["curve"]):
                shaded_to = max_rel
            if xmax > shaded_to:
                ax.axvspan(shaded_to, xmax, color="0.85", alpha=0.6, lw=0)
            ax.text(max_rel + 0.01 * xmax, 0.015, f"unreliable beyond KL {max_rel:.2g}: too few effective samples",
                    transform=ax.get_xaxis_transform(), va="bottom", fontsize=8, color="0.35")
    ax.axhline(0, color="0.3", lw=0.8)
    ax.set_xlabel("KL(π ‖ π0)  [nats, sequence level]")
    reward = results.get("reward") or frontier.get("reward_col") or "reward"
    base = num(frontier.get("base_reward_mean"))
    ax.set_ylabel(f"gain in {reward} over the base mean" + (f" ({base:.3g})" if math.isfinite(base) else ""))
    n_p, n_s = frontier.get("n_prompts"), frontier.get("n_samples")
    size = f" — {n_p} prompts, {n_s} base samples" if n_p and n_s else ""
    ax.set_title(f"{results.get('task', '?')}: {results.get('model', '?')}, reward {reward}{size}", fontsize=11)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, frameon=False)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
