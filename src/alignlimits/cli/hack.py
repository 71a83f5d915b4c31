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


def _gap_table(title: str, head: list[str], rows: list[tuple[list[str], list[dict]]], shown: list[int], betas) -> Table:
    t = Table(title=title)
    for h in head:
        t.add_column(h, justify="right")
    for b in shown:
        t.add_column(f"gap β={betas[b]:.3g}", justify="right")
    for cells, curve in rows:
        t.add_row(*cells, *(ci(curve[b], "gap") for b in shown))
    return t


def _ensemble_table(title: str, ensembles: list[dict], j: int) -> Table:
    t = Table(title=title)
    t.add_column("members")
    t.add_column("aggregate")
    ks = sorted(set(e["k"] for e in ensembles))
    for k in ks:
        t.add_column(f"K={k}", justify="right")
    for kind in dict.fromkeys(e["members"] for e in ensembles):
        for agg in dict.fromkeys(e["aggregate"] for e in ensembles):
            by_k = {e["k"]: e for e in ensembles if e["members"] == kind and e["aggregate"] == agg}
            t.add_row(kind, agg, *(ci(by_k[k]["curve"][j], "gap") if k in by_k else "—" for k in ks))
    return t


def _checks_table(title: str, checks: list[dict]) -> Table:
    t = Table(title=title)
    t.add_column("claim")
    t.add_column("verdict")
    t.add_column("detail")
    colour = {"shown": "green", "inconclusive": "yellow", "not shown": "red"}
    for c in checks:
        t.add_row(c["claim"], f"[{colour[c['verdict']]}]{c['verdict']}[/]", c["detail"])
    return t


def print_controlled(c: dict, shown: list[int], j: int) -> None:
    """The controlled-error family: gap by error size and β, ensembles by K, its checks."""
    from alignlimits.report.terminal import fmt

    betas = c["betas"]
    console.print(f"[bold]controlled-error proxies[/] (gold + error of set size, {c['n_prompts']} prompts): {c['model']}")
    rows = [([fmt(s["error_size"]), fmt(s["error"]["within_prompt_correlation"])], s["curve"]) for s in c["error_sweep"]]
    console.print(_gap_table("error sweep (average over seeds): gap [95% CI] by β", ["error × gold sd", "corr (within prompt)"],
                             rows, shown, betas))
    if c["ensembles"]:
        console.print(_ensemble_table(f"ensembles of error {c['ensemble_error']:g} × gold sd: gap at β = {betas[j]:.3g} [95% CI] by K",
                                      c["ensembles"], j))
    console.print(_checks_table("expected orderings, controlled error", c["checks"]))
    for note in c["notes"]:
        console.print(f"[yellow]note:[/] {note}")


def print_result(result: dict) -> None:
    from alignlimits.report.hacking_plots import reference_beta_index
    from alignlimits.report.terminal import fmt

    betas = result["betas"]
    j = reference_beta_index(result)
    shown = sorted(set([0, len(betas) // 4, j, 3 * len(betas) // 4, len(betas) - 1]))
    console.print(f"[bold]reward hacking[/] gold = {result['gold']}, within-prompt sd {result['gold_within_prompt_sd']:.3g}")
    if result.get("controlled"):
        print_controlled(result["controlled"], shown, j)
    if not (result["error_sweep"] or result["per_proxy"]):
        _print_tail(result)
        return
    console.print(
        f"[bold]trained proxies (the realistic case)[/]: {result['n_train_prompts']} training prompts (labels), "
        f"{result['n_eval_prompts']} evaluation prompts ({result['n_eval_samples']} samples); {result['features_detail']}"
    )
    if result["error_sweep"]:
        rows = [([s["labels"], fmt(s["noise"]), str(s["n_labels"]), fmt(s["error"]["within_prompt_correlation"]),
                  fmt(s["error"]["within_prompt_rmse"])], s["curve"]) for s in result["error_sweep"]]
        console.print(_gap_table("proxy error sweep (average over seeds): held-out error and gap [95% CI] by β",
                                 ["labels", "noise", "n labels", "corr (within prompt)", "RMSE (within)"], rows, shown, betas))
    else:
        rows = [([p["proxy"], fmt(p["heldout_within_prompt_correlation"])], p["curve"]) for p in result["per_proxy"]]
        console.print(_gap_table("given proxies: held-out error and gap [95% CI] by β", ["proxy", "corr (within prompt)"],
                                 rows, shown, betas))
    if result["ensembles"]:
        console.print(_ensemble_table(f"ensembles: gap at β = {betas[j]:.3g} [95% CI] by K (K = 1: the average single proxy)",
                                      result["ensembles"], j))
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
    console.print(_checks_table("expected orderings, trained proxies", result["checks"]))
    _print_tail(result)


def _print_tail(result: dict) -> None:
    for note in result["notes"]:
        console.print(f"[yellow]note:[/] {note}")
    console.print(f"[dim]{result['ci_method']}; wall time {result['wall_time_s']:.1f} s[/]")


@app.command("hack")
def hack(
    run_dir: Path = typer.Argument(..., help="Directory of `alignlimits sample`, a `run` directory (its base samples are used), or a sample table with prompt and completion columns."),
    gold: Optional[str] = typer.Option(None, "--gold", help="Gold reward column (default: the run's only reward column)."),
    families: str = typer.Option("controlled,trained", "--families", help="Proxy families: controlled (gold + error of set size) and trained (ridge proxies on gold labels, the realistic case)."),
    error_sizes: str = typer.Option("0.25,0.5,1,2", "--error-sizes", help="Controlled error sweep: error sd in multiples of the gold within-prompt sd."),
    rho: str = typer.Option("0,0.5", "--rho", help="Controlled ensembles: the members' error correlations (0 = independent)."),
    ensemble_error: float = typer.Option(1.0, "--ensemble-error", help="Controlled ensembles: each member's error size (× gold sd)."),
    features: str = typer.Option("ngram", "--features", help="Proxy features: ngram (hashed n-grams, fast) or minilm (MiniLM embeddings)."),
    labels: str = typer.Option("all,1/4,1/16", "--labels", help="Error sweep: labelled fraction of the training samples (or counts > 1)."),
    noise: str = typer.Option("0,0.5,1", "--noise", help="Error sweep: label noise, in multiples of the gold std."),
    seeds: int = typer.Option(4, "--seeds", help="Proxies per sweep configuration (labels and noise, or error size), averaged."),
    k: str = typer.Option("1,2,4,8", "--k", help="Ensemble sizes."),
    members: Optional[int] = typer.Option(None, "--members", help="Ensemble members trained of each kind (default: the largest K)."),
    ensemble_labels: str = typer.Option("1/4", "--ensemble-labels", help="Labelled fraction of each ensemble member."),
    ensemble_noise: float = typer.Option(1.0, "--ensemble-noise", help="Label noise of each ensemble member."),
    aggregates: str = typer.Option("mean,min,uwo", "--aggregates", help="Ensemble aggregates: mean, min, uwo (mean − λ·Var)."),
    lam: Optional[float] = typer.Option(None, "--lambda", help="λ of mean − λ·Var (default 1 / gold within-prompt std)."),
    unbiased_var: bool = typer.Option(False, "--unbiased-var", help="Unbiased (n−1) variance in uwo; default population."),
    betas: Optional[str] = typer.Option(None, "--betas", "--beta", help="β grid, comma-separated (default: the gold frontier's β at 11 KLs from 1/64 to 0.9 of its largest)."),
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
    from alignlimits.report.hacking_text import with_prose

    json_to_stdout(json_out)
    run_dir = samples_source(run_dir)
    label_values = parse_numbers(labels, "--labels", fractions=True)
    ens_labels = parse_numbers(ensemble_labels, "--ensemble-labels", fractions=True)
    if len(ens_labels) != 1:
        raise AlignLimitsError("--ensemble-labels takes one value, e.g. 1/4")
    config = HackConfig(
        gold=gold, families=[f.strip() for f in families.split(",") if f.strip()],
        error_sizes=parse_numbers(error_sizes, "--error-sizes"), rhos=parse_numbers(rho, "--rho"),
        ensemble_error=ensemble_error, features=features, labels=label_values, noise=parse_numbers(noise, "--noise"), seeds=seeds,
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
        result = with_prose(run_hacking_study(run_dir, config, write_json=False, log=lambda m: console.print(f"[dim]{m}[/]")))
    if plot_path is not None:
        result["plots"] = [str(x) for x in plot_hacking_study(result, plot_path)]
    print_result(result)
    if json_path is not None and str(json_path) != "-":
        section = Path(json_path).with_suffix(".md")
        section.write_text(hacking_report_section(result, [Path(x).name for x in result.get("plots", [])]))
        result["report_section"] = str(section)
        console.print(f"[dim]wrote {section}" + "".join(f", {x}" for x in result.get("plots", [])) +
                      (f", {result['proxies_file']}" if result.get("proxies_file") else "") + "[/]")
    write_json(result, json_path)
