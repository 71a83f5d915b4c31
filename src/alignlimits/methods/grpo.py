r"""GRPO through TRL's ``GRPOTrainer``: a thin wrapper that builds its config from our options.

What TRL 1.16's GRPO optimises (so that its point on the KL–reward plane can be read right):

* per prompt, ``num_generations`` completions sampled from the current policy (here at
  temperature 1, top_p 1, top_k 0: the same sampling as everywhere else in alignlimits);
* advantages A_i = r_i − mean of the group, divided by the group's standard deviation
  (``scale_rewards="group"``, TRL's default), the batch's (``"batch"``) or not at all
  (``"none"``, Dr. GRPO).  Dividing by the std rescales the reward against β, so the effective
  KL coefficient is β·std, not β;
* loss per token −min(ρA, clip(ρ, 1±ε)A) + β·k3, with k3 = π0/π − log(π0/π) − 1 **in the loss**
  (not in the reward).  Its gradient is that of the per-token *reverse* KL(π0‖π) at the visited
  states, so the fixed point is not π_β (the optimum of E[r] − β·KL(π‖π0)); it is close to it for
  small KL.  Token losses are aggregated per ``loss_type`` (TRL's default ``"dapo"``: mean over
  all completion tokens of the batch).

So GRPO's β and PPO's β are not the same knob; compare methods only through the KL measured
afresh by the evaluator.  The wrapper additionally logs ``kl_k1_mean``: the mean over the step's
rollouts of Σ_t (log π − log π0), computed from the log-probs TRL already has (no extra pass).

The reward is called with the prompt text exactly as given to the model (the chat-formatted prompt),
the form the base table, the frontier and evaluation score too.  Precision
(:mod:`alignlimits.methods.lora`): the trainable parameters are float32 master weights whatever
dtype the model came in (TRL then builds the reference in float32 too), and on a bf16-capable GPU
TRL's ``bf16=True`` runs the forward passes under autocast.

Options → ``GRPOConfig`` (:func:`alignlimits.methods.trl_common.trl_config`, which also says what
every TRL-based trainer sets alike): ``beta`` (must be > 0), ``batch_size`` → completions per step (a
multiple of ``num_generations``), ``max_new_tokens`` → ``max_completion_length``.

Output directory (:func:`alignlimits.methods.trl_common.run_trl_training`): ``checkpoint-STEP/``,
``metrics.jsonl`` (TRL's names plus ``reward_mean`` (= TRL's ``reward``), ``kl_k1_mean`` and
``objective`` = reward_mean − β·kl_k1_mean, the same three columns as PPO's), ``grpo_options.json``
and the final ``policy/``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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

__all__ = ["GRPOOptions", "build_grpo_trainer", "grpo_config", "train_grpo"]

SCALE_REWARDS = ("group", "batch", "none")
LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo")


@dataclass
class GRPOOptions(TRLOptions):
    """Our options for GRPO (and, keyword-only, :class:`~alignlimits.methods.trl_common.TRLOptions`');
    :func:`grpo_config` maps them onto TRL's ``GRPOConfig``."""

    METHOD = "GRPO"
    COUNTS = ("steps", "batch_size", "max_new_tokens", "num_iterations")

    beta: float = 0.04
    """KL coefficient of the k3 term in the loss; must be > 0.  Default: DeepSeekMath's GRPO
    (TRL's own default is 0, i.e. no KL and no reference model, which we refuse)."""
    steps: int = 100
    """Optimizer steps (``max_steps``)."""
    batch_size: int = 16
    """Completions per step (``per_device_train_batch_size``); a multiple of num_generations.
    The number of distinct prompts per step is batch_size / num_generations."""
    num_generations: int = 8
    """Group size G (TRL's default)."""
    num_iterations: int = 1
    """μ: passes over each generation batch (TRL's default 1: on-policy)."""
    learning_rate: float = 1e-6
    """TRL's GRPO default.  Tiny models (the exact task) need far larger values, e.g. 3e-3."""
    lr_scheduler_type: str = "linear"
    epsilon: float = 0.2
    """Clip range of the surrogate."""
    scale_rewards: str = "group"
    """"group" (TRL default: divide by the group std), "batch" or "none" (Dr. GRPO)."""
    loss_type: str = "dapo"
    """TRL's token aggregation: "dapo" (default), "grpo", "dr_grpo", "bnpo", "cispo", "sapo"."""
    max_new_tokens: int = 64
    """``max_completion_length``."""
    output_dir: str = field(default="grpo-run", kw_only=True)

    def validate(self) -> None:
        super().validate()
        check_group_size(self, "advantages are group-relative")
        if self.scale_rewards not in SCALE_REWARDS:
            self.invalid(f"scale_rewards must be one of {', '.join(SCALE_REWARDS)} (got {self.scale_rewards!r})")
        if self.loss_type not in LOSS_TYPES:
            self.invalid(f"loss_type must be one of {', '.join(LOSS_TYPES)} (got {self.loss_type!r})")


def grpo_config(options: GRPOOptions):
    """The ``trl.GRPOConfig`` our options stand for (checked against TRL 1.16's field names)."""
    from trl import GRPOConfig

    return trl_config(GRPOConfig, options, **sampling_fields(options), scale_rewards=options.scale_rewards,
                      loss_type=options.loss_type)


def _trainer_class():
    from trl import GRPOTrainer

    class AlignLimitsGRPOTrainer(GRPOTrainer):
        """TRL's GRPOTrainer plus one logged metric, ``kl_k1_mean``: the rollouts' mean sequence
        log π − log π0, from the log-probs of the loss pass (on-policy when num_iterations = 1)."""

        def _get_per_token_logps_and_entropies(self, *args, **kwargs):
            out = super()._get_per_token_logps_and_entropies(*args, **kwargs)
            self._al_last_logps = out[0]
            return out

        def _compute_loss(self, model, inputs):
            self._al_last_logps = None
            loss = super()._compute_loss(model, inputs)
            lp, ref = self._al_last_logps, inputs.get("ref_per_token_logps")
            if lp is not None and ref is not None and lp.shape == ref.shape:
                log_sequence_kl(self, lp, ref, inputs["completion_mask"])
            return loss

    return AlignLimitsGRPOTrainer


def build_grpo_trainer(
    options: GRPOOptions,
    model,
    tokenizer,
    reward_fn: Callable[[Sequence[str], Sequence[str]], Any],
    prompts: Sequence[str],
    *,
    plain: bool = False,
):
    """A ready ``GRPOTrainer`` (ours, or TRL's own class when ``plain``, for the benchmark).

    ``model``: a transformers causal LM (instance; its trainable parameters are cast to float32) or a
    path/id (TRL loads it in float32); ``tokenizer`` its tokenizer; ``prompts``: the training prompts
    as text given verbatim to the model (chat template applied), which the reward sees too."""
    if plain:
        from trl import GRPOTrainer as cls
    else:
        cls = _trainer_class()
    fields = prompt_fields("GRPO", reward_fn, prompts)
    return build_trl_trainer(cls, options, model, tokenizer, metrics=not plain, args=grpo_config(options), **fields)


def train_grpo(
    options: GRPOOptions,
    model,
    tokenizer,
    reward_fn: Callable[[Sequence[str], Sequence[str]], Any],
    prompts: Sequence[str],
    resume_from_checkpoint: bool | str | None = None,
):
    """Train with GRPO and return the trained model (a ``PeftModel`` with LoRA).

    ``resume_from_checkpoint``: True continues from the last ``checkpoint-STEP`` in
    ``output_dir`` (a fresh start when there is none), a path from that checkpoint."""
    return run_trl_training(
        options, lambda: build_grpo_trainer(options, model, tokenizer, reward_fn, prompts), tokenizer,
        resume_from_checkpoint,
    )
