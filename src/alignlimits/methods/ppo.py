r"""PPO for RLHF, the project's own (TRL 1.x no longer ships one), readable top to bottom.

What one step does (cleanrl style, the recipe of lm-human-preferences; defaults and sources in
:mod:`alignlimits.methods.ppo_config`):

1. **Rollouts.**  ``batch_size`` prompts; one completion each, sampled from the *current*
   policy at temperature 1 (no top-k/top-p, no repetition penalty, whatever the model's
   generation_config says), up to ``max_new_tokens``, stopping at EOS.  The completion's
   tokens are those up to and including the first EOS (all of them when truncated).
2. **Scoring.**  One teacher-forced pass of the policy gives, per completion token, log π and
   the value V (a linear head on the last hidden state); one pass of the frozen reference
   gives log π0; the reward callable gives the sequence score r(x, y).
3. **Per-token rewards.**  r_t = −β (log π(y_t) − log π0(y_t)) on every completion token, plus
   r(x, y) on the last one.  With γ = 1 the return from the first token is
   r − β log(π(y|x)/π0(y|x)), whose expectation is E[r] − β·KL(π‖π0): the objective whose
   optimum is π_β ∝ π0 e^{r/β}.  Both log-probs come from the same teacher-forced pass at
   temperature 1, i.e. the distribution the tokens were sampled from.
   *Score normalisation* maps r to (r − μ0)/σ0 and β to β/σ0, with μ0, σ0 the initial
   policy's score mean and std on the first batch (a constant shift and a common scale: the
   optimum is unchanged, and the returns are of order 1).  Optional *reward whitening*
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

Output directory::

    metrics.jsonl            one JSON row per step (stable keys, see ``_METRIC_KEYS``)
    checkpoint-STEP/         policy/ (save_pretrained: full weights or adapter),
                             value_head.safetensors, optimizer.pt, rng.pt, trainer_state.json
    policy/                  the final policy (+ tokenizer, value head), for evaluation

``trainer_state.json`` is written last, so a checkpoint without it is incomplete and ignored.
Resuming (``train(resume_from_checkpoint=True)``) loads the last complete checkpoint, drops the
metrics rows after it, and continues; each step's prompt order and sampling seed are functions
of (seed, step), so a resumed run reproduces the uninterrupted one.
"""

from __future__ import annotations

import copy
import json
import math
import random
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from alignlimits.errors import AlignLimitsError
from alignlimits.lm.sampling import encode_prompt, eos_token_ids, generate_batch
from alignlimits.methods.progress import step_description, training_progress
from alignlimits.methods.ppo_config import PPOConfig

__all__ = ["PPOConfig", "PPOTrainer", "ValueHead", "last_checkpoint"]

RewardFn = Callable[[Sequence[str], Sequence[str]], Any]

# Keys of every metrics.jsonl row (documented here; the pipeline and plots rely on them).
_METRIC_KEYS = (
    "step",  # 1-based PPO iteration
    "reward_mean",  # mean sequence score r(x, y) of the rollouts
    "reward_std",
    "kl_k1_mean",  # mean over rollouts of sum_t (log π − log π0): measured sequence KL (k1)
    "kl_k1_se",  # its standard error
    "objective",  # reward_mean − β · kl_k1_mean
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


# ---------------------------------------------------------------------------------------
# small tensor helpers
# ---------------------------------------------------------------------------------------


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp_min(1)


def _masked_std(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mean = _masked_mean(x, mask)
    var = _masked_mean((x - mean) ** 2, mask)
    n = mask.sum()
    if n > 1:
        var = var * n / (n - 1)  # unbiased, as lm-human-preferences
    return var.sqrt()


def _whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool) -> torch.Tensor:
    """(x − mean)/std (``shift_mean``) or x/std (scale only), over the masked entries."""
    std = _masked_std(x, mask)
    if shift_mean:
        x = x - _masked_mean(x, mask)
    return x / (std + 1e-8) * mask


class ValueHead(nn.Module):
    """V(s_t) = w·h_t + b on the policy's last hidden state; zero-initialised (V ≡ 0)."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.linear = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden.float()).squeeze(-1)


def last_checkpoint(output_dir: str | Path) -> Path | None:
    """The complete ``checkpoint-STEP`` folder with the highest STEP, or None."""
    out = Path(output_dir)
    if not out.is_dir():
        return None
    done = [
        p
        for p in out.glob("checkpoint-*")
        if p.is_dir() and p.name.split("-")[-1].isdigit() and (p / "trainer_state.json").is_file()
    ]
    return max(done, key=lambda p: int(p.name.split("-")[-1]), default=None)


def _is_peft(model: nn.Module) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(model, PeftModel)


# ---------------------------------------------------------------------------------------
# the trainer
# ---------------------------------------------------------------------------------------


class PPOTrainer:
    """PPO with a per-token k1 KL penalty; ``PPOTrainer(config, policy, ref_policy, tokenizer,
    reward_fn, prompts).train()`` returns the trained policy.

    Args:
        config: a :class:`PPOConfig` (β, steps, batch, learning rate, output_dir, ...).
        policy: a transformers causal LM (or a peft ``PeftModel``); trained in place.  With
            ``config.use_lora`` it is wrapped with LoRA adapters first (``self.policy``).
        ref_policy: the frozen reference π0, or None: a frozen copy of ``policy`` as given
            (full fine-tuning) or the same model with adapters disabled (LoRA).
        tokenizer: the policy's tokenizer (prompts are encoded with it, completions decoded
            with ``skip_special_tokens=True`` as TRL does, so both trainers see the same text).
        reward_fn: ``reward_fn(prompts, completions) -> sequence of floats``, one per pair (the
            callables of :func:`alignlimits.lm.rewards.load_reward`, or any TRL-style one that
            accepts them positionally).
        prompts: the training prompts, the exact text given to the model (chat template already
            applied), encoded as the sampler does (:func:`alignlimits.lm.sampling.encode_prompt`).
        reward_prompts: what the reward sees as each prompt (e.g. the task's text before the chat
            template, as the sample table stores it); default: ``prompts``.
    """

    def __init__(
        self,
        config: PPOConfig,
        policy: nn.Module,
        ref_policy: nn.Module | None,
        tokenizer: Any,
        reward_fn: RewardFn,
        prompts: Sequence[str],
        reward_prompts: Sequence[str] | None = None,
    ):
        config.validate()
        self.config = config
        self.tokenizer = tokenizer
        self.reward_fn = reward_fn
        self.reward_name = getattr(reward_fn, "name", getattr(reward_fn, "__name__", type(reward_fn).__name__))
        self.prompts = list(prompts)
        if not self.prompts:
            raise AlignLimitsError("PPO: no training prompts")
        self.reward_prompts = self.prompts if reward_prompts is None else [str(p) for p in reward_prompts]
        if len(self.reward_prompts) != len(self.prompts):
            raise AlignLimitsError(
                f"PPO: {len(self.reward_prompts)} reward prompts for {len(self.prompts)} prompts; pass one per prompt"
            )
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

        # Policy (optionally LoRA-wrapped) and the frozen reference.
        self.device = next(policy.parameters()).device
        if config.use_lora and not _is_peft(policy):
            from peft import LoraConfig, get_peft_model

            lora = LoraConfig(
                r=config.lora_r,
                lora_alpha=config.lora_alpha,
                lora_dropout=config.lora_dropout,
                target_modules=config.lora_target_modules,
                task_type="CAUSAL_LM",
            )
            torch.manual_seed(config.seed)  # LoRA's A matrices are random
            policy = get_peft_model(policy, lora)
        self.lora = _is_peft(policy)
        if ref_policy is None and not self.lora:
            ref_policy = copy.deepcopy(policy)
        if ref_policy is not None:
            ref_policy.eval()
            ref_policy.requires_grad_(False)
        self.policy = policy
        self.ref_policy = ref_policy  # None: the policy with adapters disabled
        # Dropout off everywhere: log π must be a deterministic function of the weights.
        self.policy.eval()

        hidden = policy.config.get_text_config().hidden_size
        self.value_head = ValueHead(hidden).to(self.device)
        params = [p for p in self.policy.parameters() if p.requires_grad] + list(self.value_head.parameters())
        self.optimizer = torch.optim.AdamW(
            params, lr=config.learning_rate, eps=config.adam_eps, weight_decay=config.weight_decay
        )
        self._params = params
        self.step = 0
        self.score_scale: tuple[float, float] | None = None
        self.output_dir = Path(config.output_dir)
        self._loggers: list[Any] = []

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
    # rollouts
    # -----------------------------------------------------------------------------------

    def _batch_indices(self, step: int) -> list[int]:
        """Prompt indices of a step: consecutive slices of per-epoch permutations, each a
        function of (seed, epoch) only, so resuming at any step gives the same order."""
        n, b = len(self.prompts), self.config.batch_size
        out = []
        for pos in range((step - 1) * b, step * b):
            epoch, k = divmod(pos, n)
            g = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
            out.append(int(torch.randperm(n, generator=g)[k]))
        return out

    def _left_pad(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, width - len(s) :] = torch.tensor(s)
            mask[i, width - len(s) :] = 1
        return ids.to(self.device), mask.to(self.device)

    @torch.no_grad()
    def _rollout(self, step: int) -> dict[str, Any]:
        cfg = self.config
        idx = self._batch_indices(step)
        prompts = [self.prompts[i] for i in idx]
        query, query_mask = self._left_pad([self.prompt_ids[i] for i in idx])
        # Sampling is the project's base-distribution sampler (temperature 1, no top-k/top-p, no
        # processor inherited from the checkpoint's generation_config), run on the current policy;
        # LoRA layers live inside the base model's modules, so its generate() samples the policy.
        gen_model = self.policy.get_base_model() if self.lora else self.policy
        chunk = cfg.generation_batch_size or len(idx)
        token_ids: list[list[int]] = []
        completions: list[str] = []
        for c, s in enumerate(range(0, len(idx), chunk)):
            out = generate_batch(
                gen_model,
                self.tokenizer,
                [self.prompt_ids[i] for i in idx[s : s + chunk]],
                cfg.max_new_tokens,
                seed=cfg.seed * 1_000_003 + 7919 * step + c,  # a function of (seed, step): resumable
            )
            token_ids += out.token_ids
            completions += out.texts
        # completion = tokens up to and including the first EOS (all when truncated); right-padded
        length = torch.tensor([max(len(t), 1) for t in token_ids], device=self.device)
        L = int(length.max())
        response = torch.full((len(idx), L), self.pad_id, dtype=torch.long)
        for i, t in enumerate(token_ids):
            response[i, : len(t)] = torch.tensor(t, dtype=torch.long)
        response = response.to(self.device)
        mask = (torch.arange(L, device=self.device)[None, :] < torch.tensor([len(t) for t in token_ids], device=self.device)[:, None]).float()
        scores = self._score([self.reward_prompts[i] for i in idx], completions)

        logprobs, values = [], []
        ref_logprobs = []
        for s in range(0, len(idx), self._micro):
            sl = slice(s, s + self._micro)
            lp, v, _ = self._forward(self.policy, query[sl], query_mask[sl], response[sl], values=True)
            logprobs.append(lp)
            values.append(v)
            ref_logprobs.append(self._ref_logprobs(query[sl], query_mask[sl], response[sl]))
        logprobs, values, ref_logprobs = torch.cat(logprobs), torch.cat(values), torch.cat(ref_logprobs)
        return dict(
            prompts=prompts,
            completions=completions,
            query=query,
            query_mask=query_mask,
            response=response,
            mask=mask,
            length=length,
            scores=torch.tensor(scores, dtype=torch.float32, device=self.device),
            logprobs=logprobs * mask,
            ref_logprobs=ref_logprobs * mask,
            values=values * mask,
        )

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
    # advantages
    # -----------------------------------------------------------------------------------

    def _advantages(self, ro: dict[str, Any]) -> None:
        cfg = self.config
        mask, L = ro["mask"], ro["mask"].shape[1]
        kl_tok = (ro["logprobs"] - ro["ref_logprobs"]) * mask
        if cfg.normalize_scores and self.score_scale is None:
            sd = float(ro["scores"].std()) if len(ro["scores"]) > 1 else 0.0
            self.score_scale = (float(ro["scores"].mean()), sd if sd > 0 else 1.0)
        mu0, sd0 = self.score_scale if cfg.normalize_scores else (0.0, 1.0)
        rewards = -(cfg.beta / sd0) * kl_tok
        last = (ro["length"] - 1).clamp_min(0)
        rewards[torch.arange(len(last)), last] += (ro["scores"] - mu0) / sd0
        if cfg.whiten_rewards:
            rewards = _whiten(rewards, mask, shift_mean=False)
        values = ro["values"]
        adv = torch.zeros_like(rewards)
        lastgaelam = torch.zeros_like(rewards[:, 0])
        for t in reversed(range(L)):
            next_v = values[:, t + 1] if t + 1 < L else torch.zeros_like(values[:, 0])
            delta = rewards[:, t] + cfg.gamma * next_v - values[:, t]
            lastgaelam = (delta + cfg.gamma * cfg.lam * lastgaelam) * mask[:, t]
            adv[:, t] = lastgaelam
        ro["returns"] = adv + values
        ro["advantages"] = _whiten(adv, mask, shift_mean=True) if cfg.whiten_advantages else adv
        ro["kl_seq"] = kl_tok.sum(1)

    # -----------------------------------------------------------------------------------
    # one PPO step
    # -----------------------------------------------------------------------------------

    def _lr(self, step: int) -> float:
        if self.config.lr_schedule == "linear":
            return self.config.learning_rate * (1.0 - (step - 1) / self.config.steps)
        return self.config.learning_rate

    def _update(self, ro: dict[str, Any], step: int) -> dict[str, float]:
        cfg = self.config
        lr = self._lr(step)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        stats: dict[str, list[float]] = {k: [] for k in ("loss", "pg_loss", "vf_loss", "clipfrac", "vf_clipfrac", "approx_kl", "entropy")}
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + 104_729 * step)
        B = cfg.batch_size
        for _ in range(cfg.ppo_epochs):
            perm = torch.randperm(B, generator=g).tolist()
            for m0 in range(0, B, cfg.minibatch_size):
                mb = perm[m0 : m0 + cfg.minibatch_size]
                n_tok = ro["mask"][mb].sum().clamp_min(1)
                self.optimizer.zero_grad(set_to_none=True)
                acc = {k: 0.0 for k in stats}
                for u0 in range(0, len(mb), self._micro):
                    ub = mb[u0 : u0 + self._micro]
                    mask = ro["mask"][ub]
                    # trim right padding common to the micro-batch
                    L = int(ro["length"][ub].max())
                    mask = mask[:, :L]
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
                    pg_loss = (pg * mask).sum() / n_tok
                    vf_loss = (vf * mask).sum() / n_tok
                    loss = pg_loss + cfg.vf_coef * vf_loss
                    loss.backward()
                    with torch.no_grad():
                        acc["loss"] += float(loss)
                        acc["pg_loss"] += float(pg_loss)
                        acc["vf_loss"] += float(vf_loss)
                        acc["clipfrac"] += float((((ratio - 1).abs() > cfg.clip_range).float() * mask).sum() / n_tok)
                        acc["vf_clipfrac"] += float((((new_v - ret) ** 2 < (v_clip - ret) ** 2).float() * mask).sum() / n_tok)
                        acc["approx_kl"] += float((0.5 * logratio**2 * mask).sum() / n_tok)
                        acc["entropy"] += float((ent * mask).sum() / n_tok)
                if cfg.max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(self._params, cfg.max_grad_norm)
                self.optimizer.step()
                for k in stats:
                    stats[k].append(acc[k])
        out = {k: float(np.mean(v)) for k, v in stats.items()}
        out["lr"] = lr
        return out

    # -----------------------------------------------------------------------------------
    # training loop
    # -----------------------------------------------------------------------------------

    @property
    def _micro(self) -> int:
        return self.config.micro_batch_size or self.config.minibatch_size

    def train(self, resume_from_checkpoint: bool | str | Path | None = None) -> nn.Module:
        """Run ``config.steps`` PPO steps and return the trained policy.

        ``resume_from_checkpoint``: True resumes from the last complete checkpoint in
        ``output_dir`` (a fresh start when there is none); a path resumes from that checkpoint.
        """
        cfg = self.config
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if resume_from_checkpoint:
            ckpt = (
                last_checkpoint(self.output_dir)
                if resume_from_checkpoint is True
                else Path(resume_from_checkpoint)
            )
            if ckpt is not None:
                self._load_checkpoint(ckpt)
        elif last_checkpoint(self.output_dir) is not None:
            raise AlignLimitsError(
                f"PPO: {self.output_dir} already holds checkpoints; resume (resume_from_checkpoint=True) or use a new output_dir"
            )
        self._truncate_metrics(self.step)
        (self.output_dir / "ppo_config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        self._open_loggers()
        try:
            with training_progress(cfg.progress) as bar:
                task = bar.add_task(step_description("PPO", cfg.beta), total=cfg.steps, completed=self.step)
                while self.step < cfg.steps:
                    step = self.step + 1
                    t0 = time.perf_counter()
                    ro = self._rollout(step)
                    self._advantages(ro)
                    upd = self._update(ro, step)
                    self.step = step
                    dt = time.perf_counter() - t0
                    row = self._metrics_row(ro, upd, dt)
                    self._log(row)
                    bar.update(
                        task,
                        advance=1,
                        description=step_description("PPO", cfg.beta, row["reward_mean"], row["kl_k1_mean"]),
                    )
                    if cfg.save_steps and step % cfg.save_steps == 0 and step < cfg.steps:
                        self.save_checkpoint()
            if last_checkpoint(self.output_dir) is None or int(last_checkpoint(self.output_dir).name.split("-")[-1]) != self.step:
                self.save_checkpoint()
            self.save_policy(self.output_dir / "policy")
        finally:
            self._close_loggers()
        return self.policy

    def _metrics_row(self, ro: dict[str, Any], upd: dict[str, float], seconds: float) -> dict[str, float]:
        scores, kl = ro["scores"].double(), ro["kl_seq"].double()
        n = len(scores)
        n_tok = float(ro["mask"].sum())
        row = {
            "step": self.step,
            "reward_mean": float(scores.mean()),
            "reward_std": float(scores.std()) if n > 1 else 0.0,
            "kl_k1_mean": float(kl.mean()),
            "kl_k1_se": float(kl.std() / math.sqrt(n)) if n > 1 else float("nan"),
            "objective": float(scores.mean() - self.config.beta * kl.mean()),
            **upd,
            "completion_tokens_mean": n_tok / n,
            "seconds": seconds,
            "tokens_per_s": n_tok / seconds if seconds > 0 else float("nan"),
        }
        return {k: row[k] for k in _METRIC_KEYS}

    # -----------------------------------------------------------------------------------
    # logging
    # -----------------------------------------------------------------------------------

    def _open_loggers(self) -> None:
        self._loggers = []
        for name in self.config.report_to:
            if name == "tensorboard":
                try:
                    from torch.utils.tensorboard import SummaryWriter
                except ImportError as e:
                    raise AlignLimitsError("PPO: report_to tensorboard needs the tensorboard package (pip install tensorboard)") from e
                w = SummaryWriter(log_dir=str(self.output_dir / "tensorboard"))
                self._loggers.append(("tensorboard", w))
            elif name == "wandb":
                try:
                    import wandb
                except ImportError as e:
                    raise AlignLimitsError("PPO: report_to wandb needs the wandb package (pip install wandb)") from e
                run = wandb.init(project="alignlimits", dir=str(self.output_dir), config=self.config.to_dict(), resume="allow")
                self._loggers.append(("wandb", run))

    def _close_loggers(self) -> None:
        for name, obj in self._loggers:
            if name == "tensorboard":
                obj.close()
            else:
                obj.finish()
        self._loggers = []

    def _log(self, row: dict[str, float]) -> None:
        with open(self.output_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        for name, obj in self._loggers:
            if name == "tensorboard":
                for k, v in row.items():
                    if k != "step":
                        obj.add_scalar(f"ppo/{k}", v, row["step"])
            else:
                obj.log({f"ppo/{k}": v for k, v in row.items() if k != "step"}, step=row["step"])

    def _truncate_metrics(self, step: int) -> None:
        """Keep only rows up to ``step`` (a resumed run re-logs the steps after it)."""
        path = self.output_dir / "metrics.jsonl"
        if not path.exists():
            return
        rows = [ln for ln in path.read_text().splitlines() if ln.strip()]
        keep = []
        for ln in rows:
            try:
                if json.loads(ln)["step"] <= step:
                    keep.append(ln)
            except (ValueError, KeyError):
                pass  # a torn last line from a kill
        path.write_text("".join(k + "\n" for k in keep))

    # -----------------------------------------------------------------------------------
    # checkpoints
    # -----------------------------------------------------------------------------------

    def save_policy(self, path: str | Path) -> None:
        """save_pretrained of the policy (full weights, or the adapter with LoRA), the
        tokenizer and the value head."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.policy.save_pretrained(path)
        if hasattr(self.tokenizer, "save_pretrained"):
            self.tokenizer.save_pretrained(path)
        save_file({k: v.detach().contiguous() for k, v in self.value_head.state_dict().items()}, str(path / "value_head.safetensors"))

    def save_checkpoint(self) -> Path:
        """Write ``checkpoint-STEP`` (atomically: trainer_state.json last) and prune old ones."""
        ckpt = self.output_dir / f"checkpoint-{self.step}"
        if ckpt.exists():
            shutil.rmtree(ckpt)
        self.save_policy(ckpt / "policy")
        torch.save(self.optimizer.state_dict(), ckpt / "optimizer.pt")
        torch.save(
            {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
            ckpt / "rng.pt",
        )
        state = {"step": self.step, "lora": self.lora, "score_scale": self.score_scale, "config": self.config.to_dict()}
        (ckpt / "trainer_state.json").write_text(json.dumps(state, indent=2))
        if self.config.save_total_limit:
            done = sorted(
                (p for p in self.output_dir.glob("checkpoint-*") if (p / "trainer_state.json").is_file()),
                key=lambda p: int(p.name.split("-")[-1]),
            )
            for old in done[: -self.config.save_total_limit]:
                shutil.rmtree(old, ignore_errors=True)
        return ckpt

    def _load_checkpoint(self, ckpt: Path) -> None:
        from safetensors.torch import load_file

        state_path = ckpt / "trainer_state.json"
        if not state_path.is_file():
            raise AlignLimitsError(f"PPO: {ckpt} is not a complete checkpoint (no trainer_state.json)")
        state = json.loads(state_path.read_text())
        if bool(state.get("lora")) != self.lora:
            raise AlignLimitsError(f"PPO: checkpoint {ckpt} was {'LoRA' if state.get('lora') else 'full'} training; this run is not")
        pol = ckpt / "policy"
        if self.lora:
            from peft import set_peft_model_state_dict

            set_peft_model_state_dict(self.policy, load_file(str(pol / "adapter_model.safetensors")))
        else:
            sd: dict[str, torch.Tensor] = {}
            for f in sorted(pol.glob("*.safetensors")):
                if f.name != "value_head.safetensors":
                    sd.update(load_file(str(f)))
            missing, unexpected = self.policy.load_state_dict(sd, strict=False)
            loaded = {p.data_ptr() for n, p in self.policy.named_parameters() if n in sd}
            untied = [m for m in missing if self.policy.get_parameter(m).data_ptr() not in loaded] if missing else []
            if unexpected or untied:
                raise AlignLimitsError(f"PPO: checkpoint {ckpt} does not match the policy (missing {untied[:3]}, unexpected {unexpected[:3]})")
        self.value_head.load_state_dict(load_file(str(pol / "value_head.safetensors")))
        self.optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=False))
        rng = torch.load(ckpt / "rng.pt", weights_only=False)
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        self.step = int(state["step"])
        self.score_scale = tuple(state["score_scale"]) if state.get("score_scale") else None
