"""Best-of-N estimators and soft best-of-N's exact law."""

import numpy as np
import pytest

from alignlimits.errors import AlignLimitsError
from alignlimits.theory.best_of_n import (
    bon_empirical_reward,
    bon_expected_reward,
    bon_kl_bound,
    bon_kl_empirical,
    order_statistic_weights,
    soft_bon,
    soft_bon_law,
)
from alignlimits.theory.groups import Groups
from alignlimits.theory.tilt import tilt


def test_n1_is_mean_and_n_eq_n_is_max():
    rng = np.random.default_rng(0)
    r = rng.normal(size=(4, 30))
    g = Groups.equal(4, 30)
    e = bon_expected_reward(r.ravel(), [1, 30], g)
    assert np.allclose(e[0], r.mean(axis=1))
    assert np.allclose(e[1], r.max(axis=1))


def test_weights_are_stable_for_large_n():
    w = order_statistic_weights(10_000, [1, 7, 500, 10_000])
    assert np.all(np.isfinite(w))
    assert np.allclose(w.sum(axis=1), 1.0)


def test_unbiased_by_simulation():
    """Average of the estimator over many n-sample draws = E[max of N] from the true distribution (uniform: N/(N+1))."""
    rng = np.random.default_rng(1)
    n, N, reps = 20, 5, 4000
    r = rng.random((reps, n))
    est = bon_expected_reward(r.ravel(), [N], Groups.equal(reps, n))[0]
    assert est.mean() == pytest.approx(N / (N + 1), abs=4 * est.std() / np.sqrt(reps))


def test_empirical_law_with_ties_and_kl_bounds():
    rng = np.random.default_rng(2)
    Ns = np.array([1, 2, 4, 8, 16])
    r = rng.integers(0, 3, size=40).astype(float)
    kl = bon_kl_empirical(r, Ns)[:, 0]
    # direct: atoms with mass q, BoN mass F^N - F_-^N
    atoms, counts = np.unique(r, return_counts=True)
    q = counts / counts.sum()
    F = np.cumsum(q)
    for k, N in enumerate(Ns):
        p = F**N - np.concatenate([[0], F[:-1]]) ** N
        assert kl[k] == pytest.approx(np.sum(np.where(p > 0, p * np.log(p / q), 0)), abs=1e-12)
        assert bon_empirical_reward(r, [N])[0, 0] == pytest.approx(p @ atoms, abs=1e-12)
    assert np.all(kl <= np.minimum(bon_kl_bound(Ns), np.log(40)) + 1e-12)


def test_empirical_kl_tends_to_bound():
    rng = np.random.default_rng(3)
    gaps = []
    for n in (50, 500, 5000):
        kl = bon_kl_empirical(rng.normal(size=n), [8])[0, 0]
        assert kl <= bon_kl_bound(8)[0] + 1e-12
        gaps.append(bon_kl_bound(8)[0] - kl)
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 1e-3


def test_n_larger_than_samples_refused():
    with pytest.raises(AlignLimitsError, match="best-of-9 needs at least 9"):
        bon_expected_reward(np.arange(8.0), [9])


def test_bon_is_tilt_by_log_cdf():
    """Continuous rewards: best-of-N law = π0 tilted by log F(r) with β = 1/(N−1)."""
    rng = np.random.default_rng(4)
    u = np.sort(rng.random(200_000))
    N = 6
    log_F = np.log(np.arange(1, u.size + 1) / u.size)
    via_tilt = tilt(u, 1 / (N - 1), base_probs=None)
    w = np.exp((N - 1) * log_F)
    w /= w.sum()
    assert w @ u == pytest.approx(N / (N + 1), abs=1e-3)
    t = tilt(log_F, 1 / (N - 1))
    assert t.kl[0, 0] == pytest.approx(bon_kl_bound(N)[0], abs=1e-3)
    assert via_tilt.kl.shape == (1, 1)


def test_soft_bon_law_matches_simulation():
    rng = np.random.default_rng(5)
    r = rng.normal(size=12)
    N, beta, M = 4, 0.4, 300_000
    law = soft_bon_law(r, N, beta)
    draws = rng.integers(0, r.size, size=(M, N))
    w = np.exp(r[draws] / beta)
    cum = np.cumsum(w / w.sum(axis=1, keepdims=True), axis=1)
    picked = draws[np.arange(M), (rng.random(M)[:, None] > cum).sum(axis=1)]
    freq = np.bincount(picked, minlength=r.size) / M
    assert np.all(np.abs(freq - law) < 5 * np.sqrt(law * (1 - law) / M) + 1e-4)


def test_soft_bon_limits():
    rng = np.random.default_rng(6)
    r = rng.normal(size=30)
    assert np.allclose(soft_bon_law(r, 1, 0.5), 1 / 30)
    pi_beta = np.exp(r / 0.5) / np.exp(r / 0.5).sum()
    assert np.abs(soft_bon_law(r, 20_000, 0.5) - pi_beta).max() < 2e-3
    gains, kls = soft_bon(r, [1, 4, 64], 0.5)
    assert gains[0, 0] == pytest.approx(0, abs=1e-12) and np.all(np.diff(gains[:, 0]) > 0)
    t = tilt(r, 0.5)
    assert kls[-1, 0] <= t.kl[0, 0] + 0.05
