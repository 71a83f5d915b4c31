"""``RUN_DIR/report.html``: the report of `alignlimits run`, one self-contained file.

Images are inlined as base64 PNG data URIs and the CSS is inline: the file opens anywhere, offline,
without JavaScript. Every string from the run (prompts, completions, config values) is HTML-escaped.

Sections, in order: the headline figure (:func:`alignlimits.report.plane.plot_plane`, also saved
as ``RUN_DIR/plane.png``) with a plain-English summary; the table of evaluated methods; the
planning answers; the reward-hacking study when present (``RUN_DIR/hacking*.png`` and a table
from ``results["hacking"]``); sample completions side by side per prompt; notes; the run's config,
versions, seeds and timings.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from pathlib import Path

import numpy as np

from alignlimits.report.plane import method_label, num, plot_plane
from alignlimits.report.plots import plot_training
from alignlimits.report.terminal import (
    COLUMNS,
    DASH,
    cap,
    fmt,
    fmt_pct,
    fmt_seconds,
    headline_rows,
    is_law,
    path_words,
    training_words,
    verdict_sentence,
)
from alignlimits.report.trajectory import plot_paths

CSS = """
:root { --ink:#1d232b; --muted:#5d6773; --line:#dde2e8; --soft:#f5f7f9; --good:#e3f4e6; --mid:#fdf3d7; --bad:#fbe3e1; }
* { box-sizing: border-box; }
body { font: 14px/1.45 -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Helvetica, Arial, sans-serif; color: var(--ink);
       margin: 0; background: #fff; }
main { max-width: 1180px; margin: 0 auto; padding: 18px 26px 40px; }
h1 { font-size: 22px; margin: 6px 0 2px; }
h2 { font-size: 17px; margin: 28px 0 8px; padding-bottom: 3px; border-bottom: 1px solid var(--line); }
h3 { font-size: 14px; margin: 16px 0 6px; }
h3 .note { font-weight: 400; }
.sub { color: var(--muted); margin: 0 0 12px; }
.figure img { display: block; max-width: 100%; height: auto; margin: 0 auto; }
.summary { font-size: 15px; background: var(--soft); border-left: 4px solid #1f77b4; padding: 10px 14px; margin: 12px 0; }
table { border-collapse: collapse; font-size: 13px; margin: 6px 0 4px; }
th, td { padding: 4px 9px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { text-align: left; background: var(--soft); font-weight: 600; }
td.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.unrel td:first-child::after { content: " *"; color: var(--muted); }
td.good { background: var(--good); } td.mid { background: var(--mid); } td.bad { background: var(--bad); }
.note { color: var(--muted); font-size: 12.5px; margin: 4px 0; }
.ex { border: 1px solid var(--line); border-radius: 6px; margin: 10px 0 14px; }
.ex .prompt { background: var(--soft); padding: 7px 11px; border-bottom: 1px solid var(--line); white-space: pre-wrap; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(230px, 1fr)); }
.card { padding: 7px 11px; border-right: 1px solid var(--line); }
.card:last-child { border-right: 0; }
.card .head { font-weight: 600; font-size: 12.5px; display: flex; justify-content: space-between; gap: 8px; }
.card .head span { font-weight: 400; color: var(--muted); font-variant-numeric: tabular-nums; }
.card .text.empty { color: var(--muted); font-style: italic; }
.card .text { white-space: pre-wrap; word-break: break-word; font-size: 13px; margin-top: 3px; max-height: 16em; overflow: auto; }
.cols { display: grid; grid-template-columns: repeat(auto-fit, minmax(340px, 1fr)); gap: 8px 28px; }
.verdict-shown { color: #1a7f37; font-weight: 600; } .verdict-not { color: #b42318; font-weight: 600; }
.verdict-inconclusive { color: #9a6700; font-weight: 600; }
code, pre { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 12px; }
pre { background: var(--soft); padding: 8px 10px; overflow: auto; max-height: 28em; margin: 4px 0; }
details > summary { cursor: pointer; color: var(--muted); margin: 6px 0; }
"""


def esc(x) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def _data_uri(png: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(png).read_bytes()).decode("ascii")


def _table(header: list[str], rows: list[list], numeric: set[int] | None = None, row_class=None, cell_class=None) -> str:
    """An HTML table; cells are escaped unless given as ``("html", markup)``."""
    numeric = numeric or set()
    out = ["<table><thead><tr>", *(f"<th>{esc(h)}</th>" for h in header), "</tr></thead><tbody>"]
    for i, row in enumerate(rows):
        cls = row_class(i) if row_class else ""
        out.append(f'<tr class="{cls}">' if cls else "<tr>")
        for j, cell in enumerate(row):
            classes = ["n"] if j in numeric else []
            extra = cell_class(i, j) if cell_class else ""
            if extra:
                classes.append(extra)
            attr = f' class="{" ".join(classes)}"' if classes else ""
            body = cell[1] if isinstance(cell, tuple) and cell and cell[0] == "html" else esc(cell)
            out.append(f"<td{attr}>{body}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


# ------------------------------------------------------------------------------------------ summary
def summary_text(results: dict) -> str:
    """One plain-English paragraph: the frontier, then each method's efficiency and KL overspend."""
    front = results.get("frontier") or {}
    parts = []
    if front:
        max_rel, n_s, n_p = num(front.get("max_reliable_kl")), front.get("n_samples"), front.get("n_prompts")
        curve = sorted(((num(c.get("kl")), num(c.get("gain"))) for c in front.get("curve") or []
                        if math.isfinite(num(c.get("kl"))) and math.isfinite(num(c.get("gain")))))
        s = (f"From {n_s} base samples of {n_p} prompts, the frontier (the most reward any policy can gain within a KL "
             f"budget) is estimated reliably up to KL {fmt(max_rel)} nats")
        if curve and math.isfinite(max_rel):
            at = float(np.interp(max_rel, [c[0] for c in curve], [c[1] for c in curve]))
            s += f", where it gains {fmt(at)} over the base mean of {fmt(front.get('base_reward_mean'))}"
        parts.append(s + ".")
        exact = sorted((num(e.get("kl")), num(e.get("gain"))) for e in results.get("exact_frontier") or []
                       if isinstance(e, dict) and math.isfinite(num(e.get("kl"))) and math.isfinite(num(e.get("gain"))))
        if exact and curve and math.isfinite(max_rel):
            true = float(np.interp(max_rel, [e[0] for e in exact], [e[1] for e in exact]))
            parts.append(f"The exact frontier (every sequence enumerated) gains {fmt(true)} there: the estimate is "
                         f"{fmt_pct(at / true) if true > 0 else DASH} of it.")
    points = [p for p in results.get("evaluate") or [] if isinstance(p, dict)]
    bons = [p for p in points if p.get("method") == "bon"]
    softs = [p for p in points if p.get("method") == "soft-bon" and math.isfinite(num(p.get("gain")))]
    shown = ([max(bons, key=lambda p: num(p.get("n")) if math.isfinite(num(p.get("n"))) else -1)] if bons else [])
    shown += [max(softs, key=lambda p: num(p["gain"]))] if softs else []
    shown += [p for p in points if not is_law(p)]
    parts += [verdict_sentence(p, i == 0) for i, p in enumerate(shown)]
    beyond = [method_label(p) for p in shown if p.get("reliable") is False]
    if beyond:
        names = beyond[0] if len(beyond) == 1 else ", ".join(beyond[:-1]) + " and " + beyond[-1]
        if len(beyond) == len(shown) > 1:
            names = "All of them"
        parts.append(f"{cap(names)} {'lies' if len(beyond) == 1 else 'lie'} beyond the frontier's reliable range, where the frontier's "
                     "estimate rests on few effective samples: read those comparisons as approximate.")
    if not points:
        parts.append("No method was evaluated in this run.")
    return " ".join(parts)


# ------------------------------------------------------------------------------------------ sections
#: how the report groups evaluated methods into tables: (title, methods, how their numbers were obtained)
METHOD_GROUPS = [
    ("Trained policies", None, "sampled on held-out prompts; KL measured per whole sequence from the policy's samples"),
    ("Best-of-N", ("bon",), "its with-replacement law on the empirical distribution of the base samples (gain and tie-aware KL), against the plain frontier, exact on that distribution; the unbiased estimate of the population's best-of-N gain is gain_unbiased in results.json"),
    ("Soft best-of-N", ("soft-bon",), "the exact sampling–importance–resampling law on the empirical distribution of the base samples, against the plain frontier"),
]


def _group_of(p: dict) -> int:
    for g, (_, methods, _) in enumerate(METHOD_GROUPS):
        if methods and p.get("method") in methods:
            return g
    return 0


def _methods_section(results: dict) -> str:
    rows = headline_rows(results)
    if not rows:
        return "<h2>Methods</h2><p class='note'>No evaluated methods.</p>"
    header = [name for _, name, _ in COLUMNS] + ["prompts × samples"]
    eff_col = [k for k, _, _ in COLUMNS].index("efficiency")
    out = ["<h2>Methods</h2>"]
    for g, (title, _, how) in enumerate(METHOD_GROUPS):
        group = [r for r in rows if _group_of(r["point"]) == g]
        if not group:
            continue

        def eff_class(i, j, group=group):
            if j != eff_col:
                return ""
            e = num(group[i]["point"].get("efficiency"))
            return "" if not math.isfinite(e) else "good" if e >= 0.9 else "mid" if e >= 0.6 else "bad"

        body = [[r[k] for k, _, _ in COLUMNS] + [f"{r['point'].get('n_prompts', DASH)} × {_per_prompt(r['point'])}"]
                for r in group]
        out.append(f"<h3>{esc(title)} <span class='note'>— {esc(how)}</span></h3>")
        out.append(_table(header, body, numeric=set(range(1, len(COLUMNS) - 1)) | {len(COLUMNS)}, cell_class=eff_class,
                          row_class=lambda i, group=group: "unrel" if group[i]["point"].get("reliable") is False else ""))
    note = ("KL in nats: k1 = mean of log π(y|x) − log π0(y|x) over whole sequences (± its standard error) and k3 (non-negative). "
            "The gain is in reward units over the base mean, with its 95% interval. <b>optimal</b> is the frontier's gain at "
            "the method's KL (trained policies: the bias-corrected frontier, or the exact one where the base probabilities are "
            "known; best-of-N laws: the plain one); <b>efficiency</b> = gain / optimal, its interval a Fieller set that holds "
            "100% exactly when the verdict is “on” (unbounded when the frontier's gain there is not resolved from 0); past the "
            "frontier's reach both are blank, with the reason; <b>KL overspend</b> = the method's KL / the KL the frontier "
            "needs for the method's gain. * beyond the frontier's reliable KL range (few effective samples): the optimum there is approximate.")
    out.append(f"<p class='note'>{note}</p>")
    return "".join(out)


def _per_prompt(p: dict) -> str:
    n_p, n_s = num(p.get("n_prompts")), num(p.get("n_samples"))
    if math.isfinite(n_p) and n_p > 0 and math.isfinite(n_s):
        return f"{n_s / n_p:g}"
    return DASH


def _plan_section(results: dict) -> str:
    plan = results.get("plan") or {}
    out = []
    gains = plan.get("for_gains") or []
    kls = plan.get("for_kls") or []
    if not gains and not kls:
        return ""

    def bon_cell(row):
        if row.get("bon_n") is None:
            return "out of reach with these samples"
        return f"N = {row['bon_n']} (gain {fmt(row.get('bon_gain'))}, KL ≤ {fmt(row.get('bon_kl_bound'))})"

    def rel(row):
        return "yes" if row.get("reliable") else "no" if row.get("reliable") is False else DASH

    if gains:
        body = [[fmt(r.get("gain")), "unreachable" if r.get("kl") is None or math.isinf(num(r.get("kl"))) else fmt(r.get("kl")),
                 fmt(r.get("beta")), bon_cell(r), rel(r)] for r in gains]
        out.append("<div><h3>KL needed for a target gain</h3>" +
                   _table(["target gain", "KL needed [nats]", "β of the optimal policy", "smallest best-of-N reaching it", "reliable"],
                          body, numeric={0, 1, 2}) + "</div>")
    if kls:
        body = [[fmt(r.get("kl")), fmt(r.get("gain")), fmt(r.get("beta")), bon_cell(r), rel(r)] for r in kls]
        out.append("<div><h3>Best gain for a KL budget</h3>" +
                   _table(["KL budget [nats]", "optimal gain", "β", "best-of-N of equal KL", "reliable"], body,
                          numeric={0, 1, 2}) + "</div>")
    return ("<h2>Planning</h2><div class='cols'>" + "".join(out) + "</div>"
            "<p class='note'>From the frontier of the base samples: the optimal policy is π0·exp(r/β)/Z; "
            "best-of-N's KL is the bound log N − (N−1)/N.</p>")


def _beta_subset(betas: list[float], k: int = 5) -> list[int]:
    if len(betas) <= k + 1:
        return list(range(len(betas)))
    return sorted(set(int(round(i)) for i in np.linspace(0, len(betas) - 1, k)))


def _correlation(entry: dict) -> float:
    for key in ("correlation", "heldout_correlation"):
        if entry.get(key) is not None:
            return num(entry[key])
    err = entry.get("error") or {}
    return num(err.get("correlation"))


def _gap_cells(curve: list[dict], betas: list[float], idx: list[int]) -> list[str]:
    by_beta = {round(num(c.get("beta")), 12): c for c in curve or []}
    cells = []
    for i in idx:
        c = by_beta.get(round(num(betas[i]), 12))
        cells.append(fmt(c.get("gap")) if c else DASH)
    return cells


def _ensembles_table(ensembles: list[dict], betas: list[float]) -> str:
    """Gap at the middle β of the grid, one row per (aggregate, members), one column per ensemble size K."""
    if not betas:
        return ""
    j = len(betas) // 2
    ks = sorted({e.get("k") for e in ensembles if isinstance(e.get("k"), (int, float))})
    groups: dict[tuple, dict] = {}
    for e in ensembles:
        groups.setdefault((e.get("aggregate"), e.get("members")), {})[e.get("k")] = e
    rows = []
    for (agg, members), by_k in groups.items():
        top = by_k[max(k for k in by_k if k is not None)] if any(k is not None for k in by_k) else {}
        rows.append([f"{agg}" + (f" ({members})" if members else ""), fmt(_correlation(top))] +
                    [_gap_cells(by_k[k].get("curve"), betas, [j])[0] if k in by_k else DASH for k in ks])
    head = ["aggregate (members)", f"corr. with gold at K={max(ks) if ks else '?'}"] + [f"gap, K={k}" for k in ks]
    return (f"<h3>Ensembles: gap at β={fmt(betas[j], 2)} against the number of members K</h3>" +
            _table(head, rows, numeric=set(range(1, 2 + len(ks)))) +
            "<p class='note'>uwo = mean − λ·Var of the members; K = 1 is the average single proxy.</p>")


def _hacking_section(run_dir: Path, results: dict) -> str:
    from alignlimits.report.hacking_text import controlled_html, with_prose

    hack = with_prose(results["hacking"]) if isinstance(results.get("hacking"), dict) else results.get("hacking")
    pngs = sorted(run_dir.glob("hacking*.png"), key=lambda p: (p.name != "hacking.png", p.name))
    if not hack and not pngs:
        return ""
    out = ["<h2>Reward hacking</h2>"]
    if isinstance(hack, dict) and not pngs:
        # nobody drew the study's figure: draw it here (the study JSON of alignlimits.pipeline.hacking_study)
        try:
            from alignlimits.report.hacking_plots import plot_hacking_study

            pngs = plot_hacking_study(hack, run_dir / "hacking.png")  # the controlled-error figure first
        except Exception as err:  # an older or partial hacking JSON: the tables below still show it
            import matplotlib.pyplot as plt

            plt.close("all")
            out.append(f"<p class='note'>(no hacking figure: {esc(type(err).__name__)}: {esc(err)})</p>")
    if isinstance(hack, dict):
        gold = hack.get("gold", "gold")
        n_eval = hack.get("n_eval_prompts", hack.get("n_prompts"))
        out.append(f"<p class='sub'>Proxy rewards against the gold reward <code>{esc(gold)}</code>: the proxy-optimal policy "
                   f"π0·exp(r̂/β)/Z judged by gold, on {esc(n_eval)} evaluation prompts. <b>gap</b> = gold frontier at the "
                   "policy's KL − its gold gain (what hacking the proxy costs).</p>")
    for png in pngs:
        out.append(f"<div class='figure'><img alt='{esc(png.stem)}' src='{_data_uri(png)}'></div>")
    if isinstance(hack, dict):
        out.append(controlled_html(hack))
        curves = [c for e in (hack.get("error_sweep") or hack.get("per_proxy") or []) for c in e.get("curve") or []]
        curves += [c for e in hack.get("ensembles") or [] for c in e.get("curve") or []]
        betas = hack.get("betas") or sorted({num(c.get("beta")) for c in curves if math.isfinite(num(c.get("beta")))}, reverse=True)
        idx = _beta_subset(betas)
        beta_head = [f"gap at β={fmt(betas[i], 2)}" for i in idx]
        if hack.get("error_sweep"):
            rows = [[f"labels {e.get('labels')}, noise {fmt(e.get('noise'))} (mean of {len(e.get('proxies') or [])})",
                     fmt(_correlation(e)), fmt((e.get("error") or {}).get("within_prompt_correlation"))] + _gap_cells(e.get("curve"), betas, idx)
                    for e in hack["error_sweep"]]
            out.append("<h3>Proxies by error</h3>" + _table(["proxy", "corr. with gold", "within-prompt corr.", *beta_head], rows,
                                                            numeric=set(range(1, 3 + len(idx)))))
        elif hack.get("per_proxy"):
            rows = [[p.get("proxy", "?"), fmt(_correlation(p))] + _gap_cells(p.get("curve"), betas, idx) for p in hack["per_proxy"]]
            out.append("<h3>Proxies</h3>" + _table(["proxy", "corr. with gold", *beta_head], rows, numeric=set(range(1, 2 + len(idx)))))
        if hack.get("ensembles"):
            out.append(_ensembles_table(hack["ensembles"], betas))
        checks = hack.get("checks") or []
        if checks:
            items = []
            for c in checks:
                v = str(c.get("verdict", ""))
                cls = "verdict-shown" if v == "shown" else "verdict-not" if v.startswith("not") else "verdict-inconclusive"
                items.append(f"<li><b>{esc(c.get('claim'))}</b>: <span class='{cls}'>{esc(v)}</span> "
                             f"<span class='note'>({esc(c.get('detail'))})</span></li>")
            out.append("<h3>Expected orderings</h3><ul>" + "".join(items) + "</ul>")
        extra = [hack.get("ci_method"), hack.get("gap_definition")] + list(hack.get("notes") or [])
        out += [f"<p class='note'>{esc(x)}</p>" for x in extra if x]
    return "".join(out)


def _completion_text(text) -> str:
    if text is None or not str(text).strip():
        return "<div class='text empty'>(empty completion)</div>"
    return f"<div class='text'>{esc(text)}</div>"


def _pretty_label(label) -> str:
    """Run-directory names such as ``ppo-beta0.1`` as a person writes them: ``PPO β=0.1``."""
    m = re.fullmatch(r"(ppo|grpo)-beta([0-9.eE+-]+)", str(label))
    return f"{m.group(1).upper()} β={m.group(2)}" if m else str(label)


def _examples_section(results: dict) -> str:
    examples = results.get("examples") or []
    if not examples:
        return ""
    out = ["<h2>Sample completions</h2><p class='sub'>The same prompt, the base model and each method side by side "
           "(reward in brackets).</p>"]
    for ex in examples:
        cards = []
        for c in ex.get("completions") or []:
            cards.append(f"<div class='card'><div class='head'>{esc(_pretty_label(c.get('label') or c.get('method')))}"
                         f"<span>r = {esc(fmt(c.get('reward')))}</span></div>{_completion_text(c.get('text'))}</div>")
        out.append(f"<div class='ex'><div class='prompt'><b>{esc(ex.get('prompt_id'))}</b> · {esc(ex.get('prompt'))}</div>"
                   f"<div class='cards'>{''.join(cards)}</div></div>")
    return "".join(out)


def _kv(d) -> str:
    if not isinstance(d, dict) or not d:
        return f"<p class='note'>{DASH}</p>"
    rows = []
    for k, v in d.items():
        if isinstance(v, (dict, list)):
            v = json.dumps(v, ensure_ascii=False, default=str)
        elif v is None or isinstance(v, float):
            v = fmt(v, 6)
        rows.append([k, ("html", f"<code>{esc(v)}</code>")])
    return _table(["key", "value"], rows)


def _run_section(results: dict) -> str:
    timings = results.get("timings") or {}
    t_rows = [[k, fmt_seconds(v)] for k, v in timings.items()]
    t_rows.append([("html", "<b>wall time</b>"), ("html", f"<b>{esc(fmt_seconds(results.get('wall_time_s')))}</b>")])
    front = results.get("frontier") or {}
    how = [front.get("estimator"), front.get("ci_method"), front.get("sqrt_bound_note")]
    return ("<h2>Run</h2><div class='cols'>"
            f"<div><h3>Config</h3>{_kv(results.get('config'))}</div>"
            f"<div><h3>Timings</h3>{_table(['stage', 'time'], t_rows, numeric={1})}"
            f"<h3>Seeds</h3>{_kv(results.get('seeds'))}<h3>Versions</h3>{_kv(results.get('versions'))}</div></div>"
            "<h3>How the frontier was computed</h3>" + "".join(f"<p class='note'>{esc(x)}</p>" for x in how if x))


def _notes_section(results: dict) -> str:
    notes = list(results.get("notes") or []) + list((results.get("frontier") or {}).get("notes") or [])
    if not notes:
        return ""
    return "<h2>Notes</h2><ul>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>"


def _training_section(run_dir: Path, results: dict) -> str:
    png = run_dir / "training.png"
    trained = [p for p in results.get("evaluate") or [] if isinstance(p, dict) and p.get("training_curve")]
    if not trained or not png.exists():
        return ""
    rule = esc((trained[0].get("convergence") or {}).get("rule", ""))
    states = "".join(f"<li>{esc(cap(method_label(p)))}: {esc(training_words(p) if 'objective' in p else _state(p))}"
                     f"{esc(_stopped(p))}.</li>" for p in trained)
    return (f"<h2>Training</h2><div class='figure'><img alt='training curves' "
            f"src='{_data_uri(png)}'></div><ul>{states}</ul><p class='note'>Each step's objective is r − b(x) − β·k1 "
            "averaged over its rollouts, b(x) the mean reward of a few base samples of the rollout's prompt, so the "
            "prompts a step draws do not move it; the line is the ceiling J*(β) = β·log E_π0 e^{(r − E r)/β} of the "
            "training prompts (jackknifed, from their few base samples; its band, approximate, resamples them), the most any policy can "
            "reach there. Each sentence gives the share of that ceiling where the curve ended, then the share on the "
            "held-out prompts, whose ceiling can differ (a policy can reach its training prompts' ceiling and not "
            f"carry it to new prompts). Rule: {rule}.</p>")


def _paths_section(run_dir: Path, results: dict) -> str:
    png = run_dir / "paths.png"
    measured = [p for p in results.get("evaluate") or [] if isinstance(p, dict) and p.get("path")]
    if not measured or not png.exists():
        return ""
    words = "".join(f"<li>{esc(cap(method_label(p)))}: {esc(path_words(p))}.</li>" for p in measured)
    return (f"<h2>Paths while training</h2><div class='figure'><img alt='gold and proxy gain along training' "
            f"src='{_data_uri(png)}'></div><ul>{words}</ul><p class='note'>Each point is the policy measured on the "
            "held-out prompts during training (a few samples each, the same seed every time); with a proxy "
            "(<code>--align-to</code>), its gain is scored on the same samples. Gold judges the point on the plane; "
            "where gold's gain turns down while the proxy's keeps rising, the trainer is over-optimising the proxy "
            "(Gao et al. 2022).</p>")


def _state(p: dict) -> str:
    """A point of a results.json written before the ceiling existed: its training state alone."""
    return p.get("training_state") or ("converged" if p.get("converged") else "not converged")


def _stopped(p: dict) -> str:
    stop = p.get("stopped") or {}
    if not stop:
        return ""
    return f" (stopped at step {stop.get('step')} after {fmt_seconds(stop.get('seconds'))}: {stop.get('reason')})"


def render_report(results: dict, run_dir, figure_png) -> str:
    """The report's HTML text (``figure_png``: the headline figure, inlined)."""
    run_dir = Path(run_dir)
    title = f"alignlimits · {results.get('task', '?')} · {results.get('model', '?')}"
    front = results.get("frontier") or {}
    sub = (f"reward <code>{esc(results.get('reward'))}</code>: {esc(results.get('reward_description'))} · preset "
           f"{esc(results.get('preset'))} · {esc(front.get('n_prompts'))} prompts, {esc(front.get('n_samples'))} base samples · "
           f"wall time {esc(fmt_seconds(results.get('wall_time_s')))}")
    figure = (f"<div class='figure'><img alt='KL–reward plane: the frontier and every method' src='{_data_uri(figure_png)}'></div>"
              if figure_png and Path(figure_png).exists() else "<p class='note'>(no figure)</p>")
    body = [
        f"<h1>{esc(title)}</h1><p class='sub'>{sub}</p>",
        figure,
        f"<p class='summary'>{esc(summary_text(results))}</p>",
        _methods_section(results),
        _training_section(run_dir, results),
        _paths_section(run_dir, results),
        _plan_section(results),
        _hacking_section(run_dir, results),
        _examples_section(results),
        _notes_section(results),
        _run_section(results),
    ]
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body><main>{''.join(body)}</main></body></html>\n")


def write_report(run_dir, results: dict) -> Path:
    """Write ``RUN_DIR/report.html`` (and the headline figure ``RUN_DIR/plane.png``); returns the HTML's path."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    png = plot_plane(results, run_dir / "plane.png")
    plot_training(results, run_dir / "training.png")
    plot_paths(results, run_dir / "paths.png")
    path = run_dir / "report.html"
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(render_report(results, run_dir, png), encoding="utf-8")
    tmp.replace(path)
    return path
