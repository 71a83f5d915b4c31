"""`alignlimits run | train | evaluate`: the main job and its two halves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from alignlimits.cli.options import parse_numbers
from alignlimits.cli.app import app, console
from alignlimits.errors import AlignLimitsError


def _read_config_file(path: Optional[Path]) -> dict:
    if path is None:
        return {}
    import yaml

    try:
        values = yaml.safe_load(path.read_text()) or {}
    except OSError as err:
        raise AlignLimitsError(f"cannot read --config {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise AlignLimitsError(f"--config {path} is not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise AlignLimitsError(f"--config {path} must hold a mapping of option: value")
    return {k.replace("-", "_"): v for k, v in values.items()}


def _flags(**values) -> dict:
    return {k: v for k, v in values.items() if v is not None}


def _show(results: dict, run_dir: Path) -> None:
    from alignlimits.report.html import write_report
    from alignlimits.report.terminal import print_headline

    write_report(run_dir, results)  # also draws plane.png
    print_headline(results, console)
    console.print(f"[dim]results: {run_dir / 'results.json'}  figure: {run_dir / 'plane.png'}  report: {run_dir / 'report.html'}[/]")


@app.command()
def run(
    task: str = typer.Argument(..., help="safety, summarization or exact."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run directory (default runs/TASK-PRESET)."),
    preset: Optional[str] = typer.Option(None, "--preset", help="quick (2 CPU cores, ≤ 15 min; default) or full (GPU scale)."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML file; every option below is also a key there."),
    model: Optional[str] = typer.Option(None, "--model", help="Hugging Face id, local folder, or smollm2-135m-instruct."),
    reward: Optional[list[str]] = typer.Option(None, "--reward", help="Reward model(s); the first is the one aligned to."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Prompt dataset (hub id or local file) instead of the built-in prompts."),
    prompts: Optional[str] = typer.Option(None, "--prompts", help="Prompt file (one per line, or JSONL)."),
    methods: Optional[str] = typer.Option(None, "--methods", help="Comma-separated: bon,soft-bon,ppo,grpo,hacking."),
    betas: Optional[str] = typer.Option(None, "--betas", help="KL coefficients β for PPO and GRPO, comma-separated."),
    n: Optional[int] = typer.Option(None, "--n", help="Base samples per held-out prompt."),
    eval_n: Optional[int] = typer.Option(None, "--eval-n", help="Policy samples per held-out prompt."),
    eval_prompts: Optional[int] = typer.Option(None, "--eval-prompts", help="Held-out prompts to use."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Training steps of PPO and GRPO."),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens"),
    use_lora: Optional[bool] = typer.Option(None, "--lora/--full-finetune", help="Train LoRA adapters instead of all weights."),
    seed: Optional[int] = typer.Option(None, "--seed"),
    device: Optional[str] = typer.Option(None, "--device", help="cpu or cuda (default: cuda when present)."),
    force: bool = typer.Option(False, "--force", help="Start over when RUN_DIR holds a run with another config."),
):
    """The whole study: base samples, frontier, best-of-N, PPO and GRPO, one honest evaluation, a report."""
    from alignlimits.pipeline.config import resolve_config
    from alignlimits.pipeline.study import Study

    file_values = _read_config_file(config)
    flags = _flags(model=model, rewards=reward or None, dataset=dataset, prompts=prompts,
                   methods=[m.strip() for m in methods.split(",") if m.strip()] if methods else None,
                   betas=parse_numbers(betas, "--betas"), n=n, eval_n=eval_n, eval_prompts=eval_prompts, steps=steps,
                   max_new_tokens=max_new_tokens, use_lora=use_lora, seed=seed, device=device)
    cfg = resolve_config(task, preset, file_values, flags)
    run_dir = out or Path("runs") / f"{task}-{cfg.preset}"
    results = Study(cfg, run_dir, force=force, console=console).run()
    _show(results, run_dir)


@app.command()
def train(
    method: str = typer.Option(..., "--method", help="ppo or grpo."),
    beta: str = typer.Option(..., "--beta", help="KL coefficient β (comma-separated for a sweep, run in turn)."),
    task: str = typer.Option("safety", "--task"),
    out: Path = typer.Option(..., "--out", help="Run directory; policies go to RUN_DIR/train/METHOD-betaB/policy."),
    model: Optional[str] = typer.Option(None, "--model"),
    reward: Optional[list[str]] = typer.Option(None, "--reward"),
    prompts: Optional[str] = typer.Option(None, "--prompts"),
    dataset: Optional[str] = typer.Option(None, "--dataset"),
    steps: Optional[int] = typer.Option(None, "--steps"),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens"),
    use_lora: Optional[bool] = typer.Option(None, "--lora/--full-finetune"),
    preset: Optional[str] = typer.Option(None, "--preset"),
    config: Optional[Path] = typer.Option(None, "--config"),
    seed: Optional[int] = typer.Option(None, "--seed"),
    force: bool = typer.Option(False, "--force"),
):
    """Train PPO or GRPO at one or more β on the task's training prompts (resumable)."""
    from alignlimits.pipeline.config import TRAINED, resolve_config
    from alignlimits.pipeline.study import Study

    if method not in TRAINED:
        raise AlignLimitsError(f"unknown method {method!r}; train one of {', '.join(TRAINED)}")
    flags = _flags(model=model, rewards=reward or None, prompts=prompts, dataset=dataset, steps=steps,
                   max_new_tokens=max_new_tokens, use_lora=use_lora, seed=seed, methods=[method],
                   betas=parse_numbers(beta, "--beta"))
    cfg = resolve_config(task, preset, _read_config_file(config), flags)
    study = Study(cfg, out, force=force, console=console)
    study.run(train=True, evaluate=False)
    console.print(f"trained: {', '.join(r.path for r in study.trained_records())}")
    console.print(f"next: alignlimits evaluate {out}")


@app.command()
def evaluate(
    run_dir: Path = typer.Argument(..., help="Run directory (from `alignlimits train` or `run`), or where to put this evaluation."),
    policy: Optional[Path] = typer.Option(None, "--policy", help="A policy trained elsewhere (model folder or LoRA adapter)."),
    base: Optional[str] = typer.Option(None, "--base", help="Its base model (with --policy)."),
    task: Optional[str] = typer.Option(None, "--task", help="The task (with --policy)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the evaluate JSON here."),
    allow_overlap: bool = typer.Option(False, "--allow-overlap", help="Evaluate even on prompts a policy was trained on."),
):
    """Every trained policy on the KL–reward plane: held-out prompts, sequence KL, efficiency against the frontier."""
    from alignlimits.pipeline.config import StudyConfig, resolve_config
    from alignlimits.pipeline.study import Study

    saved = run_dir / "run_config.json"
    if policy is None:
        if not saved.exists():
            raise AlignLimitsError(f"{run_dir} holds no run (no run_config.json); train into it first, or give --policy")
        cfg = StudyConfig(**json.loads(saved.read_text()))
        study = Study(cfg, run_dir, console=console, allow_overlap=allow_overlap)
        if not (run_dir / "train").is_dir():
            raise AlignLimitsError(f"{run_dir} holds no trained policies; run `alignlimits train ... --out {run_dir}` first")
        results = study.run(train=False, evaluate=True)
    else:
        if saved.exists():
            cfg = StudyConfig(**json.loads(saved.read_text()))
        else:
            if task is None:
                raise AlignLimitsError("with --policy, say which --task (and --base model) it was trained for")
            cfg = resolve_config(task, None, {}, _flags(model=base, methods=["bon"]))
        results = Study(cfg, run_dir, console=console).evaluate_external(policy)
    if json_out:
        json_out.write_text(json.dumps(results["evaluate"], indent=2))
    _show(results, run_dir)
