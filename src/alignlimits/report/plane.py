"""The headline figure of a run: every method on one KL–reward plane against the frontier.

``plot_plane(results, path)`` reads the run's ``results.json`` dict (see
:mod:`alignlimits.report.html` for the keys it uses) and draws

- the frontier estimated from base samples, plain (solid where reliable, dashed beyond, the unreliable
  KL range shaded) with its 95% band, and the √(2σ̂²KL) comparison curve
  (:func:`alignlimits.report.plots.draw_frontier` draws these);
- the bias-corrected frontier (dash-dotted blue) with its 95% band, both over the reliable range only: that
  is where the band's coverage was measured (93–96%, ``tests/theory/test_bootstrap.py``), and the legend
  says so;
- soft best-of-N as dashed curves over N, one per β;
- best-of-N as a curve over N and every trained method as a curve over β, each point with 2-D error
  bars: x ±1.96 standard errors of the sequence-level KL, y the gain's confidence interval, labelled.
  Each point is drawn on the footing its verdict judges: best-of-N's law on the base samples against the
  plain frontier; a trained point with a dotted line to the gain of the frontier that judged it
  (``optimal_gain_at_kl``: the bias-corrected one, or the exact one on the exact task), none past the
  frontier's reach, where no frontier judges it.

Missing, empty, NaN or infinite values are skipped, never fatal: the figure shows what there is.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from alignlimits.report.plots import draw_frontier, save_figure  # noqa: E402

#: colour and marker per evaluated method (anything else gets the last entry)
METHOD_STYLE = {
    "ppo": ("C1", "o", "PPO"),
    "grpo": ("C2", "^", "GRPO"),
    "rloo": ("C6", "D", "RLOO"),
    "dpo": ("C8", "v", "DPO"),
    "external": ("C9", "h", "trained elsewhere"),
    "bon": ("C3", "s", "best-of-N (its law on the base samples)"),
    "soft-bon": ("C4", "P", "soft best-of-N"),
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
    out["curve"] = _dense(curve)
    max_rel = num(frontier.get("max_reliable_kl"))
    out["max_reliable_kl"] = max_rel if math.isfinite(max_rel) else max(num(c["kl"]) for c in curve)
    var = num(frontier.get("reward_variance"))
    out["reward_variance"] = var if math.isfinite(var) and var >= 0 else 0.0
    out["budgets"] = [b for b in frontier.get("budgets") or []
                      if _finite(b.get("kl"), b.get("gain")) and len(b.get("gain_ci") or []) == 2 and _finite(*b["gain_ci"])]
    out["bon"] = [b for b in frontier.get("bon") or []
                  if _finite(b.get("kl_bound"), b.get("gain_unbiased"), b.get("kl_empirical"), b.get("gain_empirical"))]
    return out


def _dense(curve: list[dict], between: int = 8) -> list[dict]:
    r"""The curve with ``between`` points added between nodes by cubic Hermite in KL with the exact slope
    :math:`d\Delta^*/dK = \beta` (where every node has a finite β): the drawn line then follows the frontier, not
    its chords, which lie below a concave curve by up to 0.3% between the 64 nodes, enough to draw a point on
    the frontier above its line."""
    if len(curve) < 2 or not all(_finite(c.get("beta")) for c in curve):
        return curve
    out = [curve[0]]
    for a, b in zip(curve[:-1], curve[1:]):
        k0, k1, g0, g1 = num(a["kl"]), num(b["kl"]), num(a["gain"]), num(b["gain"])
        h = k1 - k0
        for t in np.linspace(0, 1, between + 2)[1:-1] if h > 0 else []:
            g = ((2 * t**3 - 3 * t**2 + 1) * g0 + (t**3 - 2 * t**2 + t) * h * num(a["beta"])
                 + (-2 * t**3 + 3 * t**2) * g1 + (t**3 - t**2) * h * num(b["beta"]))
            out.append({"kl": k0 + t * h, "gain": float(g), "reliable": bool(a["reliable"] and b["reliable"])})
        out.append(b)
    return out


def _ci(p: dict) -> tuple[float, float]:
    ci = p.get("gain_ci") or [None, None]
    lo, hi = (num(ci[0]), num(ci[1])) if len(ci) == 2 else (float("nan"), float("nan"))
    return lo, hi


def plot_plane(results: dict, path) -> Path:
    """Draw the run's KL–reward plane into ``path`` (PNG); returns the path.

    The paper's figure: the frontier with its band (the unreliable range shaded), best-of-N as a curve
    over N, and each trained method as a curve over β, every point with its intervals.
    """
    frontier = results.get("frontier") or {}
    clean = _clean_frontier(frontier)
    fig, ax = plt.subplots(figsize=(11, 6.2))
    xs: list[float] = [0.0]  # every x and y that must be visible
    ys: list[float] = [0.0]
    if clean is not None:
        clean["bon"] = []  # best-of-N is drawn from its evaluated points, with their intervals
        if len(_band(results)) >= 2:
            clean["budgets"] = []  # the band shows the frontier's intervals continuously, on the points' footing
        draw_frontier(ax, clean, label="frontier Δ*(KL) from base samples")
        xs += [num(c["kl"]) for c in clean["curve"]]
        ys += [num(c["gain"]) for c in clean["curve"]]
    else:
        ax.text(0.5, 0.5, "no frontier in results.json", transform=ax.transAxes, ha="center", color="0.4")
    ys += _draw_band(ax, results)
    _extend(xs, ys, _draw_soft_bon(ax, results))
    points = [p for p in results.get("evaluate") or [] if _finite(p.get("kl"), p.get("gain")) and p.get("method") != "soft-bon"]
    for method in dict.fromkeys(p.get("method") for p in points):
        _extend(xs, ys, _draw_method(ax, [p for p in points if p.get("method") == method]))
    ys += _draw_exact(ax, results, max(x for x in xs if math.isfinite(x)))
    xmax = _set_limits(ax, xs, ys)
    if clean is not None:
        _shade_unreliable(ax, clean, xmax)
    _label_axes(ax, results, frontier)
    fig.tight_layout()
    return save_figure(fig, path, bbox_inches="tight")


def _extend(xs: list, ys: list, drawn: tuple[list, list]) -> None:
    xs += drawn[0]
    ys += drawn[1]


def _band(results: dict) -> list[dict]:
    return sorted((b for b in results.get("frontier_band") or [] if _finite(b.get("kl"), b.get("lo"), b.get("hi"))),
                  key=lambda b: num(b["kl"]))


def _draw_band(ax, results: dict) -> list[float]:
    """The plain frontier's 95% band, and the bias-corrected frontier that trained methods are compared with, with
    its band, over the reliable range only (where the band's coverage was measured)."""
    band = _band(results)
    if len(band) < 2:
        return []
    footing = "prompts fixed" if "held fixed" in str(results.get("frontier_band_footing")) else "prompts resampled"
    ax.fill_between([num(b["kl"]) for b in band], [num(b["lo"]) for b in band], [num(b["hi"]) for b in band],
                    color="C0", alpha=0.18, lw=0, label=f"frontier 95% CI (bootstrap, {footing})")
    edge = num((results.get("frontier") or {}).get("max_reliable_kl"))
    corrected = [b for b in results.get("frontier_band_debiased") or [] if _finite(b.get("kl"), b.get("gain"))
                 and not num(b["kl"]) > edge * (1 + 1e-9)]
    ys = [num(b["hi"]) for b in band] + [num(b["gain"]) for b in corrected]
    if len(corrected) >= 2:
        kl = [num(b["kl"]) for b in corrected]
        judged = "; trained methods are judged against it" if "exact" not in _judges(results) else ""
        ax.plot(kl, [num(b["gain"]) for b in corrected], color="C0", lw=1.3, ls="-.",
                label=f"bias-corrected frontier (fixed-KL jackknife{judged})")
        lo_hi = [(num(b.get("lo")), num(b.get("hi"))) for b in corrected]
        if all(_finite(lo, hi) for lo, hi in lo_hi):
            ax.fill_between(kl, [lo for lo, _ in lo_hi], [hi for _, hi in lo_hi], facecolor="none", edgecolor="C0",
                            hatch="////", lw=0, alpha=0.5,
                            label="its 95% CI, drawn over the reliable range only (coverage measured there: ≥ 90%)")
            ys += [hi for _, hi in lo_hi]
    return ys


def _judges(results: dict) -> set:
    """Which frontiers judged the trained and external points (``judged_against``)."""
    return {p.get("judged_against") for p in results.get("evaluate") or []
            if isinstance(p, dict) and p.get("method") not in ("bon", "soft-bon")}


def _draw_soft_bon(ax, results: dict) -> tuple[list, list]:
    """Soft best-of-N: one dashed curve over N per β, its points numbered by N."""
    xs, ys = [], []
    by_beta: dict[float, list[dict]] = {}
    for s in results.get("soft_bon") or []:
        if _finite(s.get("kl"), s.get("gain")):
            by_beta.setdefault(num(s.get("beta")), []).append(s)
    markers = "Dosv^<>p"
    for j, (beta, group) in enumerate(sorted(by_beta.items(), key=lambda kv: -kv[0] if math.isfinite(kv[0]) else 0)):
        group.sort(key=lambda s: num(s["kl"]))
        shade = plt.cm.Purples(0.45 + 0.5 * j / max(len(by_beta) - 1, 1))
        ax.plot([num(s["kl"]) for s in group], [num(s["gain"]) for s in group], "--", marker=markers[j % 8],
                color=shade, ms=4.5, lw=0.8, mfc="white", label=f"soft best-of-N, β={beta:.3g} (numbers: N)")
        for s in group:
            ax.annotate(str(s.get("n", "")), (num(s["kl"]), num(s["gain"])), fontsize=6.5, color=shade,
                        xytext=(3, 4), textcoords="offset points")
        xs += [num(s["kl"]) for s in group]
        ys += [num(s["gain"]) for s in group]
    return xs, ys


def _draw_method(ax, group: list[dict]) -> tuple[list, list]:
    """One method's points as a curve (over N for best-of-N, over β for trained methods) with 2-D error bars."""
    method = group[0].get("method")
    key = method if method in METHOD_STYLE else "other"
    color, marker, legend = METHOD_STYLE[key]
    if key == "other":
        legend = str(method or "other")
    group = sorted(group, key=lambda p: num(p["kl"]))
    kl = [num(p["kl"]) for p in group]
    gain = [num(p["gain"]) for p in group]
    xerr = [1.96 * num(p.get("kl_se")) if num(p.get("kl_se")) > 0 else 0.0 for p in group]
    lo_hi = [_ci(p) for p in group]
    yerr = [[max(g - lo, 0.0) if math.isfinite(lo) else 0.0 for g, (lo, _) in zip(gain, lo_hi)],
            [max(hi - g, 0.0) if math.isfinite(hi) else 0.0 for g, (_, hi) in zip(gain, lo_hi)]]
    ax.errorbar(kl, gain, xerr=[xerr, xerr], yerr=yerr, fmt=marker + "-", color=color, lw=1.0,
                ms=11 if marker == "*" else 7, mec="black", mew=0.6, capsize=3, elinewidth=1.1, zorder=5,
                label=legend + (" over N" if method == "bon" else " over β" if len(group) > 1 else "")
                + " (±1.96 se KL, gain CI)")
    ys = []
    for p, x, y in zip(group, kl, gain):
        opt = num(p.get("optimal_gain_at_kl"))
        if math.isfinite(opt) and method != "bon":  # the gap to the frontier that judged it (none past its reach)
            ax.plot([x, x], [y, opt], ":", color=color, lw=1.2, zorder=4)
            ys.append(opt)
        text, place = _point_label(p, method)
        ax.annotate(text, (x, y), color=color, fontweight="bold", textcoords="offset points", zorder=6, **place)
    xs = [x + e for x, e in zip(kl, xerr)] + [x - e for x, e in zip(kl, xerr)]
    ys += [lo if math.isfinite(lo) else g for g, (lo, _) in zip(gain, lo_hi)]
    ys += [hi if math.isfinite(hi) else g for g, (_, hi) in zip(gain, lo_hi)]
    return xs, ys


# trained points of several methods sit close together: each method's labels go their own way from the point
LABEL_PLACE = {"ppo": ((6, 5), "left"), "grpo": ((-6, -13), "right"), "rloo": ((6, -13), "left"),
               "dpo": ((-6, 5), "right")}


def _point_label(p: dict, method) -> tuple[str, dict]:
    """A point's label and its placement: N for best-of-N; β for a trained method (its colour and the legend
    name the method); the whole label for anything else."""
    if method == "bon":
        return f"N={p.get('n')}", dict(xytext=(6, -12), fontsize=7)
    if method in LABEL_PLACE and p.get("beta") is not None:
        offset, ha = LABEL_PLACE[method]
        return f"β={num(p['beta']):.3g}", dict(xytext=offset, ha=ha, fontsize=8)
    return method_label(p), dict(xytext=(6, 5), fontsize=8.5)


def _draw_exact(ax, results: dict, x_end: float) -> list[float]:
    exact = sorted(((num(e.get("kl")), num(e.get("gain"))) for e in results.get("exact_frontier") or []
                    if isinstance(e, dict) and _finite(e.get("kl"), e.get("gain"))))
    if not exact:
        return []
    # under the estimate: where the two agree, the estimate covers it
    judged = "exact" in _judges(results)
    ax.plot([e[0] for e in exact], [e[1] for e in exact], color="black", lw=1.2, ls="-.", zorder=1.9,
            label="exact frontier (every sequence enumerated)" + ("; trained methods are judged against it" if judged else ""))
    return [e[1] for e in exact if e[0] <= x_end * 1.08]


def _set_limits(ax, xs: list, ys: list) -> float:
    xs = [x for x in xs if math.isfinite(x)]
    ys = [y for y in ys if math.isfinite(y)]
    xmax = max(xs) * 1.08 if max(xs) > 0 else 1.0
    ymin, ymax = min(ys), max(ys)
    pad = 0.06 * (ymax - ymin) if ymax > ymin else 1.0
    ax.set_xlim(min(0.0, min(xs)), xmax)
    ax.set_ylim(ymin - pad if ymin < 0 else 0.0, ymax + pad)
    return xmax


def _shade_unreliable(ax, clean: dict, xmax: float) -> None:
    """draw_frontier shades the unreliable KL range up to the end of the curve: carry it to the axis' end."""
    kl_end = max(num(c["kl"]) for c in clean["curve"])
    max_rel = clean["max_reliable_kl"]
    unreliable = any(not c["reliable"] for c in clean["curve"])
    if not unreliable and max_rel >= xmax:
        return
    shaded_to = max(kl_end, max_rel) * 1.05 if unreliable else max_rel
    if xmax > shaded_to:
        ax.axvspan(shaded_to, xmax, color="0.85", alpha=0.6, lw=0)
    ax.text(max_rel + 0.01 * xmax, 0.015, f"unreliable beyond KL {max_rel:.2g}: too few effective samples",
            transform=ax.get_xaxis_transform(), va="bottom", fontsize=8, color="0.35")


def _label_axes(ax, results: dict, frontier: dict) -> None:
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
