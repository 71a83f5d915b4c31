"""Proxy-optimal tilts against gold, ensembles, and best-of-N selected by proxy."""

import numpy as np
import pytest

from alignlimits.errors import AlignLimitsError
from alignlimits.theory.best_of_n import bon_expected_reward
from alignlimits.theory.frontier import Frontier
from alignlimits.theory.groups import Groups
from alignlimits.theory.closed_forms import uniform_frontier, uniform_tilt
from alignlimits.theory.hacking import (
    CurveEvaluator, aggregate_proxies, expanded_tail, gaussian_error_gap, hacking_betas, hacking_curve, proxy_tilt,
)

BETAS = np.array([2.0, 1.0, 0.5, 0.25])


def gold_and_noise(seed=0, P=20, n=400):
    rng = np.random.default_rng(seed)
    gold = rng.normal(size=P * n)
    return gold, rng.standard_normal((8, P * n)), np.repeat(np.arange(P), n)


def test_objective_loss_matches_enumeration():
    rng = np.random.default_rng(1)
    gold, proxy = rng.normal(size=30), rng.normal(size=30)
    beta = 0.7
    w_hat = np.exp(proxy / beta) / np.exp(proxy / beta).sum()
    w = np.exp(gold / beta) / np.exp(gold / beta).sum()
    pt = proxy_tilt(gold, proxy, beta)
    assert pt.objective_loss[0, 0] == pytest.approx(beta * np.sum(w_hat * np.log(w_hat / w)), abs=1e-12)
    assert pt.gold_gain[0, 0] == pytest.approx(w_hat @ gold - gold.mean(), abs=1e-12)
    # regularised objective of the gold tilt minus that of the proxy tilt = β KL(π̂‖π)
    def objective(p):
        return p @ gold - beta * np.sum(p * np.log(30 * p))
    assert objective(w) - objective(w_hat) == pytest.approx(pt.objective_loss[0, 0], abs=1e-12)


def test_gap_grows_with_error_and_as_beta_falls():
    gold, noise, ids = gold_and_noise()
    gaps = np.array([hacking_curve(gold, gold + s * noise[0], BETAS, ids)["gap"] for s in (0.25, 0.5, 1.0, 2.0)])
    assert np.all(np.diff(gaps, axis=0) > 0)  # more error, bigger gap, at every β
    assert np.all(np.diff(gaps, axis=1) > 0)  # smaller β, bigger gap, at every error level
    exact = hacking_curve(gold, gold, BETAS, ids)
    assert np.allclose(exact["gap"], 0, atol=1e-9) and np.allclose(exact["objective_loss"], 0, atol=1e-12)


def test_mean_of_independent_proxies_has_smaller_gap():
    gold, noise, ids = gold_and_noise(2)
    single = np.mean([hacking_curve(gold, gold + noise[k], BETAS, ids)["gap"] for k in range(4)], axis=0)
    ensemble = hacking_curve(gold, aggregate_proxies(gold + noise[:4], "mean"), BETAS, ids)["gap"]
    assert np.all(ensemble < single)


def test_aggregates_by_hand():
    p = np.array([[1.0, 4.0], [3.0, 0.0], [2.0, 2.0]])
    assert np.allclose(aggregate_proxies(p, "mean"), [2.0, 2.0])
    assert np.allclose(aggregate_proxies(p, "min"), [1.0, 0.0])
    # population variance: ((1-2)^2+(3-2)^2+0)/3 = 2/3 ; (4+4+0)/3 = 8/3
    assert np.allclose(aggregate_proxies(p, "uwo", lam=0.5), [2 - 1 / 3, 2 - 4 / 3])
    # unbiased: divide by 2 instead
    assert np.allclose(aggregate_proxies(p, "uwo", lam=0.5, ddof=1), [2 - 0.5, 2 - 2.0])
    with pytest.raises(AlignLimitsError):
        aggregate_proxies(p, "median")


def test_bon_by_proxy_matches_simulation():
    rng = np.random.default_rng(3)
    n, N = 40, 5
    gold = rng.normal(size=n)
    proxy = gold + rng.normal(size=n)
    est = bon_expected_reward(gold, [N], sort_by=proxy)[0, 0]
    # direct: all N-subsets without replacement, sampled
    M = 200_000
    subsets = np.argsort(rng.random((M, n)), axis=1)[:, :N]
    chosen = subsets[np.arange(M), np.argmax(proxy[subsets], axis=1)]
    sim = gold[chosen]
    assert est == pytest.approx(sim.mean(), abs=4 * sim.std() / np.sqrt(M))


def test_length_mismatch_refused():
    with pytest.raises(AlignLimitsError, match="differ in length"):
        proxy_tilt(np.zeros(3), np.zeros(4), 1.0)


def test_ragged_groups_in_proxy_tilt():
    rng = np.random.default_rng(4)
    g = Groups(np.array([5, 9]))
    gold, proxy = rng.normal(size=14), rng.normal(size=14)
    both = proxy_tilt(gold, proxy, 0.5, g)
    first = proxy_tilt(gold[:5], proxy[:5], 0.5)
    assert both.gold_gain[0, 0] == pytest.approx(first.gold_gain[0, 0])


def test_hacking_curve_reads_the_frontier_at_the_ends_of_its_range():
    gold, noise, ids = gold_and_noise(5, P=6, n=12)
    front = Frontier(n_bootstrap=0).fit(gold, ids)
    betas = np.array([1e300, 1.0, 1e-4])  # KL 0 (to rounding), inside, and the largest attainable KL
    curve = hacking_curve(gold, gold, betas, ids)
    assert curve["kl"][0] < 1e-12 and curve["optimal_gold_gain"][0] == pytest.approx(0.0, abs=1e-5)
    assert curve["kl"][2] == pytest.approx(front.max_kl_)
    assert curve["optimal_gold_gain"][1] == pytest.approx(front.gain_at_kl(curve["kl"][1], extrapolate=True)[0])
    assert curve["optimal_gold_gain"][2] == pytest.approx(front.max_gain_)
    assert np.allclose(curve["gap"], 0.0, atol=1e-5)


def test_expanded_tail_is_the_t_widened_percentile_level():
    from scipy import stats

    # m → ∞: the plain percentile level α/2; small m: √(m/(m−1))·t_{m−1} standard errors
    assert expanded_tail(10_000, 0.95) == pytest.approx(0.025, rel=2e-3)
    z = np.sqrt(6 / 5) * stats.t.ppf(0.975, 5)
    assert expanded_tail(6, 0.95) == pytest.approx(stats.norm.cdf(-z))
    assert expanded_tail(6, 0.95) < expanded_tail(10, 0.95) < 0.025
    with pytest.raises(AlignLimitsError, match="at least 2"):
        expanded_tail(1, 0.95)


@pytest.mark.parametrize("sigma", [0.5, 1.0])
def test_gaussian_gold_and_error_against_the_closed_form(sigma):
    """Gold N(0, σ_r²) + independent N(0, σ²): gap σ_r(√(σ_r²+σ²) − σ_r)/β, KL (σ_r²+σ²)/(2β²), loss σ²/(2β)."""
    rng = np.random.default_rng(7)
    P, n, sigma_r = 10, 10_000, 1.5
    gold = sigma_r * rng.standard_normal(P * n)
    ids = np.repeat(np.arange(P), n)
    betas = np.array([3.0, 2.0, 1.5])
    curve = hacking_curve(gold, gold + sigma * rng.standard_normal(P * n), betas, ids)
    exact = gaussian_error_gap(betas, sigma_r, sigma)
    for key in ("kl", "gold_gain", "gap", "objective_loss"):
        np.testing.assert_allclose(curve[key], exact[key], rtol=0.05, err_msg=key)
    assert np.all(np.diff(exact["gap"]) > 0) and gaussian_error_gap(1.0, 1.0, 2.0)["gap"] > gaussian_error_gap(1.0, 1.0, 1.0)["gap"]


def test_uniform_gold_with_independent_error_against_the_closed_form():
    """Independent error leaves the gold gain at β that of the gold tilt and adds its own KL: for Uniform(0, 1) gold
    and N(0, σ²) error, gold gain = uniform_tilt(β), KL = K_u(β) + σ²/(2β²), gap = Δ*_u(KL) − gain_u(β)."""
    rng = np.random.default_rng(8)
    P, n, sigma = 10, 10_000, 0.3
    gold = rng.random(P * n)
    betas = np.array([0.5, 0.3, 0.2])
    curve = hacking_curve(gold, gold + sigma * rng.standard_normal(P * n), betas, np.repeat(np.arange(P), n))
    gain, kl_gold = uniform_tilt(betas)
    kl = kl_gold + sigma**2 / (2 * betas**2)
    np.testing.assert_allclose(curve["gold_gain"], gain, rtol=0.03)
    np.testing.assert_allclose(curve["kl"], kl, rtol=0.03)
    np.testing.assert_allclose(curve["gap"], uniform_frontier(kl) - gain, rtol=0.08)


def test_replicate_frontiers_are_the_frontier_of_the_resampled_prompts():
    """A bootstrap replicate's gold frontier (prompt weights on the Frontier's nodes, Hermite in KL with slope β)
    equals a Frontier fitted on that replicate's prompts, repeated as drawn."""
    rng = np.random.default_rng(9)
    P, n = 6, 16
    gold = (rng.standard_normal((P, n)) * rng.uniform(0.5, 2, (P, 1))).ravel()
    ids = np.repeat(np.arange(P), n)
    ev = CurveEvaluator(gold, ids, [1.0], n_bootstrap=3, random_state=1)
    kls = np.array([0.01, 0.1, 0.5, 1.2, 2.0])
    got = ev.frontier(np.tile(kls, (4, 1)))
    np.testing.assert_allclose(got[0], Frontier(n_bootstrap=0).fit(gold, ids).gain_at_kl(kls, extrapolate=True), rtol=1e-12)
    for r in (1, 2, 3):
        counts = np.round(ev.weights[r] * P).astype(int)
        rows = np.concatenate([np.arange(p * n, (p + 1) * n) for p in range(P) for _ in range(counts[p])])
        copy_ids = np.concatenate([np.full(n, f"{p}-{c}") for p in range(P) for c in range(counts[p])])
        refit = Frontier(n_bootstrap=0).fit(gold[rows], copy_ids)
        np.testing.assert_allclose(got[r], refit.gain_at_kl(kls, extrapolate=True), rtol=2e-4)


def test_default_betas_come_from_the_gold_frontier():
    gold, _, ids = gold_and_noise(10, P=8, n=16)
    front = Frontier(n_bootstrap=0).fit(gold, ids)
    betas = hacking_betas(front)
    assert betas.size == 11 and np.all(np.diff(betas) < 0)
    kls = hacking_curve(gold, gold, betas, ids)["kl"]
    np.testing.assert_allclose(kls, np.geomspace(1 / 64, 0.9, 11) * front.max_kl_, rtol=0.02)  # 3 significant figures of β
