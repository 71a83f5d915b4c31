"""`alignlimits frontier | hacking | plan | example-samples`: analyses of a sample table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from alignlimits.cli.app import app, console
from alignlimits.cli.options import parse_numbers, parse_whole
from alignlimits.data import default_reward_column, read_table, validate
from alignlimits.errors import AlignLimitsError
from alignlimits.report.terminal import fmt, fmt_ci


SamplesArg = typer.Argument(..., help="Sample table (.parquet, .jsonl, .csv, optionally .gz) or a run directory.")


def write_json(result: dict, path: Optional[Path]) -> None:
    if path is None:
        return
    if str(path) == "-":
        print(json.dumps(result, indent=2))
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(path)
    console.print(f"[dim]wrote {path}[/]")


def load(samples: Path, reward_cols: Optional[list[str]], drop_invalid: bool):
    frame = read_table(samples)
    cols = reward_cols or [default_reward_column(frame, str(samples))]
    table = validate(frame, cols, str(samples), drop_invalid)
    for note in table.notes:
        console.print(f"[yellow]note:[/] {note}")
    return table, cols


@app.command()
def frontier(
    samples: Path = SamplesArg,
    reward_col: Optional[str] = typer.Option(None, "--reward-col", help="Reward column (default: 'reward', or the only numeric one)."),
    kl: Optional[str] = typer.Option(None, "--kl", help="KL budgets in nats, comma-separated (default 0.1,0.5,1,2, those the samples support)."),
    bon: Optional[str] = typer.Option(None, "--bon", help="Best-of-N sizes, e.g. 1,2,4,8 (default: powers of 2 up to n)."),
    budget: str = typer.Option("shared", help="'shared' (one β, budget on the mean KL) or 'per-prompt'."),
    min_ess: float = typer.Option(10.0, "--min-ess", help="Points whose smallest per-prompt ESS is below this are unreliable."),
    confidence: float = typer.Option(0.95, help="Confidence level of the bootstrap intervals."),
    n_bootstrap: int = typer.Option(200, "--n-bootstrap", help="Bootstrap replicates."),
    bootstrap: str = typer.Option("auto", help="'prompts', 'prompts+samples' or 'auto' (prompts when ≥ 30 prompts)."),
    seed: int = typer.Option(0, help="Seed of the bootstrap."),
    extrapolate: bool = typer.Option(False, "--extrapolate", help="Allow budgets past the reliable range (flagged unreliable)."),
    drop_invalid: bool = typer.Option(False, "--drop-invalid", help="Drop rows whose reward is NaN, infinite or not a number."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the frontier JSON here ('-' for stdout)."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Draw the frontier to this PNG."),
):
    """The limit of KL-regularised alignment: best gain at each KL budget, from base-model rewards."""
    from alignlimits.pipeline.analysis import frontier_result

    if not 0 < confidence < 1:
        raise AlignLimitsError("--confidence must lie strictly between 0 and 1, e.g. 0.95")
    table, (col,) = load(samples, [reward_col] if reward_col else None, drop_invalid)
    result = frontier_result(
        table, col, kls=parse_numbers(kl, "--kl"), bon=parse_whole(bon, "--bon"), extrapolate=extrapolate,
        budget=budget, min_ess=min_ess, confidence=confidence, n_bootstrap=n_bootstrap, bootstrap=bootstrap,
        random_state=seed,
    )
    show_frontier(result)
    write_json(result, json_out)
    if plot:
        from alignlimits.report.plots import plot_frontier

        console.print(f"[dim]wrote {plot_frontier(result, plot)}[/]")


def show_frontier(result: dict) -> None:
    console.print(
        f"[bold]{result['reward_col']}[/]: {result['n_prompts']} prompts, {result['n_samples']} samples, "
        f"base mean {fmt(result['base_reward_mean'])}; reliable up to KL {fmt(result['max_reliable_kl'])} nats "
        f"(every prompt ESS ≥ {fmt(result['min_ess'])}), attainable up to {fmt(result['max_kl'])}"
    )
    t = Table(title=f"Frontier ({result['budget']} β)")
    for h in ("KL", "β", "gain", "95% CI" if "95%" in result["ci_method"] else "CI", "√(2σ²KL)", "J·β check", "ESS min", "reliable"):
        t.add_column(h, justify="right")
    for p in result["budgets"]:
        t.add_row(fmt(p["kl"]), fmt(p["beta"]), fmt(p["gain"]), f"[{fmt(p['gain_ci'][0])}, {fmt(p['gain_ci'][1])}]",
                  fmt(p["sqrt_bound"]), fmt(p["beta"] * p["jeffreys"]), fmt(p["ess_min"], 3),
                  "yes" if p["reliable"] else "[red]no[/]")
    console.print(t)
    if result["bon"]:
        b = Table(title="Best-of-N")
        for h in ("N", "gain (unbiased) [95% CI]", "gain (empirical law) [95% CI]", "KL bound", "KL (empirical law) ± se"):
            b.add_column(h, justify="right")
        for r in result["bon"]:
            b.add_row(str(r["n"]), fmt_ci(r["gain_unbiased"], r["gain_unbiased_ci"]),
                      fmt_ci(r["gain_empirical"], r["gain_empirical_ci"]),
                      fmt(r["kl_bound"]), f"{fmt(r['kl_empirical'])} ± {fmt(r['kl_empirical_se'], 2)}")
        console.print(b)
    console.print(f"[dim]intervals: {result['ci_method']}; best-of-N's: these prompts fixed, samples resampled "
                  "within each, estimate ± t·se[/]")


@app.command()
def hacking(
    samples: Path = SamplesArg,
    gold: str = typer.Option(..., "--gold", help="Column of the true (gold) reward."),
    proxy: list[str] = typer.Option(..., "--proxy", help="Proxy reward column; repeat for several."),
    ensemble: str = typer.Option("mean,min,uwo", "--ensemble", help="Ensemble aggregates of all proxies: mean, min, uwo."),
    beta: Optional[str] = typer.Option(None, "--beta", help="β grid (default: 3× to 1/30 of the gold reward's std)."),
    lam: float = typer.Option(1.0, "--lambda", help="λ of the uncertainty-weighted ensemble mean − λ·Var."),
    unbiased_var: bool = typer.Option(False, "--unbiased-var", help="Use the unbiased (n−1) variance in 'uwo'; default population."),
    drop_invalid: bool = typer.Option(False, "--drop-invalid"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the hacking JSON here ('-' for stdout)."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Draw the hacking view to this PNG."),
):
    """How proxy-reward error becomes reward hacking, and what ensembles of proxies recover."""
    from alignlimits.pipeline.analysis import hacking_result
    from alignlimits.theory.hacking import AGGREGATES

    aggregates = [a.strip() for a in ensemble.split(",") if a.strip()]
    unknown = [a for a in aggregates if a not in AGGREGATES]
    if unknown:
        raise AlignLimitsError(f"unknown --ensemble {', '.join(unknown)}; use {', '.join(AGGREGATES)}")
    table, _ = load(samples, [gold, *proxy], drop_invalid)
    result = hacking_result(table, gold, list(proxy), aggregates, parse_numbers(beta, "--beta"),
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
    write_json(result, json_out)
    if plot:
        from alignlimits.report.plots import plot_hacking

        console.print(f"[dim]wrote {plot_hacking(result, plot)}[/]")


@app.command()
def plan(
    samples: Path = SamplesArg,
    target_gain: Optional[float] = typer.Option(None, "--target-gain", help="Reward gain you want over the base model."),
    kl: Optional[float] = typer.Option(None, "--kl", help="KL budget in nats."),
    reward_col: Optional[str] = typer.Option(None, "--reward-col"),
    budget: str = typer.Option("shared", help="'shared' or 'per-prompt'."),
    min_ess: float = typer.Option(10.0, "--min-ess"),
    extrapolate: bool = typer.Option(False, "--extrapolate"),
    drop_invalid: bool = typer.Option(False, "--drop-invalid"),
    json_out: Optional[Path] = typer.Option(None, "--json"),
):
    """Before training: the KL and β a target gain needs, or the gain a KL budget buys, and the best-of-N of each."""
    from alignlimits.pipeline.analysis import plan_result

    table, (col,) = load(samples, [reward_col] if reward_col else None, drop_invalid)
    result = plan_result(table, col, target_gain, kl, extrapolate, budget=budget, min_ess=min_ess)
    t = Table(title="Plan")
    t.add_column("question")
    t.add_column("answer", justify="right")
    if result["question"] == "target_gain":
        t.add_row("target gain", fmt(result["gain"]))
        t.add_row("least KL on the frontier (nats)", fmt(result["kl"]))
        t.add_row("β to set (KL penalty)", fmt(result["beta"]) if result["beta"] else "—")
    else:
        t.add_row("KL budget (nats)", fmt(result["kl"]))
        t.add_row("frontier gain", fmt(result["gain"]))
        t.add_row("β at that budget", fmt(result["beta"]))
    t.add_row("best-of-N", str(result["bon_n"]) if result["bon_n"] else "not reachable with these samples")
    if result["bon_n"]:
        t.add_row("its gain (unbiased)", fmt(result["bon_gain"]))
        t.add_row("its KL (bound log N − (N−1)/N)", fmt(result["bon_kl_bound"]))
    t.add_row("reliable", "yes" if result["reliable"] else f"[red]no[/] (reliable up to KL {fmt(result['max_reliable_kl'])})")
    console.print(t)
    write_json(result, json_out)


@app.command("example-samples")
def example_samples(
    out: Path = typer.Argument(..., help="Directory to write gaussian.parquet and bernoulli.parquet into."),
    prompts: int = typer.Option(64, help="Prompts per file."),
    n: int = typer.Option(256, help="Samples per prompt."),
    seed: int = typer.Option(0),
):
    """Write synthetic sample tables whose frontier is known (Gaussian and Bernoulli rewards, plus a noisy proxy)."""
    from alignlimits.pipeline.examples import write_example_samples

    for path in write_example_samples(out, prompts, n, seed):
        console.print(f"wrote {path}")
