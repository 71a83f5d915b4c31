"""One honest evaluator: every policy's KL and reward measured the same way, on held-out prompts.

KL(π‖π0) is estimated per whole sequence on samples y ~ π(·|x):

- k1 = log π(y|x) − log π0(y|x), unbiased;
- k3 = π0/π − 1 − log(π0/π) = e^{−k1} − 1 + k1, unbiased and never negative.

Both are averaged per prompt, then over prompts (the prompt-averaged KL the frontier's shared β
budgets). Trainers' own KL logs (per token, k3, inside the loss) are not comparable across
methods and are never used here.

The gain is E_π[r] − E_π0[r] per prompt, the base mean taken from the base samples of the same
held-out prompts, averaged over prompts.

Standard errors are stratified by prompt, se² = Σ_p v_p/n_p / P² (v_p the within-prompt sample
variance): they are conditional on the evaluation prompts, which the policy and the frontier
share; the gain's interval is mean ± z·se and also counts the base means' own sampling error.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

from alignlimits.errors import AlignLimitsError
from alignlimits.theory.frontier import Frontier
from alignlimits.theory.groups import Groups
from alignlimits.theory.hacking import frontier_gain_at


@dataclass(frozen=True)
class KLEstimate:
    k1: float
    k1_se: float
    k3: float
    k3_se: float


def _per_prompt_mean_and_var_of_mean(values: np.ndarray, prompt_ids) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per prompt (sorted ids): the mean and the variance of that mean, v_p / n_p."""
    prompt_ids = np.zeros(values.size, int) if prompt_ids is None else np.asarray(prompt_ids)
    groups, order, uniques = Groups.from_labels(prompt_ids)
    v = values[order]
    means = groups.mean(v)
    sizes = groups.sizes.astype(float)
    var = groups.sum((v - groups.expand(means)) ** 2) / np.maximum(sizes - 1, 1)
    return means, var / sizes, uniques


def _mean_and_se(values: np.ndarray, prompt_ids) -> tuple[float, float]:
    means, var_of_mean, _ = _per_prompt_mean_and_var_of_mean(values, prompt_ids)
    return float(means.mean()), float(np.sqrt(var_of_mean.sum()) / means.size)


def sequence_kl(logp_policy, logp_base, prompt_ids=None) -> KLEstimate:
    """k1 and k3 estimates of KL(π‖π0) from sequence log-probs of samples drawn from π."""
    lp = np.asarray(logp_policy, dtype=np.float64)
    lb = np.asarray(logp_base, dtype=np.float64)
    if lp.shape != lb.shape:
        raise AlignLimitsError(f"{lp.size} policy log-probs but {lb.size} base log-probs; score the same samples")
    if not (np.isfinite(lp).all() and np.isfinite(lb).all()):
        raise AlignLimitsError("a sequence log-probability is not finite; the base model gives a sampled completion zero probability")
    k1 = lp - lb
    k3 = np.expm1(-k1) + k1
    m1, s1 = _mean_and_se(k1, prompt_ids)
    m3, s3 = _mean_and_se(k3, prompt_ids)
    return KLEstimate(m1, s1, m3, s3)


@dataclass(frozen=True)
class PolicyPoint:
    """A policy on the KL–reward plane (keys of the ``evaluate`` JSON)."""

    method: str
    kl: float
    kl_se: float
    kl_k3: float
    kl_k3_se: float
    gain: float
    gain_ci: tuple[float, float]
    optimal_gain_at_kl: float
    efficiency: float
    kl_overspend: float
    reliable: bool
    n_prompts: int
    n_samples: int
    beta: float | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["gain_ci"] = [float(x) for x in self.gain_ci]
        return d


def base_means_by_prompt(frontier: Frontier) -> dict:
    """Base-model mean reward of each prompt the frontier was fitted on, and the variance of that mean."""
    g, q, r = frontier.groups_, frontier._base_probs(), frontier.rewards_
    means = g.sum(q * r)
    if frontier.exact_:
        var_of_mean = np.zeros_like(means)
    else:
        var_of_mean = g.sum((r - g.expand(means)) ** 2) / np.maximum(g.sizes - 1, 1) / g.sizes
    return {str(p): (m, v) for p, m, v in zip(frontier.prompt_ids_, means, var_of_mean)}


def place_policy(method: str, rewards, prompt_ids, logp_policy, logp_base, frontier: Frontier, beta: float | None = None,
                 confidence: float = 0.95) -> PolicyPoint:
    """Put a sampled policy on the plane, against the frontier fitted on base samples of the same prompts."""
    prompt_ids = np.asarray(prompt_ids).astype(str)
    rewards = np.asarray(rewards, dtype=np.float64)
    base = base_means_by_prompt(frontier)
    missing = sorted(set(prompt_ids) - set(base))
    if missing:
        raise AlignLimitsError(
            f"{len(missing)} evaluation prompts (e.g. {missing[0]}) have no base samples; sample the base model on the same prompts"
        )
    kl = sequence_kl(logp_policy, logp_base, prompt_ids)
    means, var_of_mean, uniques = _per_prompt_mean_and_var_of_mean(rewards, prompt_ids)
    base_mean = np.array([base[p][0] for p in uniques])
    base_var = np.array([base[p][1] for p in uniques])
    P = means.size
    gain = float((means - base_mean).mean())
    se = float(np.sqrt((var_of_mean + base_var).sum()) / P)
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    lo, hi = gain - z * se, gain + z * se
    optimal = float(frontier_gain_at(frontier, np.array([max(kl.k1, 0.0)]))[0])
    needed = float(frontier.kl_for_gain(gain)[0])
    return PolicyPoint(
        method=method, kl=kl.k1, kl_se=kl.k1_se, kl_k3=kl.k3, kl_k3_se=kl.k3_se, gain=gain, gain_ci=(float(lo), float(hi)),
        optimal_gain_at_kl=optimal,
        efficiency=gain / optimal if optimal > 0 else float("nan"),
        kl_overspend=kl.k1 / needed if needed > 0 else float("inf"),
        reliable=bool(kl.k1 <= frontier.max_reliable_kl_),
        n_prompts=int(P), n_samples=int(rewards.size), beta=beta,
    )


def check_same_tokenizer(policy_tokenizer, base_tokenizer) -> None:
    """KL between policies over different vocabularies is meaningless: refuse."""
    if policy_tokenizer.get_vocab() != base_tokenizer.get_vocab():
        raise AlignLimitsError(
            "the policy's tokenizer differs from the base model's, so KL(π‖π0) over token sequences is meaningless; "
            "evaluate a policy fine-tuned from the same base model"
        )


def sample_and_score(policy_model, base_model, tokenizer, prompts, prompt_ids, reward_models, n: int,
                     max_new_tokens: int, seed: int = 0, batch_size: int | None = None, on_batch=None) -> dict:
    """Draw ``n`` completions per prompt from the policy; score them by every reward and by the base model.

    ``prompts`` are the exact texts given to the model (chat template applied). Returns flat columns:
    ``prompt_id``, ``prompt``, ``completion``, ``completion_ids``, ``logp_policy`` (from the sampler),
    ``logp_base`` (teacher-forced under the base model), ``n_tokens``, ``truncated``, and one column per reward.
    """
    from alignlimits.lm.sampling import sample_completions, score_logprobs

    drawn = sample_completions(policy_model, tokenizer, list(prompts), n, max_new_tokens, seed=seed,
                               batch_size=batch_size, on_batch=on_batch)
    rows = {"prompt_id": [], "prompt": [], "completion": [], "completion_ids": [], "logp_policy": [],
            "n_tokens": [], "truncated": []}
    for ps in drawn:
        rows["prompt_id"] += [str(prompt_ids[ps.prompt_index])] * n
        rows["prompt"] += [prompts[ps.prompt_index]] * n
        rows["completion"] += list(ps.texts)
        rows["completion_ids"] += [list(map(int, t)) for t in ps.token_ids]
        rows["logp_policy"] += list(ps.logp)
        rows["n_tokens"] += list(ps.n_tokens)
        rows["truncated"] += list(ps.truncated)
    rows["logp_base"] = list(score_logprobs(base_model, tokenizer, rows["prompt"], rows["completion_ids"],
                                            batch_size=batch_size))
    for reward in reward_models:
        rows[reward.name] = list(reward(rows["prompt"], rows["completion"]))
    return rows
