r"""PPO for RLHF, the project's own (TRL 1.x no longer ships one), readable top to bottom.

What one step does (cleanrl style, the recipe of lm-human-preferences; defaults and sources in
:mod:`alignlimits.methods.ppo_config`):

1. **Rollouts.**  ``batch_size`` prompts; one completion each, sampled from the *current*
   policy at temperature 1 (no top-k/top-p, no repetition penalty, whatever the model's
   generation_config says), up to ``max_new_tokens``, stopping at EOS.  The completion's
   tokens are those up to and including the first EOS (all of them when truncated).
2. **Scoring.**  One teacher-forced pass of the policy gives, per completion token, log π and
   the value V (a linear head on the last hidden state); one pass of the frozen reference
   gives log π0; the reward callable gives the sequence score r(x, y), called with the prompt
   text exactly as given to the model (the chat-formatted prompt: the form the base table, the
   frontier and evaluation score too, so training optimises the reward that is measured).
3. **Per-token rewards.**  r_t = −β (log π(y_t) − log π0(y_t)) on every completion token, plus
   r(x, y) on the last one.  With γ = 1 the return from the first token is
   r − β log(π(y|x)/π0(y|x)), whose expectation is E[r] − β·KL(π‖π0): the objective whose
   optimum is π_β ∝ π0 e^{r/β}.  Both log-probs come from the same teacher-forced pass at
   temperature 1, i.e. the distribution the tokens were sampled from.
   *Score normalisation* maps r to (r − μ0)/σ0 and β to β/σ0, with μ0, σ0 the mean and a
   guarded std of the first rollouts' scores (:func:`score_scale`; a constant shift and a common
   scale: the optimum is unchanged, and the returns are of order 1).  Optional *reward whitening*
   (``whiten_rewards``, off by default) further divides all r_t by their batch standard deviation
   without a mean shift: lm-human-preferences' ``whiten(shift_mean=False)`` re-adds the mean,
   which adds a constant per *token* and so a length bonus that moves the optimum.
4. **GAE** (γ, λ) over the completion tokens, value 0 after the last token;
   returns = advantages + values; advantages whitened per batch.
5. **Updates.**  ``ppo_epochs`` passes over the batch in ``num_minibatches`` shuffled
   minibatches: clipped surrogate −min(ρA, clip(ρ, 1±ε)A) plus ``vf_coef`` × the clipped value
   loss ½ max((V−R)², (V_clip−R)²), token means over the minibatch, Adam, grad-norm clip.

**Value head: a linear head on the policy's last hidden state (shared trunk)**, not a separate
critic.  Why: one forward pass gives log π and V, and there is one model in memory — on a CPU
that halves the cost of every step, and with LoRA the critic trains through the same adapters.
lm-human-preferences shares the trunk the same way; the N+ details use a separate critic
initialised from the reward model, which we do not have in general (rewards are any callable).
The cost is that value gradients also move the policy; ``vf_coef`` = 0.1 keeps that small.
The head is zero-initialised.

The reference is frozen: a deep copy of the initial policy (full fine-tuning), the same model
with adapters disabled (LoRA), or whatever ``ref_policy`` is passed.

Precision (:mod:`alignlimits.methods.lora`): trainable parameters are float32 master weights
whatever dtype the policy came in; on CUDA every forward pass (sampling, policy, reference) runs
under bf16 autocast, so the KL's two log-probs have the same precision.

Output directory (written by :mod:`alignlimits.methods.ppo_bookkeeping`)::

    metrics.jsonl            one JSON row per step (stable keys, see ``_METRIC_KEYS``)
    checkpoint-STEP/         policy/ (save_pretrained: full weights or adapter),
                             value_head.safetensors, optimizer.pt, rng.pt, trainer_state.json
    policy/                  the final policy (+ tokenizer, value head), for evaluation
    alignlimits.jsonl        with a ``yardstick``: the run's points on the plane (:mod:`alignlimits.methods.measure`)

``trainer_state.json`` is written last, so a checkpoint without it is incomplete and ignored.
Only the newest checkpoint is kept unless ``keep_checkpoints``.  Resuming
(``train(resume_from_checkpoint=True)``) loads the last complete checkpoint, drops the metrics rows
after it, and continues; each step's prompt order, sampling and minibatch seeds are
``derive_seed(seed, "ppo", stream, step)``, so a resumed run reproduces the uninterrupted one.

Under a multi-process launch (:mod:`alignlimits.methods.distributed`) the sizes stay global: each process samples its
share of the batch (its own sampling stream, labelled by its rank), gradients and whitening statistics are summed over
the processes, so every update is the one-process update of the whole batch, and rank 0 writes every file.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from alignlimits.errors import AlignLimitsError
from alignlimits.lm.sampling import encode_prompt, eos_token_ids, generate_batch
from alignlimits.methods import distributed
from alignlimits.methods.lora import add_lora, autocast_context, float32_master_weights, is_peft
from alignlimits.methods.ppo_bookkeeping import Checkpointing, Measuring, MetricsLog
from alignlimits.methods.ppo_config import PPOConfig
from alignlimits.methods.progress import RunningKL, step_description, training_progress
from alignlimits.methods.stopping import read_rows, write_stop
from alignlimits.seeding import derive_seed

__all__ = ["PPOConfig", "PPOTrainer", "ValueHead", "score_scale"]

RewardFn = Callable[[Sequence[str], Sequence[str]], Any]

# Keys of every metrics.jsonl row (documented here; the pipeline and plots rely on them).
_METRIC_KEYS = (
    "step",  # 1-based PPO iteration
    "reward_mean",  # mean sequence score r(x, y) of the rollouts
    "reward_std",
    "kl_k1_mean",  # mean over rollouts of sum_t (log π − log π0): measured sequence KL (k1)
    "kl_k1_se",  # its standard error
    "objective_absolute",  # reward_mean − β · kl_k1_mean (not relative to the base model; the points' objective is)
    "objective_rel",  # mean of r − b(x) − β·k1: relative to each prompt's base level b(x) (NaN without baselines)
    "objective_rel_se",  # its standard error over the step's rollouts
    "loss",  # pg_loss + vf_coef · vf_loss, mean over updates
    "pg_loss",
    "vf_loss",
    "clipfrac",  # fraction of tokens whose ratio left [1−ε, 1+ε]
    "vf_clipfrac",
    "approx_kl",  # ½ E[(log ρ)²] between the rollout and the updated policy
    "entropy",  # per-token entropy of the updated policy
    "completion_tokens_mean",
    "lr",
    "seconds",  # wall time of the step
    "tokens_per_s",  # completion tokens generated per second of step time
)
_UPDATE_KEYS = ("loss", "pg_loss", "vf_loss", "clipfrac", "vf_clipfrac", "approx_kl", "entropy")

SCALE_ROLLOUTS = 64
"""Score normalisation pools the scores of at least this many first rollouts (see :func:`score_scale`)."""
SCALE_FLOOR = 0.1
"""σ0 is at least this fraction of the pooled scores' root mean square."""


# ---------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Over the masked entries of the global batch (every process's rows)."""
    return distributed.sum_tensor((x * mask).sum()) / distributed.sum_tensor(mask.sum()).clamp_min(1)


def _masked_std(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mean = _masked_mean(x, mask)
    var = _masked_mean((x - mean) ** 2, mask)
    n = distributed.sum_tensor(mask.sum())
    if n > 1:
        var = var * n / (n - 1)  # unbiased, as lm-human-preferences
    return var.sqrt()


def _whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool) -> torch.Tensor:
    """(x − mean)/std (``shift_mean``) or x/std (scale only), over the masked entries."""
    std = _masked_std(x, mask)
    if shift_mean:
        x = x - _masked_mean(x, mask)
    return x / (std + 1e-8) * mask


def _gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float) -> torch.Tensor:
    """A_t = Σ_k (γλ)^k δ_{t+k}, δ_t = r_t + γ V_{t+1} − V_t, with V = 0 after the last token."""
    L = rewards.shape[1]
    adv = torch.zeros_like(rewards)
    lastgaelam = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(L)):
        next_v = values[:, t + 1] if t + 1 < L else torch.zeros_like(values[:, 0])
        delta = rewards[:, t] + gamma * next_v - values[:, t]
        lastgaelam = (delta + gamma * lam * lastgaelam) * mask[:, t]
        adv[:, t] = lastgaelam
    return adv


def score_scale(scores: np.ndarray) -> tuple[float, float]:
    r"""(μ0, σ0) of score normalisation: μ0 = mean r, σ0 = max(s, 0.1·√(mean r²)), s the unbiased
    standard deviation of the pooled scores r_1..r_n (σ0 = 1 when both are 0).

    Two guards against a σ0 near 0, which would blow later scores (r − μ0)/σ0 up to hundreds or more:

    * **pooled**: the trainer passes the scores of the first ≥ ``SCALE_ROLLOUTS`` (64) rollouts, not
      just the first batch (8 rollouts in the quick preset), refreshing (μ0, σ0) each step until the
      pool is full and fixing them afterwards.  A heavy-tailed reward gives a nearly constant small
      batch often (8 draws miss a 3% tail with probability 0.78; 64 draws, 0.14);
    * **floored**: even pooled, s can be ≈ 0 while the reward is not; the root mean square is a scale
      the reward has whatever its spread, and the floor binds only when s < 0.1·|μ0| (a coefficient
      of variation under 10%), so it bounds |r − μ0|/σ0 by 10·|r − μ0|/RMS.

    Any σ0 leaves the optimum π_β unchanged (r and β are divided alike); σ0 only conditions the
    returns the value head must follow.
    """
    r = np.asarray(scores, dtype=np.float64)
    s = float(r.std(ddof=1)) if r.size > 1 else 0.0
    sigma = max(s, SCALE_FLOOR * float(np.sqrt(np.mean(r**2))))
    return float(r.mean()), sigma if sigma > 0 else 1.0


class ValueHead(nn.Module):
    """V(s_t) = w·h_t + b on the policy's last hidden state; zero-initialised (V ≡ 0)."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.linear = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden.float()).squeeze(-1)


# ---------------------------------------------------------------------------------------
# the trainer
# ---------------------------------------------------------------------------------------


class PPOTrainer(Checkpointing, Measuring):
    """PPO with a per-token k1 KL penalty; ``PPOTrainer(config, policy, ref_policy, tokenizer,
    reward_fn, prompts).train()`` returns the trained policy.

    Args:
        config: a :class:`PPOConfig` (β, steps, batch, learning rate, output_dir, ...).
        policy: a transformers causal LM (or a peft ``PeftModel``); trained in place, its trainable
            parameters cast to float32.  With ``config.use_lora`` it is wrapped with LoRA adapters
            first (``self.policy``).
        ref_policy: the frozen reference π0, or None: a frozen copy of ``policy`` as given
            (full fine-tuning) or the same model with adapters disabled (LoRA).
        tokenizer: the policy's tokenizer (prompts are encoded with it, completions decoded
            with ``skip_special_tokens=True`` as TRL does, so both trainers see the same text).
        reward_fn: ``reward_fn(prompts, completions) -> sequence of floats``, one per pair (the
            callables of :func:`alignlimits.lm.rewards.load_reward`, or any TRL-style one that
            accepts them positionally).  It receives ``prompts`` exactly as given here.
        prompts: the training prompts, the exact text given to the model (chat template already
            applied), encoded as the sampler does (:func:`alignlimits.lm.sampling.encode_prompt`);
            the reward sees the same text, as in the base table and in evaluation.
        yardstick: optional :class:`~alignlimits.methods.measure.Yardstick`: the run's point on the KL–reward plane,
            measured on held-out prompts every ``yardstick.every`` steps into ``alignlimits.jsonl`` (off by default;
            it restores the random state, so the training itself is unchanged).
    """

    def __init__(
        self,
        config: PPOConfig,
        policy: nn.Module,
        ref_policy: nn.Module | None,
        tokenizer: Any,
        reward_fn: RewardFn,
        prompts: Sequence[str],
        yardstick=None,
    ):
        config.validate()
        distributed.refuse_sharding("PPO")
        self.yardstick = yardstick
        self.config = config
        self.tokenizer = tokenizer
        self.reward_fn = reward_fn
        self.reward_name = getattr(reward_fn, "name", getattr(reward_fn, "__name__", type(reward_fn).__name__))
        self.prompts = list(prompts)
        if not self.prompts:
            raise AlignLimitsError("PPO: no training prompts")
        levels = config.baselines
        self.levels = None if levels is None else np.asarray([float(levels[p]) for p in self.prompts])
        if not callable(reward_fn):
            raise AlignLimitsError(f"PPO: reward_fn must be callable, got {type(reward_fn).__name__}")
        # Token ids: pad falls back to EOS; every EOS id the model declares ends a completion.
        if tokenizer.eos_token_id is None:
            raise AlignLimitsError("PPO: the tokenizer has no EOS token")
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.eos_ids = sorted({tokenizer.eos_token_id, *eos_token_ids(policy, tokenizer)})
        # The sampler's encoding (special tokens as the tokenizer adds them, a doubled BOS removed),
        # so a prompt text means the same token ids here, in the sample table and in evaluation.
        self.prompt_ids = [encode_prompt(tokenizer, p) for p in self.prompts]
        self.device = next(policy.parameters()).device
        self._set_up_models(policy, ref_policy)
        self.value_head = ValueHead(self.policy.config.get_text_config().hidden_size).to(self.device)
        self._params = [p for p in self.policy.parameters() if p.requires_grad] + list(self.value_head.parameters())
        distributed.broadcast_parameters(self._params)  # LoRA's random initialisation, the same on every process
        self.optimizer = torch.optim.AdamW(
            self._params, lr=config.learning_rate, eps=config.adam_eps, weight_decay=config.weight_decay
        )
        self.step = 0
        self.score_pool: list[float] = []  # scores of the first rollouts, for score_scale
        self.output_dir = Path(config.output_dir)

    def _set_up_models(self, policy: nn.Module, ref_policy: nn.Module | None) -> None:
        """LoRA (optional), float32 master weights, the frozen reference, dropout off."""
        policy = float32_master_weights(add_lora(policy, self.config, "PPO"))
        self.lora = is_peft(policy)
        if ref_policy is None and not self.lora:
            ref_policy = copy.deepcopy(policy)  # after the cast: π and π0 at the same precision
        if ref_policy is not None:
            ref_policy.eval()
            ref_policy.requires_grad_(False)
        self.policy = policy
        self.ref_policy = ref_policy  # None: the policy with adapters disabled
        # Dropout off everywhere: log π must be a deterministic function of the weights.
        self.policy.eval()

    @property
    def _minibatch(self) -> int:
        """This process's share of a minibatch (the config's sizes are global)."""
        return self.config.minibatch_size // distributed.world_size()

    @property
    def _micro(self) -> int:
        return self.config.micro_batch_size or self._minibatch

    # -----------------------------------------------------------------------------------
    # the loop: rollout → advantages → update
    # -----------------------------------------------------------------------------------

    def train(self, resume_from_checkpoint: bool | str | Path | None = None) -> nn.Module:
        """Run ``config.steps`` PPO steps and return the trained policy.

        ``resume_from_checkpoint``: True resumes from the last complete checkpoint in
        ``output_dir`` (a fresh start when there is none); a path resumes from that checkpoint.
        """
        cfg = self.config
        self.start(resume_from_checkpoint)
        with MetricsLog(self.output_dir, cfg) as log, training_progress(cfg.progress and distributed.is_main()) as bar:
            task = bar.add_task(step_description("PPO", cfg.beta), total=cfg.steps, completed=self.step)
            kl, rows, rule, reason = RunningKL(), read_rows(self.output_dir), cfg.stop_rule(), "steps"
            while self.step < cfg.steps:
                row = self._train_step(self.step + 1)
                log.write(row)
                rows.append(row)
                kl.add(row["kl_k1_mean"], row["kl_k1_se"])
                bar.update(task, advance=1, description=step_description("PPO", cfg.beta, row["reward_mean"], kl))
                reason = rule.reason(rows) or reason
                reason = self.measure(log, self.step == cfg.steps or reason != "steps", row["seconds"]) or reason
                reason = distributed.from_main(reason)  # rank 0's clock and yardstick decide for every process
                if self.step == cfg.steps or reason != "steps" or (cfg.save_steps and self.step % cfg.save_steps == 0):
                    self.save_checkpoint()
                if reason != "steps":
                    break
        if distributed.is_main():
            write_stop(self.output_dir, reason, self.step)
        self.save_policy(self.output_dir / "policy")
        distributed.barrier()  # the policy is on disk before any process goes on
        return self.policy

    def _train_step(self, step: int) -> dict[str, float]:
        """One PPO iteration; returns its metrics row."""
        t0 = time.perf_counter()
        ro = self._rollout(step)
        self._advantages(ro)
        upd = self._update(ro, step)
        self.step = step
        return self._metrics_row(ro, upd, time.perf_counter() - t0)

    # -----------------------------------------------------------------------------------
    # rollouts
    # -----------------------------------------------------------------------------------

    def _batch_indices(self, step: int) -> list[int]:
        """Prompt indices of a step: consecutive slices of per-epoch permutations, each a
        function of (seed, epoch) only, so resuming at any step gives the same order."""
        n, b = len(self.prompts), self.config.batch_size
        out = []
        for pos in range((step - 1) * b, step * b):
            epoch, k = divmod(pos, n)
            g = torch.Generator().manual_seed(derive_seed(self.config.seed, "ppo", "prompt-order", epoch))
            out.append(int(torch.randperm(n, generator=g)[k]))
        return out

    @torch.no_grad()
    def _rollout(self, step: int) -> dict[str, Any]:
        """Sample, score and teacher-force this process's share of the batch: everything the advantages and updates need."""
        idx = distributed.share(self._batch_indices(step))
        query, query_mask = self._pad([self.prompt_ids[i] for i in idx], left=True)
        token_ids, completions = self._sample(idx, step)
        # completion = tokens up to and including the first EOS (all when truncated); right-padded
        response, mask = self._pad(token_ids, left=False)
        length = torch.tensor([max(len(t), 1) for t in token_ids], device=self.device)
        scores = self._score([self.prompts[i] for i in idx], completions)
        logprobs, values, ref_logprobs = [], [], []
        for s in range(0, len(idx), self._micro):
            sl = slice(s, s + self._micro)
            lp, v, _ = self._forward(self.policy, query[sl], query_mask[sl], response[sl], values=True)
            logprobs.append(lp)
            values.append(v)
            ref_logprobs.append(self._ref_logprobs(query[sl], query_mask[sl], response[sl]))
        mask = mask.float()
        levels = np.zeros(len(idx)) if self.levels is None else self.levels[idx]
        return dict(
            query=query, query_mask=query_mask, response=response, mask=mask, length=length, scores=scores, levels=levels,
            logprobs=torch.cat(logprobs) * mask, ref_logprobs=torch.cat(ref_logprobs) * mask, values=torch.cat(values) * mask,
        )

    def _sample(self, idx: list[int], step: int) -> tuple[list[list[int]], list[str]]:
        """Completions (token ids, texts) of the current policy for the prompts ``idx``, by the project's
        base-distribution sampler (temperature 1, no top-k/top-p, nothing inherited from the checkpoint's
        generation_config); LoRA layers live inside the base model's modules, so its generate() samples
        the policy.  Seeds are functions of (seed, step), so a resumed run draws the same."""
        cfg = self.config
        gen_model = self.policy.get_base_model() if self.lora else self.policy
        chunk = cfg.generation_batch_size or len(idx)
        token_ids: list[list[int]] = []
        texts: list[str] = []
        for c, s in enumerate(range(0, len(idx), chunk)):
            with autocast_context(self.device):
                out = generate_batch(gen_model, self.tokenizer, [self.prompt_ids[i] for i in idx[s : s + chunk]],
                                     cfg.max_new_tokens, seed=derive_seed(cfg.seed, "ppo", "rollout", step, c, *distributed.stream()))
            token_ids += out.token_ids
            texts += out.texts
        return token_ids, texts

    def _pad(self, seqs: list[list[int]], left: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids, mask), padded with pad_id to the longest sequence (at least 1 token)."""
        width = max(1, max(len(s) for s in seqs))
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            cols = slice(width - len(s), width) if left else slice(0, len(s))
            ids[i, cols] = torch.tensor(s, dtype=torch.long)
            mask[i, cols] = 1
        return ids.to(self.device), mask.to(self.device)

    def _score(self, prompts: list[str], completions: list[str]) -> np.ndarray:
        try:
            scores = np.asarray(self.reward_fn(prompts, completions), dtype=np.float64).reshape(-1)
        except AlignLimitsError:
            raise
        except Exception as e:  # noqa: BLE001 - re-raised with the reward's name
            raise AlignLimitsError(f"PPO: reward {self.reward_name!r} failed: {type(e).__name__}: {e}") from e
        if scores.shape != (len(prompts),):
            raise AlignLimitsError(
                f"PPO: reward {self.reward_name!r} returned {scores.size} scores for {len(prompts)} completions"
            )
        bad = np.flatnonzero(~np.isfinite(scores))
        if bad.size:
            i = int(bad[0])
            raise AlignLimitsError(
                f"PPO: reward {self.reward_name!r} returned {scores[i]} for row {i} (completion {completions[i]!r})"
            )
        return scores

    # -----------------------------------------------------------------------------------
    # forward passes
    # -----------------------------------------------------------------------------------

    def _forward(
        self,
        model: nn.Module,
        query: torch.Tensor,
        query_mask: torch.Tensor,
        response: torch.Tensor,
        values: bool,
        entropy: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Teacher-forced log π(y_t | x, y_<t) for each response token (B, L), the values
        V(x, y_<t) (B, L) if asked, and the per-token entropy if asked.

        Prompts are left-padded; positions count from each prompt's first real token, exactly
        as ``generate`` numbers them, so these log-probs are the sampling distribution's."""
        ids = torch.cat([query, response], dim=1)
        attn = torch.cat([query_mask, torch.ones_like(response)], dim=1)
        position_ids = (attn.cumsum(1) - 1).clamp_min(0)
        P, L = query.shape[1], response.shape[1]
        kwargs = dict(input_ids=ids, attention_mask=attn, position_ids=position_ids, output_hidden_states=values, use_cache=False)
        with autocast_context(self.device):
            try:  # the LM head only where needed: the last prompt position and the completion
                out = model(**kwargs, logits_to_keep=L + 1)
            except TypeError:  # a model without logits_to_keep
                out = model(**kwargs)
        logits = out.logits[:, -(L + 1) : -1, :].float()  # temperature 1
        logp_all = torch.log_softmax(logits, dim=-1)
        logp = logp_all.gather(-1, response.unsqueeze(-1)).squeeze(-1)
        v = self.value_head(out.hidden_states[-1][:, P - 1 : -1, :]) if values else None
        ent = None
        if entropy:
            with torch.no_grad():
                ent = -(logp_all.exp() * logp_all).sum(-1)
        return logp, v, ent

    def _ref_logprobs(self, query, query_mask, response) -> torch.Tensor:
        if self.ref_policy is not None:
            return self._forward(self.ref_policy, query, query_mask, response, values=False)[0]
        with self.policy.disable_adapter():
            return self._forward(self.policy, query, query_mask, response, values=False)[0]

    # -----------------------------------------------------------------------------------
    # advantages
    # -----------------------------------------------------------------------------------

    def _advantages(self, ro: dict[str, Any]) -> None:
        """Per-token rewards −(β/σ0)·(log π − log π0), plus (r − b(x) − μ0)/σ0 on the last token; GAE."""
        cfg = self.config
        mask = ro["mask"]
        kl_tok = (ro["logprobs"] - ro["ref_logprobs"]) * mask
        mu0, sd0 = 0.0, 1.0
        if cfg.normalize_scores:
            if len(self.score_pool) < SCALE_ROLLOUTS:
                self.score_pool += distributed.gather((ro["scores"] - ro["levels"]).tolist())
            mu0, sd0 = score_scale(np.asarray(self.score_pool))
        rewards = -(cfg.beta / sd0) * kl_tok
        last = (ro["length"] - 1).clamp_min(0)
        score = torch.as_tensor((ro["scores"] - ro["levels"] - mu0) / sd0, dtype=rewards.dtype, device=self.device)
        rewards[torch.arange(len(last)), last] += score
        if cfg.whiten_rewards:
            rewards = _whiten(rewards, mask, shift_mean=False)
        adv = _gae(rewards, ro["values"], mask, cfg.gamma, cfg.lam)
        ro["returns"] = adv + ro["values"]
        ro["advantages"] = _whiten(adv, mask, shift_mean=True) if cfg.whiten_advantages else adv
        ro["kl_seq"] = kl_tok.sum(1)

    # -----------------------------------------------------------------------------------
    # updates
    # -----------------------------------------------------------------------------------

    def _lr(self, step: int) -> float:
        if self.config.lr_schedule == "linear":
            return self.config.learning_rate * (1.0 - (step - 1) / self.config.steps)
        return self.config.learning_rate

    def _update(self, ro: dict[str, Any], step: int) -> dict[str, float]:
        """``ppo_epochs`` passes over the batch in shuffled minibatches; the mean of each statistic."""
        cfg = self.config
        lr = self._lr(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        g = torch.Generator().manual_seed(derive_seed(cfg.seed, "ppo", "minibatches", step))
        stats, rows = [], len(ro["scores"])
        for _ in range(cfg.ppo_epochs):
            perm = torch.randperm(rows, generator=g).tolist()
            for m0 in range(0, rows, self._minibatch):
                stats.append(self._minibatch_step(ro, perm[m0 : m0 + self._minibatch]))
        # each process's statistics are its part of token sums over the global minibatch
        out = distributed.sum_values({k: float(np.mean([s[k] for s in stats])) for k in _UPDATE_KEYS})
        return {**out, "lr": lr}

    def _minibatch_step(self, ro: dict[str, Any], mb: list[int]) -> dict[str, float]:
        """One optimizer step on minibatch ``mb``, gradients accumulated over micro-batches."""
        n_tok = distributed.sum_tensor(ro["mask"][mb].sum()).clamp_min(1)  # the global minibatch's tokens
        self.optimizer.zero_grad(set_to_none=True)
        acc = dict.fromkeys(_UPDATE_KEYS, 0.0)
        for u0 in range(0, len(mb), self._micro):
            loss, stats = self._loss(ro, mb[u0 : u0 + self._micro], n_tok)
            loss.backward()
            for k, v in stats.items():
                acc[k] += v
        distributed.sum_gradients(self._params)  # the one-process gradient of the global minibatch
        if self.config.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self._params, self.config.max_grad_norm)
        self.optimizer.step()
        return acc

    def _loss(self, ro: dict[str, Any], ub: list[int], n_tok: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Clipped surrogate −min(ρA, clip(ρ)A) + vf_coef·½max((V−R)², (V_clip−R)²) of the rows ``ub``,
        as token sums over the minibatch's ``n_tok`` tokens; and its statistics."""
        cfg = self.config
        L = int(ro["length"][ub].max())  # trim the right padding common to the micro-batch
        mask = ro["mask"][ub][:, :L]
        new_logp, new_v, ent = self._forward(
            self.policy, ro["query"][ub], ro["query_mask"][ub], ro["response"][ub][:, :L], values=True, entropy=True
        )
        old_logp, old_v = ro["logprobs"][ub][:, :L], ro["values"][ub][:, :L]
        adv, ret = ro["advantages"][ub][:, :L], ro["returns"][ub][:, :L]
        logratio = (new_logp - old_logp) * mask
        ratio = logratio.exp()
        pg = torch.max(-adv * ratio, -adv * ratio.clamp(1 - cfg.clip_range, 1 + cfg.clip_range))
        v_clip = old_v + (new_v - old_v).clamp(-cfg.clip_range_value, cfg.clip_range_value)
        vf = 0.5 * torch.max((new_v - ret) ** 2, (v_clip - ret) ** 2)

        def token_mean(x: torch.Tensor) -> torch.Tensor:
            return (x * mask).sum() / n_tok

        pg_loss, vf_loss = token_mean(pg), token_mean(vf)
        loss = pg_loss + cfg.vf_coef * vf_loss
        with torch.no_grad():
            stats = dict(
                loss=loss, pg_loss=pg_loss, vf_loss=vf_loss,
                clipfrac=token_mean(((ratio - 1).abs() > cfg.clip_range).float()),
                vf_clipfrac=token_mean(((new_v - ret) ** 2 < (v_clip - ret) ** 2).float()),
                approx_kl=token_mean(0.5 * logratio**2), entropy=token_mean(ent),
            )
        return loss, {k: float(v.detach()) for k, v in stats.items()}

    # -----------------------------------------------------------------------------------
    # metrics and checkpoints
    # -----------------------------------------------------------------------------------

    def _metrics_row(self, ro: dict[str, Any], upd: dict[str, float], seconds: float) -> dict[str, float]:
        scores, levels = np.asarray(distributed.gather(ro["scores"])), np.asarray(distributed.gather(ro["levels"]))
        kl = np.asarray(distributed.gather(ro["kl_seq"].double().cpu().tolist()))
        n = len(scores)
        n_tok = float(distributed.sum_tensor(ro["mask"].sum()))
        rel = scores - levels - self.config.beta * kl if self.levels is not None else np.full(n, np.nan)
        row = {
            "step": self.step,
            "reward_mean": float(scores.mean()),
            "reward_std": float(scores.std(ddof=1)) if n > 1 else 0.0,
            "kl_k1_mean": float(kl.mean()),
            "kl_k1_se": float(kl.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan"),
            "objective_absolute": float(scores.mean() - self.config.beta * kl.mean()),
            "objective_rel": float(rel.mean()),
            "objective_rel_se": float(rel.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan"),
            **upd,
            "completion_tokens_mean": n_tok / n,
            "seconds": seconds,
            "tokens_per_s": n_tok / seconds if seconds > 0 else float("nan"),
        }
        return {k: row[k] for k in _METRIC_KEYS}
