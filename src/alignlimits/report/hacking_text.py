"""The reward-hacking study in words: what its intervals, gaps and error axes are, and why a check falls short.

:func:`with_prose` takes the ``hacking`` JSON of :mod:`alignlimits.pipeline.hacking_study` (numbers only) and
adds ``ci_method``, ``gap_definition``, ``error_index``, ``proxy_model``, the controlled family's ``model`` and
``ci_method``, and each family's closing notes (one per expected ordering the data do not show, headed by its
verdict, and the likely reasons): the trained proxies' in ``notes``, the controlled family's in its own ``notes``.
"""

from __future__ import annotations

import math

VERDICT_HEADINGS = {"not shown": "NOT SHOWN", "inconclusive": "INCONCLUSIVE"}
AT_BETA_AND_AT_KL = (
    ("gap grows with proxy error", "at equal KL: gap grows with proxy error"),
    ("mean of 4 independent proxies has a smaller gap than the average single proxy",
     "at equal KL: mean of 4 independent proxies has a smaller gap than the average single proxy"),
    ("independent members beat correlated ones (mean of 4)", "at equal KL: independent members beat correlated ones (mean of 4)"),
)
GAP_DEFINITION = (
    "tilts: gap = gold frontier at the tilt's KL minus the tilt's gold gain. Best-of-N: both sides on the empirical "
    "distribution of the evaluation samples, gap = empirical gold frontier at the exact KL of best-of-N by proxy drawn "
    "with replacement (kl_empirical) minus that law's gold gain (gold_gain_empirical), so that no selection rule, an "
    "oracle included, has a negative gap; best-of-N's gold_gain and proxy_gain are the unbiased order-statistics "
    "estimates (drawn without replacement). objective_loss = β·KL(π̂_β‖π_β); at_kl: the proxy's tilt curve read at "
    "fixed KL (linear in KL between its β points; null where it never reaches that KL), so that proxies that move the "
    "policy by different amounts at the same β are compared at the same distance from the base model"
)
PROXY_MODEL = ("ridge regression (closed form, penalty by leave-one-out CV) on gold labels of training-prompt samples, "
               "labels resampled with replacement; label noise sd = noise × std of the labelled gold")
CONTROLLED_MODEL = ("gold + σ_e·(√ρ·z₀ + √(1−ρ)·z_k), z standard normal per sample, σ_e = error size × the gold reward's "
                    "within-prompt sd: the hacking theorems' setting placed on the task's real rewards; every prompt evaluated")


def ci_method(result: dict, n_units: int, tail: float) -> str:
    c = result.get("confidence", 0.95)
    return (f"{100 * c:g}% expanded percentile bootstrap (Hesterberg 2015: each end read at tail {tail:.3g} instead of "
            f"{(1 - c) / 2:g}, calibrated for {n_units} prompts), {result.get('n_bootstrap')} replicates resampling prompts "
            "with replacement; every curve uses the same replicates (differences are paired); each replicate's gold frontier "
            "is the prompt-weighted mean of the per-prompt tilts at the Frontier's β nodes, cubic Hermite in KL with slope β")


def with_prose(result: dict) -> dict:
    """``result`` with its words added (a copy; a result that has them already is returned as it is)."""
    if "ci_method" in result:
        return result
    out = dict(result)
    trained = bool(out.get("error_sweep") or out.get("ensembles") or out.get("per_proxy"))
    out.update(gap_definition=GAP_DEFINITION, proxy_model=PROXY_MODEL if trained else None,
               ci_method=ci_method(out, out.get("n_eval_prompts", 0), out.get("ci_tail", float("nan"))),
               error_index="1 − held-out within-prompt correlation of proxy and gold (both centred per prompt): the error a "
                           "tilt or best-of-N sees, free of the proxy's scale; 'largest/smallest-error' configurations are "
                           "ranked by it")
    controlled = out.get("controlled")
    if controlled:
        out["controlled"] = {**controlled, "model": CONTROLLED_MODEL,
                             "ci_method": ci_method(out, controlled["n_prompts"], controlled["ci_tail"]),
                             "notes": closing_notes(controlled["checks"], controlled["diagnostics"], controlled["n_prompts"])}
    if trained:
        out["notes"] = list(out.get("notes") or []) + closing_notes(out.get("checks") or [], out.get("diagnostics") or {},
                                                                     out.get("n_eval_prompts", 0))
    return out


def closing_notes(checks: list[dict], diagnostics: dict, n_prompts: int) -> list[str]:
    """One note per expected ordering the data do not show (headed by its verdict), and the likely reasons."""
    failed = [c for c in checks if c.get("expected", True) and c["verdict"] != "shown"]
    notes = [f"{VERDICT_HEADINGS[c['verdict']]}: {c['claim']}. {c['detail']}" for c in failed]
    verdict = {c["claim"]: c["verdict"] for c in checks}
    for at_beta, at_kl in AT_BETA_AND_AT_KL:
        if verdict.get(at_beta, "shown") != "shown" and verdict.get(at_kl) == "shown":
            notes.append(
                f"'{at_beta}' holds at equal KL but not at equal β: the proxies differ in scale (ridge shrinks a proxy fitted "
                "to fewer or noisier labels, and averaging shrinks an ensemble), so at one β a flatter proxy moves the policy "
                "less and its gap at that β is smaller; at the same KL it is worse, as the theory says"
            )
    return notes + explanations(diagnostics, n_prompts) if failed else notes


def explanations(d: dict, n_prompts: int) -> list[str]:
    """The likely reasons the data do not show an expected ordering, from the study's ``diagnostics``."""
    out = []
    if n_prompts < 20:
        out.append(f"only {n_prompts} evaluation prompts: the intervals are wide; sample more prompts to tell the curves apart")
    errs = d.get("sweep_errors") or []
    if len(errs) > 1 and max(errs) < 1.25 * min(errs):
        out.append(f"the error sweep barely changes the proxies' held-out error ({min(errs):.3g} to {max(errs):.3g}): "
                   "label budget and noise are not what limits these proxies, so their gaps cannot separate")
    shared = d.get("independent_error_correlation", float("nan"))
    if shared is not None and math.isfinite(shared) and shared > 0.5:
        r = d.get("member_within_prompt_correlation", float("nan"))
        out.append(f"independent members' held-out errors are strongly correlated (mean pairwise {shared:.2f}; members' "
                   f"within-prompt correlation with gold {r:.2f}): most of each proxy's error is the part of the gold reward the "
                   "features cannot represent, which every member shares and averaging cannot remove")
    share = d.get("gold_top5_variance_share", 0.0)
    if share > 0.5:
        out.append(f"the gold reward is heavy-tailed: the 5% most extreme samples carry {100 * share:.0f}% of its within-prompt "
                   "variance, so a few samples decide every gap and the curves are noisy")
    return out or ["no simple cause found (enough prompts, a real error range, members with mostly independent errors)"]


def controlled_html(result: dict) -> str:
    """The report page's controlled-error part (``result`` with its words): gap by error size at three β and by
    ensemble size K, each with its interval, and the family's checks; then the heading of the trained proxies."""
    from html import escape

    c = result.get("controlled")
    if not c:
        return ""
    betas, picks = c["betas"], sorted({0, len(c["betas"]) // 2, len(c["betas"]) - 1})

    def cell(row: dict) -> str:
        lo, hi = row["gap_ci"]
        return f"<td class='num'>{row['gap']:.3g} [{lo:.3g}, {hi:.3g}]</td>"

    def table(head: list[str], rows: list[str]) -> str:
        return "<table><tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr>" + "".join(rows) + "</table>"

    sweep = [f"<tr><td>{s['error_size']:g} × sd</td>" + "".join(cell(s["curve"][i]) for i in picks) + "</tr>" for s in c["error_sweep"]]
    j = len(betas) // 2
    mean = [e for e in c["ensembles"] if e["aggregate"] == "mean"]
    ks = sorted({e["k"] for e in mean})
    ens = [f"<tr><td>{escape(kind)}</td>" + "".join(cell(e["curve"][j]) for k in ks for e in mean if e["members"] == kind and e["k"] == k)
           + "</tr>" for kind in dict.fromkeys(e["members"] for e in mean)]
    checks = "".join(f"<li><b>{escape(x['claim'])}</b>: {escape(x['verdict'])} <span class='note'>({escape(x['detail'])})</span></li>"
                     for x in c["checks"])
    trained = result.get("error_sweep") or result.get("per_proxy")
    return (f"<h3>Proxies of controlled error</h3><p class='sub'>{escape(c['model'])}; {c['n_prompts']} prompts. "
            f"{escape(c['ci_method'])}.</p>"
            + table(["error", *(f"gap at β={betas[i]:.3g}" for i in picks)], sweep)
            + f"<h3>Ensembles of error {c['ensemble_error']:g} × sd: mean of K members, gap at β={betas[j]:.3g}</h3>"
            + table(["members", *(f"K={k}" for k in ks)], ens)
            + f"<ul>{checks}</ul>" + "".join(f"<p class='note'>{escape(n)}</p>" for n in c.get("notes", []))
            + ("<h3>Trained proxies (the realistic case)</h3>" if trained else ""))
