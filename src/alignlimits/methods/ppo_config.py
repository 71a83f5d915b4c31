r"""Configuration of the project's own PPO trainer (:mod:`alignlimits.methods.ppo`).

Defaults follow the published PPO-for-RLHF recipe; each field says where its default comes
from.  The sources:

* **lm-human-preferences** — OpenAI's original RLHF code (Ziegler et al., 2019), as dissected
  in *The N Implementation Details of RLHF with PPO* (Huang, Liu, von Werra; ICLR blog track
  2023).  Its ``PpoHParams``: batch 64, 1 minibatch, 4 PPO epochs, lr 5e-6, vf_coef 0.1,
  cliprange 0.2, cliprange_value 0.2, gamma 1, lam 0.95, ``whiten_rewards=True``.
* **N+ details** — *The N+ Implementation Details of RLHF with PPO: A Case Study on TL;DR
  Summarization* (Huang et al., 2024), whose recipe became TRL's (pre-1.0) ``PPOConfig``:
  lr 3e-6, kl_coef 0.05, response length 53, linear learning-rate decay, grad-norm clip 1.0.
* **cleanrl** — ``ppo.py`` (Huang et al., 2022): Adam eps 1e-5.

What is *not* configurable, on purpose, because the KL–reward plane needs it: rollouts are
sampled at temperature 1 with no top-k/top-p from the current policy, the KL penalty is the
per-token k1 term :math:`-\beta(\log\pi - \log\pi_0)` folded into the reward (the classic
formulation whose optimum is :math:`\pi_\beta \propto \pi_0 e^{r/\beta}`), and dropout is off
in both policy and reference.  The reward-model normalisation of lm-human-preferences (a fixed
gain/bias making base-sample rewards mean 0, std 1) is deliberately absent: it would rescale
the reward against β, so the trained policy would target :math:`\pi_{\beta\sigma}` rather than
:math:`\pi_\beta`.
"""

from __future__ import annotations

from dataclasses import dataclass

from alignlimits.methods.distributed import check_split
from alignlimits.methods.trainer_options import TrainerOptions


@dataclass(kw_only=True)
class PPOConfig(TrainerOptions):
    """Options of :class:`alignlimits.methods.ppo.PPOTrainer`: its own, and those every trainer shares
    (:class:`~alignlimits.methods.trainer_options.TrainerOptions`: seed, LoRA, checkpoints, loggers, the stop
    rule), whose defaults are PPO's too.

    One *step* is one PPO iteration: ``batch_size`` rollouts from the current policy, then
    ``ppo_epochs`` passes over them in ``num_minibatches`` minibatches each.
    """

    METHOD = "PPO"
    COUNTS = ("steps", "batch_size", "max_new_tokens", "ppo_epochs", "num_minibatches")

    # --- the objective -----------------------------------------------------------------
    beta: float = 0.05
    """KL coefficient β of E[r] − β·KL(π‖π0); required > 0.  Default: kl_coef of the N+
    details (TL;DR).  It is fixed, not adaptive (lm-human-preferences' adaptive KL controller
    would change the target policy during training)."""

    # --- rollouts ----------------------------------------------------------------------
    steps: int = 100
    """Number of PPO iterations.  (lm-human-preferences counts episodes: steps × batch_size.)"""
    batch_size: int = 64
    """Rollouts (prompt, completion) per step, over all processes of a launch (each samples its share).
    Default: lm-human-preferences ``batch_size``."""
    max_new_tokens: int = 53
    """Completion length limit.  Default: response length of the N+ details (TL;DR)."""
    generation_batch_size: int | None = None
    """Sequences per ``generate`` call (None: the whole batch at once).  On CPU throughput stops
    growing around 16 (see ``alignlimits.lm.sampling.CPU_MAX_BATCH``)."""

    # --- optimisation -------------------------------------------------------------------
    learning_rate: float = 3e-6
    """Adam learning rate.  Default: N+ details (lm-human-preferences used 5e-6 / 1.41e-5).
    Tiny models (the exact task) need far larger values, e.g. 1e-3."""
    lr_schedule: str = "linear"
    """``"linear"`` (decay to 0 over ``steps``; lm-human-preferences, N+ details) or
    ``"constant"``."""
    adam_eps: float = 1e-5
    """Adam epsilon.  Default: cleanrl's PPO."""
    weight_decay: float = 0.0
    """AdamW weight decay.  Default: none in either reference implementation."""
    max_grad_norm: float | None = 1.0
    """Global gradient-norm clip (None: off).  Default: TRL's, via TrainingArguments."""
    ppo_epochs: int = 4
    """Passes over each rollout batch.  Default: lm-human-preferences ``noptepochs``."""
    num_minibatches: int = 1
    """Minibatches per pass (batch_size must divide evenly).  Default: lm-human-preferences
    ``nminibatches``."""
    micro_batch_size: int | None = None
    """Sequences per forward pass (gradients accumulate over a minibatch); None: the whole
    minibatch.  Only memory changes, not the result.  Lower it for real LMs on CPU."""

    # --- the PPO losses -----------------------------------------------------------------
    clip_range: float = 0.2
    """ε of the clipped surrogate.  Default: lm-human-preferences ``cliprange``."""
    clip_range_value: float = 0.2
    """Value-function clipping around the rollout values.  Default: ``cliprange_value``."""
    vf_coef: float = 0.1
    """Weight of the value loss (the value head shares the policy trunk, so this also
    limits how much the value loss moves the policy).  Default: ``vf_coef``."""
    gamma: float = 1.0
    """Discount.  Default: lm-human-preferences; 1 keeps the return equal to the objective."""
    lam: float = 0.95
    """GAE λ.  Default: lm-human-preferences."""
    normalize_scores: bool = True
    """Replace the score by (r − μ0)/σ0 and β by β/σ0, μ0 and σ0 from the scores of the first rollouts
    (see :func:`alignlimits.methods.ppo.score_scale`: pooled over the first ≥ 64 rollouts, σ0 floored
    at 0.1 × their root mean square).  The objective becomes (E[r] − μ0 − β·KL)/σ0: same optimum π_β,
    but returns of order 1, which the zero-initialised value head can follow within the value clip
    range.  Without it a score far from 0 (0.6 for the summary reward) leaves the value loss large for
    many steps, and through the shared trunk it moves the policy more than the policy loss does.
    Default: lm-human-preferences, which normalises the reward model to mean 0, std 1 on base-policy
    samples before training."""
    whiten_rewards: bool = False
    """Also scale the per-token rewards (score and KL penalty together) by their batch standard
    deviation, without shifting the mean — lm-human-preferences' ``whiten(rewards,
    shift_mean=False)``; the optimum stays π_β.  Off by default: the score sits on one token in L,
    so the per-token std is about |r|/√L and whitening multiplies the return by about √L (≈ 5 for
    32-token completions), which again leaves the shared value head far behind its targets;
    ``normalize_scores`` already gives the return unit scale."""
    whiten_advantages: bool = True
    """Whiten GAE advantages per batch (mean 0, std 1).  Default: lm-human-preferences."""

    # --- bookkeeping --------------------------------------------------------------------
    output_dir: str = "ppo-run"

    def validate(self) -> None:
        super().validate()
        bad = self.invalid
        if self.batch_size % self.num_minibatches:
            bad(f"batch_size {self.batch_size} is not divisible by num_minibatches {self.num_minibatches}")
        check_split(self.minibatch_size, "PPO's minibatch (batch_size / num_minibatches)")
        for name in ("micro_batch_size", "generation_batch_size"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                bad(f"{name} must be >= 1 or None (got {getattr(self, name)})")
        if self.lr_schedule not in ("linear", "constant"):
            bad(f"lr_schedule must be 'linear' or 'constant' (got {self.lr_schedule!r})")
        if not 0 < self.clip_range < 1:
            bad(f"clip_range must be in (0, 1) (got {self.clip_range})")
        if not self.clip_range_value > 0:
            bad(f"clip_range_value must be > 0 (got {self.clip_range_value})")
        if not 0 < self.gamma <= 1 or not 0 <= self.lam <= 1:
            bad(f"need 0 < gamma <= 1 and 0 <= lam <= 1 (got gamma={self.gamma}, lam={self.lam})")
        if self.vf_coef < 0:
            bad(f"vf_coef must be >= 0 (got {self.vf_coef})")

    @property
    def minibatch_size(self) -> int:
        return self.batch_size // self.num_minibatches
