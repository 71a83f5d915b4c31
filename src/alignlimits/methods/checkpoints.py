"""Run-directory bookkeeping shared by the trainers: which checkpoint to resume, pruning, metrics rows, RNG.

A checkpoint is a ``checkpoint-STEP`` folder, complete once its ``trainer_state.json`` exists (PPO writes
it last; transformers' Trainer, under GRPO, writes one too).  Nothing here unpickles: RNG and optimizer
state are read with ``torch.load(weights_only=True)``, which refuses anything but tensors and plain
Python containers, so a shared run directory cannot run code on resume.
"""

from __future__ import annotations

import json
import pickle
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alignlimits.errors import AlignLimitsError

__all__ = [
    "last_checkpoint",
    "load_rng_state",
    "load_state",
    "prune_checkpoints",
    "resume_point",
    "save_rng_state",
    "truncate_metrics",
]


def _step(path: Path) -> int:
    return int(path.name.split("-")[-1])


def _complete(output_dir: Path) -> list[Path]:
    """Complete checkpoints in ``output_dir``, oldest first."""
    if not output_dir.is_dir():
        return []
    done = [
        p
        for p in output_dir.glob("checkpoint-*")
        if p.is_dir() and p.name.split("-")[-1].isdigit() and (p / "trainer_state.json").is_file()
    ]
    return sorted(done, key=_step)


def last_checkpoint(output_dir: str | Path) -> Path | None:
    """The complete ``checkpoint-STEP`` folder with the highest STEP, or None."""
    done = _complete(Path(output_dir))
    return done[-1] if done else None


def resume_point(output_dir: str | Path, resume_from_checkpoint: bool | str | Path | None, method: str) -> Path | None:
    """The checkpoint a run starts from: True → the last complete one in ``output_dir`` (None, a fresh
    start, when there is none); a path → that checkpoint; False/None → a fresh start, refused when
    ``output_dir`` already holds checkpoints (it would mix two runs' metrics and checkpoints)."""
    out = Path(output_dir)
    if resume_from_checkpoint is True:
        return last_checkpoint(out)
    if resume_from_checkpoint:
        ckpt = Path(resume_from_checkpoint)
        if not (ckpt / "trainer_state.json").is_file():
            raise AlignLimitsError(f"{method}: {ckpt} is not a complete checkpoint (no trainer_state.json)")
        return ckpt
    if last_checkpoint(out) is not None:
        raise AlignLimitsError(
            f"{method}: {out} already holds checkpoints; resume (resume_from_checkpoint=True) or use a new output_dir"
        )
    return None


def prune_checkpoints(output_dir: str | Path) -> None:
    """Delete every complete checkpoint but the newest (the only one resuming needs)."""
    for old in _complete(Path(output_dir))[:-1]:
        shutil.rmtree(old, ignore_errors=True)


def truncate_metrics(path: Path, step: int) -> None:
    """Keep only the JSON rows of ``path`` with ``step`` ≤ ``step`` (a resumed run re-logs the later
    steps); a torn last line from a kill is dropped."""
    if not path.exists():
        return
    keep = []
    for ln in path.read_text().splitlines():
        try:
            if json.loads(ln)["step"] <= step:
                keep.append(ln)
        except (ValueError, KeyError, TypeError):
            pass
    path.write_text("".join(k + "\n" for k in keep))


def save_rng_state(path: Path) -> None:
    """torch (CPU and CUDA), numpy and Python RNG states as tensors and plain containers."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    torch.save(state, path)


def load_state(path: Path, map_location: torch.device | str | None = None) -> Any:
    """``torch.load(path, weights_only=True)``: tensors and plain containers only; anything else (a
    pickled object, which could run code) is refused with an :class:`AlignLimitsError`."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise AlignLimitsError(
            f"{path} holds more than tensors and plain values; refusing to unpickle it (delete that checkpoint)"
        ) from e


def load_rng_state(path: Path) -> None:
    """Restore what :func:`save_rng_state` wrote."""
    state = load_state(path)
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
