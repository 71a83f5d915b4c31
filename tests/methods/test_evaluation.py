"""The evaluator's KL and gain against exact values: toy distributions and the exactly solvable task."""

import copy

import numpy as np
import pytest
import torch

from alignlimits.errors import AlignLimitsError
from alignlimits.methods.evaluation import place_policy, sample_and_score, sequence_kl
from alignlimits.theory.frontier import Frontier


def test_kl_estimators_direction_and_sign():
    rng = np.random.default_rng(0)
    p = np.array([0.7, 0.2, 0.1])
    q = np.array([0.2, 0.3, 0.5])
    y = rng.choice(3, size=200_000, p=p)  # samples of the policy p
    est = sequence_kl(np.log(p[y]), np.log(q[y]))
    forward, backward = np.sum(p * np.log(p / q)), np.sum(q * np.log(q / p))
    assert abs(est.k1 - forward) < 4 * est.k1_se
    assert abs(est.k3 - forward) < 4 * est.k3_se
    assert abs(est.k1 - backward) > 10 * est.k1_se  # not the reverse KL
    assert est.k1 > 0 and np.all(np.expm1(-(np.log(p[y]) - np.log(q[y]))) + np.log(p[y]) - np.log(q[y]) >= 0)
    same = sequence_kl(np.log(p[y]), np.log(p[y]))
    assert same.k1 == 0 and same.k3 == 0


def test_mismatched_lengths_refused():
    with pytest.raises(AlignLimitsError):
        sequence_kl(np.zeros(3), np.zeros(4))


@pytest.fixture(scope="module")
def exact_setup():
    from alignlimits.lm.exact import exact_distribution
    from alignlimits.lm.models import load_model

    lm = load_model("exact-tiny", device="cpu", dtype="float32")
    base, tok = lm.model, lm.tokenizer
    policy = copy.deepcopy(base)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.15 * torch.randn_like(p))
    base_dist = exact_distribution(base, tok)
    return base, policy, tok, base_dist


def test_monte_carlo_kl_and_gain_match_exact(exact_setup):
    from alignlimits.lm.exact import exact_distribution, exact_reward

    base, policy, tok, base_dist = exact_setup
    pol_dist = exact_distribution(policy, tok)
    exact_kl = np.mean(np.sum(pol_dist.probs * (pol_dist.logp - base_dist.logp), axis=1))
    exact_gain = np.mean(pol_dist.mean_reward() - base_dist.mean_reward())

    class Reward:
        name = "exact"

        def __call__(self, prompts, completions):
            return exact_reward(prompts, completions)

    rows = sample_and_score(policy, base, tok, base_dist.prompts, base_dist.prompt_ids, [Reward()], n=300,
                            max_new_tokens=3, seed=0, batch_size=512)
    # both log-probs teacher-forced; the sampler's agree with the policy's within float32 rounding
    assert np.allclose(rows["logp_sampler"], rows["logp_policy"], atol=1e-3)
    n_outcomes = base_dist.logp.shape[1]
    frontier = Frontier(n_bootstrap=0).fit(
        np.tile(base_dist.rewards, len(base_dist.prompts)), np.repeat(base_dist.prompt_ids, n_outcomes),
        base_probs=base_dist.probs.ravel(),
    )
    point = place_policy("perturbed", rows["exact"], rows["prompt_id"], rows["logp_policy"], rows["logp_base"], frontier)
    assert abs(point.kl - exact_kl) < 4 * point.kl_se
    assert abs(point.kl_k3 - exact_kl) < 4 * point.kl_k3_se
    gain_se = (point.gain_ci[1] - point.gain_ci[0]) / (2 * 1.96)
    assert abs(point.gain - exact_gain) < 4 * gain_se
    # a perturbed policy cannot beat the frontier at its KL
    assert point.gain <= point.optimal_gain_at_kl + 3 * (point.gain_ci[1] - point.gain_ci[0])
    assert point.verdict != "above the frontier (estimate biased?)"


def test_sample_and_score_refuses_mixed_precision(exact_setup):
    base, policy, tok, base_dist = exact_setup
    with pytest.raises(AlignLimitsError, match="precisions"):
        sample_and_score(copy.deepcopy(policy).double(), base, tok, base_dist.prompts[:1], base_dist.prompt_ids[:1], [],
                         n=2, max_new_tokens=3)


def exact_truth(logp_policy, base_dist, members):
    """Exact efficiency and gain gap of a policy (log-probs over the exact task's outcomes), by enumeration."""
    p, q, r = np.exp(logp_policy), base_dist.probs[members], base_dist.rewards
    kl = float(np.mean(np.sum(p * (logp_policy - base_dist.logp[members]), axis=1)))
    gain = float(np.mean(p @ r - q @ r))
    exact = Frontier(n_bootstrap=0).fit(np.tile(r, len(members)), np.repeat(np.arange(len(members)), r.size),
                                        base_probs=q.ravel())
    optimal = float(exact.gain_at_kl(kl, extrapolate=True)[0])
    return gain / optimal, gain - optimal


def draw(rng, logp, n):
    """n outcome indices per row of an enumerated distribution (P, outcomes): shape (P, n)."""
    p = np.exp(logp)
    return np.stack([rng.choice(p.shape[1], n, p=row / row.sum()) for row in p])


@pytest.mark.parametrize("mix", [1.0, 0.5])  # the optimal tilt (efficiency 1), half tilt and half base (below)
@pytest.mark.parametrize("members", [[0, 5, 9], list(range(12))])  # held-out 3 (prompts fixed); all 12 (resampled)
def test_paired_intervals_cover_exact_efficiency(exact_setup, members, mix):
    _, _, _, base_dist = exact_setup
    r, logq = base_dist.rewards, base_dist.logp[members]
    tilted = logq + r / 0.7
    logp = np.log(mix * np.exp(tilted - np.logaddexp.reduce(tilted, axis=1, keepdims=True)) + (1 - mix) * np.exp(logq))
    efficiency, gap = exact_truth(logp, base_dist, members)
    ids = np.repeat(np.asarray(base_dist.prompt_ids)[members], 128)
    hits, seeds = np.zeros(2), 20
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        frontier = Frontier(n_bootstrap=0).fit(r[draw(rng, logq, 128)].ravel(), ids)
        y = draw(rng, logp, 128)
        rows = np.arange(len(members))[:, None]
        point = place_policy("policy", r[y].ravel(), ids, logp[rows, y].ravel(), logq[rows, y].ravel(), frontier,
                             random_state=seed)
        hits += [point.efficiency_ci[0] <= efficiency <= point.efficiency_ci[1],
                 point.gain_gap_ci[0] <= gap <= point.gain_gap_ci[1]]
    print(f"exact efficiency {efficiency:.3f}, gap {gap:.3f}: covered {hits} of {seeds}")
    assert (hits >= 17).all(), hits  # 95% intervals: 17 or more of 20 with probability 0.98
