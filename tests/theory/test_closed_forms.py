"""The estimator against frontiers known in closed form, from 10^5+ samples, within Monte Carlo error."""

import numpy as np
import pytest

from alignlimits.theory.closed_forms import (
    bernoulli_frontier,
    bernoulli_kl,
    gaussian_frontier,
    gaussian_tilt,
    uniform_frontier,
    uniform_tilt,
)
from alignlimits.theory.frontier import Frontier
from alignlimits.theory.tilt import tilt

N = 200_000


def test_gaussian_frontier_is_sqrt_2_sigma2_kl():
    rng = np.random.default_rng(0)
    sigma = 1.7
    r = rng.normal(3.0, sigma, N)
    f = Frontier(n_bootstrap=0).fit(r)
    kls = np.array([0.05, 0.2, 0.5, 1.0])
    got = f.gain_at_kl(kls)
    # relative Monte Carlo error of the self-normalised estimate grows like sqrt(e^{4KL}/N)
    assert np.allclose(got, gaussian_frontier(kls, sigma), rtol=0.02)
    g, k = gaussian_tilt(np.array([2.0]), sigma)
    assert tilt(r, 2.0).gain[0, 0] == pytest.approx(g[0], rel=0.02)
    assert tilt(r, 2.0).kl[0, 0] == pytest.approx(k[0], rel=0.03)


def test_bernoulli_frontier():
    rng = np.random.default_rng(1)
    p = 0.2
    r = (rng.random(N) < p).astype(float)
    f = Frontier(n_bootstrap=0).fit(r)
    p_hat = r.mean()
    kls = np.array([0.02, 0.1, 0.5, 1.0])
    got = f.gain_at_kl(kls)
    assert np.allclose(got, bernoulli_frontier(kls, p_hat), atol=1e-9)  # exact on the empirical law
    assert np.allclose(got, bernoulli_frontier(kls, p), atol=4 * np.sqrt(p * (1 - p) / N) * 5)
    q = p + bernoulli_frontier(np.array([0.3]), p)
    assert bernoulli_kl(q, p)[0] == pytest.approx(0.3, abs=1e-12)


def test_uniform_tilt_closed_form():
    rng = np.random.default_rng(2)
    r = rng.random(N)
    betas = np.array([0.05, 0.2, 1.0, 5.0])
    g, k = uniform_tilt(betas)
    t = tilt(r, betas)
    se = np.sqrt(np.exp(2 * k) / N)  # rough relative MC error of a self-normalised mean
    assert np.all(np.abs(t.gain[:, 0] - g) < 6 * se * 0.3 + 1e-3)
    assert np.allclose(t.kl[:, 0], k, rtol=0.02, atol=2e-3)


def test_uniform_closed_form_is_stable_for_tiny_beta():
    g, k = uniform_tilt(np.array([1e-6, 1e-4]))
    assert np.all(np.isfinite(g)) and np.all(np.isfinite(k))
    assert g[0] == pytest.approx(0.5 - 1e-6, abs=1e-9)


def test_exact_atoms_reproduce_exact_frontier():
    """Samples repeating a distribution's atoms in exact proportion give the exact frontier (1e-9)."""
    atoms = np.array([0.0, 1.0, 2.5, 4.0])
    probs = np.array([0.4, 0.3, 0.2, 0.1])
    counts = (probs * 1000).astype(int)
    samples = np.repeat(atoms, counts)
    exact = Frontier(n_bootstrap=0).fit(atoms, base_probs=probs)
    empirical = Frontier(n_bootstrap=0).fit(samples)
    kls = np.array([0.01, 0.1, 0.5, 1.0, 2.0])
    assert exact.max_kl_ == pytest.approx(-np.log(0.1))
    assert np.allclose(empirical.gain_at_kl(kls, extrapolate=True), exact.gain_at_kl(kls), atol=1e-9, rtol=0)
    assert np.allclose(empirical.beta_for_kl(kls, extrapolate=True), exact.beta_for_kl(kls), rtol=1e-9)


def test_uniform_frontier_inverts_the_tilt():
    betas = np.array([0.02, 0.3, 2.0])
    g, k = uniform_tilt(betas)
    assert np.allclose(uniform_frontier(k), g, rtol=1e-10)
    r = np.random.default_rng(3).random(N)
    assert Frontier(n_bootstrap=0).fit(r).gain_at_kl([0.3])[0] == pytest.approx(uniform_frontier(0.3), rel=0.01)
