"""Figures of the reward-hacking study (`alignlimits hack`, the `run` stage): the ``hacking`` JSON in, PNGs out,
the controlled-error family first (the theorems' setting), then the trained proxies (the realistic case)."""

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


def plot_hacking_study(result: dict, path) -> list[Path]:
    """The study's figures: the controlled-error family at ``path`` (when it ran), the trained (or given)
    proxies at ``path`` too when it did not, else beside it as ``<stem>_trained.png``."""
    path, out = Path(path), []
    if result.get("controlled"):
        out.append(plot_controlled(result["controlled"], result["gold"], path))
    if result.get("error_sweep") or result.get("ensembles") or result.get("per_proxy"):
        out.append(plot_trained(result, path.with_name(f"{path.stem}_trained.png") if out else path))
    return out


def _save(fig, path) -> Path:
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_controlled(c: dict, gold: str, path) -> Path:
    """Three panels on the controlled-error family: gap vs β per error size; gap vs ensemble size K per ρ (mean
    solid, min dotted, mean − λ·Var dashed) at the reference β; gold gain vs KL against the gold frontier for the
    smallest and largest error. Bars and bands: the JSON's bootstrap intervals."""
    betas, j = np.array(c["betas"]), len(c["betas"]) // 2
    fig, (ax_beta, ax_k, ax_curve) = plt.subplots(1, 3, figsize=(16, 5))
    for k, s in enumerate(c["error_sweep"]):
        curve = s["curve"]
        ax_beta.errorbar(_col(curve, "beta"), _col(curve, "gap"), yerr=_err(curve, "gap"), fmt="o-", ms=3, lw=1,
                         capsize=2, color=f"C{k}", label=f"error {s['error_size']:g} × gold sd")
    ax_beta.set(xscale="log", xlabel="β", ylabel="hacking gap (gold frontier − gold gain)", title="gap grows as β falls and with the error")
    styles = {"mean": "-", "min": ":", "uwo": "--"}
    for k, kind in enumerate(dict.fromkeys(e["members"] for e in c["ensembles"])):
        for agg, style in styles.items():
            rows = sorted((e for e in c["ensembles"] if e["members"] == kind and e["aggregate"] == agg), key=lambda e: e["k"])
            if rows:
                y = np.array([e["curve"][j]["gap"] for e in rows])
                lo_hi = np.array([e["curve"][j]["gap_ci"] for e in rows])
                ax_k.errorbar([e["k"] for e in rows], y, yerr=np.abs(np.stack([y - lo_hi[:, 0], lo_hi[:, 1] - y])), fmt="o" + style,
                              ms=4, capsize=2, color=f"C{k}", alpha=1.0 if agg == "mean" else 0.5, label=f"{agg}, {kind}")
    ax_k.set(xscale="log", xlabel="ensemble size K", ylabel=f"hacking gap at β = {betas[j]:.3g}",
             title=f"ensembles of error {c['ensemble_error']:g} × gold sd")
    ax_k.set_xscale("log", base=2)
    front = c.get("gold_frontier") or []
    ax_curve.plot([p["kl"] for p in front], [p["gain"] for p in front], color="k", lw=2, label="gold frontier")
    sweep = c["error_sweep"]
    for k in sorted({0, len(sweep) - 1}) if sweep else []:
        curve = sweep[k]["curve"]
        ci = np.array([r["gold_gain_ci"] for r in curve])
        ax_curve.plot(_col(curve, "kl"), _col(curve, "gold_gain"), "o-", ms=3, color=f"C{k}", label=f"error {sweep[k]['error_size']:g}: gold gain")
        ax_curve.fill_between(_col(curve, "kl"), ci[:, 0], ci[:, 1], color=f"C{k}", alpha=0.15)
    ax_curve.set(xlabel="KL(π̂_β ‖ π0)  [nats]", ylabel=f"gain in gold reward ({gold})", title="proxy-optimal tilts against the gold frontier")
    for ax in (ax_beta, ax_k, ax_curve):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"reward hacking with proxies of controlled error (gold + Gaussian error) on {c['n_prompts']} prompts; "
                 "bars: bootstrap intervals", fontsize=10)
    return _save(fig, path)


def plot_trained(result: dict, path, beta_index: int | None = None) -> Path:
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
    fig.suptitle(f"reward hacking, trained proxies (the realistic case): gold = {result['gold']}, {result.get('n_eval_prompts', '?')} evaluation prompts; "
                 f"bars: {100 * result.get('confidence', 0.95):g}% bootstrap intervals", fontsize=10)
    return _save(fig, path)


def _pm(row: dict | None, key: str) -> str:
    if row is None or row.get(key) is None:
        return "—"
    lo, hi = row[key + "_ci"]
    return f"{row[key]:.3g} [{lo:.3g}, {hi:.3g}]"


def hacking_report_section(result: dict, plots: list[str] = ()) -> str:
    """A Markdown section of the run report (``result`` with its words, :func:`~alignlimits.report.hacking_text.with_prose`):
    the controlled-error family first, then the trained proxies; headline numbers with intervals, verdicts, notes."""
    lines = ["## Reward hacking", "", f"Gold reward `{result['gold']}`. Intervals: {result['ci_method']}.", ""]
    lines += [f"![reward hacking]({p})" for p in plots] + ([""] if plots else [])
    c = result.get("controlled")
    if c:
        betas = c["betas"]
        lines += ["### Proxies of controlled error", "", f"{c['model']}; {c['n_prompts']} prompts.", "",
                  f"| error × gold sd | gap at β={betas[0]:.3g} | gap at β={betas[len(betas) // 2]:.3g} | gap at β={betas[-1]:.3g} |",
                  "|---|---|---|---|"]
        lines += [f"| {s['error_size']:g} | " + " | ".join(_pm(s["curve"][i], "gap") for i in (0, len(betas) // 2, -1)) + " |"
                  for s in c["error_sweep"]]
        lines += [""] + _ensemble_lines(c, betas) + _check_lines(c["checks"]) + [f"- {note}" for note in c.get("notes", [])]
        lines += [""]
    if result.get("error_sweep") or result.get("per_proxy"):
        lines += _trained_lines(result)
    lines += [f"- {note}" for note in result.get("notes", [])]
    return "\n".join(lines) + "\n"


def _ensemble_lines(family: dict, betas) -> list[str]:
    j = len(betas) // 2
    mean_rows = [e for e in family.get("ensembles", []) if e["aggregate"] == "mean"]
    if not mean_rows:
        return []
    lines = [f"| members | K | gap at β={betas[j]:.3g} | gold gain at KL={family['kl_grid'][2]:g} |", "|---|---|---|---|"]
    lines += [f"| {e['members']} | {e['k']} | {_pm(e['curve'][j], 'gap')} | {_pm(e['at_kl'][2], 'gold_gain')} |" for e in mean_rows]
    return lines + [""]


def _check_lines(checks: list[dict]) -> list[str]:
    lines = ["| expected ordering | verdict | detail |", "|---|---|---|"]
    lines += [f"| {c['claim']} | **{c['verdict']}** | {c['detail']} |" for c in checks if c.get("expected", True)]
    return lines + [""]


def _trained_lines(result: dict) -> list[str]:
    betas = result["betas"]
    lines = ["### Trained proxies (the realistic case)", "",
             f"Proxies: {result.get('features_detail', '')}. {result['split']}. {result['n_train_prompts']} training and "
             f"{result['n_eval_prompts']} evaluation prompts.", ""]
    if result.get("error_sweep"):
        lines += ["| labels | noise | within-prompt corr. | gap at β=%.3g | gap at β=%.3g |" % (betas[0], betas[-1]),
                  "|---|---|---|---|---|"]
        lines += [f"| {s['labels']} | {s['noise']:g} | {s['error']['within_prompt_correlation']:.3g} | "
                  f"{_pm(s['curve'][0], 'gap')} | {_pm(s['curve'][-1], 'gap')} |" for s in result["error_sweep"]]
        lines.append("")
    return lines + _ensemble_lines(result, betas) + _check_lines(result["checks"])
