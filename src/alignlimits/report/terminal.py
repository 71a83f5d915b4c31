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
    ("reliable", "reliable", False),
]


#: the terminal's shorter version (it fits 80 columns): each point's verdict against the frontier in a word,
#: said in full with the optimal gain and the KL overspend in one line per point below the table
TERMINAL_COLUMNS = [
    ("method", "method", False),
    ("kl", "KL ± se", True),
    ("gain", "gain [95% CI]", True),
    ("efficiency_ci", "eff. [95% CI]", True),
    ("verdict", "verdict", False),
]
#: the verdicts of DESIGN §6 in a table cell
SHORT_VERDICT = {
    "below the frontier": "[red]below[/]",
    "on the frontier": "[green]on[/]",
    "above the frontier (estimate biased?)": "[yellow]above?[/]",
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


def fmt_pct(x) -> str:
    v = num(x)
    if not math.isfinite(v):
        return fmt(v)
    return f"{100 * v:.0f}%".replace("-", "−")


def fmt_pct_ci(x, ci) -> str:
    """A share with its interval, "57% [−16%, 130%]"; the share alone when there is no finite interval."""
    ci = ci if isinstance(ci, (list, tuple)) and len(ci) == 2 else (None, None)
    if not all(math.isfinite(num(c)) for c in ci):
        return fmt_pct(x)
    return f"{fmt_pct(x)} [{fmt_pct(ci[0])}, {fmt_pct(ci[1])}]"


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
            "efficiency": fmt_pct(p.get("efficiency")),
            "efficiency_ci": fmt_pct_ci(p.get("efficiency"), p.get("efficiency_ci")),
            "overspend": fmt_times(p.get("kl_overspend")),
            "verdict": SHORT_VERDICT.get(p.get("verdict"), DASH),
            "reliable": DASH if rel is None else ("yes" if rel else "no"),
            "point": p,
        })
    return rows


def print_headline(results: dict, console=None) -> None:
    """Print the run's headline table (every evaluated method against the frontier) with rich."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    front = results.get("frontier") or {}
    title = f"{results.get('task', '?')} · {results.get('model', '?')} · reward {results.get('reward', '?')}"
    from rich import box

    table = Table(title=title, title_justify="left", header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False)
    for key, name, right in TERMINAL_COLUMNS:
        # numbers never wrap or get cut; on a narrow terminal the method's name wraps instead
        table.add_column(name, justify="right" if right else "left", no_wrap=key != "method", overflow="fold")
    # trained policies first: they are what the run is about
    rows = sorted(headline_rows(results), key=lambda r: r["point"].get("method") in ("bon", "soft-bon"))
    last_group = None
    for row in rows:
        group = row["point"].get("method") if row["point"].get("method") in ("bon", "soft-bon") else "trained"
        if last_group is not None and group != last_group and hasattr(table, "add_section"):
            table.add_section()
        last_group = group
        eff = num(row["point"].get("efficiency"))
        style = "green" if eff >= 0.9 else "yellow" if eff >= 0.6 else "red" if math.isfinite(eff) else ""
        cells = {k: row[k] for k, _, _ in TERMINAL_COLUMNS}
        if style:
            cells["efficiency_ci"] = f"[{style}]{row['efficiency_ci']}[/]"
        if row["point"].get("reliable") is False:
            cells["kl"] += " *"
        table.add_row(*cells.values())
    if rows:
        console.print(table)
        for line in verdict_lines(rows):
            console.print(line)
    else:
        console.print(f"[bold]{title}[/]: no evaluated methods in this run")
    max_rel = front.get("max_reliable_kl")
    console.print(
        ("* beyond the frontier's reliable KL range (few effective samples): its optimal gain is approximate. " if any(
            r["point"].get("reliable") is False for r in rows) else "") +
        f"KL in nats; eff. (efficiency) = gain / the frontier's gain at the method's KL (its optimal gain); KL overspend "
        f"(results.json, report) = its KL / the KL the frontier needs for its gain. Frontier from {front.get('n_samples', '?')} base samples of {front.get('n_prompts', '?')} prompts, "
        f"reliable up to KL {fmt(max_rel)} nats (base mean reward {fmt(front.get('base_reward_mean'))}).",
        style="dim",
    )


def verdict_lines(rows: list[dict]) -> list[str]:
    """One sentence per point that has a verdict: where it sits against the frontier, and by how much."""
    lines = []
    for row in rows:
        p = row["point"]
        if not p.get("verdict"):
            continue  # results.json of an older version: no verdict to state
        gap = fmt_ci(p.get("gain_gap"), p.get("gain_gap_ci"))
        spend = "none: it beats the frontier's" if p.get("above_frontier") else row["overspend"]
        lines.append(f"{row['method']}: {p['verdict']} at 95% (the frontier's gain at its KL {row['optimal']}, gain − that "
                     f"{gap}; efficiency {row['efficiency_ci']}; KL overspend {spend})")
    return lines
