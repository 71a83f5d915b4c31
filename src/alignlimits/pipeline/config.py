"""The configuration of `alignlimits run`: every option, the presets, and their resolution order."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from alignlimits.errors import AlignLimitsError, check_beta
from alignlimits.lm.engines import DEFAULT_ENGINE
from alignlimits.pipeline.trainers import TRAINERS


def known_methods() -> tuple[str, ...]:
    """What ``--methods`` takes: best-of-N, soft best-of-N, every registered trainer, the hacking study."""
    return ("bon", "soft-bon", *TRAINERS, "hacking")


def option(default=None, flags: tuple[str, ...] = (), help: str = "", *, train: bool = False, form: str | None = None,
           factory=None):
    """A field of :class:`StudyConfig` that is also an option of `run` (and of `train` when ``train``), declared once:
    ``flags`` its names (``--on/--off`` for a switch), ``help`` its help (the CLI adds the default of each preset
    and task unless the help states one), ``form`` how the command line writes a value that is not a plain number
    or word: ``list`` (comma-separated words), ``numbers`` (comma-separated numbers), ``repeat`` (the option
    repeated), ``policies``/``policy_betas`` (repeated NAME=VALUE)."""
    meta = dict(flags=flags, help=help, train=train, form=form)
    return field(default_factory=factory, metadata=meta) if factory else field(default=default, metadata=meta)


@dataclass
class StudyConfig:
    """Every option of `alignlimits run`, each a key of ``--config FILE.yaml``; those made with :func:`option` are
    also flags of `run` (and `train`), which the CLI derives from these declarations."""

    task: str = "safety"
    preset: str = "quick"
    model: str | None = option(None, ("--model",), "Hugging Face id, local folder, or smollm2-135m-instruct. Default: "
                               "the task's (smollm2-135m-instruct; exact-tiny for exact).", train=True)
    rewards: list[str] | None = option(None, ("--reward",), "Reward model(s), repeatable; the first is the one aligned "
                                       "to. Default: the task's.", train=True, form="repeat")
    prompts: str | None = option(None, ("--prompts",), "Prompt file (one per line, or JSONL). Default: built-in prompts.",
                                 train=True)
    dataset: str | None = option(None, ("--dataset",), "Prompt dataset (hub id or local file) instead of the built-in "
                                 "prompts. Default: built-in prompts.", train=True)
    methods: list[str] = option(flags=("--methods",), help=f"Comma-separated: {','.join(known_methods())} (hacking: the "
                                "reward-hacking study on the base samples).", form="list",
                                factory=lambda: ["bon", "soft-bon", "ppo", "grpo", "hacking"])
    betas: list[float] | None = option(None, ("--betas", "--beta"), "KL coefficients β of the trained methods, "
                                       "comma-separated (a sweep: each trained in turn). Default: chosen from the "
                                       "frontier of the base samples, the β of its optimal policy π_β at 1/3 and 2/3 of "
                                       "its reliable KL (full preset: 1/4, 1/2 and all of it; exact task 0.5).",
                                       train=True, form="numbers")
    beta_reach: list[float] = field(default_factory=lambda: [1 / 3, 2 / 3])
    """With ``betas`` None: train at the β whose optimal policy π_β spends these fractions of the frontier's
    reliable reach (``max_reliable_kl_``), so that every trained point lands where the frontier can judge it."""
    n: int = option(16, ("--n",), "Base samples per held-out prompt (the frontier's data).")
    eval_n: int = option(16, ("--eval-n",), "Policy samples per held-out prompt.")
    eval_prompts: int | None = option(32, ("--eval-prompts",), "Held-out prompts to use.")
    train_prompts: int | None = None
    steps: int = option(8, ("--steps",), "Training steps of each trained method.", train=True)
    max_new_tokens: int = option(32, ("--max-new-tokens",), "Completion length limit in tokens.", train=True)
    batch_size: int = 8
    """Rollouts per PPO step; completions per GRPO step."""
    num_generations: int = 4
    """GRPO group size."""
    ppo_epochs: int = 4
    """Passes over each PPO rollout batch (lm-human-preferences: 4)."""
    baseline_n: int = 4
    """Base samples per training prompt: their mean reward is the prompt's base level b(x), the per-prompt baseline of
    PPO's returns and the reference of every trainer's per-step objective (``objective_rel``)."""
    train_minutes: float | None = option(None, ("--train-minutes",), "Stop each trainer after this much training time; "
                                         "its point says why it stopped.", train=True)
    stop_when_converged: bool = option(False, ("--stop-when-converged/--run-all-steps",), "Stop each trainer once its "
                                       "objective curve has converged against the ceiling J*(β) (the rule in "
                                       "alignlimits.methods.convergence).", train=True)
    align_to: str | None = option(None, ("--align-to",), "The reward the trainers are aligned to, when it is not the gold "
                                  "one (the first --reward), which still judges every point: another --reward of the "
                                  "run, or error:SIZE, gold plus a fixed error of each word, SIZE times gold's "
                                  "within-prompt std (Gao et al. 2022's over-optimisation). Default: gold.", train=True)
    measure_every: int | None = option(None, ("--measure-every",), "Measure each PPO, GRPO and RLOO policy on the "
                                       "held-out prompts "
                                       "every this many steps while it trains (the yardstick): its path on the plane, "
                                       "and with --align-to the proxy's gain beside gold's. Default: not measured.",
                                       train=True)
    measure_n: int = 4
    """Samples per held-out prompt at each measurement of ``measure_every``."""
    learning_rates: dict[str, float] = field(default_factory=dict)
    """Each trained method's learning rate (method → number > 0); a method not named gets its trainer's default for
    LoRA or full fine-tuning (:data:`alignlimits.pipeline.trainers.TRAINERS`)."""
    dpo_n: int = 4
    """Base samples per training prompt from which DPO's best-vs-worst preference pairs are built."""
    use_lora: bool = option(False, ("--lora/--full-finetune",), "Train LoRA adapters (learning rate 2e-4) or all "
                            "weights (1e-5), unless a learning rate is in the config. Default: --lora (exact task and "
                            "full preset: --full-finetune).", train=True)
    policies: dict[str, str] = option(flags=("--policy",), help="NAME=PATH of a policy trained elsewhere (Hugging Face "
                                      "folder or LoRA adapter, same tokenizer), repeatable: evaluated beside the others. "
                                      "Default: none.", form="policies", factory=dict)
    policy_betas: dict[str, float] = option(flags=("--policy-beta",), help="NAME=β: the KL coefficient a --policy was "
                                            "trained at, repeatable; its point then shows its objective against the "
                                            "ceiling J*(β). Default: none (no ceiling figures).", form="policy_betas",
                                            factory=dict)
    keep_checkpoints: bool = False
    """Keep every trainer checkpoint; by default a finished policy keeps none (resume needs them only while training)."""
    soft_bon_n: list[int] = field(default_factory=lambda: [2, 4, 8])
    seed: int = option(0, ("--seed",), "Seed of sampling, training and bootstrap.", train=True)
    min_ess: float = 5.0
    device: str | None = option(None, ("--device",), "cpu or cuda. Default: cuda when present.")
    engine: str = DEFAULT_ENGINE
    """Base sampling: hf (transformers), vllm, or auto (:func:`alignlimits.lm.engines.choose_engine`); the flag
    ``--engine`` is shared with `sample` and `evaluate` (:data:`alignlimits.cli.options.ENGINE`)."""
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
        for beta in self.betas or []:
            check_beta(beta, "--betas")
        if self.train_minutes is not None and not self.train_minutes > 0:
            raise AlignLimitsError(f"--train-minutes must be > 0 (got {self.train_minutes})")
        for name in ("n", "eval_n", "steps", "max_new_tokens", "batch_size", "baseline_n"):
            if getattr(self, name) < 1:
                raise AlignLimitsError(f"{settable(name)} must be at least 1 (got {getattr(self, name)})")
        if self.n < 2:
            raise AlignLimitsError("--n must be at least 2: the frontier needs several base samples per prompt")
        if not self.beta_reach or any(not 0 < f <= 1 for f in self.beta_reach):
            raise AlignLimitsError(f"beta_reach must be fractions in (0, 1] of the frontier's reliable KL (got {self.beta_reach})")
        if not isinstance(self.policies, dict):
            raise AlignLimitsError("policies: give a mapping of name: path (or --policy NAME=PATH)")
        stray = sorted(set(self.policy_betas or {}) - set(self.policies))
        if stray:
            raise AlignLimitsError(f"policy_betas names {stray[0]!r}, which is not one of the policies")
        for name, beta in (self.policy_betas or {}).items():
            check_beta(beta, f"policy_betas {name!r}")
        missing = [p for p in self.policies.values() if not Path(str(p)).expanduser().is_dir()]
        if missing:
            raise AlignLimitsError(f"policy folder {missing[0]} does not exist; give a Hugging Face model folder or a LoRA adapter")
        self._check_alignment()
        if self.batch_size % self.num_generations:
            raise AlignLimitsError(f"batch_size {self.batch_size} (config file) must be a multiple of the group size "
                                   f"num_generations {self.num_generations}")


    def _check_alignment(self) -> None:
        """``align_to`` names a reward of the run or an error size; ``measure_every`` measures the online trainers."""
        from alignlimits.pipeline.overoptimisation import error_size

        if self.align_to is not None:
            if not isinstance(self.align_to, str) or not self.align_to.strip():
                raise AlignLimitsError(f"--align-to must name a reward or error:SIZE (got {self.align_to!r})")
            if error_size(self.align_to) is None and self.align_to not in (self.rewards or [])[1:]:
                raise AlignLimitsError(f"--align-to {self.align_to}: give error:SIZE (e.g. error:1) or a reward listed "
                                       "by --reward after the gold one, e.g. --reward profanity-logit --reward profanity")
        if self.measure_every is not None:
            if self.measure_every < 1 or self.measure_n < 1:
                raise AlignLimitsError(f"--measure-every and measure_n must be at least 1 (got {self.measure_every}, "
                                       f"{self.measure_n})")
            if "dpo" in self.methods:
                raise AlignLimitsError("--measure-every measures the online trainers (ppo, grpo, rloo); DPO sees no "
                                       "reward as it trains, so leave dpo out of --methods or --measure-every off")

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


def settable(key: str) -> str:
    """How a user sets config key ``key``, for messages: its flag, or the config-file key."""
    flags = next(f.metadata.get("flags") for f in fields(StudyConfig) if f.name == key)
    return flags[0] if flags else f"{key} (config file)"


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
