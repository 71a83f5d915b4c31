"""The headline table of a run in the terminal (rich), and the number formatting the report shares.

Every formatter takes whatever ``results.json`` holds (floats, ``None``, NaN, ±inf) and returns a
string: NaN and ``None`` print as "—", infinities as "∞" / "−∞", negative numbers with a real minus.
"""

from __future__ import annotations

import math

from alignlimits.report.plane import method_label, num

DASH = "—"
#: the headline table's columns: (key of :func:`headline_rows`, title, right-aligned)
COLUMNS = [
    ("method", "method", False),
    ("kl", "KL ± se [nats]", True),
    ("kl_k3", "KL k3", True),
    ("gain", "gain [95% CI]", True),
    ("optimal", "optimal gain at its KL", True),
    ("efficiency", "efficiency", True),
    ("overspend", "KL overspend", True),
    ("share", "share of J*(β)", True),
    ("reliable", "reliable", False),
]


#: the terminal's shorter version (it fits 80 columns): each point's verdict against the frontier in a word,
#: said in full with the optimal gain and the KL overspend in one line per point below the table
TERMINAL_COLUMNS = [
    ("method", "method", False),
    ("kl", "KL ± se", True),
    ("gain", "gain [95% CI]", True),
    ("efficiency_ci", "eff. [95% CI]", True),
    ("share", "J/J* [95% CI]", True),
    ("verdict", "verdict", False),
]
#: the verdicts of DESIGN §6 in a table cell
SHORT_VERDICT = {
    "below the frontier": "[red]below[/]",
    "on the frontier": "[green]on[/]",
    "above the frontier (check its KL)": "[yellow]above?[/]",
    "no verdict (past the frontier's reach)": "past reach",
}


def fmt(x, digits: int = 3) -> str:
    """A number with ``digits`` significant digits."""
    v = num(x)
    if math.isnan(v):
        return DASH
    if math.isinf(v):
        return "∞" if v > 0 else "−∞"
    if abs(v) < 1e-12:
        return "0"
    s = f"{v:.{digits}g}"
    if "e" in s:
        mant, exp = s.split("e")
        s = f"{mant}·10^{int(exp)}"
    return s.replace("-", "−")


def fmt_pm(x, se, digits: int = 3) -> str:
    v, e = num(x), num(se)
    if math.isfinite(e) and e > 0 and math.isfinite(v):
        return f"{fmt(v, digits)} ± {fmt(e, 2)}"
    return fmt(v, digits)


def fmt_ci(x, ci, digits: int = 3) -> str:
    ci = ci if isinstance(ci, (list, tuple)) and len(ci) == 2 else (None, None)
    if all(math.isnan(num(c)) for c in ci) or (num(ci[0]) == num(ci[1]) == num(x)):
        return fmt(x, digits)  # no interval, or an exact value
    return f"{fmt(x, digits)} [{fmt(ci[0], digits)}, {fmt(ci[1], digits)}]"


def fmt_pct(x, decimals: int = 0) -> str:
    v = num(x)
    if not math.isfinite(v):
        return fmt(v)
    return f"{100 * v:.{decimals}f}%".replace("-", "−")


def _interval(ci) -> tuple[float, float] | None:
    """``ci`` as (lo, hi) when it is a finite interval of some width; None without one, or for an exact value."""
    ci = ci if isinstance(ci, (list, tuple)) and len(ci) == 2 else (None, None)
    lo, hi = num(ci[0]), num(ci[1])
    return (lo, hi) if math.isfinite(lo) and math.isfinite(hi) and lo != hi else None


def pct_decimals(ci) -> int:
    """The decimals (up to 2) a share needs beside its interval ``ci``: until the interval does not collapse
    and a share under 100% does not read 100% ("99.91% [99.89%, 99.93%]", not "100% [100%, 100%]" beside a
    verdict of "below"); 0 without a finite interval or for an exact value."""
    if (interval := _interval(ci)) is None:
        return 0
    (lo, hi), d = interval, 0
    while d < 2 and (round(100 * lo, d) == round(100 * hi, d) or (hi < 1 and round(100 * hi, d) >= 100)):
        d += 1
    return d


def fmt_pct_ci(x, ci, unbounded: bool = False) -> str:
    """A share with its interval, "57% [−16%, 130%]", with the decimals :func:`pct_decimals` asks for; the share
    alone when there is no finite interval, or it is exact; "57% [unbounded]" when ``ci`` is None because the set
    is unbounded (``unbounded``)."""
    if (interval := _interval(ci)) is None:
        return fmt_pct(x) + (" [unbounded]" if ci is None and unbounded else "")
    (lo, hi), d = interval, pct_decimals(ci)
    return f"{fmt_pct(x, d)} [{fmt_pct(lo, d)}, {fmt_pct(hi, d)}]"


def fmt_times(x) -> str:
    """A ratio such as the KL overspend: "3.2×"."""
    v = num(x)
    if not math.isfinite(v):
        return fmt(v)
    return f"{fmt(v, 2)}×"


def fmt_seconds(x) -> str:
    v = num(x)
    if not math.isfinite(v):
        return fmt(v)
    if v < 60:
        return f"{v:.1f} s"
    m, s = divmod(round(v), 60)
    return f"{m} min {s:02d} s" if m < 60 else f"{m // 60} h {m % 60:02d} min"


def headline_rows(results: dict) -> list[dict]:
    """One row of formatted strings per evaluated policy (keys of :data:`COLUMNS`, plus the raw point)."""
    rows = []
    for p in results.get("evaluate") or []:
        rel = p.get("reliable")
        rows.append({
            "method": method_label(p),
            "kl": fmt_pm(p.get("kl"), p.get("kl_se")),
            "kl_k3": fmt_pm(p.get("kl_k3"), p.get("kl_k3_se")),
            "gain": fmt_ci(p.get("gain"), p.get("gain_ci")),
            "optimal": fmt(p.get("optimal_gain_at_kl")),
            "efficiency": fmt_pct(p.get("efficiency"), pct_decimals(p.get("efficiency_ci"))),
            "efficiency_ci": fmt_pct_ci(p.get("efficiency"), p.get("efficiency_ci"), _unbounded(p)),
            "overspend": fmt_times(p.get("kl_overspend")),
            "share": fmt_pct_ci(p["objective_share"], p.get("objective_share_ci")) if "objective_share" in p else DASH,
            "verdict": SHORT_VERDICT.get(p.get("verdict"), DASH),
            "reliable": DASH if rel is None else ("yes" if rel else "no"),
            "point": p,
        })
    return rows


def _unbounded(p: dict) -> bool:
    """The efficiency's Fieller set is unbounded (the frontier's gain at the point's KL is not resolved from 0)."""
    return str(p.get("efficiency_ci_note") or "").startswith("unbounded")


#: ``judged_against`` in words
JUDGES = {"exact": "the exact frontier", "bias-corrected": "the bias-corrected frontier", "plain": "the plain frontier"}


def cap(s: str) -> str:
    return s[:1].upper() + s[1:] if s[:1].islower() else s


def verdict_sentence(p: dict, overspend: bool = True) -> str:
    """One method in words, true to its 95% intervals: the verdict first, then the numbers behind it (the
    terminal's lines and the report's summary)."""
    name = cap(method_label(p))
    gain, eff, kl = num(p.get("gain")), num(p.get("efficiency")), num(p.get("kl"))
    if not math.isfinite(gain):
        return f"{name} has no measured gain."
    numbers = f"gain {fmt_ci(gain, p.get('gain_ci'))} at KL {fmt(kl)} nats"
    if math.isfinite(eff):
        numbers += f"; {fmt_pct_ci(eff, p.get('efficiency_ci'), _unbounded(p))} of the optimal gain at its KL"
        if p.get("judged_against") in JUDGES:
            numbers += f", against {JUDGES[p['judged_against']]}"
    verdict = p.get("verdict") or ""
    if p.get("null_reason"):  # past the frontier's reach
        s = (f"{name} is below the frontier at 95%: below even a lower bound on it ({numbers}); "
             if verdict == "below the frontier" else f"{name} gets no verdict ({numbers}): ") + str(p["null_reason"])
    elif verdict == "below the frontier":
        s = f"{name} is below the frontier at 95% ({numbers})"
    elif verdict == "on the frontier":
        s = f"{name} cannot be told apart from the frontier at 95% ({numbers})"
        if undecided(p):
            s += ", and its gain cannot be told apart from zero either: this point decides nothing"
    elif verdict.startswith("no verdict"):
        s = f"{name} gets no verdict: its interval against the frontier is undefined here ({numbers})"
    elif verdict:
        s = (f"{name} lies above the frontier it is judged against ({numbers}): no policy beats the optimum at its KL, "
             "so check that KL first (sequence log-probs of both models at the same precision, on the policy's own "
             "samples, with none truncated or mis-scored); an underestimated KL puts a point left of where it is")
    else:  # results written before verdicts existed
        s = f"{name}: {numbers}"
    if p.get("above_frontier"):
        s += "; its gain exceeds the most the frontier reaches from these base samples, so its KL overspend is undefined"
    elif overspend and num(p.get("kl_overspend")) >= 1.05:
        s += f"; it spends {fmt_times(p['kl_overspend'])} the KL the frontier needs for its gain"
    if "objective" in p:
        s += "; " + training_words(p)
    if p.get("path"):
        s += "; " + path_words(p)
    return s + "."


def training_words(p: dict) -> str:
    """How far a point at β got toward its own optimum π_β, in words that separate a method from its budget: on the
    prompts it trained on (where its curve ended), then on the held-out prompts (what the plane shows)."""
    objective = fmt_ci(p["objective"], p.get("objective_ci"))
    held = (f"{fmt_pct_ci(p.get('objective_share'), p.get('objective_share_ci'))} of its ceiling "
            f"(J*(β) = {fmt(p.get('objective_optimal'))}), {fmt(p.get('kl_to_target'), 2)} nats from π_β")
    state = p.get("training_state")
    budget = " at its time budget" if (p.get("stopped") or {}).get("reason") == "time budget" else ""
    end = p.get("training_share") or {}
    trained = (f"{fmt_pct_ci(end['share'], end.get('share_ci'))} of its training prompts' ceiling"
               if math.isfinite(num(end.get("share"))) else None)
    if num((p.get("objective_ci") or [None, None])[1]) < 0:
        s = (f"it made its objective E r − β·KL worse than the base model on held-out prompts (objective {objective}, "
             f"ceiling J*(β) = {fmt(p.get('objective_optimal'))}")
        if trained and num((end.get("share_ci") or [None])[0]) > 0:
            return s + f"), though it ended at {trained}: it learned the prompts it trained on and did not carry that to new ones"
        ended = f"; it ended at {trained}" if trained else ""
        return s + ended + "; the point measures this training budget, not the method)"
    if not trained:
        words = {"converged": f"converged{budget} at {held}", "learning": f"learning, not converged{budget}: {held} so far",
                 "undetermined": f"{held}; its training curve is too noisy to tell whether it converged{budget}"}
        return words.get(state, held)
    if state == "converged":
        return f"converged{budget} at {trained}; on held-out prompts {held}"
    if state == "learning":
        return f"learning, not converged{budget}: {trained} so far; on held-out prompts {held}"
    return (f"{trained} where it stopped, though its training curve is too noisy to tell whether it converged{budget}; "
            f"on held-out prompts {held}")


def path_words(p: dict) -> str:
    """A policy measured as it trained: where gold's gain peaked and ended, and the proxy's beside it."""
    path = p.get("path") or {}
    if not path:
        return ""
    rows = path.get("path") or []
    s = (f"measured as it trained, its gold gain peaked at {fmt(path.get('peak_gain'))} (step {path.get('peak_step')}, "
         f"KL {fmt(path.get('peak_kl'))}) and ended at {fmt(path.get('last_gain'))}")
    if path.get("proxy") and rows:
        at_peak = next((r for r in rows if r.get("step") == path.get("peak_step")), rows[-1])
        s += f" while its proxy gain went from {fmt(at_peak.get('proxy_gain'))} to {fmt(rows[-1].get('proxy_gain'))}"
    if path.get("turned_down"):
        return s + (f": over-optimisation, gold fell {fmt(path.get('drop'))} ± {fmt(1.96 * num(path.get('drop_se')))} "
                    "while the proxy it was trained on kept rising")
    return s + ": gold did not turn down at 95% along this path"


def undecided(p: dict) -> bool:
    """On the frontier only because the interval is wide: the gain's interval holds zero as well."""
    return p.get("verdict") == "on the frontier" and num((p.get("gain_ci") or [None])[0]) <= 0


def is_law(p: dict) -> bool:
    """Best-of-N or soft best-of-N: a law computed on the base samples, not a policy that was sampled."""
    return p.get("method") in ("bon", "soft-bon")


def short_rows(results: dict) -> list[dict]:
    """The terminal table's rows: trained and external policies first, then best-of-N, then soft best-of-N at its
    largest N for each β (the report lists every point)."""
    rows = headline_rows(results)
    trained = [r for r in rows if not is_law(r["point"])]
    bon = [r for r in rows if r["point"].get("method") == "bon"]
    largest = {}
    for r in rows:
        p = r["point"]
        kept = largest.get(p.get("beta"))
        if p.get("method") == "soft-bon" and (kept is None or num(p.get("n")) > num(kept["point"].get("n"))):
            largest[p.get("beta")] = r
    return trained + bon + list(largest.values())


def print_headline(results: dict, console=None) -> None:
    """Print each policy's verdict in a sentence, then the headline table (the run's last lines)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    front = results.get("frontier") or {}
    rows = short_rows(results)
    title = f"{results.get('task', '?')} · {results.get('model', '?')} · reward {results.get('reward', '?')}"
    if not rows:
        console.print(f"[bold]{title}[/]: no evaluated methods in this run")
        return
    for row in rows:
        if not is_law(row["point"]) and row["point"].get("verdict"):
            console.print(verdict_sentence(row["point"]))
    _print_footnote(console, front, rows)
    table = Table(title=title, title_justify="left", header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False)
    for key, name, right in TERMINAL_COLUMNS:
        # numbers never wrap or get cut; on a narrow terminal the method's name wraps instead
        table.add_column(name, justify="right" if right else "left", no_wrap=key != "method", overflow="fold")
    last_group = None
    for row in rows:
        group = row["point"]["method"] if is_law(row["point"]) else "trained"
        if last_group is not None and group != last_group:
            table.add_section()
        last_group = group
        table.add_row(*_cells(row).values())
    console.print(table)


def _cells(row: dict) -> dict:
    eff = num(row["point"].get("efficiency"))
    style = "green" if eff >= 0.9 else "yellow" if eff >= 0.6 else "red" if math.isfinite(eff) else ""
    cells = {k: row[k] for k, _, _ in TERMINAL_COLUMNS}
    if style:
        cells["efficiency_ci"] = f"[{style}]{row['efficiency_ci']}[/]"
    if undecided(row["point"]):
        cells["verdict"] = "undecided"
    if row["point"].get("reliable") is False:
        cells["kl"] += " *"
    return cells


def _print_footnote(console, front: dict, rows: list[dict]) -> None:
    console.print(
        ("* beyond the frontier's reliable KL range (few effective samples): its optimal gain is approximate. " if any(
            r["point"].get("reliable") is False for r in rows) else "") +
        f"KL in nats; eff. (efficiency) = gain / the frontier's gain at the method's KL (its optimal gain); "
        f"undecided = on the frontier only because the gain's interval also holds 0. Frontier from "
        f"{front.get('n_samples', '?')} base samples of {front.get('n_prompts', '?')} prompts, reliable up to KL "
        f"{fmt(front.get('max_reliable_kl'))} nats (base mean reward {fmt(front.get('base_reward_mean'))}); every "
        "point with its KL overspend: results.json and report.html.",
        style="dim",
    )
