"""Paired comparisons of a point with the frontier, against known answers.

Gaussian base rewards r ~ N(c_p, σ²) with a prompt difficulty c_p; a policy whose reward is
c_p + N(μ, s²) has KL = log(σ/s) + (s² + μ²)/(2σ²) − 1/2 and gain μ, and the frontier is
√(2σ²·KL): its efficiency and gain gap are known. The optimal tilt N(σ²/β, σ²) has efficiency 1
and gap 0.
"""

import json
import time

import numpy as np
import pytest
from scipy import integrate, stats

from alignlimits.errors import AlignLimitsError
from alignlimits.theory.comparison import (
    ABOVE,
    BELOW,
    BEYOND,
    ON,
    UNBOUNDED,
    _Design,
    _FrontierReplicates,
    choose_footing,
    compare_best_of_n,
    compare_law,
    compare_policy,
    frontier_band,
    frontier_gain,
)
from alignlimits.theory.frontier import Frontier

OPTIMAL, SUBOPTIMAL = (1.0, 1.0), (0.5, 0.5)  # (μ, s) with σ = 1


def truth(mu, s):
    """Efficiency and gain gap of the policy N(μ, s²) against N(0, 1) base rewards."""
    kl = -np.log(s) + (s**2 + mu**2) / 2 - 0.5
    return mu / np.sqrt(2 * kl), mu - np.sqrt(2 * kl)


def gaussian_base(rng, P, n, difficulty=1.0):
    c = difficulty * rng.normal(size=P)
    r = (c[:, None] + rng.standard_normal((P, n))).ravel()
    return c, Frontier(n_bootstrap=0).fit(r, np.repeat(np.arange(P), n))


def gaussian_policy(rng, c, m, mu, s):
    """Rewards, k1 = log N(y; μ, s²) − log N(y; 0, 1) and prompt ids of m samples per prompt."""
    y = mu + s * rng.standard_normal((c.size, m))
    k1 = -np.log(s) - 0.5 * ((y - mu) / s) ** 2 + 0.5 * y**2
    return (c[:, None] + y).ravel(), k1.ravel(), np.repeat(np.arange(c.size), m)


def policy_coverage(P, n, m, datasets, policies=(OPTIMAL, SUBOPTIMAL), n_bootstrap=200):
    """Per policy: coverage of efficiency_ci and gain_gap_ci, and the share of each verdict."""
    rng = np.random.default_rng(7)
    hits, verdicts = np.zeros((len(policies), 2)), [[] for _ in policies]
    for _ in range(datasets):
        c, frontier = gaussian_base(rng, P, n)
        for k, (mu, s) in enumerate(policies):
            point = compare_policy(frontier, *gaussian_policy(rng, c, m, mu, s), n_bootstrap=n_bootstrap,
                                   random_state=int(rng.integers(1 << 31)))
            efficiency, gap = truth(mu, s)
            eff_ci = point.efficiency_ci or (-np.inf, np.inf)  # an unbounded Fieller set holds every ratio
            hits[k] += [eff_ci[0] <= efficiency <= eff_ci[1],
                        point.gain_gap_ci[0] <= gap <= point.gain_gap_ci[1]]
            verdicts[k].append(point.verdict)
    return hits / datasets, [{v: np.mean(np.array(vs) == v) for v in (BELOW, ON, ABOVE)} for vs in verdicts]


@pytest.mark.slow
def test_policy_intervals_cover_on_resampled_prompts():
    # the quick preset's shape: 12 prompts × 16 base samples, 8 policy samples per prompt. On 1,000 data sets:
    # optimal tilt efficiency (Fieller set) 94%, gap 94%, "on" 94%; suboptimal 94%, 93.8%, "below" 94%
    coverage, verdicts = policy_coverage(P=12, n=16, m=8, datasets=1000)
    print(coverage, verdicts)
    assert ((0.90 <= coverage) & (coverage <= 0.99)).all(), coverage
    assert verdicts[0][ON] >= 0.90, verdicts
    assert verdicts[1][BELOW] >= 0.80, verdicts


@pytest.mark.slow
def test_policy_intervals_cover_on_fixed_prompts():
    # 3 held-out prompts × 256 samples (the exact preset had 3 before the split on text, now 4): too few to resample
    coverage, verdicts = policy_coverage(P=3, n=256, m=256, datasets=100, policies=(OPTIMAL,), n_bootstrap=100)
    print(coverage, verdicts)
    assert ((0.90 <= coverage) & (coverage <= 0.99)).all(), coverage
    assert verdicts[0][ON] >= 0.90, verdicts


def bon_truth(N):
    """E[max of N standard normals]."""
    return integrate.quad(lambda x: x * N * stats.norm.pdf(x) * stats.norm.cdf(x) ** (N - 1), -12, 12)[0]


def bon_empirical_truth(N, n):
    """E[gain of best-of-N drawn with replacement from n standard normals]: Σ_i ((i/n)^N − ((i−1)/n)^N)·E[r_(i:n)]."""
    from scipy.special import comb

    def order_mean(i):
        density = lambda x: i * comb(n, i) * stats.norm.cdf(x) ** (i - 1) * stats.norm.sf(x) ** (n - i) * stats.norm.pdf(x)
        return integrate.quad(lambda x: x * density(x), -12, 12)[0]

    i = np.arange(1, n + 1)
    weights = (i / n) ** N - ((i - 1) / n) ** N
    return float(weights @ [order_mean(k) for k in i])


def test_best_of_n_intervals_cover_what_each_gain_estimates():
    """The shown gain (the with-replacement law on the base samples) and ``gain_unbiased`` (the population's
    best-of-N) each with its own interval, each covering its own target."""
    ns = [4, 16]
    targets = np.array([[bon_empirical_truth(N, 16) for N in ns], [bon_truth(N) for N in ns]])
    rng = np.random.default_rng(3)
    hits, datasets = np.zeros((2, 2)), 200
    for _ in range(datasets):
        _, frontier = gaussian_base(rng, 12, 16)
        points = compare_best_of_n(frontier, ns, random_state=int(rng.integers(1 << 31)))
        hits[0] += [p.gain_ci[0] <= t <= p.gain_ci[1] for p, t in zip(points, targets[0])]
        hits[1] += [p.gain_unbiased_ci[0] <= t <= p.gain_unbiased_ci[1] for p, t in zip(points, targets[1])]
    coverage = hits / datasets
    assert ((0.90 <= coverage) & (coverage <= 0.99)).all(), coverage


def test_best_of_n_point_stands_on_one_footing_and_never_above_its_frontier():
    """Issue 21, item 1: on 27 × 16 Gaussian rewards best-of-8 showed gain 1.420 against a frontier of 1.376 at its
    KL, with gap −0.075 and verdict "below": the gap was not gain − frontier. Now every field is the empirical
    law's, the gap is gain − frontier and the efficiency their ratio exactly, and the law is never above the
    plain frontier it is judged against; the unbiased estimate stands beside it."""
    from alignlimits.theory.best_of_n import bon_empirical_reward, bon_expected_reward, bon_kl_empirical

    rng = np.random.default_rng(0)
    for k in range(20):
        _, frontier = gaussian_base(rng, 27, 16)
        r, g = frontier.rewards_, frontier.groups_
        for point, N in zip(compare_best_of_n(frontier, [8, 16], random_state=k), (8, 16)):
            assert point.gain == pytest.approx(np.mean(bon_empirical_reward(r, [N], g) - g.mean(r)), rel=1e-12)
            assert point.gain_unbiased == pytest.approx(np.mean(bon_expected_reward(r, [N], g) - g.mean(r)), rel=1e-12)
            assert point.kl == pytest.approx(np.mean(bon_kl_empirical(r, [N], g)), rel=1e-12)
            assert point.optimal_gain_at_kl == pytest.approx(frontier_gain(frontier, point.kl)[0], rel=1e-12)
            assert point.gain_gap == point.gain - point.optimal_gain_at_kl
            assert point.efficiency == point.gain / point.optimal_gain_at_kl
            assert point.gain <= point.optimal_gain_at_kl and point.verdict != ABOVE
            assert point.judged_against == "plain" and point.n == N
            assert "with-replacement law" in point.estimator and "plain frontier" in point.footing


def efficiency_and_verdict(rng, P, mu, s, n_bootstrap=100):
    c, frontier = gaussian_base(rng, P, 16)
    return compare_policy(frontier, *gaussian_policy(rng, c, 8, mu, s), n_bootstrap=n_bootstrap,
                          random_state=int(rng.integers(1 << 31)))


def test_efficiency_set_holds_100_percent_exactly_when_the_verdict_is_on():
    """Issue 21, item 3: the ratio interval (estimate ± t·se of ratio replicates) disagreed with the verdict on 3 of
    the 270 of these data sets where it was defined (79 of 300 in the issue's simulation); the Fieller set agrees on
    every one."""
    rng = np.random.default_rng(21)
    policies = [OPTIMAL, SUBOPTIMAL, (0.9, 0.9), (0.8, 1.0), (0.3, 1.0), (1.2, 1.0)]
    verdicts, disagree = [], 0
    for k in range(300):
        point = efficiency_and_verdict(rng, 27, *policies[k % len(policies)])
        verdicts.append(point.verdict)
        if point.efficiency_ci is None:
            assert point.efficiency_ci_note == UNBOUNDED
            continue
        lo, hi = point.efficiency_ci
        assert lo <= point.efficiency <= hi
        disagree += (lo <= 1.0 <= hi) != (point.verdict == ON)
    assert disagree == 0
    assert {ON, BELOW} <= set(verdicts)  # both cases were met


def test_efficiency_set_stays_bounded_where_the_ratio_interval_balloons_and_is_null_when_unbounded():
    """Small frontier gains: the ratio's ± t·se interval spans [−16%, 116%] where the Fieller set is [32%, 103%];
    when the frontier's own gain interval holds 0 no finite set exists: null, with the reason."""
    from alignlimits.theory.comparison import fieller_set

    rng = np.random.default_rng(5)
    for _ in range(2):  # the second draw of the replicates: a few near 0 make their ratios explode
        den_reps = 0.10 + 0.04 * rng.standard_normal(400)
        num_reps = 0.6 * den_reps + 0.02 * rng.standard_normal(400)
    t = stats.t.ppf(0.975, 26)
    ratio_ci = 0.6 + np.array([-1, 1]) * t * (num_reps / den_reps).std(ddof=1)  # [−106%, 226%]
    lo, hi = fieller_set(0.06, 0.10, num_reps, den_reps, t)  # [−8%, 125%]
    assert ratio_ci[0] < lo < 0.6 < hi < ratio_ci[1] and hi - lo < 0.5 * (ratio_ci[1] - ratio_ci[0])
    assert fieller_set(0.06, 0.05, num_reps, den_reps, t) is None  # 0.05 ± t·0.04 holds 0
    # a policy whose KL cannot be told from 0: the frontier at its KL is not resolved from 0 either
    point = efficiency_and_verdict(np.random.default_rng(6), 12, 0.05, 1.0)
    assert point.efficiency_ci is None and point.efficiency_ci_note == UNBOUNDED
    assert point.to_dict()["efficiency_ci"] is None and point.verdict == ON


def test_optimal_law_is_on_the_plain_frontier():
    # the tilt itself as a law: exactly the plain frontier, gap 0 to interpolation error
    _, frontier = gaussian_base(np.random.default_rng(1), 12, 64)
    beta = frontier.beta_for_kl([0.3])[0]

    def tilt_law(r, g):
        from alignlimits.theory.tilt import tilt

        t = tilt(r, [beta], g)
        return t.gain, t.kl

    (point,) = compare_law(frontier, tilt_law, method="tilt", estimator="the tilt")
    assert point.kl == pytest.approx(0.3, rel=1e-6)
    assert point.gain_gap == pytest.approx(0.0, abs=1e-6) and point.efficiency == pytest.approx(1.0, abs=1e-6)
    assert point.kl_overspend == pytest.approx(1.0, abs=1e-4) and point.verdict == ON


def test_replicates_read_the_frontier_where_nothing_is_resampled():
    _, frontier = gaussian_base(np.random.default_rng(2), 12, 16)
    design = _Design.make(12, "prompts", 3, 0.95, 0)
    design.weights[:] = 1 / 12  # every replicate is the data itself
    replicates = _FrontierReplicates(frontier, design)
    for kl in (1e-3, 0.05, 0.3, 1.0, 2.0):
        read = replicates.gain_at(np.full(3, kl), debiased=False)
        assert np.allclose(read, frontier_gain(frontier, kl), rtol=1e-4), kl


def test_pairing_cancels_prompt_difficulty():
    widths = []
    for difficulty in (0.0, 30.0):
        rng = np.random.default_rng(4)
        c, frontier = gaussian_base(rng, 12, 16, difficulty)
        point = compare_policy(frontier, *gaussian_policy(rng, c, 8, *SUBOPTIMAL))
        widths.append([np.diff(point.gain_gap_ci)[0], np.diff(point.efficiency_ci)[0], np.diff(point.gain_ci)[0]])
    # the same within-prompt draws: an unpaired gain would widen by the 30-fold spread of prompt means
    assert np.allclose(widths[0], widths[1], rtol=0.05), widths


def test_above_the_frontier_is_flagged_and_json_safe():
    rng = np.random.default_rng(5)
    c, frontier = gaussian_base(rng, 12, 16)
    rewards = np.repeat(c, 8) + 10.0  # far above every base sample, at almost no KL
    point = compare_policy(frontier, rewards, np.full(rewards.size, 0.01) + 1e-3 * rng.normal(size=rewards.size),
                           np.repeat(np.arange(12), 8))
    assert point.above_frontier and np.isnan(point.kl_overspend) and point.verdict == ABOVE
    d = point.to_dict()
    assert d["kl_overspend"] is None
    json.dumps(d, allow_nan=False)


def test_past_the_frontiers_reach_efficiency_and_gap_are_null_with_the_bounds_in_words():
    """Issue 21, item 9: DPO at KL 14.3 showed efficiency 1.68 "above the estimated frontier", a ratio against the
    frontier's last gain, which only bounds the true one from below. Past the reach: null, with the reason."""
    rng = np.random.default_rng(8)
    c, frontier = gaussian_base(rng, 3, 64)
    ids, k1 = np.repeat(np.arange(3), 8), np.full(24, 3 * frontier.max_kl_)
    point = compare_policy(frontier, np.repeat(c, 8) + 10.0, k1, ids)
    d = point.to_dict()
    assert d["efficiency"] is None and d["gain_gap"] is None and d["optimal_gain_at_kl"] is None
    assert d["efficiency_ci"] is None and d["gain_gap_ci"] == [None, None]
    assert point.verdict == BEYOND and point.judged_against == "lower bound" and not point.reliable
    assert "past the frontier's reach" in point.null_reason and "efficiency ≤" in point.null_reason
    json.dumps(d, allow_nan=False)
    # below even the lower bound (each prompt's best sample): below the true frontier, whatever it is there
    low = compare_policy(frontier, np.repeat(c, 8) - 5.0, k1, ids)
    assert low.verdict == BELOW and np.isnan(low.efficiency)


def test_an_exact_frontier_judges_everywhere_and_says_so():
    """Where the base probabilities are known the frontier is exact, also past its reach (the top atom's gain)."""
    atoms, q = np.array([0.0, 1.0, 2.0]), np.array([0.5, 0.3, 0.2])
    P = 3
    exact = Frontier(n_bootstrap=0).fit(np.tile(atoms, P), np.repeat(np.arange(P), 3), base_probs=np.tile(q, P))
    ids = np.repeat(np.arange(P), 50)
    point = compare_policy(exact, np.full(ids.size, 2.0), np.full(ids.size, -np.log(0.2)), ids)
    assert point.judged_against == "exact" and "exact frontier" in point.footing
    assert point.efficiency == pytest.approx(1.0) and point.gain_gap == pytest.approx(0.0, abs=1e-9)
    far = compare_policy(exact, np.full(ids.size, 1.0), np.full(ids.size, 5.0), ids)
    assert far.optimal_gain_at_kl == pytest.approx(exact.max_gain_) and far.null_reason is None


def test_no_gain_has_no_overspend():
    rng = np.random.default_rng(6)
    c, frontier = gaussian_base(rng, 12, 16)
    point = compare_policy(frontier, *gaussian_policy(rng, c, 8, -0.5, 1.0))
    assert point.gain < 0 and np.isnan(point.kl_overspend) and not point.above_frontier
    assert point.verdict == BELOW


def test_footing_follows_the_number_of_prompts_and_the_band_shares_it():
    assert choose_footing(12) == "prompts" and choose_footing(3) == "samples"
    assert choose_footing(3, "prompts") == "prompts"
    with pytest.raises(AlignLimitsError, match="footing"):
        choose_footing(3, "bootstrap")
    for P in (3, 12):
        rng = np.random.default_rng(P)
        c, frontier = gaussian_base(rng, P, 32)
        point = compare_policy(frontier, *gaussian_policy(rng, c, 8, *OPTIMAL), debiased=False)
        band = frontier_band(frontier, [0.1, 0.5])
        held = "held fixed" in point.footing
        assert held == (P < 10) and held == ("held fixed" in band.footing)
        assert band.to_list()[1]["lo"] < band.gain[1] < band.to_list()[1]["hi"]


def test_band_coverage_on_the_footing():
    # the bias-corrected band on the prompt footing, within the KL that 16 samples per prompt support
    kls, datasets = np.array([0.1, 0.3]), 300
    rng = np.random.default_rng(8)
    hits = 0
    for _ in range(datasets):
        _, frontier = gaussian_base(rng, 12, 16)
        band = frontier_band(frontier, kls, debiased=True, random_state=int(rng.integers(1 << 31)))
        hits += (band.gain_ci[:, 0] <= np.sqrt(2 * kls)) & (np.sqrt(2 * kls) <= band.gain_ci[:, 1])
    assert ((0.88 <= hits / datasets) & (hits / datasets <= 0.99)).all(), hits / datasets


def test_speed():
    rng = np.random.default_rng(9)
    for P, n, m, limit in ((12, 16, 8, 1.0), (3, 256, 256, 2.0)):
        c, frontier = gaussian_base(rng, P, n)
        policy = gaussian_policy(rng, c, m, *OPTIMAL)
        t0 = time.perf_counter()
        compare_policy(frontier, *policy, n_bootstrap=200)
        assert time.perf_counter() - t0 < limit, (P, n)


def test_bad_input_is_refused():
    rng = np.random.default_rng(10)
    c, frontier = gaussian_base(rng, 4, 8)
    rewards, k1, ids = gaussian_policy(rng, c, 4, *OPTIMAL)
    with pytest.raises(AlignLimitsError, match="no base samples"):
        compare_policy(frontier, rewards, k1, ids + 1)
    with pytest.raises(AlignLimitsError, match="no policy samples"):
        compare_policy(frontier, rewards[ids > 0], k1[ids > 0], ids[ids > 0])
    with pytest.raises(AlignLimitsError, match="one of each"):
        compare_policy(frontier, rewards, k1[:-1], ids)
    exact = Frontier(n_bootstrap=0).fit([0.0, 1.0], base_probs=[0.5, 0.5])
    with pytest.raises(AlignLimitsError, match="exact distribution"):
        compare_best_of_n(exact, [2])
    per_prompt = Frontier(budget="per-prompt", n_bootstrap=0).fit(frontier.rewards_, np.repeat(np.arange(4), 8))
    with pytest.raises(AlignLimitsError, match="shared"):
        compare_policy(per_prompt, rewards, k1, ids)
