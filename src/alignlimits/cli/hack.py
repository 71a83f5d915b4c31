"""`alignlimits hack RUN_DIR`: the reward-hacking study on a run's base samples."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from alignlimits.cli.app import app, console, json_to_stdout
from alignlimits.cli.options import parse_numbers, parse_whole
from alignlimits.errors import AlignLimitsError


def ci(row: dict, key: str, digits: int = 2) -> str:
    from alignlimits.report.terminal import fmt_ci

    return fmt_ci(row[key], row[key + "_ci"], digits)


def print_result(result: dict) -> None:
    from alignlimits.report.hacking_plots import reference_beta_index
    from alignlimits.report.terminal import fmt

    betas = result["betas"]
    j = reference_beta_index(result)
    shown = sorted(set([0, len(betas) // 4, j, 3 * len(betas) // 4, len(betas) - 1]))
    console.print(
        f"[bold]reward hacking[/] gold = {result['gold']}: {result['n_train_prompts']} training prompts (labels), "
        f"{result['n_eval_prompts']} evaluation prompts ({result['n_eval_samples']} samples); {result['features_detail']}"
    )
    if result["error_sweep"]:
        t = Table(title="proxy error sweep (average over seeds): held-out error and gap [95% CI] by β")
        for h in ("labels", "noise", "n labels", "corr (within prompt)", "RMSE (within)"):
            t.add_column(h, justify="right")
        for b in shown:
            t.add_column(f"gap β={betas[b]:.3g}", justify="right")
        for s in result["error_sweep"]:
            e = s["error"]
            t.add_row(s["labels"], fmt(s["noise"]), str(s["n_labels"]), fmt(e["within_prompt_correlation"]), fmt(e["within_prompt_rmse"]),
                      *(ci(s["curve"][b], "gap") for b in shown))
        console.print(t)
    else:
        t = Table(title="given proxies: held-out error and gap [95% CI] by β")
        for h in ("proxy", "corr (within prompt)"):
            t.add_column(h, justify="right")
        for b in shown:
            t.add_column(f"gap β={betas[b]:.3g}", justify="right")
        for p in result["per_proxy"]:
            t.add_row(p["proxy"], fmt(p["heldout_within_prompt_correlation"]), *(ci(p["curve"][b], "gap") for b in shown))
        console.print(t)
    if result["ensembles"]:
        t = Table(title=f"ensembles: gap at β = {betas[j]:.3g} [95% CI] by K (K = 1: the average single proxy)")
        t.add_column("members")
        t.add_column("aggregate")
        ks = sorted(set(e["k"] for e in result["ensembles"]))
        for k in ks:
            t.add_column(f"K={k}", justify="right")
        for kind in dict.fromkeys(e["members"] for e in result["ensembles"]):
            for agg in dict.fromkeys(e["aggregate"] for e in result["ensembles"]):
                by_k = {e["k"]: e for e in result["ensembles"] if e["members"] == kind and e["aggregate"] == agg}
                t.add_row(kind, agg, *(ci(by_k[k]["curve"][j], "gap") if k in by_k else "—" for k in ks))
        console.print(t)
        t = Table(title="best-of-N selected by proxy, scored by gold: gold gain [95% CI]")
        t.add_column("proxy")
        ns = result["bon_n"]
        for n in ns:
            t.add_column(f"N={n}", justify="right")
        rows = [("selected by gold", None)] + [
            (f"{'single (average)' if e['k'] == 1 else 'mean of ' + str(e['k'])}, {e['members']}", e) for e in result["ensembles"]
            if e["aggregate"] == "mean" and e["k"] in (1, 4)
        ]
        for name, e in rows:
            if e is None:
                first = result["ensembles"][0]["bon"]
                t.add_row(name, *(fmt(r["gold_gain_by_gold"]) for r in first))
            else:
                t.add_row(name, *(ci(r, "gold_gain") for r in e["bon"]))
        console.print(t)
    t = Table(title="expected orderings")
    t.add_column("claim")
    t.add_column("verdict")
    t.add_column("detail")
    colour = {"shown": "green", "inconclusive": "yellow", "not shown": "red"}
    for c in result["checks"]:
        t.add_row(c["claim"], f"[{colour[c['verdict']]}]{c['verdict']}[/]", c["detail"])
    console.print(t)
    for note in result["notes"]:
        console.print(f"[yellow]note:[/] {note}")
    console.print(f"[dim]{result['ci_method']}; wall time {result['wall_time_s']:.1f} s[/]")


@app.command("hack")
def hack(
    run_dir: Path = typer.Argument(..., help="Directory of `alignlimits sample`, a `run` directory (its base samples are used), or a sample table with prompt and completion columns."),
    gold: Optional[str] = typer.Option(None, "--gold", help="Gold reward column (default: the run's only reward column)."),
    features: str = typer.Option("ngram", "--features", help="Proxy features: ngram (hashed n-grams, fast) or minilm (MiniLM embeddings)."),
    labels: str = typer.Option("all,1/4,1/16", "--labels", help="Error sweep: labelled fraction of the training samples (or counts > 1)."),
    noise: str = typer.Option("0,0.5,1", "--noise", help="Error sweep: label noise, in multiples of the gold std."),
    seeds: int = typer.Option(4, "--seeds", help="Proxies per (labels, noise) pair, averaged."),
    k: str = typer.Option("1,2,4,8", "--k", help="Ensemble sizes."),
    members: Optional[int] = typer.Option(None, "--members", help="Ensemble members trained of each kind (default: the largest K)."),
    ensemble_labels: str = typer.Option("1/4", "--ensemble-labels", help="Labelled fraction of each ensemble member."),
    ensemble_noise: float = typer.Option(1.0, "--ensemble-noise", help="Label noise of each ensemble member."),
    aggregates: str = typer.Option("mean,min,uwo", "--aggregates", help="Ensemble aggregates: mean, min, uwo (mean − λ·Var)."),
    lam: Optional[float] = typer.Option(None, "--lambda", help="λ of mean − λ·Var (default 1 / gold within-prompt std)."),
    unbiased_var: bool = typer.Option(False, "--unbiased-var", help="Unbiased (n−1) variance in uwo; default population."),
    betas: Optional[str] = typer.Option(None, "--betas", "--beta", help="β grid, comma-separated (default: 11 values from 3× to 1/30 of the gold within-prompt std)."),
    bon: Optional[str] = typer.Option(None, "--bon", help="Best-of-N sizes (default powers of 2 up to n)."),
    train_fraction: float = typer.Option(0.5, "--train-fraction", help="Fraction of prompts whose samples may be labelled."),
    n_bootstrap: int = typer.Option(200, "--n-bootstrap", help="Bootstrap replicates (prompts resampled)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the split, labels, noise, resamples and bootstrap."),
    proxy: Optional[list[str]] = typer.Option(None, "--proxy", help="Use these existing proxy columns instead of training (repeatable): from the samples, or from --proxies-file. Default: train proxies."),
    proxies_file: Optional[Path] = typer.Option(None, "--proxies-file", help="Table of proxy columns keyed by prompt_id, sample_idx (default RUN_DIR/proxies.parquet)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="hacking JSON ('-' for stdout, then tables go to stderr; default RUN_DIR/hacking.json, none for a file)."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="PNG (default RUN_DIR/hacking.png, none for a file)."),
):
    """Reward hacking on real reward models: proxies trained on gold labels, their gap to the gold frontier, ensembles."""
    from alignlimits.cli.analysis import samples_source, write_json
    from alignlimits.pipeline.hacking_study import HackConfig, run_hacking_study
    from alignlimits.report.hacking_plots import hacking_report_section, plot_hacking_study

    json_to_stdout(json_out)
    run_dir = samples_source(run_dir)
    label_values = parse_numbers(labels, "--labels", fractions=True)
    ens_labels = parse_numbers(ensemble_labels, "--ensemble-labels", fractions=True)
    if len(ens_labels) != 1:
        raise AlignLimitsError("--ensemble-labels takes one value, e.g. 1/4")
    config = HackConfig(
        gold=gold, features=features, labels=label_values, noise=parse_numbers(noise, "--noise"), seeds=seeds,
        ks=parse_whole(k, "--k"), members=members, ensemble_labels=ens_labels[0], ensemble_noise=ensemble_noise,
        aggregates=[a.strip() for a in aggregates.split(",") if a.strip()], lam=lam, ddof=1 if unbiased_var else 0,
        betas=parse_numbers(betas, "--betas"), bon=parse_whole(bon, "--bon"), train_fraction=train_fraction,
        n_bootstrap=n_bootstrap, seed=seed, proxy_cols=list(proxy or []),
        proxies_file=str(proxies_file) if proxies_file else None,
    )
    is_dir = run_dir.is_dir()
    json_path = json_out or (run_dir / "hacking.json" if is_dir else None)
    plot_path = plot or (run_dir / "hacking.png" if is_dir else None)
    with console.status("reward-hacking study…"):
        result = run_hacking_study(run_dir, config, write_json=False, log=lambda m: console.print(f"[dim]{m}[/]"))
    if plot_path is not None:
        result["plot"] = str(plot_hacking_study(result, plot_path))
    print_result(result)
    if json_path is not None and str(json_path) != "-":
        section = Path(json_path).with_suffix(".md")
        section.write_text(hacking_report_section(result, Path(plot_path).name if plot_path else None))
        result["report_section"] = str(section)
        console.print(f"[dim]wrote {section}" + (f", {plot_path}" if plot_path else "") +
                      (f", {result['proxies_file']}" if result.get("proxies_file") else "") + "[/]")
    write_json(result, json_path)
