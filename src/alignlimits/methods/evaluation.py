"""One honest evaluator: every policy's KL and reward measured the same way, on held-out prompts.

KL(π‖π0) is estimated per whole sequence on samples y ~ π(·|x):

- k1 = log π(y|x) − log π0(y|x), unbiased;
- k3 = π0/π − 1 − log(π0/π) = e^{−k1} − 1 + k1, unbiased and never negative.

Both are averaged per prompt, then over prompts (the prompt-averaged KL the frontier's shared β
budgets). Trainers' own KL logs (per token, k3, inside the loss) are not comparable across
methods and are never used here.

The gain is E_π[r] − E_π0[r] per prompt, the base mean taken from the base samples of the same
held-out prompts, averaged over prompts. Where the point stands against the frontier (efficiency,
gain gap, KL overspend, verdict, their paired intervals) is computed in one place,
:mod:`alignlimits.theory.comparison`.

Both log-probabilities are teacher-forced (:func:`alignlimits.lm.sampling.score_logprobs`) by models
at the same precision, whichever engine drew the samples (:func:`policy_sampler`: transformers, or vLLM on
the saved policy), so the KL does not depend on the engine; the sampler's own log-probabilities are kept as
``logp_sampler``, only to check that the two agree.
"""

from __future__ import annotations

import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alignlimits.errors import AlignLimitsError
from alignlimits.theory.comparison import Comparison, compare_policy, k3_from_k1
from alignlimits.theory.frontier import Frontier
from alignlimits.theory.groups import Groups


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


def log_ratio(logp_policy, logp_base) -> np.ndarray:
    """Per-sequence k1 = log π(y|x) − log π0(y|x), checked: same length, finite."""
    lp = np.asarray(logp_policy, dtype=np.float64)
    lb = np.asarray(logp_base, dtype=np.float64)
    if lp.shape != lb.shape:
        raise AlignLimitsError(f"{lp.size} policy log-probs but {lb.size} base log-probs; score the same samples")
    if not (np.isfinite(lp).all() and np.isfinite(lb).all()):
        raise AlignLimitsError("a sequence log-probability is not finite; the base model gives a sampled completion zero probability")
    return lp - lb


def sequence_kl(logp_policy, logp_base, prompt_ids=None) -> KLEstimate:
    """k1 and k3 estimates of KL(π‖π0) from sequence log-probs of samples drawn from π."""
    k1 = log_ratio(logp_policy, logp_base)
    m1, s1 = _mean_and_se(k1, prompt_ids)
    m3, s3 = _mean_and_se(k3_from_k1(k1), prompt_ids)
    return KLEstimate(m1, s1, m3, s3)


def place_policy(method: str, rewards, prompt_ids, logp_policy, logp_base, frontier: Frontier, beta: float | None = None,
                 confidence: float = 0.95, *, debiased: bool = True, footing: str = "auto", n_bootstrap: int = 200,
                 random_state=0) -> Comparison:
    """Put a sampled policy on the plane against the frontier fitted on base samples of the same prompts.

    Gain, KL (k1, k3), efficiency, gain gap, KL overspend and verdict with paired bootstrap intervals
    (:func:`alignlimits.theory.comparison.compare_policy`), against the bias-corrected frontier unless
    ``debiased=False``.
    """
    return compare_policy(frontier, rewards, log_ratio(logp_policy, logp_base), prompt_ids, method=method, beta=beta,
                          debiased=debiased, footing=footing, confidence=confidence, n_bootstrap=n_bootstrap,
                          random_state=random_state)


def check_same_tokenizer(policy_tokenizer, base_tokenizer) -> None:
    """KL between policies over different vocabularies is meaningless: refuse."""
    if policy_tokenizer.get_vocab() != base_tokenizer.get_vocab():
        raise AlignLimitsError(
            "the policy's tokenizer differs from the base model's, so KL(π‖π0) over token sequences is meaningless; "
            "evaluate a policy fine-tuned from the same base model"
        )


def sample_and_score(policy_model, base_model, tokenizer, prompts, prompt_ids, reward_models, n: int,
                     max_new_tokens: int, seed: int = 0, batch_size: int | None = None, on_batch=None,
                     sampler=None) -> dict:
    """Draw ``n`` completions per prompt from the policy; score them by every reward and by the base model.

    ``sampler`` draws them (an engine of :mod:`alignlimits.lm.engines` on the same policy, see
    :func:`policy_sampler`; default: the transformers loop on ``policy_model``); whichever it is, both
    log-probabilities are teacher-forced here, so the KL does not depend on the engine.
    ``prompts`` are the exact texts given to the model (chat template applied). Returns flat columns:
    ``prompt_id``, ``prompt``, ``completion``, ``completion_ids``, ``logp_policy`` and ``logp_base``
    (teacher-forced under the policy and the base model, which must hold weights of the same precision),
    ``logp_sampler`` (the policy's log-probs as the sampler drew them, kept to check the two agree),
    ``n_tokens``, ``truncated``, and one column per reward.
    """
    from alignlimits.lm.engines import HFEngine
    from alignlimits.lm.sampling import score_logprobs

    precisions = {next(m.parameters()).dtype for m in (policy_model, base_model)}
    if len(precisions) > 1:
        raise AlignLimitsError(f"the policy and the base model hold weights of different precisions ({', '.join(map(str, precisions))}); "
                               "load both at the same dtype, or their log-probs (and so the KL) are not comparable")
    sampler = sampler or HFEngine(policy_model, tokenizer)
    drawn = sampler.sample(list(prompts), n, max_new_tokens, seed=seed, batch_size=batch_size, on_batch=on_batch)
    rows = {"prompt_id": [], "prompt": [], "completion": [], "completion_ids": [], "logp_sampler": [],
            "n_tokens": [], "truncated": []}
    for ps in drawn:
        rows["prompt_id"] += [str(prompt_ids[ps.prompt_index])] * n
        rows["prompt"] += [prompts[ps.prompt_index]] * n
        rows["completion"] += list(ps.texts)
        rows["completion_ids"] += [list(map(int, t)) for t in ps.token_ids]
        rows["logp_sampler"] += list(ps.logp)
        rows["n_tokens"] += list(ps.n_tokens)
        rows["truncated"] += list(ps.truncated)
    for column, model in (("logp_policy", policy_model), ("logp_base", base_model)):
        rows[column] = list(score_logprobs(model, tokenizer, rows["prompt"], rows["completion_ids"], batch_size=batch_size))
    for reward in reward_models:
        rows[reward.name] = list(reward(rows["prompt"], rows["completion"]))
    return rows


@contextmanager
def policy_sampler(engine: str, policy_model, lm, policy_path: Path, *, seed: int, options: dict | None = None,
                   scratch: Path | None = None):
    """The engine that samples a policy at evaluation, closed (its memory freed) on leaving the block.

    ``engine`` is a resolved name, ``hf`` or ``vllm`` (``StudyContext.engine``). hf: the transformers loop on
    ``policy_model``. vllm: a fresh engine, seeded with ``seed``, on a folder holding the policy's weights:
    ``policy_path`` itself when vLLM reads it as it is (a full model folder), else ``policy_model`` (e.g. a
    LoRA adapter merged into its base by the caller) saved into a temporary folder under ``scratch``
    (measured on CPU: vLLM's own LoRA path generates 4x slower than the merged model, benchmarks/RESULTS.md).
    """
    from alignlimits.lm.engines import make_engine

    if engine != "vllm":
        yield make_engine("hf", lm, model=policy_model)
        return
    with tempfile.TemporaryDirectory(prefix=".policy-for-vllm-", dir=scratch) as tmp:
        folder = policy_path if _vllm_reads_as_is(policy_path) else Path(tmp)
        if folder != policy_path:
            policy_model.save_pretrained(folder)
        sampler = make_engine("vllm", lm, seed=seed, options=options, path=str(folder))
        try:
            yield sampler
        finally:
            sampler.close()


def _vllm_reads_as_is(folder: Path) -> bool:
    """A full model folder: config and model weights only (vLLM would also load an adapter's or a value head's
    safetensors, or find no weights at all)."""
    weights = list(folder.glob("*.safetensors"))
    return ((folder / "config.json").is_file() and not (folder / "adapter_config.json").exists() and bool(weights)
            and all(w.name.startswith("model") for w in weights))
