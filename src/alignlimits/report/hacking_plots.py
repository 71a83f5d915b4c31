"""Figures of the reward-hacking study (`alignlimits hack`, the `run` stage): the ``hacking`` JSON in, PNGs out,
the controlled-error family first (the theorems' setting), then the trained proxies (the realistic case)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from alignlimits.report.plots import save_figure  # noqa: E402


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


def _gain_vs_kl(ax, front: list[dict], picks: list[tuple[str, list[dict]]], gold: str) -> None:
    """Gold gain of proxy tilts against KL (bands: intervals; dotted: the proxy's own gain) beside the gold frontier."""
    if front:
        ax.plot([p["kl"] for p in front], [p["gain"] for p in front], color="k", lw=2, label="gold frontier")
    for k, (name, curve) in enumerate(picks):
        kl, ci = _col(curve, "kl"), np.array([r["gold_gain_ci"] for r in curve])
        ax.plot(kl, _col(curve, "gold_gain"), "o-", color=f"C{k}", ms=3, label=f"{name}: gold gain")
        ax.fill_between(kl, ci[:, 0], ci[:, 1], color=f"C{k}", alpha=0.15)
        ax.plot(kl, _col(curve, "proxy_gain"), ":", color=f"C{k}", lw=1)
    ax.set(xlabel="KL(π̂_β ‖ π0)  [nats]", ylabel=f"gain in gold reward ({gold}); dotted: proxy's own gain",
           title="proxy-optimal tilts against the gold frontier")


def _gap_vs_beta(ax, series: list[tuple[str, list[dict]]], title: str) -> None:
    for k, (name, curve) in enumerate(series):
        ax.errorbar(_col(curve, "beta") * (1 + 0.02 * (k - len(series) / 2)), _col(curve, "gap"), yerr=_err(curve, "gap"),
                    fmt="o-", ms=3, lw=1, capsize=2, color=f"C{k % 10}", label=name)
    ax.set(xscale="log", xlabel="β", ylabel="hacking gap (gold frontier − gold gain)", title=title)


def _gap_vs_k(ax, ensembles: list[dict], j: int, beta: float, title: str) -> None:
    """Gap at the reference β against K: one colour per kind of members, mean solid, min dotted, mean − λ·Var dashed."""
    styles = {"mean": "-", "min": ":", "uwo": "--"}
    for k, kind in enumerate(dict.fromkeys(e["members"] for e in ensembles)):
        for a_i, agg in enumerate(dict.fromkeys(e["aggregate"] for e in ensembles)):
            rows = sorted((e for e in ensembles if e["members"] == kind and e["aggregate"] == agg), key=lambda e: e["k"])
            if not rows:
                continue
            y, ci = np.array([e["curve"][j]["gap"] for e in rows]), np.array([e["curve"][j]["gap_ci"] for e in rows])
            ax.errorbar(np.array([e["k"] for e in rows], dtype=float) * (1 + 0.03 * (a_i - 1)), y,
                        yerr=np.abs(np.stack([y - ci[:, 0], ci[:, 1] - y])), fmt="o" + styles.get(agg, "-"), ms=4, capsize=2,
                        color=f"C{k}", alpha=1.0 if agg == "mean" else 0.55, label=f"{agg}, {kind}")
    ax.set(xlabel="ensemble size K", ylabel=f"hacking gap at β = {beta:.3g}", title=title)
    ax.set_xscale("log", base=2)


def _finish(fig, axes, title: str, path) -> Path:
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_controlled(c: dict, gold: str, path) -> Path:
    """Three panels on the controlled-error family: gap vs β per error size; gap vs ensemble size K per ρ at the
    reference β; gold gain vs KL against the gold frontier for the smallest and largest error. Bars and bands:
    the JSON's bootstrap intervals."""
    j = len(c["betas"]) // 2
    fig, axes = plt.subplots(1, 3, figsize=(16, 5))
    sweep = c["error_sweep"]
    _gap_vs_beta(axes[0], [(f"error {s['error_size']:g} × gold sd", s["curve"]) for s in sweep],
                 "gap grows as β falls and with the error")
    _gap_vs_k(axes[1], c["ensembles"], j, c["betas"][j], f"ensembles of error {c['ensemble_error']:g} × gold sd")
    _gain_vs_kl(axes[2], c.get("gold_frontier") or [],
                [(f"error {sweep[i]['error_size']:g}", sweep[i]["curve"]) for i in sorted({0, len(sweep) - 1})] if sweep else [], gold)
    return _finish(fig, axes, f"reward hacking with proxies of controlled error (gold + Gaussian error) on {c['n_prompts']} "
                   "prompts; bars: bootstrap intervals", path)


def plot_trained(result: dict, path) -> Path:
    """Four panels on the trained (or given) proxies: gold gain vs KL against the frontier; gap vs β per proxy
    error; gap vs error at three β; gap vs ensemble size K per aggregate and kind of members. Error bars and
    bands are the JSON's bootstrap intervals."""
    j, betas = reference_beta_index(result), np.array(result["betas"])
    fig, axes = plt.subplots(2, 2, figsize=(13, 9.5))
    (ax_curve, ax_beta), (ax_err, ax_k) = axes
    sweep, ens = result.get("error_sweep") or [], result.get("ensembles") or []
    name = [f"labels {s['labels']}, noise {s['noise']:g}" for s in sweep]
    picks = []
    if sweep:
        errors = [s["error"]["index"] for s in sweep]
        picks += [(name[i], sweep[i]["curve"]) for i in dict.fromkeys([int(np.argmin(errors)), int(np.argmax(errors))])]
    picks += [(f"mean of {e['k']} {e['members']}", e["curve"]) for e in ens if e["aggregate"] == "mean"
              and e["k"] == max(x["k"] for x in ens) and e["members"] in ("independent", "given")]
    if not sweep and not ens:
        picks += [(p["proxy"], p["curve"]) for p in result.get("per_proxy", [])[:4]]
    _gain_vs_kl(ax_curve, result.get("gold_frontier") or [], picks, result["gold"])
    _gap_vs_beta(ax_beta, list(zip(name, [s["curve"] for s in sweep])) or [(p["proxy"], p["curve"]) for p in result.get("per_proxy", [])],
                 "gap vs β, per proxy error (average over seeds)")
    _gap_vs_error(ax_err, sweep, sorted({0, j, len(betas) - 1}), betas)
    _gap_vs_k(ax_k, ens, j, betas[j], "gap vs K (mean, min, mean − λ·Var)")
    return _finish(fig, axes.ravel(), f"reward hacking, trained proxies (the realistic case): gold = {result['gold']}, "
                   f"{result.get('n_eval_prompts', '?')} evaluation prompts; bars: {100 * result.get('confidence', 0.95):g}% "
                   "bootstrap intervals", path)


def _gap_vs_error(ax, sweep: list[dict], beta_indices: list[int], betas) -> None:
    if not sweep:
        ax.text(0.5, 0.5, "no error sweep (proxies given as columns)", ha="center", va="center", transform=ax.transAxes)
    x = np.array([s["error"]["index"] for s in sweep])
    order = np.argsort(x)
    for k, bi in enumerate(beta_indices if sweep else []):
        y, ci = np.array([s["curve"][bi]["gap"] for s in sweep]), np.array([s["curve"][bi]["gap_ci"] for s in sweep])
        ax.errorbar(x[order], y[order], yerr=np.abs(np.stack([y - ci[:, 0], ci[:, 1] - y]))[:, order],
                    fmt="o-", ms=4, capsize=2, color=f"C{k}", label=f"β = {betas[bi]:.3g}")
    ax.set(xlabel="proxy error: 1 − held-out within-prompt correlation with gold", ylabel="hacking gap", title="gap vs proxy error")


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
