r"""GRPO through TRL's ``GRPOTrainer``: a thin wrapper that builds its config from our options.

What TRL 1.16's GRPO optimises (so that its point on the KL–reward plane can be read right):

* per prompt, ``num_generations`` completions sampled from the current policy (here at
  temperature 1, top_p 1, top_k 0: the same sampling as everywhere else in alignlimits);
* advantages A_i = r_i − mean of the group, divided by the group's standard deviation
  (``scale_rewards="group"``, TRL's default), the batch's (``"batch"``) or not at all
  (``"none"``, Dr. GRPO, what a study uses).  Dividing by the std rescales the reward against β, so
  the effective KL coefficient is β·std, not β.  The group mean includes the sample itself, so
  :math:`E[A_i\nabla\log\pi(y_i)] = \frac{G-1}{G}\nabla E_\pi r`: the reward's gradient is scaled by
  (G−1)/G and a β given to TRL acts as β·G/(G−1) (1.33β at G = 4).  The wrapper gives TRL
  β·(G−1)/G (:func:`trl_beta`), so ``beta`` is the effective coefficient;
* loss per token −min(ρA, clip(ρ, 1±ε)A) + β·ρ·k3, with k3 = π0/π − log(π0/π) − 1 **in the loss**
  (not in the reward), multiplied by the importance ratio ρ (TRL 1.16's ``use_bias_correction_kl=True``,
  its default, kept here).  On-policy its gradient is log(π/π0)·∇log π: that of the per-token
  KL(π‖π0) at the visited states.  The expected update stops where each state's conditional is
  π0(a|s)·e^{Q(s,a)/β}, Q the expected reward (:func:`grpo_fixed_point`), while π_β (the optimum of
  E[r] − β·KL(π‖π0)) tilts by the soft value, which charges the KL still to come: GRPO charges each
  token's KL where it is spent, so it lands past π_β (a bandit is the exception: there they agree).
  Measured by enumeration on the exact task (12 prompts, β = 0.5, G = 8): the fixed point sits at
  KL 1.36 against π_β's 1.12, 0.054 nats from π_β, with 99% of the exact frontier's gain at its KL
  and 96% of the objective's ceiling J*(β); 1,000 steps of this wrapper land at KL 1.40, gain 1.30,
  0.054 nats from that fixed point and 0.113 from π_β; given β itself (no correction) they land at
  KL 1.10, next to the fixed point of β·8/7 (``benchmarks/bench_grpo_fixed_point.py``,
  ``tests/methods/test_grpo.py``).  k3 without the ratio would have the gradient of KL(π0‖π) and stop
  at π ∝ π0/(λ − Q) per state (KL 2.02, 0.85 nats from π_β).  Token losses are aggregated per
  ``loss_type`` (TRL's default ``"dapo"``: mean over all completion tokens of the batch).

So GRPO's β weighs reward against each token's KL as π_β's does, but its fixed point is not π_β;
a point is placed by the KL the evaluator measures afresh, and compared there.  The wrapper additionally logs ``kl_k1_mean``: the mean over the step's
rollouts of Σ_t (log π − log π0), computed from the log-probs TRL already has (no extra pass).

The reward is called with the prompt text exactly as given to the model (the chat-formatted prompt),
the form the base table, the frontier and evaluation score too.  Precision
(:mod:`alignlimits.methods.lora`): the trainable parameters are float32 master weights whatever
dtype the model came in (TRL then builds the reference in float32 too), and on a bf16-capable GPU
TRL's ``bf16=True`` runs the forward passes under autocast.

Options → ``GRPOConfig`` (:func:`alignlimits.methods.trl_common.trl_config`, which also says what
every TRL-based trainer sets alike): ``beta`` → β·(G−1)/G (must be > 0), ``batch_size`` → completions per step (a
multiple of ``num_generations``), ``max_new_tokens`` → ``max_completion_length``.

Output directory (:func:`alignlimits.methods.trl_common.run_trl_training`): ``checkpoint-STEP/``,
``metrics.jsonl`` (TRL's names plus ``reward_mean`` (= TRL's ``reward``), ``kl_k1_mean`` and
``objective_absolute`` = reward_mean − β·kl_k1_mean, the same three columns as PPO's), ``grpo_options.json``
and the final ``policy/``.
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

__all__ = ["GRPOOptions", "build_grpo_trainer", "grpo_config", "train_grpo"]

SCALE_REWARDS = ("group", "batch", "none")
LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo")


@dataclass(kw_only=True)
class GRPOOptions(TRLOptions):
    """Our options for GRPO (and :class:`~alignlimits.methods.trl_common.TRLOptions`'; every option keyword-only);
    :func:`grpo_config` maps them onto TRL's ``GRPOConfig``."""

    METHOD = "GRPO"
    COUNTS = ("steps", "batch_size", "max_new_tokens", "num_iterations")

    beta: float = 0.04
    """The effective KL coefficient, in the reward's units when ``scale_rewards="none"``; must be > 0.  TRL is
    given β·(G−1)/G (:func:`trl_beta`).  Default: DeepSeekMath's GRPO (TRL's own default is 0, i.e. no KL and
    no reference model, which we refuse)."""
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
    epsilon: float = 0.2
    """Clip range of the surrogate."""
    scale_rewards: str = "group"
    """"group" (TRL default: divide by the group std), "batch" or "none" (Dr. GRPO)."""
    loss_type: str = "dapo"
    """TRL's token aggregation: "dapo" (default), "grpo", "dr_grpo", "bnpo", "cispo", "sapo"."""
    max_new_tokens: int = 64
    """``max_completion_length``."""
    output_dir: str = "grpo-run"

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
                      loss_type=options.loss_type, beta=trl_beta(options.beta, options.num_generations))


def trl_beta(beta: float, group_size: int) -> float:
    r"""The β to give TRL for an effective β: :math:`\beta (G-1)/G`. TRL's group mean includes the sample itself,
    so :math:`E[A_i \nabla\log\pi(y_i)] = \frac{G-1}{G}\nabla E_\pi r`: the reward's gradient is scaled by
    (G−1)/G while the KL term's is not, and the β passed acts as :math:`\beta G/(G-1)`."""
    return float(beta) * (group_size - 1) / group_size


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
    callbacks: Sequence = (),
):
    """Train with GRPO and return the trained model (a ``PeftModel`` with LoRA).

    ``resume_from_checkpoint``: True continues from the last ``checkpoint-STEP`` in
    ``output_dir`` (a fresh start when there is none), a path from that checkpoint. ``callbacks``: more
    ``TrainerCallback``s, first in line (:func:`~alignlimits.methods.trl_common.run_trl_training`)."""
    return run_trl_training(
        options, lambda: build_grpo_trainer(options, model, tokenizer, reward_fn, prompts), tokenizer,
        resume_from_checkpoint, callbacks=callbacks,
    )


KL_GRADIENTS = ("forward", "reverse")


def grpo_fixed_point(token_ids: Sequence[tuple[int, ...]], base_probs, rewards, beta: float,
                     kl_gradient: str = "forward", tol: float = 1e-13):
    r"""Where GRPO's expected update stops on an enumerated outcome tree, for a policy free at every state (tabular).

    ``token_ids`` (K outcomes, each a tuple of tokens: the leaves of a prefix tree), ``base_probs`` (P, K) the base
    model's probability of each outcome per prompt, ``rewards`` (K,), ``beta`` the effective β (what
    :func:`trl_beta` makes TRL apply). GRPO's expected gradient on the logits z(·|s) at a visited state s is
    proportional to :math:`\pi(a|s)\,(Q(s,a) - V(s))` from the group-mean advantage, with
    :math:`Q(s,a) = E_\pi[r \mid s, a]` (the reward only), less β times the gradient of its per-token KL term:

    - ``"forward"`` (TRL 1.16's default, ``use_bias_correction_kl=True``: k3 times the differentiable importance
      ratio, whose on-policy gradient is :math:`\log(\pi/\pi_0)\nabla\log\pi`): the gradient of
      KL(π‖π0)(s), :math:`\pi(a|s)(\log\frac{\pi(a|s)}{\pi_0(a|s)} - \mathrm{KL}_s)`. It vanishes at
      :math:`\pi(a|s) \propto \pi_0(a|s)\,e^{Q(s,a)/\beta}`: the tilt by the expected reward, where π_β tilts by
      the soft value :math:`\beta\log E_{\pi_0}[e^{r/\beta} \mid s, a]`, which charges the KL still to come.
      In a bandit the two agree; over several tokens GRPO ignores the future KL and lands past π_β.
    - ``"reverse"`` (``use_bias_correction_kl=False``: k3 alone, gradient :math:`(1 - \pi_0/\pi)\nabla\log\pi`):
      the gradient of KL(π0‖π)(s), :math:`\pi(a|s) - \pi_0(a|s)`. It vanishes at
      :math:`\pi(a|s) = \beta\pi_0(a|s)/(\lambda(s) - Q(s,a))` with :math:`\sum_a \pi(a|s) = 1`,
      :math:`\lambda(s) > \max_a Q`; in a bandit :math:`\pi \propto \pi_0/(\lambda - r)`, not π_β.

    Solved from the leaves up (Q of a terminal action is its reward, of any other the V of the state it leads to,
    :math:`V(s) = \sum_a \pi(a|s) Q(s,a)`). Returns (P, K) outcome probabilities of the fixed point.
    """
    import numpy as np

    if kl_gradient not in KL_GRADIENTS:
        raise ValueError(f"kl_gradient must be one of {', '.join(KL_GRADIENTS)}, not {kl_gradient!r}")
    q0 = np.atleast_2d(np.asarray(base_probs, dtype=np.float64))
    rewards = np.asarray(rewards, dtype=np.float64)
    outcomes = [tuple(t) for t in token_ids]
    index = {t: k for k, t in enumerate(outcomes)}
    prefixes = {t[:i] for t in outcomes for i in range(len(t))}
    if prefixes & set(index):
        raise ValueError("an outcome is also the prefix of another: not the leaves of a prefix tree")
    mass = {s: sum(q0[:, index[t]] for t in outcomes if t[:len(s)] == s) for s in prefixes}
    value, policy = {}, {}
    for s in sorted(prefixes, key=len, reverse=True):
        children = sorted({t[:len(s) + 1] for t in outcomes if t[:len(s)] == s and len(t) > len(s)})
        Q = np.stack([rewards[index[c]] * np.ones(q0.shape[0]) if c in index else value[c] for c in children], axis=1)
        p0 = np.stack([q0[:, index[c]] if c in index else mass[c] for c in children], axis=1)
        p0 = p0 / np.maximum(mass[s][:, None], 1e-300)
        pi = _state_fixed_point(p0, Q, beta, kl_gradient, tol)
        value[s] = (pi * Q).sum(axis=1)
        policy.update({c: pi[:, j] for j, c in enumerate(children)})
    out = np.ones(q0.shape)
    for k, t in enumerate(outcomes):
        for i in range(1, len(t) + 1):
            out[:, k] *= policy[t[:i]]
    return out


def _state_fixed_point(p0, Q, beta: float, kl_gradient: str, tol: float):
    """π(·|s) per row (see :func:`grpo_fixed_point`), normalised exactly."""
    import numpy as np

    if kl_gradient == "forward":
        logits = np.where(p0 > 0, np.log(np.where(p0 > 0, p0, 1.0)) + Q / beta, -np.inf)
        pi = np.exp(logits - logits.max(axis=1, keepdims=True))
    else:
        lam = _solve_lambda(p0, Q, beta, tol)
        pi = np.where(p0 > 0, beta * p0 / np.maximum(lam[:, None] - Q, 1e-300), 0.0)
    return pi / pi.sum(axis=1, keepdims=True)


def _solve_lambda(p0, Q, beta: float, tol: float):
    r"""λ > max Q with :math:`\sum_a \beta p_0(a)/(\lambda - Q_a) = 1` per row, by bisection on (max Q, max Q + β]
    (the sum falls in λ, from ∞ to at most 1 there)."""
    import numpy as np

    top = np.where(p0 > 0, Q, -np.inf).max(axis=1)
    lo, hi = top, top + beta
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        with np.errstate(divide="ignore", invalid="ignore"):
            f = np.where(p0 > 0, beta * p0 / (mid[:, None] - Q), 0.0).sum(axis=1) - 1
        lo, hi = np.where(f > 0, mid, lo), np.where(f > 0, hi, mid)
        if np.all(hi - lo <= tol * np.maximum(1.0, np.abs(hi))):
            break
    return 0.5 * (lo + hi)
