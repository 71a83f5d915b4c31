r"""RLOO through TRL's ``RLOOTrainer``: a thin wrapper that builds its config from our options, as
:mod:`alignlimits.methods.grpo` does for GRPO (the two read alike and share its helpers).

What TRL 1.16's RLOO optimises (so that its point on the KL–reward plane can be read right):

* per prompt, ``num_generations`` = k completions sampled from the current policy (here at
  temperature 1, top_p 1, top_k 0: the base distribution, as everywhere else in alignlimits);
* the KL penalty is **in the reward**, per whole sequence, with the k1 estimate:
  R_i = r_i − β·Σ_t (log π − log π0)(y_i,t), exactly the classic RLHF objective
  E_π[r] − β·KL(π‖π0) whose optimum is π_β ∝ π0·e^{r/β} (unlike GRPO's k3 term in the loss);
* advantages A_i = R_i − mean_{j≠i} R_j (the leave-one-out baseline, no division by a std unless
  ``normalize_advantages``, which only rescales the step: both r and the KL term sit inside A);
* loss per sequence −min(ρA, clip(ρ, 1±ε)A) with the sequence ratio ρ = π/π_old (ρ = 1 on-policy,
  ``num_iterations`` = 1, so the gradient is Σ_i A_i ∇log π(y_i), an unbiased estimate of the
  objective's gradient: its fixed point is π_β, which the exact-task test checks).

So RLOO's β is the β of the frontier's objective and of PPO.  The wrapper also logs ``kl_k1_mean``,
the batch mean of the sequence KL above (TRL logs ``kl`` per token), from the log-probs TRL computes.

Everything else is what every TRL-based trainer shares (:mod:`alignlimits.methods.trl_common`): the
reward sees the prompt text as given to the model; float32 master weights; the reference is the base
model as loaded; checkpoints, ``metrics.jsonl`` (with ``reward_mean``, ``kl_k1_mean``, ``objective_absolute`` and ``objective_rel``),
``rloo_options.json``, the final ``policy/`` and resumption.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from alignlimits.methods.trl_common import (
    TRLOptions,
    build_trl_trainer,
    check_group_size,
    log_sequence_kl,
    prompt_fields,
    run_trl_training,
    sampling_fields,
    trl_config,
)

__all__ = ["RLOOOptions", "build_rloo_trainer", "rloo_config", "train_rloo"]


@dataclass(kw_only=True)
class RLOOOptions(TRLOptions):
    """Our options for RLOO (and :class:`~alignlimits.methods.trl_common.TRLOptions`'; every option keyword-only);
    :func:`rloo_config` maps them onto TRL's ``RLOOConfig``."""

    METHOD = "RLOO"
    COUNTS = ("steps", "batch_size", "max_new_tokens", "num_iterations")

    beta: float = 0.05
    """KL coefficient of the sequence k1 penalty in the reward; must be > 0 (TRL's default 0.05)."""
    steps: int = 100
    """Optimizer steps (``max_steps``)."""
    batch_size: int = 16
    """Completions per step (``per_device_train_batch_size``); a multiple of num_generations."""
    num_generations: int = 4
    """k, completions per prompt (TRL's default is 2; the RLOO paper's best is 4)."""
    num_iterations: int = 1
    """μ: passes over each generation batch (1: on-policy, the unbiased gradient)."""
    learning_rate: float = 1e-6
    """TRL's RLOO default.  Tiny models (the exact task) need far larger values, e.g. 3e-3."""
    epsilon: float = 0.2
    """Clip range of the sequence ratio (inactive on-policy)."""
    normalize_advantages: bool = False
    """Whiten advantages over the batch (TRL's default False); a step-size change, same fixed point."""
    max_new_tokens: int = 64
    """``max_completion_length``."""
    output_dir: str = "rloo-run"

    def validate(self) -> None:
        super().validate()
        check_group_size(self, "the baseline leaves one out")


def rloo_config(options: RLOOOptions):
    """The ``trl.RLOOConfig`` our options stand for (checked against TRL 1.16's field names)."""
    from trl import RLOOConfig

    return trl_config(
        RLOOConfig, options, **sampling_fields(options), normalize_advantages=options.normalize_advantages
    )


def _trainer_class():
    from trl import RLOOTrainer

    class AlignLimitsRLOOTrainer(RLOOTrainer):
        """TRL's RLOOTrainer plus one logged metric, ``kl_k1_mean``: the batch mean of the sequence
        log π − log π0 that TRL subtracts (times β) from the reward.  Scoring a generation batch calls
        the log-prob pass twice, policy then reference; those two results are kept."""

        _al_logps: list | None = None

        def _get_per_token_logps_and_entropies(self, *args, **kwargs):
            out = super()._get_per_token_logps_and_entropies(*args, **kwargs)
            if self._al_logps is not None:
                self._al_logps.append(out[0])
            return out

        def _generate_and_score_completions(self, inputs):
            self._al_logps = []
            try:
                out = super()._generate_and_score_completions(inputs)
                logps = self._al_logps
            finally:
                self._al_logps = None
            if len(logps) == 2 and logps[0].shape == logps[1].shape:
                log_sequence_kl(self, logps[0], logps[1], out["completion_mask"])
            return out

    return AlignLimitsRLOOTrainer


def build_rloo_trainer(
    options: RLOOOptions,
    model,
    tokenizer,
    reward_fn: Callable[[Sequence[str], Sequence[str]], Any],
    prompts: Sequence[str],
):
    """A ready ``RLOOTrainer`` (ours); arguments as :func:`alignlimits.methods.grpo.build_grpo_trainer`."""
    fields = prompt_fields("RLOO", reward_fn, prompts)
    return build_trl_trainer(_trainer_class(), options, model, tokenizer, args=rloo_config(options), **fields)


def train_rloo(
    options: RLOOOptions,
    model,
    tokenizer,
    reward_fn: Callable[[Sequence[str], Sequence[str]], Any],
    prompts: Sequence[str],
    resume_from_checkpoint: bool | str | None = None,
    callbacks: Sequence = (),
):
    """Train with RLOO and return the trained model; arguments as :func:`alignlimits.methods.grpo.train_grpo`."""
    return run_trl_training(
        options, lambda: build_rloo_trainer(options, model, tokenizer, reward_fn, prompts), tokenizer,
        resume_from_checkpoint, callbacks=callbacks,
    )
