"""Figures of the reward-hacking study (`alignlimits hack`): the ``hacking`` JSON in, one PNG out."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _col(curve: list[dict], key: str) -> np.ndarray:
    return np.array([row[key] for row in curve], dtype=float)


def _err(curve: list[dict], key: str) -> np.ndarray:
    """Asymmetric error-bar array (2, n) from ``<key>_ci``."""
    point = _col(curve, key)
    ci = np.array([row[key + "_ci"] for row in curve], dtype=float)
    return np.abs(np.stack([point - ci[:, 0], ci[:, 1] - point]))


def reference_beta_index(result: dict) -> int:
    """The β the summary panels use: the middle of the grid."""
    return len(result["betas"]) // 2


def plot_hacking_study(result: dict, path, beta_index: int | None = None) -> Path:
    """Four panels: gold gain vs KL against the frontier; gap vs β per proxy error; gap vs error at
    three β; gap vs ensemble size K per aggregate (independent solid, correlated dashed). Error bars and
    bands are the JSON's bootstrap intervals."""
    j = reference_beta_index(result) if beta_index is None else beta_index
    betas = np.array(result["betas"])
    fig, axes = plt.subplots(2, 2, figsize=(13, 9.5))
    (ax_curve, ax_beta), (ax_err, ax_k) = axes
    sweep = result.get("error_sweep") or []
    ens = result.get("ensembles") or []

    # (a) gold gain vs KL
    front = result.get("gold_frontier") or []
    if front:
        ax_curve.plot([p["kl"] for p in front], [p["gain"] for p in front], color="k", lw=2, label="gold frontier")
    picks = []
    if sweep:
        errors = [s["error"]["index"] for s in sweep]
        picks += [(f"labels {sweep[i]['labels']}, noise {sweep[i]['noise']:g}", sweep[i]["curve"]) for i in
                  dict.fromkeys([int(np.argmin(errors)), int(np.argmax(errors))])]
    for e in ens:
        if e["aggregate"] == "mean" and e["k"] == max(x["k"] for x in ens) and e["members"] in ("independent", "given"):
            picks.append((f"mean of {e['k']} {e['members']}", e["curve"]))
    if not sweep and not ens:
        picks += [(p["proxy"], p["curve"]) for p in result.get("per_proxy", [])[:4]]
    for k, (name, curve) in enumerate(picks):
        kl, gold = _col(curve, "kl"), _col(curve, "gold_gain")
        ci = np.array([r["gold_gain_ci"] for r in curve])
        ax_curve.plot(kl, gold, "o-", color=f"C{k}", ms=3, label=f"{name}: gold gain")
        ax_curve.fill_between(kl, ci[:, 0], ci[:, 1], color=f"C{k}", alpha=0.15)
        ax_curve.plot(kl, _col(curve, "proxy_gain"), ":", color=f"C{k}", lw=1)
    ax_curve.set_xlabel("KL(π̂_β ‖ π0)  [nats]")
    ax_curve.set_ylabel(f"gain in gold reward ({result['gold']}); dotted: proxy's own gain")
    ax_curve.set_title("proxy-optimal tilts against the gold frontier")
    ax_curve.grid(alpha=0.3)
    ax_curve.legend(fontsize=7)

    # (b) gap vs β per sweep configuration (or per given proxy)
    series = [(f"labels {s['labels']}, noise {s['noise']:g}", s["curve"]) for s in sweep] or \
             [(p["proxy"], p["curve"]) for p in result.get("per_proxy", [])]
    for k, (name, curve) in enumerate(series):
        ax_beta.errorbar(_col(curve, "beta") * (1 + 0.02 * (k - len(series) / 2)), _col(curve, "gap"),
                         yerr=_err(curve, "gap"), fmt="o-", ms=3, lw=1, capsize=2, color=f"C{k % 10}", label=name)
    ax_beta.set_xscale("log")
    ax_beta.set_xlabel("β")
    ax_beta.set_ylabel("hacking gap (gold frontier − gold gain)")
    ax_beta.set_title("gap vs β, per proxy error (average over seeds)")
    ax_beta.grid(alpha=0.3)
    ax_beta.legend(fontsize=7, ncol=2)

    # (c) gap vs error at three β
    if sweep:
        x = np.array([s["error"]["index"] for s in sweep])
        order = np.argsort(x)
        for k, bi in enumerate(sorted(set([0, j, len(betas) - 1]))):
            y = np.array([s["curve"][bi]["gap"] for s in sweep])
            ci = np.array([s["curve"][bi]["gap_ci"] for s in sweep])
            ax_err.errorbar(x[order], y[order], yerr=np.abs(np.stack([y - ci[:, 0], ci[:, 1] - y]))[:, order],
                            fmt="o-", ms=4, capsize=2, color=f"C{k}", label=f"β = {betas[bi]:.3g}")
        ax_err.legend(fontsize=8)
    else:
        ax_err.text(0.5, 0.5, "no error sweep (proxies given as columns)", ha="center", va="center", transform=ax_err.transAxes)
    ax_err.set_xlabel("proxy error: 1 − held-out within-prompt correlation with gold")
    ax_err.set_ylabel("hacking gap")
    ax_err.set_title("gap vs proxy error")
    ax_err.grid(alpha=0.3)

    # (d) gap vs K per aggregate
    styles = {"independent": "-", "correlated": "--", "given": "-"}
    aggs = list(dict.fromkeys(e["aggregate"] for e in ens))
    for a_i, agg in enumerate(aggs):
        for kind in dict.fromkeys(e["members"] for e in ens):
            rows = sorted((e for e in ens if e["aggregate"] == agg and e["members"] == kind), key=lambda e: e["k"])
            if not rows:
                continue
            ks = np.array([e["k"] for e in rows], dtype=float) * (1 + 0.03 * (a_i - 1))
            y = np.array([e["curve"][j]["gap"] for e in rows])
            ci = np.array([e["curve"][j]["gap_ci"] for e in rows])
            ax_k.errorbar(ks, y, yerr=np.abs(np.stack([y - ci[:, 0], ci[:, 1] - y])), fmt="o" + styles.get(kind, "-"),
                          ms=4, capsize=2, color=f"C{a_i}", label=f"{agg}, {kind}")
    ax_k.set_xscale("log", base=2)
    ax_k.set_xlabel("ensemble size K")
    ax_k.set_ylabel(f"hacking gap at β = {betas[j]:.3g}")
    ax_k.set_title("gap vs K (mean, min, mean − λ·Var)")
    ax_k.grid(alpha=0.3)
    if ens:
        ax_k.legend(fontsize=7)
    fig.suptitle(f"reward hacking: gold = {result['gold']}, {result.get('n_eval_prompts', '?')} evaluation prompts; "
                 f"bars: {100 * result.get('confidence', 0.95):g}% bootstrap intervals", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _pm(row: dict | None, key: str) -> str:
    if row is None or row.get(key) is None:
        return "—"
    lo, hi = row[key + "_ci"]
    return f"{row[key]:.3g} [{lo:.3g}, {hi:.3g}]"


def hacking_report_section(result: dict, plot: str | None = None) -> str:
    """A Markdown section of the run report: set-up, headline numbers with intervals, verdicts and notes."""
    betas = result["betas"]
    j = reference_beta_index(result)
    lines = [
        "## Reward hacking",
        "",
        f"Gold reward `{result['gold']}`; proxies: {result.get('features_detail', '')}. {result['split']}. "
        f"{result['n_train_prompts']} training and {result['n_eval_prompts']} evaluation prompts.",
        "",
        f"Intervals: {result['ci_method']}.",
        "",
    ]
    if plot:
        lines += [f"![reward hacking]({plot})", ""]
    if result.get("error_sweep"):
        lines += ["| labels | noise | within-prompt corr. | gap at β=%.3g | gap at β=%.3g |" % (betas[0], betas[-1]),
                  "|---|---|---|---|---|"]
        for s in result["error_sweep"]:
            lines.append(f"| {s['labels']} | {s['noise']:g} | {s['error']['within_prompt_correlation']:.3g} | "
                         f"{_pm(s['curve'][0], 'gap')} | {_pm(s['curve'][-1], 'gap')} |")
        lines.append("")
    mean_rows = [e for e in result.get("ensembles", []) if e["aggregate"] == "mean"]
    if mean_rows:
        lines += [f"| members | K | gap at β={betas[j]:.3g} | gold gain at KL={result['kl_grid'][2]:g} |", "|---|---|---|---|"]
        for e in mean_rows:
            lines.append(f"| {e['members']} | {e['k']} | {_pm(e['curve'][j], 'gap')} | {_pm(e['at_kl'][2], 'gold_gain')} |")
        lines.append("")
    lines += ["| expected ordering | verdict | detail |", "|---|---|---|"]
    for c in result["checks"]:
        if c.get("expected", True):
            lines.append(f"| {c['claim']} | **{c['verdict']}** | {c['detail']} |")
    lines.append("")
    for note in result.get("notes", []):
        lines.append(f"- {note}")
    return "\n".join(lines) + "\n"
