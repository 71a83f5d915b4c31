r"""The yardstick inside a training loop: a policy's point on the KL–reward plane, measured while it trains.

:func:`measure_policy` is the whole measurement, for any loop (our PPO, TRL through
:class:`alignlimits.integrations.trl.FrontierCallback`, OpenRLHF, verl, custom code): sample the current policy
on the held-out prompts the frontier was fitted on, teacher-force log π and log π0, score the reward
(:func:`~alignlimits.methods.evaluation.sample_and_score`, the evaluator's own), and place the point
(:func:`~alignlimits.methods.evaluation.place_policy`: gain, KL, efficiency, gap, verdict) with its objective's
ceiling (:func:`~alignlimits.theory.ceiling.objective_ceiling`: ``objective``, ``objective_share``,
``kl_to_target``). It is the measurement ``alignlimits evaluate`` makes, so the last point of a run equals the
evaluation of its saved policy with the same seed.

:class:`Yardstick` repeats it every ``every`` steps, appends each point to a JSONL file and applies the
convergence rule of :mod:`alignlimits.methods.convergence` to the measured objective against its ceiling J*(β).

Every measurement uses the same seed (common random numbers: two points differ by what the policy changed, not
by which samples were drawn) and restores the random state it found, so training draws what it would draw
without the yardstick.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from alignlimits.errors import AlignLimitsError
from alignlimits.methods.convergence import convergence
from alignlimits.theory.frontier import Frontier

JSONL = "alignlimits.jsonl"
FRONTIER_JSON = "alignlimits_frontier.json"
VERDICT_CODES = {"below": -1, "on": 0, "above": 1}
"""The verdict as a number for scalar loggers (``alignlimits/verdict``): −1 below, 0 on, 1 above the frontier."""
LOGGED = ("kl", "kl_se", "gain", "optimal_gain_at_kl", "efficiency", "gain_gap", "objective", "objective_optimal",
          "objective_share", "kl_to_target", "seconds", "cost_share")


def as_reward(reward, name: str | None = None):
    """A reward model of :mod:`alignlimits.lm.rewards` from a spec (``"exact"``, ``"profanity"``, ...), a reward
    model, or a callable ``f(prompts, completions) -> floats`` (named ``name``, else its ``name`` or ``__name__``)."""
    from alignlimits.lm.reward_model import CallableReward, RewardModel
    from alignlimits.lm.rewards import load_reward

    if isinstance(reward, str):
        return load_reward(reward)
    if isinstance(reward, RewardModel):
        return reward
    if not callable(reward):
        raise AlignLimitsError(f"the reward must be a spec, a reward model or a callable, not {type(reward).__name__}")
    name = name or getattr(reward, "name", None) or getattr(reward, "__name__", "reward")
    return CallableReward(reward, spec=name, name=name)


def frontier_prompts(frontier: Frontier, table) -> tuple[list[str], list[str]]:
    """The texts and ids of the prompts ``frontier`` was fitted on, in its order, from the base table (its
    ``prompt`` column: the exact text given to the model)."""
    if "prompt" not in table.frame:
        raise AlignLimitsError(f"{table.source} has no prompt column; the policy must be sampled on the base "
                               "samples' own prompt texts")
    first = table.frame.drop_duplicates("prompt_id")
    texts = dict(zip(first["prompt_id"].astype(str), first["prompt"].astype(str)))
    ids = [str(i) for i in frontier.prompt_ids_]
    return [texts[i] for i in ids], ids


@contextmanager
def _measuring(model):
    """Eval mode (no dropout) and the random state of every device restored on leaving."""
    import torch

    training = model.training
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    model.eval()
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        model.train(training)


def measure_policy(model, tokenizer, base_model, frontier: Frontier, reward, prompts: Sequence[str],
                   prompt_ids: Sequence[str], n: int, beta: float, *, seed: int = 0, max_new_tokens: int = 64,
                   batch_size: int | None = None, method: str = "policy", n_bootstrap: int = 200,
                   others: Mapping[str, tuple[Any, Mapping[str, float]]] | None = None) -> dict:
    """The policy's point on the plane: the ``evaluate`` JSON's fields plus its objective's ceiling figures.

    ``prompts``/``prompt_ids``: the held-out prompts (chat template applied) the frontier was fitted on, every one
    of them (:func:`frontier_prompts`); ``n`` samples each; ``base_model``: π0, at the policy's precision (with
    LoRA, the policy with adapters disabled: :func:`adapters_off`); ``reward``: as :func:`as_reward` takes it;
    ``beta``: the KL coefficient whose ceiling J*(β) the point is read against. The cost is one sampling pass of
    ``len(prompts)·n`` completions and two teacher-forced passes over them (policy and base), plus the reward.
    ``others``: more rewards scored on the same samples (name → (reward, its base mean per prompt id)), each giving
    ``gain_<name>`` and its standard error over prompts (e.g. the proxy a policy was aligned to, beside gold).
    """
    from alignlimits.methods.evaluation import log_ratio, place_policy, sample_and_score
    from alignlimits.theory.ceiling import objective_ceiling

    reward = as_reward(reward)
    others = {name: (as_reward(other), means) for name, (other, means) in (others or {}).items()}
    t0 = time.perf_counter()
    with _measuring(model):
        rows = sample_and_score(model, base_model, tokenizer, list(prompts), list(prompt_ids),
                                [reward, *(other for other, _ in others.values())], n, max_new_tokens, seed=seed,
                                batch_size=batch_size)
    r, ids = rows[reward.name], rows["prompt_id"]
    point = place_policy(method, r, ids, rows["logp_policy"], rows["logp_base"], frontier, beta=beta,
                         n_bootstrap=n_bootstrap, random_state=seed)
    ceiling = objective_ceiling(frontier, r, log_ratio(rows["logp_policy"], rows["logp_base"]), ids, beta,
                                n_bootstrap=n_bootstrap, random_state=seed)
    extra = {}
    for name, (other, base_means) in others.items():
        gain, se = paired_gain(rows[other.name], ids, base_means)
        extra.update({f"gain_{name}": gain, f"gain_{name}_se": se})
    return {**point.to_dict(), **ceiling.to_dict(), **extra, "seconds": time.perf_counter() - t0}


def paired_gain(values, prompt_ids, base_means: Mapping[str, float]) -> tuple[float, float]:
    """Mean over prompts of (the policy's mean on the prompt − the base mean of the prompt), and its standard error
    over prompts (the base means taken as known)."""
    import pandas as pd

    per = pd.Series(np.asarray(values, float)).groupby(np.asarray(prompt_ids).astype(str)).mean()
    diff = per.to_numpy() - np.asarray([base_means[str(i)] for i in per.index], float)
    return float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(diff.size)) if diff.size > 1 else float("nan")


def adapters_off(peft_model):
    """π0 of a LoRA policy: the same module with its adapters disabled, as a model the evaluator can score."""
    import torch

    class AdaptersOff(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner
            self.config = inner.config  # the scorer sizes its batches from it

        def forward(self, *args, **kwargs):
            with self.inner.disable_adapter():
                return self.inner(*args, **kwargs)

    return AdaptersOff(peft_model)


def verdict_code(verdict: str | None) -> float:
    """``VERDICT_CODES`` of a verdict's words; NaN for no verdict."""
    word = next((w for w in VERDICT_CODES if (verdict or "").startswith(w)), None)
    return float(VERDICT_CODES[word]) if word else float("nan")


def scalars(row: dict) -> dict[str, float]:
    """A measured row's numbers under ``alignlimits/…`` for scalar loggers (tensorboard, wandb, trackio)."""
    out = {f"alignlimits/{k}": float(row[k]) for k in LOGGED if isinstance(row.get(k), (int, float))}
    out["alignlimits/verdict"] = verdict_code(row.get("verdict"))
    return out


@dataclass
class Yardstick:
    """:func:`measure_policy` every ``every`` steps, each point appended to ``OUTPUT_DIR/alignlimits.jsonl``.

    Each row is a point (the ``evaluate`` JSON's keys and the ceiling's) plus ``step``, ``seconds`` (the
    measurement's wall time), ``step_seconds`` and ``cost_share`` (when the trainer gives its step time),
    ``training_state`` (the convergence rule on the measured objective so far against
    J*(β)) and, on the row that ends training, ``stop`` (why). ``stop_when_converged``: :meth:`record` says stop
    once the state is ``converged`` (it needs at least 4 measurements)."""

    frontier: Frontier
    reward: Any
    prompts: Sequence[str]
    prompt_ids: Sequence[str]
    beta: float
    n: int = 4
    every: int = 10
    seed: int = 0
    max_new_tokens: int = 64
    batch_size: int | None = None
    stop_when_converged: bool = False
    method: str = "policy"
    others: dict = field(default_factory=dict)
    """More rewards measured on the same samples: name → (reward, its base mean per prompt id) (:func:`measure_policy`)."""
    rows: list[dict] = field(default_factory=list)

    def __post_init__(self):
        if not (isinstance(self.every, int) and self.every >= 1 and isinstance(self.n, int) and self.n >= 1):
            raise AlignLimitsError(f"every and n must be whole numbers ≥ 1 (got every={self.every!r}, n={self.n!r})")
        self.reward = as_reward(self.reward)

    def start(self, output_dir: Path | None, step: int = 0) -> None:
        """Begin (or resume at ``step``): the file keeps, and the rule reads, only the rows up to ``step``."""
        from alignlimits.methods.checkpoints import truncate_metrics

        if output_dir is not None:
            truncate_metrics(Path(output_dir) / JSONL, step)
            path = Path(output_dir) / JSONL
            self.rows = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []

    def due(self, step: int, last: bool = False) -> bool:
        """Every ``every`` steps, and at the ``last``; never twice at one step."""
        return (step % self.every == 0 or last) and not any(r["step"] == step for r in self.rows)

    def record(self, model, tokenizer, base_model, step: int, output_dir: Path | None,
               step_seconds: float | None = None) -> dict:
        """Measure at ``step``, judge convergence, append the row to ``output_dir/alignlimits.jsonl``; the row.
        ``step_seconds``: a training step's wall time, for ``cost_share`` = seconds / (every · step_seconds)."""
        row = {"step": int(step), **measure_policy(
            model, tokenizer, base_model, self.frontier, self.reward, self.prompts, self.prompt_ids, self.n,
            self.beta, seed=self.seed, max_new_tokens=self.max_new_tokens, batch_size=self.batch_size,
            method=self.method, others=self.others)}
        if step_seconds:
            row.update(step_seconds=step_seconds, cost_share=row["seconds"] / (self.every * step_seconds))
        self.rows.append(row)
        state = self.state()
        row["training_state"] = state.state
        if self.stop_when_converged and state.converged:
            row["stop"] = (f"converged at step {step}: the measured objective rose {state.rise:.3g} over the last "
                           f"{state.window} measurements (95% noise {state.noise:.3g}), under a quarter of J*(β) "
                           f"({state.resolution:.3g}); rule: {state.rule}")
        if output_dir is not None:
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            with open(Path(output_dir) / JSONL, "a") as f:
                f.write(json.dumps(row) + "\n")
        return row

    def state(self):
        """The convergence rule on the measured objective (se from its interval) against the last J*(β)."""
        ceiling = self.rows[-1].get("objective_optimal") if self.rows else None
        se = [se_of_ci(r.get("objective_ci")) for r in self.rows]
        return convergence([r.get("objective") for r in self.rows], np.nan if ceiling is None else ceiling, se)


def se_of_ci(ci) -> float:
    """A standard error from a 95% interval: its half-width / 1.96."""
    return (ci[1] - ci[0]) / (2 * 1.959964) if ci and None not in ci else float("nan")
