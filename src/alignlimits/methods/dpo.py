r"""DPO through TRL's ``DPOTrainer``, on preference pairs built from base samples ranked by the reward.

**Pairs** (:func:`build_preference_pairs`): n completions of each training prompt sampled from π0
(the base distribution), ranked by the task's reward; per prompt the best against the worst
(``"best-worst"``, the default) or every pair with different rewards (``"all"``).  Ties are dropped:
they carry no preference.  Completions are token ids as sampled (EOS included when generated), so
DPO scores exactly the sequences the sampler drew (TRL's text path would append an EOS to every
completion, truncated ones too); prompts are tokenised by :func:`alignlimits.lm.sampling.encode_prompt`.

**What DPO optimises.**  With h_π(x, y) = log π(y|x) − log π0(y|x), DPO minimises
L(π) = −E_pairs log σ(β·[h_π(x, y_w) − h_π(x, y_l)]), β TRL's ``beta`` (the KL coefficient of
E[r] − β·KL(π‖π0)).  If the labels were Bradley–Terry draws, P(y ≻ y') = σ(r(y) − r(y')), its
minimiser would be β·h_π = r + c(x), i.e. π_β ∝ π0·e^{r/β}: the frontier's point at β.  Ranked by
the reward, the labels are **deterministic**: the better completion wins with probability 1, the
implied reward difference β·(h_w − h_l) = log P/(1 − P) is unbounded, and L has no minimiser: its
infimum 0 is approached only as every rejected completion's probability falls to 0 relative to its
chosen one.  Trained long enough DPO therefore drifts towards the β → 0 end of the frontier (all mass
on the completions that win their pairs), whatever β; β and the number of steps only set how fast.
It can thus overshoot the KL of π_β at its β by far.  Like every policy it stays at or under the
frontier at its own KL, which is what the exact-task test checks and what the plane shows.
``loss_type="ipo"`` (IPO) regresses h_w − h_l onto 1/(2β) instead and has a bounded optimum.

**Online DPO** (TRL's ``experimental.OnlineDPOTrainer``: two completions per prompt sampled from the
current policy, ranked by the reward) is not wrapped.  It does run offline here with a callable reward
(TRL 1.16), but it lives in TRL's experimental namespace (no stable API), its defaults sample at
temperature 0.9 (not π's own distribution), and its pairs are deterministic preferences too: on the
exact task (β = 0.5, lr 1e-2, 30 steps) it went straight to the β → 0 corner (KL 7.82, the largest
possible, with objective −0.91 against the optimum 1.42).

Options → ``DPOConfig``: ``beta``, ``steps`` → ``max_steps``, ``batch_size`` → pairs per step,
``loss_type``, LoRA via ``peft_config``, ``keep_checkpoints`` → ``save_total_limit``; no truncation
(``max_length=None``: sampled completions are already bounded); dropout off; float32 master weights and
the reference as in every TRL-based trainer (:mod:`alignlimits.methods.trl_common`).  Output:
``checkpoint-STEP/``, ``metrics.jsonl``
(TRL's rows: ``loss``, ``rewards/chosen``, ``rewards/margins``, ``rewards/accuracies``, ...),
``dpo_options.json``, ``pairs.jsonl`` and the final ``policy/``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from alignlimits.errors import AlignLimitsError
from alignlimits.methods.trl_common import TRLOptions, build_trl_trainer, run_trl_training, trl_config

__all__ = ["DPOOptions", "build_dpo_trainer", "build_preference_pairs", "dpo_config", "dpo_pairs_from_policy", "train_dpo"]

PAIRINGS = ("best-worst", "all")
LOSS_TYPES = ("sigmoid", "ipo", "hinge", "robust", "sigmoid_norm")


def build_preference_pairs(
    prompts: Sequence[str],
    completions: Sequence[Sequence[int]],
    rewards: Sequence[float],
    prompt_ids: Sequence[str],
    pairs: str = "best-worst",
) -> list[dict[str, Any]]:
    """Preference pairs from scored samples, one row per (prompt, completion) in the inputs.

    Per ``prompt_id``: ``"best-worst"`` pairs the highest-reward completion (the first of equals)
    with the lowest; ``"all"`` every two completions i < j with r_i ≠ r_j, the higher one chosen.
    Pairs with equal rewards are dropped.  Each pair: ``prompt_id``, ``prompt``, ``chosen`` and
    ``rejected`` (token ids), ``chosen_reward``, ``rejected_reward``."""
    n = len(prompts)
    if not len(completions) == len(rewards) == len(prompt_ids) == n:
        raise AlignLimitsError(
            f"preference pairs: got {n} prompts, {len(completions)} completions, {len(rewards)} rewards and "
            f"{len(prompt_ids)} prompt ids; pass one of each per sample"
        )
    if pairs not in PAIRINGS:
        raise AlignLimitsError(f"preference pairs: pairs must be one of {', '.join(PAIRINGS)} (got {pairs!r})")
    if any(isinstance(c, str) for c in completions):
        raise AlignLimitsError(
            "preference pairs: pass completions as token ids as sampled (EOS included when generated), not text"
        )
    r = np.asarray(rewards, dtype=np.float64)
    if not np.isfinite(r).all():
        raise AlignLimitsError(f"preference pairs: reward of row {int(np.flatnonzero(~np.isfinite(r))[0])} is not finite")
    groups: dict[str, list[int]] = {}
    for i, pid in enumerate(prompt_ids):
        groups.setdefault(str(pid), []).append(i)
    out = []
    for pid, idx in groups.items():
        if len({prompts[i] for i in idx}) > 1:
            raise AlignLimitsError(f"preference pairs: prompt id {pid!r} has more than one prompt text")
        idx = np.asarray(idx)
        if pairs == "best-worst":
            win, lose = idx[[np.argmax(r[idx])]], idx[[np.argmin(r[idx])]]
        else:
            a, b = np.triu_indices(len(idx), k=1)
            hi = r[idx[a]] >= r[idx[b]]
            win, lose = np.where(hi, idx[a], idx[b]), np.where(hi, idx[b], idx[a])
        keep = r[win] > r[lose]
        out += [
            dict(prompt_id=pid, prompt=prompts[w], chosen=[int(t) for t in completions[w]],
                 rejected=[int(t) for t in completions[lo]], chosen_reward=float(r[w]), rejected_reward=float(r[lo]))
            for w, lo in zip(win[keep], lose[keep])
        ]
    return out


def dpo_pairs_from_policy(
    model,
    tokenizer,
    prompts: Sequence[str],
    prompt_ids: Sequence[str],
    reward_fn: Callable[[Sequence[str], Sequence[str]], Any],
    n: int,
    max_new_tokens: int,
    seed: int = 0,
    pairs: str = "best-worst",
) -> list[dict[str, Any]]:
    """Sample ``n`` completions of each prompt from ``model`` at the base distribution
    (:func:`alignlimits.lm.sampling.sample_completions`), score them with ``reward_fn(prompts,
    completion_texts)`` and return :func:`build_preference_pairs` of them."""
    from alignlimits.lm.sampling import sample_completions

    if len(prompts) != len(prompt_ids):
        raise AlignLimitsError(f"DPO pairs: {len(prompts)} prompts but {len(prompt_ids)} prompt ids")
    samples = sample_completions(model, tokenizer, list(prompts), n, max_new_tokens, seed=seed)
    rows = [(s.prompt_index, ids, text) for s in samples for ids, text in zip(s.token_ids, s.texts)]
    flat_prompts = [prompts[i] for i, _, _ in rows]
    rewards = np.asarray(reward_fn(flat_prompts, [t for _, _, t in rows]), dtype=np.float64).reshape(-1)
    return build_preference_pairs(flat_prompts, [ids for _, ids, _ in rows], rewards,
                                  [prompt_ids[i] for i, _, _ in rows], pairs)


@dataclass(kw_only=True)
class DPOOptions(TRLOptions):
    """Our options for DPO (and :class:`~alignlimits.methods.trl_common.TRLOptions`'; every option keyword-only);
    :func:`dpo_config` maps them onto TRL's ``DPOConfig``."""

    METHOD = "DPO"

    beta: float = 0.1
    """DPO's β (TRL's default 0.1): the KL coefficient of the objective whose optimum DPO would reach
    under Bradley–Terry labels; must be > 0."""
    steps: int = 100
    """Optimizer steps (``max_steps``); the pairs are cycled through as often as needed."""
    batch_size: int = 16
    """Pairs per step (``per_device_train_batch_size``)."""
    learning_rate: float = 1e-6
    """TRL's DPO default.  Tiny models (the exact task) need far larger values, e.g. 1e-2."""
    loss_type: str = "sigmoid"
    """"sigmoid" (DPO), "ipo", "hinge", "robust" or "sigmoid_norm"."""
    output_dir: str = "dpo-run"

    def validate(self) -> None:
        super().validate()
        if self.loss_type not in LOSS_TYPES:
            self.invalid(f"loss_type must be one of {', '.join(LOSS_TYPES)} (got {self.loss_type!r})")


def dpo_config(options: DPOOptions):
    """The ``trl.DPOConfig`` our options stand for (checked against TRL 1.16's field names); no
    truncation (``max_length=None``: sampled completions are already bounded)."""
    from trl import DPOConfig

    return trl_config(DPOConfig, options, loss_type=[options.loss_type], max_length=None)


def _trainer_class():
    from trl import DPOTrainer

    class AlignLimitsDPOTrainer(DPOTrainer):
        """TRL's DPOTrainer taking our pre-tokenised pairs (``prompt_ids``, ``chosen_ids``,
        ``rejected_ids``) as they are, instead of re-tokenising text with an EOS appended."""

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            return dataset

    return AlignLimitsDPOTrainer


def _pairs_dataset(tokenizer, pairs: Sequence[dict[str, Any]]):
    from datasets import Dataset

    from alignlimits.lm.sampling import encode_prompt

    if not pairs:
        raise AlignLimitsError("DPO: no preference pairs (every prompt's samples tied); sample more completions per prompt")
    enc = {p: encode_prompt(tokenizer, p) for p in {row["prompt"] for row in pairs}}
    empty = next((row for row in pairs if not row["chosen"] or not row["rejected"]), None)
    if empty is not None:
        raise AlignLimitsError(
            f"DPO: a pair of prompt {empty['prompt_id']!r} has an empty completion (no tokens, not even EOS)"
        )
    return Dataset.from_dict({
        "prompt_ids": [enc[row["prompt"]] for row in pairs],
        "chosen_ids": [list(row["chosen"]) for row in pairs],
        "rejected_ids": [list(row["rejected"]) for row in pairs],
    })


def build_dpo_trainer(options: DPOOptions, model, tokenizer, pairs: Sequence[dict[str, Any]]):
    """A ready ``DPOTrainer`` (ours) on :func:`build_preference_pairs`' rows; ``model`` a causal LM
    instance (trainable parameters cast to float32) or a path/id, ``tokenizer`` its tokenizer."""
    dataset = _pairs_dataset(tokenizer, pairs)
    return build_trl_trainer(
        _trainer_class(), options, model, tokenizer, args=dpo_config(options), train_dataset=dataset
    )


def train_dpo(
    options: DPOOptions,
    model,
    tokenizer,
    pairs: Sequence[dict[str, Any]],
    resume_from_checkpoint: bool | str | None = None,
):
    """Train with DPO on ``pairs`` and return the trained model (a ``PeftModel`` with LoRA); the pairs are
    written to ``pairs.jsonl``.

    ``resume_from_checkpoint``: True continues from the last ``checkpoint-STEP`` in ``output_dir``
    (a fresh start when there is none), a path from that checkpoint."""
    return run_trl_training(
        options, lambda: build_dpo_trainer(options, model, tokenizer, pairs), tokenizer, resume_from_checkpoint,
        files={"pairs.jsonl": "".join(json.dumps(row) + "\n" for row in pairs)},
    )
