"""Best-of-N estimators and soft best-of-N's exact law."""

import itertools

import numpy as np
import pytest
from scipy.special import gammaln

from alignlimits.errors import AlignLimitsError
from alignlimits.theory.best_of_n import (
    bon_empirical_reward,
    bon_expected_reward,
    bon_kl_bound,
    bon_kl_empirical,
    empirical_bon_weights,
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


def _sir_by_enumeration(r, N, beta):
    """Soft best-of-N's law over all n^N equally likely ordered draws (softmax taken per draw, stably)."""
    r = np.asarray(r, float)
    draws = np.array(list(itertools.product(range(r.size), repeat=N)))  # (n^N, N)
    z = r[draws] / beta
    w = np.exp(z - z.max(axis=1, keepdims=True))
    pick = w / w.sum(axis=1, keepdims=True)
    return np.bincount(draws.ravel(), pick.ravel(), minlength=r.size) / draws.shape[0]


def _kl(p, n):
    return np.sum(np.where(p > 0, p * np.log(np.maximum(p, 1e-300) * n), 0.0))


@pytest.mark.parametrize("r", [
    [0.0, 1.0, 2.0],
    [0.0, 0.0, 1.0, 1.0, 1.0, 2.5],  # ties, as on the exact task
    [-1.5, 0.25, 0.25, 3.0, 3.0],  # tied top
    [1e4 * x for x in (0.0, 1.0, 2.0)],  # reward scale 1e4
])
@pytest.mark.parametrize("N", [1, 2, 3, 4])
@pytest.mark.parametrize("beta_fraction", [1e-3, 0.01, 0.05, 0.3, 2.0, 100.0])
def test_soft_bon_law_matches_enumeration(r, N, beta_fraction):
    r = np.asarray(r)
    beta = beta_fraction * np.ptp(r)
    exact = _sir_by_enumeration(r, N, beta)
    law = soft_bon_law(r, N, beta)
    assert np.abs(law - exact).max() < 1e-9
    gains, kls = soft_bon(r, [N], beta)
    assert gains[0, 0] == pytest.approx(exact @ r - r.mean(), abs=1e-9 * max(1.0, np.ptp(r)))
    assert kls[0, 0] == pytest.approx(_kl(exact, r.size), abs=1e-9)


def test_soft_bon_law_matches_multinomial_enumeration_at_larger_n():
    """Few distinct rewards, many samples: sum over every count vector of N = 16 draws on 5 atoms (4,845)."""
    atoms = np.array([-1.5, 0.25, 1.0, 2.25, 3.0])
    counts = np.array([40, 100, 80, 30, 6])
    q = counts / counts.sum()
    r = np.repeat(atoms, counts)
    N = 16
    cuts = np.array(list(itertools.combinations(range(N + atoms.size - 1), atoms.size - 1)))  # stars and bars
    bars = np.pad(cuts, ((0, 0), (1, 0)), constant_values=-1)
    k = np.diff(np.pad(bars, ((0, 0), (0, 1)), constant_values=N + atoms.size - 1), axis=1) - 1  # counts per atom
    log_prob = gammaln(N + 1) - gammaln(k + 1).sum(1) + k @ np.log(q)
    for beta in (4.5e-3, 0.05, 0.6, 20.0):
        z = np.where(k > 0, atoms / beta, -np.inf)
        w = k * np.exp(z - z.max(axis=1, keepdims=True))
        exact = np.exp(log_prob) @ (w / w.sum(axis=1, keepdims=True))
        law = np.bincount(np.repeat(np.arange(atoms.size), counts), soft_bon_law(r, N, beta))
        assert np.abs(law - exact).max() < 1e-9


def test_soft_bon_issue_example_and_scale():
    """r = [0, 1, 2], N = 2: gain 4/9 at β → 0 (the issue's β = 0.05 and 0.01); r·1e4 with β = 10 likewise."""
    for scale, beta in ((1.0, 0.05), (1.0, 0.01), (1e4, 10.0)):
        r = scale * np.array([0.0, 1.0, 2.0])
        exact = _sir_by_enumeration(r, 2, beta)
        gains, kls = soft_bon(r, [2], beta)
        assert gains[0, 0] / scale == pytest.approx(4 / 9, abs=1e-6)
        assert kls[0, 0] == pytest.approx(_kl(exact, 3), abs=1e-12)


def test_soft_bon_limits_are_q_and_best_of_n():
    """β → ∞: the base law q; β → 0: best-of-N with replacement, ties shared (the empirical BoN law)."""
    rng = np.random.default_rng(7)
    r = rng.integers(0, 5, size=24).astype(float)  # many ties
    Ns = [1, 2, 4, 16, 64]
    for N in Ns:
        assert np.abs(soft_bon_law(r, N, 1e9) - 1 / r.size).max() < 1e-9
    atoms, atom_of = np.unique(r, return_inverse=True)
    ranked = np.sort(r)
    bon_atoms = np.array([np.bincount(np.searchsorted(atoms, ranked), w) for w in empirical_bon_weights(r.size, Ns)])
    for k, N in enumerate(Ns):
        soft_atoms = np.bincount(atom_of, soft_bon_law(r, N, 1e-3))
        assert np.abs(soft_atoms - bon_atoms[k]).max() < 1e-12
    gains, kls = soft_bon(r, Ns, 1e-3)
    assert np.allclose(gains[:, 0], bon_empirical_reward(r, Ns)[:, 0] - r.mean(), atol=1e-12)
    assert np.allclose(kls[:, 0], bon_kl_empirical(r, Ns)[:, 0], atol=1e-12)


def test_soft_bon_vectorised_over_ragged_prompts():
    rng = np.random.default_rng(8)
    sizes = np.array([3, 7, 1, 16, 5])
    r = np.round(rng.normal(size=sizes.sum()) * 4) / 4  # ties within prompts
    groups = Groups(sizes)
    Ns = [1, 2, 5, 16]
    for beta in (1e-3, 0.2, 3.0):
        gains, kls = soft_bon(r, Ns, beta, groups)
        assert gains.shape == kls.shape == (len(Ns), sizes.size)
        for g, (start, size) in enumerate(zip(groups.starts, sizes)):
            rp = r[start : start + size]
            for k, N in enumerate(Ns):
                p = soft_bon_law(rp, N, beta)
                assert p.sum() == pytest.approx(1.0, abs=1e-12)
                assert gains[k, g] == pytest.approx(p @ rp - rp.mean(), abs=1e-12)
                assert kls[k, g] == pytest.approx(_kl(p, size), abs=1e-12)


def test_soft_bon_refuses_bad_beta():
    for beta in (0.0, -1.0, np.nan):
        with pytest.raises(AlignLimitsError, match="β > 0"):
            soft_bon(np.arange(4.0), [2], beta)
