"""Data parallelism under a multi-process launcher (``torchrun``, ``accelerate launch``), over ``torch.distributed``.

The launcher sets ``WORLD_SIZE``, ``RANK`` and the rendezvous variables; the process group starts at the first
collective (gloo on CPU, NCCL on GPU). One process alone (no launcher) never starts one, and every helper here is
then the identity, so the single-process code path is the distributed one with N = 1.

What the project's own PPO needs, and nothing more: each process's share of a global batch (:func:`share`), sums of
tensors and statistics over the processes, gradients summed after backward (:func:`sum_gradients`; each process's
loss is a token sum over the global count, so the sum is the one-process gradient of the whole batch), the same
weights on every process (:func:`broadcast_parameters`), rank 0's decisions (:func:`from_main`) and a barrier.
Sharded training (DeepSpeed ZeRO, FSDP) is for the TRL-based trainers, which get it through accelerate; PPO
refuses it (:func:`refuse_sharding`).

Refusals of a launch (:func:`check_split`) read only the environment, so every process refuses alike before any
collective, and no process is left waiting for one that has exited.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

from alignlimits.errors import AlignLimitsError

__all__ = [
    "barrier", "broadcast_parameters", "check_split", "from_main", "gather", "is_main", "pin_gpu", "rank",
    "refuse_sharding", "share", "stream", "sum_gradients", "sum_tensor", "sum_values", "world_size",
]

SHARDING_VARIABLES = ("ACCELERATE_USE_DEEPSPEED", "ACCELERATE_USE_FSDP")
"""What ``accelerate launch`` sets for a DeepSpeed or FSDP config."""


def world_size() -> int:
    """Processes of this launch (1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    """Rank 0: the one process that writes the run directory and runs the single-process stages."""
    return rank() == 0


def stream() -> tuple:
    """Labels that give each process its own random stream under the one seed scheme (``derive_seed(seed, ...,
    *stream())``): none on rank 0, whose stream is the one-process run's."""
    return () if is_main() else ("rank", rank())


def check_split(count: int, what: str) -> int:
    """Each process's part of a global ``count`` (``what`` names it in the error); refused when it does not divide."""
    n = world_size()
    if count % n:
        raise AlignLimitsError(f"{what} {count} does not split over the {n} processes of this launch; "
                               f"give a multiple of {n}, or launch a number of processes that divides it")
    return count // n


def share(items: Sequence) -> list:
    """This process's contiguous part of a global batch, in rank order (so a gather restores the batch's order)."""
    k = check_split(len(items), "the batch of")
    return list(items[rank() * k : (rank() + 1) * k])


def refuse_sharding(method: str) -> None:
    """``method`` (PPO) trains data-parallel only: a DeepSpeed or FSDP launch would shard weights it reads whole."""
    used = [v for v in SHARDING_VARIABLES if os.environ.get(v, "").lower() in ("1", "true")]
    if used:
        raise AlignLimitsError(f"{method} trains data-parallel only (DDP), not under DeepSpeed or FSDP ({used[0]} is set); "
                               "launch it with torchrun or configs/accelerate/ddp.yaml, or train grpo/rloo for ZeRO")


def pin_gpu() -> None:
    """Make this process's GPU (``LOCAL_RANK``) the current device, so that models put on "cuda" land there, not all
    on the first GPU; a no-op without a launcher or a GPU."""
    import torch

    if world_size() > 1 and torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))


def _group():
    """The process group, started on first use; None for one process."""
    if world_size() == 1:
        return None
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        pin_gpu()
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return dist


def barrier() -> None:
    dist = _group()
    if dist is not None:
        dist.barrier()


def from_main(value: Any) -> Any:
    """Rank 0's ``value`` on every process (a decision all must take alike: stop now, or not)."""
    dist = _group()
    if dist is None:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(values: Sequence[float]) -> list[float]:
    """Every process's ``values``, concatenated in rank order (the global batch's order under :func:`share`)."""
    dist = _group()
    if dist is None:
        return list(values)
    parts: list[Any] = [None] * world_size()
    dist.all_gather_object(parts, list(values))
    return [v for part in parts for v in part]


def sum_tensor(x):
    """``x`` summed over the processes (a new tensor; ``x`` itself for one process)."""
    dist = _group()
    if dist is None:
        return x
    x = x.clone()
    dist.all_reduce(x)
    return x


def sum_values(values: dict[str, float]) -> dict[str, float]:
    """Each statistic summed over the processes."""
    import torch

    if _group() is None:
        return values
    total = sum_tensor(torch.tensor(list(values.values()), dtype=torch.float64))
    return dict(zip(values, total.tolist()))


def sum_gradients(params: Sequence) -> None:
    """Sum each parameter's gradient over the processes, in place (a missing one counts as zero)."""
    import torch

    dist = _group()
    if dist is None:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)


def broadcast_parameters(params: Sequence) -> None:
    """Rank 0's values of ``params`` on every process: identical weights whatever each process's initialisation."""
    dist = _group()
    if dist is None:
        return
    for p in params:
        dist.broadcast(p.data, src=0)
