"""`alignlimits run | train | evaluate`: the main job and its two halves."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from alignlimits.cli.app import app, console, json_to_stdout
from alignlimits.cli.options import (
    BACKEND, DATA_PARALLEL, ENGINE, GPU_MEMORY, TENSOR_PARALLEL, engine_options, parse_policies, parse_policy_betas,
)
from alignlimits.cli.study_flags import study_flags, typer_option
from alignlimits.errors import AlignLimitsError
from alignlimits.pipeline.trainers import TRAINERS


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
@study_flags("run")
def run(
    task: str = typer.Argument(..., help="safety, summarization or exact."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run directory. Default runs/TASK-PRESET."),
    preset: Optional[str] = typer.Option(None, "--preset", help="quick (default: sized for 2 CPU cores; timings in the README), converge (PPO, GRPO and RLOO trained until their objective plateaus, about an hour on 2 cores) or full (paper scale, for a GPU)."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML file; every option below is also a key there (flags win). Default: none."),
    engine: Optional[str] = ENGINE,
    tensor_parallel_size: Optional[int] = TENSOR_PARALLEL,
    data_parallel_size: Optional[int] = DATA_PARALLEL,
    distributed_backend: Optional[str] = BACKEND,
    gpu_memory_utilization: Optional[float] = GPU_MEMORY,
    force: bool = typer.Option(False, "--force", help="Start over when RUN_DIR holds a run with another config."),
    flags: dict = None,
):
    """The whole study: base samples, frontier, best-of-N, the trained methods, one honest evaluation, a report."""
    from alignlimits.pipeline.config import resolve_config
    from alignlimits.pipeline.study import Study

    file_values = _read_config_file(config)
    options = engine_options(tensor_parallel_size, data_parallel_size, distributed_backend, gpu_memory_utilization)
    cfg = resolve_config(task, preset, file_values, {**flags, "engine": engine, "engine_options": options or None})
    run_dir = out or Path("runs") / f"{task}-{cfg.preset}"
    results = Study(cfg, run_dir, force=force, console=console).run()
    if results is not None:  # None on every process of a launch but rank 0
        _show(results, run_dir)


@app.command()
@study_flags("train")
def train(
    method: str = typer.Option(..., "--method", help=f"One of {', '.join(TRAINERS)}."),
    out: Path = typer.Option(..., "--out", help="Run directory; policies go to RUN_DIR/train/METHOD-betaB/policy."),
    task: str = typer.Option("safety", "--task", help="safety, summarization or exact."),
    preset: Optional[str] = typer.Option(None, "--preset", help="quick (default), converge or full: the defaults of the options below."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML file of options (as for `run`; flags win). Default: none."),
    force: bool = typer.Option(False, "--force", help="Start over when RUN_DIR holds a run with another config."),
    flags: dict = None,
):
    """Train one method (PPO, GRPO, RLOO, DPO, ...) at one or more β on the task's training prompts (resumable)."""
    from alignlimits.pipeline.config import resolve_config
    from alignlimits.pipeline.study import Study

    if method not in TRAINERS:
        raise AlignLimitsError(f"unknown method {method!r}; train one of {', '.join(TRAINERS)}")
    cfg = resolve_config(task, preset, _read_config_file(config), {**flags, "methods": [method]})
    study = Study(cfg, out, force=force, console=console)
    study.run(train=True, evaluate=False)
    console.print(f"trained: {', '.join(r.path for r in study.trained_records())}")
    console.print(f"next: alignlimits evaluate {out}")


@app.command()
def evaluate(
    run_dir: Path = typer.Argument(..., help="Run directory (from `alignlimits train` or `run`), or where to put this evaluation."),
    policy: Optional[list[str]] = typer.Option(None, "--policy", help="NAME=PATH (or PATH) of a policy trained elsewhere (Hugging Face folder or LoRA adapter, same tokenizer), repeatable. Default: every policy under RUN_DIR/train."),
    policy_beta: Optional[list[str]] = typer_option("policy_betas"),
    base: Optional[str] = typer.Option(None, "--base", help="Its base model (with --policy). Default: the task's."),
    task: Optional[str] = typer.Option(None, "--task", help="The task (with --policy; needed when RUN_DIR holds no run). Default: the run's."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the evaluate JSON here ('-' for stdout, then tables go to stderr). Default: only RUN_DIR/results.json."),
    allow_overlap: bool = typer.Option(False, "--allow-overlap", help="Evaluate even on prompts a policy was trained on."),
    engine: Optional[str] = ENGINE,
    tensor_parallel_size: Optional[int] = TENSOR_PARALLEL,
    data_parallel_size: Optional[int] = DATA_PARALLEL,
    distributed_backend: Optional[str] = BACKEND,
    gpu_memory_utilization: Optional[float] = GPU_MEMORY,
):
    """Every trained policy on the KL–reward plane: held-out prompts, sequence KL, efficiency against the frontier."""
    from alignlimits.cli.analysis import write_json
    from alignlimits.pipeline.config import resolve_config, saved_config
    from alignlimits.pipeline.study import Study

    json_to_stdout(json_out)
    saved = run_dir / "run_config.json"
    policies = parse_policies(policy)
    betas = parse_policy_betas(policy_beta, policies) or {}
    options = engine_options(tensor_parallel_size, data_parallel_size, distributed_backend, gpu_memory_utilization)
    # the run's engine unless told: a new --engine brings the options given with it (none: vLLM's defaults)
    engine_flags = _flags(engine=engine, engine_options=options if engine or options else None)
    if policies is None:
        if not saved.exists():
            raise AlignLimitsError(f"{run_dir} holds no run (no run_config.json); train into it first, or give --policy")
        cfg = saved_config(saved, **engine_flags)
        study = Study(cfg, run_dir, console=console, allow_overlap=allow_overlap)
        if not (run_dir / "train").is_dir():
            raise AlignLimitsError(f"{run_dir} holds no trained policies; run `alignlimits train ... --out {run_dir}` first")
        results = study.run(train=False, evaluate=True)
    else:
        if saved.exists():
            cfg = saved_config(saved, **engine_flags)
        else:
            if task is None:
                raise AlignLimitsError("with --policy, say which --task (and --base model) it was trained for")
            cfg = resolve_config(task, None, {}, _flags(model=base, methods=["bon"], **engine_flags))
        results = Study(cfg, run_dir, console=console).evaluate_external(policies, betas)
    _show(results, run_dir)
    write_json(results["evaluate"], json_out)
