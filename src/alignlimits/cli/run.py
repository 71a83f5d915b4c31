"""`alignlimits run | train | evaluate`: the main job and its two halves."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from alignlimits.cli.app import app, console, json_to_stdout
from alignlimits.cli.options import (
    BACKEND, DATA_PARALLEL, ENGINE, GPU_MEMORY, TENSOR_PARALLEL, engine_options, parse_numbers, parse_policies,
    parse_policy_betas,
)
from alignlimits.errors import AlignLimitsError
from alignlimits.pipeline.config import PRESETS, TASK_DEFAULTS, StudyConfig, known_methods
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


def _shown(value) -> str:
    if value is None:
        return "all"
    if isinstance(value, list):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def _default(key: str) -> str:
    """The default of a `run` option as the help states it: the quick preset's, then where it differs."""
    quick = getattr(StudyConfig(), key)
    other = [f"{task} task {_shown(v[key])}" for task, v in TASK_DEFAULTS.items() if key in v and v[key] != quick]
    other += [f"{name} preset {_shown(v[key])}" for name, v in PRESETS.items() if key in v and v[key] != quick]
    return f"Default {_shown(quick)}" + (f" ({'; '.join(other)})." if other else ".")


BETAS_DEFAULT = ("Default: chosen from the frontier of the base samples, the β of its optimal policy π_β at 1/3 and 2/3 "
                 "of its reliable KL (full preset: 1/4, 1/2 and all of it; exact task 0.5).")


POLICY_BETA = typer.Option(None, "--policy-beta", help="NAME=β: the KL coefficient a --policy was trained at, repeatable; its point then shows its objective against the ceiling J*(β). Default: none (no ceiling figures).")
TRAIN_MINUTES = typer.Option(None, "--train-minutes", help=f"Stop each trainer after this much training time; its point says why it stopped. {_default('train_minutes')}")
STOP_WHEN_CONVERGED = typer.Option(None, "--stop-when-converged/--run-all-steps", show_default=False, help=f"Stop each trainer once its objective curve has converged against the ceiling J*(β). {_default('stop_when_converged')}")


def _show(results: dict, run_dir: Path) -> None:
    from alignlimits.report.html import write_report
    from alignlimits.report.terminal import print_headline

    write_report(run_dir, results)  # also draws plane.png
    print_headline(results, console)
    console.print(f"[dim]results: {run_dir / 'results.json'}  figure: {run_dir / 'plane.png'}  report: {run_dir / 'report.html'}[/]")


@app.command()
def run(
    task: str = typer.Argument(..., help="safety, summarization or exact."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run directory. Default runs/TASK-PRESET."),
    preset: Optional[str] = typer.Option(None, "--preset", help="quick (default: sized for 2 CPU cores; timings in the README), converge (PPO, GRPO and RLOO trained until their objective plateaus, about an hour on 2 cores) or full (paper scale, for a GPU)."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML file; every option below is also a key there (flags win). Default: none."),
    model: Optional[str] = typer.Option(None, "--model", help="Hugging Face id, local folder, or smollm2-135m-instruct. Default: the task's (smollm2-135m-instruct; exact-tiny for exact)."),
    reward: Optional[list[str]] = typer.Option(None, "--reward", help="Reward model(s), repeatable; the first is the one aligned to. Default: the task's."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Prompt dataset (hub id or local file) instead of the built-in prompts. Default: built-in prompts."),
    prompts: Optional[str] = typer.Option(None, "--prompts", help="Prompt file (one per line, or JSONL). Default: built-in prompts."),
    methods: Optional[str] = typer.Option(None, "--methods", help=f"Comma-separated: {','.join(known_methods())}. {_default('methods')}"),
    betas: Optional[str] = typer.Option(None, "--betas", "--beta", help=f"KL coefficients β of the trained methods (PPO, GRPO, RLOO, DPO), comma-separated. {BETAS_DEFAULT}"),
    n: Optional[int] = typer.Option(None, "--n", help=f"Base samples per held-out prompt (the frontier's data). {_default('n')}"),
    eval_n: Optional[int] = typer.Option(None, "--eval-n", help=f"Policy samples per held-out prompt. {_default('eval_n')}"),
    eval_prompts: Optional[int] = typer.Option(None, "--eval-prompts", help=f"Held-out prompts to use. {_default('eval_prompts')}"),
    steps: Optional[int] = typer.Option(None, "--steps", help=f"Training steps of each trained method. {_default('steps')}"),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", help=f"Completion length limit in tokens. {_default('max_new_tokens')}"),
    use_lora: Optional[bool] = typer.Option(None, "--lora/--full-finetune", show_default=False, help="Train LoRA adapters (learning rate 2e-4) or all weights (1e-5), unless a learning rate is in the config. Default: --lora (exact task and full preset: --full-finetune)."),
    seed: Optional[int] = typer.Option(None, "--seed", help=f"Seed of sampling, training and bootstrap. {_default('seed')}"),
    train_minutes: Optional[float] = TRAIN_MINUTES,
    stop_when_converged: Optional[bool] = STOP_WHEN_CONVERGED,
    device: Optional[str] = typer.Option(None, "--device", help="cpu or cuda. Default: cuda when present."),
    policy: Optional[list[str]] = typer.Option(None, "--policy", help="NAME=PATH of a policy trained elsewhere (Hugging Face folder or LoRA adapter, same tokenizer), repeatable: evaluated beside the others. Default: none."),
    policy_beta: Optional[list[str]] = POLICY_BETA,
    engine: Optional[str] = ENGINE,
    tensor_parallel_size: Optional[int] = TENSOR_PARALLEL,
    data_parallel_size: Optional[int] = DATA_PARALLEL,
    distributed_backend: Optional[str] = BACKEND,
    gpu_memory_utilization: Optional[float] = GPU_MEMORY,
    force: bool = typer.Option(False, "--force", help="Start over when RUN_DIR holds a run with another config."),
):
    """The whole study: base samples, frontier, best-of-N, the trained methods, one honest evaluation, a report."""
    from alignlimits.pipeline.config import resolve_config
    from alignlimits.pipeline.study import Study

    file_values = _read_config_file(config)
    flags = _flags(model=model, rewards=reward or None, dataset=dataset, prompts=prompts,
                   methods=[m.strip() for m in methods.split(",") if m.strip()] if methods else None,
                   betas=parse_numbers(betas, "--betas"), n=n, eval_n=eval_n, eval_prompts=eval_prompts, steps=steps,
                   max_new_tokens=max_new_tokens, use_lora=use_lora, seed=seed, device=device,
                   train_minutes=train_minutes, stop_when_converged=stop_when_converged,
                   policies=parse_policies(policy), policy_betas=parse_policy_betas(policy_beta, parse_policies(policy)),
                   engine=engine,
                   engine_options=engine_options(tensor_parallel_size, data_parallel_size, distributed_backend,
                                                  gpu_memory_utilization) or None)
    cfg = resolve_config(task, preset, file_values, flags)
    run_dir = out or Path("runs") / f"{task}-{cfg.preset}"
    results = Study(cfg, run_dir, force=force, console=console).run()
    _show(results, run_dir)


@app.command()
def train(
    method: str = typer.Option(..., "--method", help=f"One of {', '.join(TRAINERS)}."),
    out: Path = typer.Option(..., "--out", help="Run directory; policies go to RUN_DIR/train/METHOD-betaB/policy."),
    betas: Optional[str] = typer.Option(None, "--betas", "--beta", help=f"KL coefficients β, comma-separated (a sweep, trained in turn). {BETAS_DEFAULT}"),
    task: str = typer.Option("safety", "--task", help="safety, summarization or exact."),
    model: Optional[str] = typer.Option(None, "--model", help="Hugging Face id, local folder, or smollm2-135m-instruct. Default: the task's."),
    reward: Optional[list[str]] = typer.Option(None, "--reward", help="Reward model(s), repeatable; the first is the one aligned to. Default: the task's."),
    prompts: Optional[str] = typer.Option(None, "--prompts", help="Prompt file (one per line, or JSONL). Default: built-in prompts."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Prompt dataset (hub id or local file). Default: built-in prompts."),
    steps: Optional[int] = typer.Option(None, "--steps", help=f"Training steps. {_default('steps')}"),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", help=f"Completion length limit in tokens. {_default('max_new_tokens')}"),
    use_lora: Optional[bool] = typer.Option(None, "--lora/--full-finetune", show_default=False, help="Train LoRA adapters (learning rate 2e-4) or all weights (1e-5), unless a learning rate is in the config. Default: --lora (exact task and full preset: --full-finetune)."),
    preset: Optional[str] = typer.Option(None, "--preset", help="quick (default), converge or full: the defaults of the options above."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML file of options (as for `run`; flags win). Default: none."),
    seed: Optional[int] = typer.Option(None, "--seed", help=f"Seed of sampling and training. {_default('seed')}"),
    train_minutes: Optional[float] = TRAIN_MINUTES,
    stop_when_converged: Optional[bool] = STOP_WHEN_CONVERGED,
    force: bool = typer.Option(False, "--force", help="Start over when RUN_DIR holds a run with another config."),
):
    """Train one method (PPO, GRPO, RLOO, DPO, ...) at one or more β on the task's training prompts (resumable)."""
    from alignlimits.pipeline.config import resolve_config
    from alignlimits.pipeline.study import Study

    if method not in TRAINERS:
        raise AlignLimitsError(f"unknown method {method!r}; train one of {', '.join(TRAINERS)}")
    flags = _flags(model=model, rewards=reward or None, prompts=prompts, dataset=dataset, steps=steps,
                   max_new_tokens=max_new_tokens, use_lora=use_lora, seed=seed, methods=[method],
                   betas=parse_numbers(betas, "--betas"), train_minutes=train_minutes,
                   stop_when_converged=stop_when_converged)
    cfg = resolve_config(task, preset, _read_config_file(config), flags)
    study = Study(cfg, out, force=force, console=console)
    study.run(train=True, evaluate=False)
    console.print(f"trained: {', '.join(r.path for r in study.trained_records())}")
    console.print(f"next: alignlimits evaluate {out}")


@app.command()
def evaluate(
    run_dir: Path = typer.Argument(..., help="Run directory (from `alignlimits train` or `run`), or where to put this evaluation."),
    policy: Optional[list[str]] = typer.Option(None, "--policy", help="NAME=PATH (or PATH) of a policy trained elsewhere (Hugging Face folder or LoRA adapter, same tokenizer), repeatable. Default: every policy under RUN_DIR/train."),
    policy_beta: Optional[list[str]] = POLICY_BETA,
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
