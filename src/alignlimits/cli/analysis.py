"""`alignlimits frontier | hacking | plan | example-samples`: analyses of a sample table."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from alignlimits.cli.app import app, console, json_to_stdout
from alignlimits.cli.options import parse_numbers, parse_whole
from alignlimits.errors import AlignLimitsError

SamplesArg = typer.Argument(
    ..., metavar="SAMPLES",
    help="Sample table (.parquet, .jsonl, .csv, optionally .gz), a directory of `alignlimits sample`, "
         "or a `run` directory (its base samples are used).",
)
JsonOpt = typer.Option(None, "--json", help="Also write the result as JSON here ('-' for stdout: then only the JSON "
                                            "goes to stdout, tables and messages to stderr). Default: not written.")
MinEssOpt = typer.Option(
    None, "--min-ess", show_default=False,
    help="A point is reliable when every prompt keeps at least this effective sample size. "
         "Default min(10, max(2, n // 3)) for the fewest samples n of a prompt (the rule `run` uses).",
)


def write_json(result: dict, path: Optional[Path]) -> None:
    """Strict JSON (NaN and infinities become null with a ``*_null_reason``), atomically or to stdout."""
    from alignlimits.pipeline.analysis import json_safe

    if path is None:
        return
    text = json.dumps(json_safe(result), indent=2, allow_nan=False)
    if str(path) == "-":
        sys.stdout.write(text + "\n")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    console.print(f"[dim]wrote {path}[/]")


def samples_source(path: Path) -> Path:
    """A `run` directory (it holds ``state.json``) stands for its base samples, ``RUN_DIR/base``."""
    if not (path.is_dir() and (path / "state.json").exists()):
        return path
    if not (path / "base").is_dir():
        raise AlignLimitsError(f"{path} is a `run` directory without base samples yet; finish it with `alignlimits run` first")
    console.print(f"[dim]{path} is a run directory: using its base samples, {path / 'base'}[/]")
    return path / "base"


def load(samples: Path, reward_cols: Optional[list[str]], drop_invalid: bool, resolved: bool = False):
    """Read and validate a sample table in memory (``resolved``: ``samples`` went through :func:`samples_source`)."""
    from alignlimits.samples import default_reward_column, read_table, validate

    samples = samples if resolved else samples_source(samples)
    try:
        frame = read_table(samples)
    except AlignLimitsError:
        if is_json_lines(samples):
            raise AlignLimitsError(f"{samples} holds one JSON object per line (JSON Lines), not one JSON document: "
                                   "rename it to .jsonl") from None
        raise
    cols = reward_cols or [default_reward_column(frame, str(samples))]
    return validate(frame, cols, str(samples), drop_invalid), cols


def load_for_frontier(samples: Path, reward_col: Optional[str], drop_invalid: bool, bootstrap: str, n_bootstrap: int):
    """Parquet tables (a file or a directory of parts) are streamed: the frontier is fitted chunk by chunk in
    bounded memory, with the same numbers. Other formats, column types the streamed reader does not take,
    and a bootstrap that resamples within prompts (all rewards at once; `auto` below 10 prompts) are read
    in memory. Returns the table (close it when done) and its reward column."""
    from alignlimits.samples import NotStreamable, stream_samples
    from alignlimits.theory.frontier import bootstrap_mode

    source = samples_source(samples)
    try:
        table = stream_samples(source, reward_col, drop_invalid)
    except NotStreamable:
        table = None
    if table is not None and (n_bootstrap <= 1 or bootstrap_mode(bootstrap, table.n_prompts) != "samples"):
        return table, table.reward_col
    if table is not None:
        table.close()
    table, (col,) = load(source, [reward_col] if reward_col else None, drop_invalid, resolved=True)
    return table, col


def is_json_lines(path: Path) -> bool:
    """A `.json` file whose first two lines are each a JSON object: JSON Lines under the wrong name."""
    if path.suffix.lower() != ".json" or not path.is_file():
        return False
    with open(path, encoding="utf-8", errors="replace") as fh:
        lines = [line for line in (fh.readline() for _ in range(2)) if line.strip()]
    try:
        return len(lines) == 2 and all(isinstance(json.loads(line), dict) for line in lines)
    except ValueError:
        return False


def print_notes(notes) -> None:
    for note in notes:
        console.print(f"[yellow]note:[/] {note}")


@app.command()
def frontier(
    samples: Path = SamplesArg,
    reward_col: Optional[str] = typer.Option(None, "--reward-col", help="Reward column. Default: 'reward', or the only numeric one."),
    kl: Optional[str] = typer.Option(None, "--kl", help="KL budgets in nats, comma-separated. Default: those of 0.1,0.5,1,2 the samples support reliably, plus the edge of that range."),
    bon: Optional[str] = typer.Option(None, "--bon", help="Best-of-N sizes, e.g. 1,2,4,8. Default: powers of 2 up to the samples per prompt."),
    budget: str = typer.Option("shared", "--budget", help="'shared' (one β, budget on the mean KL) or 'per-prompt'."),
    min_ess: Optional[float] = MinEssOpt,
    confidence: float = typer.Option(0.95, "--confidence", help="Confidence level of the bootstrap intervals."),
    n_bootstrap: int = typer.Option(200, "--n-bootstrap", help="Bootstrap replicates (0: no intervals)."),
    bootstrap: str = typer.Option("auto", "--bootstrap", help="Footing of the intervals: 'prompts' (resampled), 'samples' (prompts held fixed, samples resampled within each) or 'auto' (prompts when ≥ 10 prompts)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap."),
    extrapolate: bool = typer.Option(False, "--extrapolate", help="Allow budgets past the reliable range (flagged unreliable); by default they are refused or left out."),
    drop_invalid: bool = typer.Option(False, "--drop-invalid", help="Drop rows whose reward is NaN, infinite or not a number (default: refuse them)."),
    json_out: Optional[Path] = JsonOpt,
    plot: Optional[Path] = typer.Option(None, "--plot", help="Draw the frontier to this PNG. Default: no plot."),
):
    """The limit of KL-regularised alignment: best gain at each KL budget, from base-model rewards."""
    from alignlimits.pipeline.analysis import frontier_result

    json_to_stdout(json_out)
    if not 0 < confidence < 1:
        raise AlignLimitsError("--confidence must lie strictly between 0 and 1, e.g. 0.95")
    if n_bootstrap < 0:
        raise AlignLimitsError("--n-bootstrap must be 0 (no intervals) or more, e.g. 200")
    table, col = load_for_frontier(samples, reward_col, drop_invalid, bootstrap, n_bootstrap)
    try:
        result = frontier_result(
            table, col, kls=parse_numbers(kl, "--kl"), bon=parse_whole(bon, "--bon"), extrapolate=extrapolate,
            budget=budget, min_ess=min_ess, confidence=confidence, n_bootstrap=n_bootstrap, bootstrap=bootstrap,
            random_state=seed,
        )
    finally:
        getattr(table, "close", lambda: None)()
    show_frontier(result, n_bootstrap > 0)
    write_json(result, json_out)
    if plot:
        from alignlimits.report.plots import plot_frontier

        console.print(f"[dim]wrote {plot_frontier(result, plot)}[/]")


def ci_cell(value, ci, has_interval: bool) -> str:
    """The estimate with its interval; with ``--n-bootstrap 0`` there is none, and a zero-width one would mislead."""
    from alignlimits.report.terminal import fmt, fmt_ci

    return fmt_ci(value, ci) if has_interval else f"{fmt(value)} (no interval)"


def show_frontier(result: dict, has_interval: bool = True) -> None:
    """The frontier's summary line, its table, best-of-N, and every note (why budgets are missing)."""
    from alignlimits.report.terminal import fmt

    n = result["samples_per_prompt"]["min"]
    rule = f"; {result['min_ess_rule']}, here n = {n}" if result.get("min_ess_rule", "given") != "given" else ""
    console.print(
        f"[bold]{result['reward_col']}[/]: {result['n_prompts']} prompts, {result['n_samples']} samples, "
        f"base mean {fmt(result['base_reward_mean'])}; reliable up to KL {fmt(result['max_reliable_kl'])} nats "
        f"(every prompt ESS ≥ {fmt(result['min_ess'])}{rule}), attainable up to {fmt(result['max_kl'])}"
    )
    level = "95% CI" if "95%" in result["ci_method"] else "CI"
    if result["budgets"]:
        t = Table(title=f"Frontier ({result['budget']} β)")
        for h in ("KL", "β", f"gain [{level}]", "√(2σ²KL)", "reverse KL", "Jeffreys", "β·Jeffreys", "ESS min", "reliable"):
            t.add_column(h, justify="right")
        for p in result["budgets"]:
            t.add_row(fmt(p["kl"]), fmt(p["beta"]), ci_cell(p["gain"], p["gain_ci"], has_interval),
                      fmt(p["sqrt_bound"]), fmt(p["kl_reverse"]), fmt(p["jeffreys"]), fmt(p["beta"] * p["jeffreys"]),
                      fmt(p["ess_min"], 3), "yes" if p["reliable"] else "[red]no[/]")
        console.print(t)
    else:
        console.print("[yellow]no KL budget to show[/] (the notes below say why and what to change)")
    if result["bon"]:
        b = Table(title="Best-of-N")
        for h in ("N", f"gain (unbiased) [{level}]", f"gain (empirical law) [{level}]", "KL bound", "KL (empirical law) ± se"):
            b.add_column(h, justify="right")
        for r in result["bon"]:
            b.add_row(str(r["n"]), ci_cell(r["gain_unbiased"], r["gain_unbiased_ci"], has_interval),
                      ci_cell(r["gain_empirical"], r["gain_empirical_ci"], has_interval),
                      fmt(r["kl_bound"]),
                      f"{fmt(r['kl_empirical'])} ± {fmt(r['kl_empirical_se'], 2)}" if has_interval else fmt(r["kl_empirical"]))
        console.print(b)
    print_notes(result["notes"])
    intervals = result["ci_method"] if has_interval else "none (--n-bootstrap 0)"
    console.print(f"[dim]β·Jeffreys equals the gain for the exact tilt (a check of the estimate); intervals: {intervals}"
                  + ("; best-of-N's: these prompts fixed, samples resampled within each, estimate ± t·se" if has_interval else "")
                  + "[/]")


@app.command()
def hacking(
    samples: Path = SamplesArg,
    gold: str = typer.Option(..., "--gold", help="Column of the true (gold) reward."),
    proxy: list[str] = typer.Option(..., "--proxy", help="Proxy reward column; repeat for several."),
    ensemble: str = typer.Option("mean,min,uwo", "--ensemble", help="Ensemble aggregates of all proxies: mean, min, uwo (mean − λ·Var)."),
    betas: Optional[str] = typer.Option(None, "--betas", "--beta", help="β grid, comma-separated. Default: the gold frontier's β at 11 KLs from 1/64 to 0.9 of its largest (as `hack`)."),
    lam: Optional[float] = typer.Option(None, "--lambda", show_default=False, help="λ of the uncertainty-weighted ensemble mean − λ·Var. Default: 1 / the gold reward's within-prompt std (as `hack`)."),
    unbiased_var: bool = typer.Option(False, "--unbiased-var", help="Use the unbiased (n−1) variance in 'uwo'; default population."),
    drop_invalid: bool = typer.Option(False, "--drop-invalid", help="Drop rows whose rewards are NaN, infinite or not numbers (default: refuse them)."),
    json_out: Optional[Path] = JsonOpt,
    plot: Optional[Path] = typer.Option(None, "--plot", help="Draw the hacking view to this PNG. Default: no plot."),
):
    """How proxy-reward error becomes reward hacking, and what ensembles of proxies recover (on given proxy columns)."""
    from alignlimits.pipeline.analysis import hacking_result
    from alignlimits.report.terminal import fmt
    from alignlimits.theory.hacking import AGGREGATES

    json_to_stdout(json_out)
    aggregates = [a.strip() for a in ensemble.split(",") if a.strip()]
    unknown = [a for a in aggregates if a not in AGGREGATES]
    if unknown:
        raise AlignLimitsError(f"unknown --ensemble {', '.join(unknown)}; use {', '.join(AGGREGATES)}")
    table, _ = load(samples, [gold, *proxy], drop_invalid)
    result = hacking_result(table, gold, list(proxy), aggregates, parse_numbers(betas, "--betas"),
                            lam=lam, ddof=1 if unbiased_var else 0)
    for name, curve in [(p["proxy"], p["curve"]) for p in result["per_proxy"]] + [
        (f"{e['aggregate']} of {e['k']} proxies", e["curve"]) for e in result["ensembles"]
    ]:
        t = Table(title=f"{name} → gold {gold}")
        for h in ("β", "KL", "proxy gain", "gold gain", "gold frontier", "gap", "β·KL(π̂‖π)"):
            t.add_column(h, justify="right")
        for c in curve:
            t.add_row(*(fmt(c[k]) for k in ("beta", "kl", "proxy_gain", "gold_gain", "optimal_gold_gain", "gap", "objective_loss")))
        console.print(t)
    show_bon_by_proxy(result, gold)
    print_notes(result["notes"])
    console.print(f"[dim]uwo: λ = {fmt(result['uwo']['lambda'])}, {result['uwo']['variance']} variance[/]")
    write_json(result, json_out)
    if plot:
        from alignlimits.report.plots import plot_hacking

        console.print(f"[dim]wrote {plot_hacking(result, plot)}[/]")


def show_bon_by_proxy(result: dict, gold: str) -> None:
    from alignlimits.report.terminal import fmt

    rows = result["bon_by_proxy"]
    ns = list(dict.fromkeys(r["n"] for r in rows))
    t = Table(title=f"best-of-N selected by each proxy, scored by gold {gold}: gold gain")
    t.add_column("selected by")
    for n in ns:
        t.add_column(f"N={n}", justify="right")
    first = result["proxies"][0]
    t.add_row("gold (best possible)", *(fmt(r["gold_gain_by_gold"]) for r in rows if r["proxy"] == first))
    for name in result["proxies"]:
        t.add_row(name, *(fmt(r["gold_gain"]) for r in rows if r["proxy"] == name))
    console.print(t)


@app.command()
def plan(
    samples: Path = SamplesArg,
    target_gain: Optional[float] = typer.Option(None, "--target-gain", help="Reward gain you want over the base model (give this or --kl; no default)."),
    kl: Optional[float] = typer.Option(None, "--kl", help="KL budget in nats (give this or --target-gain; no default)."),
    reward_col: Optional[str] = typer.Option(None, "--reward-col", help="Reward column. Default: 'reward', or the only numeric one."),
    budget: str = typer.Option("shared", "--budget", help="'shared' (one β, budget on the mean KL) or 'per-prompt'."),
    min_ess: Optional[float] = MinEssOpt,
    extrapolate: bool = typer.Option(False, "--extrapolate", help="Answer past the reliable range (flagged unreliable) instead of refusing."),
    drop_invalid: bool = typer.Option(False, "--drop-invalid", help="Drop rows whose reward is NaN, infinite or not a number (default: refuse them)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the plan as JSON here ('-' for stdout, then tables go to stderr); written also when the question is refused, with null answers and the reason in 'refused'. Default: not written."),
):
    """Before training: the KL and β a target gain needs, or the gain a KL budget buys, and the best-of-N of each.

    Questions beyond the samples are refused (exit 2) like `frontier` refuses budgets, naming the largest
    reachable and the largest reliable gain.
    """
    from alignlimits.pipeline.analysis import plan_result

    json_to_stdout(json_out)
    table, (col,) = load(samples, [reward_col] if reward_col else None, drop_invalid)
    result = plan_result(table, col, target_gain, kl, extrapolate, budget=budget, min_ess=min_ess)
    print_notes(result["notes"])
    if result["refused"]:
        write_json(result, json_out)
        raise AlignLimitsError(result["refused"])
    show_plan(result)
    write_json(result, json_out)


def show_plan(result: dict) -> None:
    from alignlimits.report.terminal import fmt

    t = Table(title="Plan")
    t.add_column("question")
    t.add_column("answer", justify="right")
    if result["question"] == "target_gain":
        t.add_row("target gain", fmt(result["gain"]))
        t.add_row("least KL on the frontier (nats)", fmt(result["kl"]))
        t.add_row("β to set (KL penalty)", fmt(result["beta"]))
    else:
        t.add_row("KL budget (nats)", fmt(result["kl"]))
        t.add_row("frontier gain", fmt(result["gain"]))
        t.add_row("β at that budget", fmt(result["beta"]))
    t.add_row("best-of-N", str(result["bon_n"]) if result["bon_n"] else "not reachable with these samples")
    if result["bon_n"]:
        t.add_row("its gain (unbiased)", fmt(result["bon_gain"]))
        t.add_row("its KL (bound log N − (N−1)/N)", fmt(result["bon_kl_bound"]))
    t.add_row("reliable", "yes" if result["reliable"] else "[red]no[/] (extrapolated)")
    t.add_row("largest reliable gain (at KL)", f"{fmt(result['max_reliable_gain'])} (at {fmt(result['max_reliable_kl'])})")
    t.add_row("largest reachable gain", fmt(result["max_gain"]))
    console.print(t)
    n_rule = "" if result["min_ess_rule"] == "given" else f" ({result['min_ess_rule']})"
    console.print(f"[dim]reliable: every prompt keeps ESS ≥ {fmt(result['min_ess'])}{n_rule}[/]")


@app.command("example-samples")
def example_samples(
    out: Path = typer.Argument(..., help="Directory to write gaussian.parquet and bernoulli.parquet into."),
    prompts: int = typer.Option(64, "--prompts", help="Prompts per file."),
    n: int = typer.Option(256, "--n", help="Samples per prompt."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
):
    """Write synthetic sample tables whose frontier is known, to try the commands on.

    gaussian.parquet: per prompt p, reward ~ N(μ_p, σ_p²), so its frontier at budget KL is
    σ_p·√(2·KL) (per-prompt budget; the shared-β curve averages these with one β), plus noisy
    proxies proxy_1..4 = reward + N(0, 1) for `alignlimits hacking`. bernoulli.parquet: reward ~
    Bernoulli(q_p), frontier max{q − q_p : kl(q‖q_p) ≤ KL}.
    """
    from alignlimits.pipeline.examples import write_example_samples

    for path in write_example_samples(out, prompts, n, seed):
        console.print(f"wrote {path}")
    console.print("[dim]known frontiers: gaussian σ_p·√(2·KL) per prompt (Gaussian rewards); "
                  "bernoulli max{q − q_p : kl(q‖q_p) ≤ KL}[/]")
