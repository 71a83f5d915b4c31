"""The configuration of `alignlimits run`: every option, the presets, and their resolution order."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from alignlimits.errors import AlignLimitsError
from alignlimits.pipeline.trainers import TRAINERS


def known_methods() -> tuple[str, ...]:
    """What ``--methods`` takes: best-of-N, soft best-of-N, every registered trainer, the hacking study."""
    return ("bon", "soft-bon", *TRAINERS, "hacking")


@dataclass
class StudyConfig:
    """Every option of `alignlimits run` (each also a key of ``--config FILE.yaml``)."""

    task: str = "safety"
    preset: str = "quick"
    model: str | None = None
    rewards: list[str] | None = None
    prompts: str | None = None
    dataset: str | None = None
    methods: list[str] = field(default_factory=lambda: ["bon", "soft-bon", "ppo", "grpo", "hacking"])
    """``hacking``: the reward-hacking study on the base samples (seconds; alignlimits.pipeline.hacking_study)."""
    betas: list[float] | None = None
    """The trained methods' KL coefficients; None: chosen from the frontier (:func:`auto_betas`)."""
    beta_reach: list[float] = field(default_factory=lambda: [1 / 3, 2 / 3])
    """With ``betas`` None: train at the β whose optimal policy π_β spends these fractions of the frontier's
    reliable reach (``max_reliable_kl_``), so that every trained point lands where the frontier can judge it."""
    n: int = 16
    """Base samples per held-out prompt (the frontier's data)."""
    eval_n: int = 16
    """Policy samples per held-out prompt in evaluation."""
    eval_prompts: int | None = 32
    """Held-out prompts used (None: all)."""
    train_prompts: int | None = None
    steps: int = 8
    max_new_tokens: int = 32
    batch_size: int = 8
    """Rollouts per PPO step; completions per GRPO step."""
    num_generations: int = 4
    """GRPO group size."""
    ppo_epochs: int = 4
    """Passes over each PPO rollout batch (lm-human-preferences: 4)."""
    baseline_n: int = 4
    """Base samples per training prompt: their mean reward is the prompt's base level b(x), the per-prompt baseline of
    PPO's returns and the reference of every trainer's per-step objective (``objective_rel``)."""
    train_minutes: float | None = None
    """Stop each trainer at this much training time (None: run every step); its record says why it stopped."""
    stop_when_converged: bool = False
    """Stop each trainer once its objective curve has converged against the ceiling J*(β) (the rule in
    :mod:`alignlimits.methods.convergence`)."""
    learning_rates: dict[str, float] = field(default_factory=dict)
    """Each trained method's learning rate (method → number > 0); a method not named gets its trainer's default for
    LoRA or full fine-tuning (:data:`alignlimits.pipeline.trainers.TRAINERS`)."""
    dpo_n: int = 4
    """Base samples per training prompt from which DPO's best-vs-worst preference pairs are built."""
    use_lora: bool = False
    policies: dict[str, str] = field(default_factory=dict)
    """Policies trained elsewhere, evaluated beside the others: name → Hugging Face folder or LoRA adapter."""
    policy_betas: dict[str, float] = field(default_factory=dict)
    """The β each of ``policies`` was trained at (name → β), for its objective's ceiling; optional per policy."""
    keep_checkpoints: bool = False
    """Keep every trainer checkpoint; by default a finished policy keeps none (resume needs them only while training)."""
    soft_bon_n: list[int] = field(default_factory=lambda: [2, 4, 8])
    seed: int = 0
    min_ess: float = 5.0
    device: str | None = None
    engine: str = "hf"
    """Base sampling: hf (transformers), vllm, or auto (alignlimits.lm.engines.choose_engine)."""
    engine_options: dict = field(default_factory=dict)
    """vLLM's tensor_parallel_size, data_parallel_size, distributed_executor_backend."""

    def validate(self) -> None:
        from alignlimits.lm.tasks import TASKS

        self._check_number_types()
        if self.task not in TASKS:
            raise AlignLimitsError(f"unknown task {self.task!r}; use one of {', '.join(TASKS)}")
        unknown = [m for m in self.methods if m not in known_methods()]
        if unknown:
            raise AlignLimitsError(f"unknown method {unknown[0]!r}; use some of {', '.join(known_methods())}")
        if any(m in TRAINERS for m in self.methods) and self.betas is not None and not self.betas:
            raise AlignLimitsError(f"trained methods ({', '.join(TRAINERS)}) need at least one --betas value")
        if any(not b > 0 for b in self.betas or []):
            raise AlignLimitsError(f"every β must be > 0 (got {self.betas}); the KL penalty is what makes the frontier")
        if self.train_minutes is not None and not self.train_minutes > 0:
            raise AlignLimitsError(f"--train-minutes must be > 0 (got {self.train_minutes})")
        for name in ("n", "eval_n", "steps", "max_new_tokens", "batch_size", "baseline_n"):
            if getattr(self, name) < 1:
                raise AlignLimitsError(f"--{name.replace('_', '-')} must be at least 1 (got {getattr(self, name)})")
        if self.n < 2:
            raise AlignLimitsError("--n must be at least 2: the frontier needs several base samples per prompt")
        if not self.beta_reach or any(not 0 < f <= 1 for f in self.beta_reach):
            raise AlignLimitsError(f"beta_reach must be fractions in (0, 1] of the frontier's reliable KL (got {self.beta_reach})")
        if not isinstance(self.policies, dict):
            raise AlignLimitsError("policies: give a mapping of name: path (or --policy NAME=PATH)")
        stray = sorted(set(self.policy_betas or {}) - set(self.policies))
        if stray or any(not (isinstance(b, (int, float)) and 0 < b < float("inf")) for b in (self.policy_betas or {}).values()):
            raise AlignLimitsError(f"policy_betas must map names of policies to β > 0 (got {self.policy_betas})")
        missing = [p for p in self.policies.values() if not Path(str(p)).expanduser().is_dir()]
        if missing:
            raise AlignLimitsError(f"policy folder {missing[0]} does not exist; give a Hugging Face model folder or a LoRA adapter")
        if self.batch_size % self.num_generations:
            raise AlignLimitsError(
                f"--batch-size {self.batch_size} must be a multiple of the GRPO group size {self.num_generations}"
            )


    def _check_number_types(self) -> None:
        """Numbers where the config wants them (a config file can hold anything), before any comparison."""
        def is_number(v, whole: bool) -> bool:
            return isinstance(v, int if whole else (int, float)) and not isinstance(v, bool)

        for f in fields(self):
            kind, value = f.type.removesuffix(" | None"), getattr(self, f.name)
            if value is None or kind not in NUMBER_KINDS:
                continue
            whole, listed = kind.endswith("int"), kind.startswith("list")
            if not (all(is_number(v, whole) for v in value) if listed and isinstance(value, list)
                    else not listed and is_number(value, whole)):
                raise AlignLimitsError(f"{f.name} must be {NUMBER_KINDS[kind]} (got {value!r})")


NUMBER_KINDS = {"int": "a whole number", "float": "a number", "list[int]": "a list of whole numbers",
                "list[float]": "a list of numbers"}
PRESETS = {
    # the whole study on 2 CPU cores in at most 15 minutes (every held-out prompt, 16 base and 16 policy samples each,
    # two β per trainer; benchmarks/RESULTS.md "The default study"); LoRA: a finished run of a 135M model is 45 MB
    "quick": dict(use_lora=True),
    # paper scale, meant for a GPU
    # trainers run until their objective curve plateaus (or 15 minutes each): PPO, GRPO and RLOO at the β of π_β at
    # half the frontier's reliable reach, on 2 CPU cores in about an hour (benchmarks/RESULTS.md "Reaching the ceiling")
    "converge": dict(use_lora=True, methods=["bon", "soft-bon", "ppo", "grpo", "rloo"], beta_reach=[0.5], steps=200,
                     batch_size=16, max_new_tokens=24, train_minutes=15.0, stop_when_converged=True),
    "full": dict(n=256, eval_n=64, eval_prompts=None, steps=300, max_new_tokens=64, batch_size=64, use_lora=False,
                 num_generations=8, beta_reach=[0.25, 0.5, 1.0], soft_bon_n=[4, 16, 64]),
}
# the exact task is tiny and exactly solvable: many cheap steps, large learning rates (tests/methods);
# summarisation prompts are ~300 tokens, so its quick preset trains fewer, lighter PPO steps and samples each
# policy 8 times per held-out prompt (the split of its 15 minutes, benchmarks/RESULTS.md "The default study")
TASK_DEFAULTS = {
    "summarization": dict(steps=6, eval_n=8, ppo_epochs=2),
    "exact": dict(methods=["bon", "soft-bon", "ppo", "grpo"], n=256, baseline_n=64, eval_n=256, eval_prompts=None, steps=60,
                  max_new_tokens=3, batch_size=64, use_lora=False,
                  num_generations=8, learning_rates=dict(ppo=1e-3, grpo=3e-3, rloo=3e-3, dpo=1e-2), dpo_n=8, betas=[0.5],
                  soft_bon_n=[2, 4, 16], min_ess=10.0),
}
CONFIG_KEYS = {f.name for f in fields(StudyConfig)}


def saved_config(path: Path, **override) -> StudyConfig:
    """The config a run directory was started with (its ``run_config.json``), with ``override`` on top."""
    import json

    values = json.loads(Path(path).read_text())
    unknown = sorted(set(values) - CONFIG_KEYS)
    if unknown:
        raise AlignLimitsError(f"{path} was written by another version of alignlimits ({', '.join(unknown)}); "
                               "run the study again into a new --out")
    return StudyConfig(**{**values, **override})


def resolve_config(task: str, preset: str | None, file_values: dict, flag_values: dict) -> StudyConfig:
    """Defaults, then the preset, then the task's defaults, then the config file, then flags."""
    unknown = sorted(set(file_values) - CONFIG_KEYS)
    if unknown:
        raise AlignLimitsError(f"config file has unknown keys: {', '.join(unknown)} (known: {', '.join(sorted(CONFIG_KEYS))})")
    file_preset = file_values.get("preset")
    if preset and file_preset and preset != file_preset:
        raise AlignLimitsError(f"--preset {preset} conflicts with preset: {file_preset} in the config file; keep one")
    preset = preset or file_preset or "quick"
    if preset not in PRESETS:
        raise AlignLimitsError(f"unknown preset {preset!r}; use one of {', '.join(PRESETS)}")
    file_task = file_values.get("task")
    if file_task and file_task != task:
        raise AlignLimitsError(f"the config file is for task {file_task!r}, not {task!r}")
    layers = [PRESETS[preset], TASK_DEFAULTS.get(task, {}) if preset == "quick" else {}, file_values,
              {k: v for k, v in flag_values.items() if v is not None}]
    values = {k: v for layer in layers for k, v in layer.items()}
    values.update(task=task, preset=preset,
                  learning_rates=_learning_rates(values.get("use_lora"), [layer.get("learning_rates") for layer in layers]))
    config = StudyConfig(**values)
    config.validate()
    return config


def _learning_rates(use_lora: bool | None, layers: list) -> dict[str, float]:
    """Every trainer's learning rate: its default for LoRA or full fine-tuning, then those each layer names."""
    rates = {m: t.learning_rate["lora" if use_lora else "full"] for m, t in TRAINERS.items()}
    for given in filter(None, layers):
        if not isinstance(given, dict) or set(given) - set(TRAINERS):
            raise AlignLimitsError(f"learning_rates must map trained methods ({', '.join(TRAINERS)}) to numbers > 0, "
                                   f"e.g. {{grpo: 1.0e-3}} (got {given!r})")
        rates.update({m: _positive_number(v, f"learning_rates.{m}") for m, v in given.items()})
    return rates


def _positive_number(value, key: str) -> float:
    """A config value that must be a number > 0; text that reads as one is taken (YAML reads ``1e-3`` as text:
    it wants ``1.0e-3``)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if isinstance(value, bool) or not number > 0:
        raise AlignLimitsError(f"{key} must be a number > 0 (got {value!r}), e.g. 1e-4")
    return number


def auto_betas(frontier, reach) -> list[float]:
    """The β of the frontier's optimal policies π_β at the KL budgets ``reach`` × its reliable reach, to 3
    significant figures (β sets the scale of the reward, so no fixed default fits every reward), read on the
    bias-corrected KL curve: the plain one understates π_β's KL at a given β (27 × 16 Gaussian rewards: a target
    of 0.267 nats gave a β whose π_β spends 0.311), so the β whose true π_β spends the budget is larger. Where the
    corrected curve does not reach a budget, the plain curve's β (:func:`alignlimits.theory.planning.beta_grid`)."""
    import numpy as np

    from alignlimits.theory.planning import beta_grid

    kls = np.asarray(reach, dtype=np.float64) * frontier.max_reliable_kl_
    corrected = frontier.beta_for_kl(kls, extrapolate=True, debiased=True)
    betas = np.where(np.isfinite(corrected), corrected, beta_grid(frontier, kls))
    return sorted({float(f"{b:.3g}") for b in betas})
