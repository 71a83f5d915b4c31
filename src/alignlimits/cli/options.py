"""Parsing of comma-separated option values, shared by the commands."""

from __future__ import annotations

from typing import Optional

import typer

from alignlimits.errors import AlignLimitsError, check_beta
from alignlimits.lm.engines import DEFAULT_ENGINE

# the sampling-engine options `sample`, `run` and `evaluate` share
ENGINE = typer.Option(None, "--engine", help="Sampling engine (base samples; policies at evaluation): hf (transformers), "
                                              f"vllm, or auto (vllm with CUDA, or on CPU for prompts of 250+ characters). Default {DEFAULT_ENGINE} (evaluate: the run's).")
TENSOR_PARALLEL = typer.Option(None, "--tensor-parallel-size", help="vLLM: GPUs each model replica is sharded over. Default 1.")
DATA_PARALLEL = typer.Option(None, "--data-parallel-size", help="vLLM: model replicas. Default 1.")
BACKEND = typer.Option(None, "--distributed-backend", help="vLLM: mp (one machine) or ray (several nodes). Default: vLLM's choice.")
GPU_MEMORY = typer.Option(None, "--gpu-memory-utilization", help="vLLM on a GPU: its share of GPU memory (weights and KV cache; "
                                                                  "on CPU the KV cache is VLLM_CPU_KVCACHE_SPACE GiB, default 2). Default: vLLM's (0.9).")


def parse_numbers(text: Optional[str], what: str, fractions: bool = False) -> Optional[list[float]]:
    """Comma-separated numbers; with ``fractions`` also ``1/4`` and ``all`` (= 1)."""
    if text is None:
        return None
    out = []
    for item in (x.strip() for x in text.split(",")):
        if not item:
            continue
        try:
            if fractions and item.lower() == "all":
                out.append(1.0)
            elif fractions and "/" in item:
                a, b = item.split("/")
                out.append(float(a) / float(b))
            else:
                out.append(float(item))
        except (ValueError, ZeroDivisionError):
            raise AlignLimitsError(f"{what} must be comma-separated numbers{' or fractions like 1/4' if fractions else ''}, got {text!r}") from None
    if not out:
        raise AlignLimitsError(f"{what} is empty")
    return out


def parse_whole(text: Optional[str], what: str) -> Optional[list[int]]:
    values = parse_numbers(text, what)
    if values is None:
        return None
    if any(v != int(v) or v < 1 for v in values):
        raise AlignLimitsError(f"{what} must be whole numbers ≥ 1, got {text!r}")
    return [int(v) for v in values]


def parse_policy_betas(items: Optional[list[str]], policies: Optional[dict[str, str]]) -> Optional[dict[str, float]]:
    """``--policy-beta NAME=β`` (repeatable): the KL coefficient a policy given by ``--policy`` was trained at, so that
    its point is measured against its own objective's ceiling J*(β)."""
    if not items:
        return None
    out: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            beta = float(value)
        except ValueError:
            beta = value
        if not sep:
            raise AlignLimitsError(f"--policy-beta {item!r}: give NAME=β with β > 0, e.g. --policy-beta mine=0.1")
        if name not in (policies or {}):
            raise AlignLimitsError(f"--policy-beta {item!r}: no --policy named {name!r}; name the policy as in --policy NAME=PATH")
        out[name] = check_beta(beta, f"--policy-beta {item!r}")
    return out


def parse_policies(items: Optional[list[str]]) -> Optional[dict[str, str]]:
    """``--policy NAME=PATH`` (repeatable; a bare PATH is named after its folder) as ``{name: path}``."""
    if not items:
        return None
    from pathlib import Path

    out: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            name, path = Path(item).name, item
        if not name or not path:
            raise AlignLimitsError(f"--policy {item!r}: give NAME=PATH (or a folder)")
        if not Path(path).expanduser().is_dir():
            raise AlignLimitsError(f"--policy {item!r}: no folder at {path}; give a Hugging Face model folder or a LoRA adapter")
        if name in out:
            raise AlignLimitsError(f"--policy name {name!r} is given twice; name each policy once")
        out[name] = str(Path(path).expanduser().resolve())
    return out


def engine_options(tensor_parallel_size: Optional[int], data_parallel_size: Optional[int],
                   distributed_backend: Optional[str], gpu_memory_utilization: Optional[float] = None) -> dict:
    """vLLM's scale-out and memory settings as the engine takes them (unset ones dropped)."""
    if gpu_memory_utilization is not None and not 0 < gpu_memory_utilization <= 1:
        raise AlignLimitsError(f"--gpu-memory-utilization must be in (0, 1] (got {gpu_memory_utilization})")
    given = {"tensor_parallel_size": tensor_parallel_size, "data_parallel_size": data_parallel_size,
             "distributed_executor_backend": distributed_backend, "gpu_memory_utilization": gpu_memory_utilization}
    return {k: v for k, v in given.items() if v is not None}
