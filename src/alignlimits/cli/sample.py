"""`alignlimits sample`: draw base-model samples of a task, score them, store them in a run directory."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from alignlimits.cli.app import app
from alignlimits.cli.options import BACKEND, DATA_PARALLEL, ENGINE, GPU_MEMORY, TENSOR_PARALLEL, engine_options
from alignlimits.errors import AlignLimitsError
from alignlimits.lm.engines import DEFAULT_ENGINE


@app.command("sample")
def sample(
    out: str = typer.Option(..., "--out", help="Run directory (created if missing); samples go to OUT/samples/*.parquet."),
    task: str = typer.Option("safety", "--task", help="safety, summarization or exact."),
    model: Optional[str] = typer.Option(
        None, "--model",
        help="Built-in name (smollm2-135m-instruct, exact-tiny), local folder or Hugging Face id. Default: the task's.",
    ),
    reward: Optional[List[str]] = typer.Option(
        None, "--reward",
        help="Reward model, repeatable: profanity-logit, profanity, minilm-summary, exact, hf:ID_OR_PATH, python:module:function. "
             "Default: the task's.",
    ),
    prompts: Optional[str] = typer.Option(None, "--prompts", help="Your own prompts: one per line, or JSONL with 'prompt' (and 'id'). Default: the task's built-in prompts."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="A datasets name or local file of prompts (BeaverTails / TL;DR style). Default: the task's built-in prompts."),
    n: int = typer.Option(32, "--n", help="Samples per prompt."),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", help="Completion length limit (default 64; exact task: 3)."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Sequences per generate call (default: automatic from free memory)."),
    limit_prompts: Optional[int] = typer.Option(None, "--limit-prompts", help="Use only the first K prompts (after the split). Default: all."),
    split: str = typer.Option("all", "--split", help="all, train or heldout (fixed rule on prompt ids; see docs)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:N (default: GPU when present)."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="float32, bfloat16 or float16 (default: bfloat16 on GPU, float32 on CPU)."),
    engine: Optional[str] = ENGINE,
    tensor_parallel_size: Optional[int] = TENSOR_PARALLEL,
    data_parallel_size: Optional[int] = DATA_PARALLEL,
    distributed_backend: Optional[str] = BACKEND,
    gpu_memory_utilization: Optional[float] = GPU_MEMORY,
    force: bool = typer.Option(False, "--force", help="Replace a run in OUT made with a different config."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Sample N completions per prompt at the base distribution (temperature 1, no top-k/top-p) and score them.

    Re-running the same command continues a killed run; a finished one is left as it is.
    """
    if (Path(out) / "state.json").exists():
        raise AlignLimitsError(
            f"{out} is a `run` directory (its base samples are in {Path(out) / 'base'}); writing samples there would "
            "mix them into the run: choose another --out"
        )
    from alignlimits.pipeline.context import StudyContext
    from alignlimits.pipeline.sampling_run import SamplingPlan, run_sampling

    ctx = StudyContext.resolve(task, model=model, rewards=list(reward) if reward else None, prompts=prompts,
                               dataset=dataset, device=device, dtype=dtype, engine=engine or DEFAULT_ENGINE,
                               engine_options=engine_options(tensor_parallel_size, data_parallel_size, distributed_backend,
                                                             gpu_memory_utilization))
    plan = SamplingPlan(n=n, max_new_tokens=max_new_tokens, seed=seed, batch_size=batch_size,
                        limit_prompts=limit_prompts, split=split)
    run_sampling(ctx, plan, out, force=force, progress=not quiet)
