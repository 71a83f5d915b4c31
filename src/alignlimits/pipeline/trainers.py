"""The trained methods of a study: one registry, one entry point per method.

Every trainer is called the same way, ``trainer.train(job, record, out, resume)`` → the trained policy's
:class:`~alignlimits.pipeline.records.PolicyRecord`: ``job`` (:class:`TrainJob`) holds what the study resolved
once (the context with the base model, tokenizer and reward, the config, the training prompts and their base
levels, the stop rule's ceiling), ``record`` says which method and β, ``out`` is the folder the trainer writes
(checkpoints, ``metrics.jsonl``, ``stop.json``, the final ``policy/``), and ``resume`` is True when that folder
holds a checkpoint to continue from. The trainer saves its policy at ``record.path``.

The registry lives here, in the pipeline layer, because an entry point maps the study's objects (context,
config, record) onto a method's own options; the methods themselves (:mod:`alignlimits.methods`) stay libraries
that know nothing of a study. Adding a method is one file with its entry point and one line in :data:`TRAINERS`
(docs/trainers.md shows one).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from alignlimits.errors import AlignLimitsError
from alignlimits.seeding import derive_seed

if TYPE_CHECKING:
    from alignlimits.pipeline.context import StudyContext
    from alignlimits.pipeline.records import PolicyRecord


@dataclass
class TrainJob:
    """What every trainer gets from the study, resolved once."""

    ctx: StudyContext
    config: Any
    """The study's :class:`~alignlimits.pipeline.config.StudyConfig` (not imported here: the config reads the registry)."""
    prompts: list[str]
    """The training prompts as given to the model (chat template applied), the text the reward sees too."""
    prompt_ids: list[str]
    baselines: dict[str, float] | None
    """Each training prompt's base level b(x) (text → mean reward of its base samples)."""
    ceiling: float | None = None
    """J*(β) of the training prompts when training stops once converged; None: run every step (or to the time budget)."""
    reward: Any = None
    """The reward aligned to: the task's gold one (the first), or the proxy of ``align_to``
    (:mod:`alignlimits.pipeline.overoptimisation`)."""
    yardstick: Any = None
    """A :class:`~alignlimits.methods.measure.Yardstick` measuring the policy on held-out prompts while it trains
    (``measure_every``), or None."""

    def __post_init__(self):
        if self.reward is None:
            self.reward = self.ctx.rewards[0]

    def policy(self):
        """A fresh copy of the base model to train."""
        return copy.deepcopy(self.ctx.lm.model)

    def callbacks(self) -> list:
        """A TRL trainer's extra callbacks: the yardstick's, measuring against the base model as loaded."""
        if self.yardstick is None:
            return []
        from alignlimits.methods.yardstick_callback import YardstickCallback

        return [YardstickCallback(self.yardstick, base_model=self.ctx.lm.model)]

    @property
    def tokenizer(self):
        return self.ctx.lm.tokenizer

    def options(self, cls: type, record: PolicyRecord, out: Path, **own: Any):
        """``cls`` (a :class:`~alignlimits.methods.trainer_options.TrainerOptions`) with the fields every trainer
        takes from the study, then the method's ``own``."""
        c = self.config
        shared = dict(beta=record.beta, learning_rate=c.learning_rates[record.method], steps=c.steps,
                      batch_size=c.batch_size, use_lora=c.use_lora, output_dir=str(out), save_steps=max(1, c.steps // 4),
                      seed=c.seed, keep_checkpoints=c.keep_checkpoints, baselines=self.baselines,
                      max_minutes=c.train_minutes, stop_at_ceiling=self.ceiling)
        return cls(**{**shared, **own})


Entry = Callable[[TrainJob, "PolicyRecord", Path, "bool | None"], "PolicyRecord"]


@dataclass(frozen=True)
class Trainer:
    """A trained method: its entry point, its default learning rates, and the config keys it reads."""

    train: Entry
    learning_rate: dict[str, float] = field(default_factory=lambda: {"lora": 2e-4, "full": 1e-5})
    """Unless the config gives one: with LoRA adapters (``lora``) or all weights (``full``)."""
    keys: tuple[str, ...] = ()
    """The config keys it reads beyond the shared ones, recorded with each of its policies."""


def train_ppo(job: TrainJob, record: PolicyRecord, out: Path, resume: bool | None) -> PolicyRecord:
    from alignlimits.methods.ppo import PPOTrainer
    from alignlimits.methods.ppo_config import PPOConfig

    c = job.config
    cfg = job.options(PPOConfig, record, out, max_new_tokens=c.max_new_tokens, ppo_epochs=c.ppo_epochs,
                      num_minibatches=max(1, c.batch_size // 32) if c.batch_size % 32 == 0 else 1)
    PPOTrainer(cfg, job.policy(), None, job.tokenizer, job.reward, job.prompts,
               yardstick=job.yardstick).train(resume_from_checkpoint=resume)
    return record


def train_grpo(job: TrainJob, record: PolicyRecord, out: Path, resume: bool | None) -> PolicyRecord:
    from alignlimits.methods.grpo import GRPOOptions, train_grpo

    c = job.config
    # β is in the reward's units, as the frontier's: advantages not divided by their group's std (Dr. GRPO), which
    # would make the KL coefficient β·std, a different one per prompt
    opts = job.options(GRPOOptions, record, out, num_generations=c.num_generations, max_new_tokens=c.max_new_tokens,
                       scale_rewards="none")
    train_grpo(opts, job.policy(), job.tokenizer, job.reward, job.prompts, resume_from_checkpoint=resume,
               callbacks=job.callbacks())
    return record


def train_rloo(job: TrainJob, record: PolicyRecord, out: Path, resume: bool | None) -> PolicyRecord:
    from alignlimits.methods.rloo import RLOOOptions, train_rloo

    c = job.config
    opts = job.options(RLOOOptions, record, out, num_generations=c.num_generations, max_new_tokens=c.max_new_tokens)
    train_rloo(opts, job.policy(), job.tokenizer, job.reward, job.prompts, resume_from_checkpoint=resume,
               callbacks=job.callbacks())
    return record


def train_dpo(job: TrainJob, record: PolicyRecord, out: Path, resume: bool | None) -> PolicyRecord:
    """DPO on best-vs-worst pairs of the base model's samples of the training prompts, ranked by the reward; no
    reward is seen in training, so no per-step objective and no stopping at the ceiling."""
    from alignlimits.methods.dpo import DPOOptions, dpo_pairs_from_policy, train_dpo

    c = job.config
    pairs = dpo_pairs_from_policy(job.ctx.lm.model, job.tokenizer, job.prompts, job.prompt_ids, job.reward,
                                  n=c.dpo_n, max_new_tokens=c.max_new_tokens, seed=derive_seed(c.seed, "dpo-pairs"))
    if not pairs:
        raise AlignLimitsError("every training prompt's samples tie in reward, so DPO has no preference pairs; "
                               "raise dpo_n in the config or use another method")
    opts = job.options(DPOOptions, record, out, batch_size=min(c.batch_size, len(pairs)), baselines=None,
                       stop_at_ceiling=None)
    train_dpo(opts, job.policy(), job.tokenizer, pairs, resume_from_checkpoint=resume)
    return record


TRAINERS: dict[str, Trainer] = {
    "ppo": Trainer(train_ppo, keys=("ppo_epochs",)),
    # GRPO's on-policy single pass wants a larger step than PPO's four epochs (at 2e-4 its eight steps moved the
    # policy to KL 0.04; at 1e-3 to 0.25-0.32; measured in benchmarks/RESULTS.md "The default study")
    "grpo": Trainer(train_grpo, {"lora": 1e-3, "full": 1e-5}, keys=("num_generations",)),
    "rloo": Trainer(train_rloo, keys=("num_generations",)),
    "dpo": Trainer(train_dpo, keys=("dpo_n",)),
}
"""Every trained method, by the name ``--methods`` and ``train --method`` take. LoRA adapters want a larger
learning rate than all weights."""
