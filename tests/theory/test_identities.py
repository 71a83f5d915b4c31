"""Identities of the tilted policy, checked against direct enumeration of discrete distributions."""

import numpy as np
import pytest

from alignlimits.theory.groups import Groups
from alignlimits.theory.tilt import (
    gain,
    gain_covariance_form,
    jeffreys_divergence,
    kl_divergence,
    log_partition,
    optimal_policy,
    reverse_kl_divergence,
    tilt,
)

BETAS = np.array([0.05, 0.3, 1.0, 4.0])


def discrete(seed, k=7):
    rng = np.random.default_rng(seed)
    q = rng.dirichlet(np.ones(k))
    r = rng.normal(size=k) * 2
    return r, q


def direct(r, q, beta):
    """π_β by definition, then every quantity by its textbook formula."""
    p = q * np.exp(r / beta)
    p /= p.sum()
    return {
        "gain": p @ r - q @ r,
        "kl": np.sum(p * np.log(p / q)),
        "kl_reverse": np.sum(q * np.log(q / p)),
        "log_z": np.log(q @ np.exp(r / beta)),
    }


@pytest.mark.parametrize("seed", range(5))
def test_quantities_match_enumeration(seed):
    r, q = discrete(seed)
    t = tilt(r, BETAS, base_probs=q)
    for b, beta in enumerate(BETAS):
        d = direct(r, q, beta)
        assert t.gain[b, 0] == pytest.approx(d["gain"], abs=1e-10)
        assert t.kl[b, 0] == pytest.approx(d["kl"], abs=1e-10)
        assert t.kl_reverse[b, 0] == pytest.approx(d["kl_reverse"], abs=1e-10)
        assert log_partition(r, beta, base_probs=q)[0, 0] == pytest.approx(d["log_z"], abs=1e-10)
        assert optimal_policy(r, beta, q) @ r - q @ r == pytest.approx(d["gain"], abs=1e-10)


@pytest.mark.parametrize("seed", range(5))
def test_gain_is_beta_jeffreys_is_covariance(seed):
    r, q = discrete(seed)
    g = gain(r, BETAS, base_probs=q)[:, 0]
    assert np.allclose(g, BETAS * jeffreys_divergence(r, BETAS, base_probs=q)[:, 0], atol=1e-10, rtol=0)
    assert np.allclose(g, gain_covariance_form(r, BETAS, base_probs=q)[:, 0], atol=1e-10, rtol=0)
    assert np.allclose(
        kl_divergence(r, BETAS, base_probs=q)[:, 0] + reverse_kl_divergence(r, BETAS, base_probs=q)[:, 0],
        jeffreys_divergence(r, BETAS, base_probs=q)[:, 0],
    )


def test_zero_base_probability_on_the_best_sample_is_left_out_not_nan():
    """A bootstrap's multinomial q can leave out a prompt's best sample: at β ≪ its reward gap the
    tilt must equal the tilt of the support alone (shifting by the left-out maximum underflowed to 0/0)."""
    r = np.array([0.0, 1.0, 2.0, 2000.0])
    q = np.array([0.5, 0.25, 0.25, 0.0])
    betas = np.array([1e-3, 0.5, 3.0])
    with np.errstate(divide="raise", invalid="raise", over="raise"):
        t = tilt(r, betas, base_probs=q)
        alone = tilt(r[:3], betas, base_probs=q[:3])
        for name in ("gain", "kl", "kl_reverse", "variance", "ess"):
            assert np.allclose(getattr(t, name), getattr(alone, name), atol=1e-12), name
        assert np.allclose(log_partition(r, betas, base_probs=q), log_partition(r[:3], betas, base_probs=q[:3]))
        assert np.allclose(gain_covariance_form(r, betas, base_probs=q), alone.gain, atol=1e-12)


def test_empirical_tilt_kl_is_direct_computation():
    rng = np.random.default_rng(3)
    r = rng.normal(size=50)
    for beta in (0.1, 0.5, 2.0):
        w = np.exp(r / beta - np.max(r / beta))
        w /= w.sum()
        t = tilt(r, beta)
        assert t.kl[0, 0] == pytest.approx(np.sum(w * np.log(50 * w)), abs=1e-12)
        assert t.gain[0, 0] == pytest.approx(w @ r - r.mean(), abs=1e-12)
        assert t.ess[0, 0] == pytest.approx(1 / np.sum(w**2), rel=1e-12)
        assert t.kl[0, 0] <= np.log(50)


def test_ragged_groups_equal_separate_fits():
    rng = np.random.default_rng(4)
    parts = [rng.normal(size=n) for n in (3, 10, 7)]
    t = tilt(np.concatenate(parts), BETAS, Groups(np.array([3, 10, 7])))
    for p, r in enumerate(parts):
        alone = tilt(r, BETAS)
        assert np.allclose(t.gain[:, p], alone.gain[:, 0], atol=1e-13)
        assert np.allclose(t.kl[:, p], alone.kl[:, 0], atol=1e-13)


def test_per_prompt_beta_matrix():
    rng = np.random.default_rng(5)
    r = rng.normal(size=(2, 20))
    betas = np.array([[0.5, 2.0]])
    t = tilt(r.ravel(), betas, Groups.equal(2, 20))
    assert t.gain[0, 0] == pytest.approx(tilt(r[0], 0.5).gain[0, 0])
    assert t.gain[0, 1] == pytest.approx(tilt(r[1], 2.0).gain[0, 0])


def test_derivatives_match_finite_differences():
    rng = np.random.default_rng(6)
    r = rng.normal(size=40)
    beta, h = 0.7, 1e-6
    t = tilt(r, beta)
    up, down = tilt(r, beta * np.exp(h)), tilt(r, beta * np.exp(-h))
    assert t.dkl_dlog_beta[0, 0] == pytest.approx((up.kl - down.kl)[0, 0] / (2 * h), rel=1e-5)
    assert t.dgain_dlog_beta[0, 0] == pytest.approx((up.gain - down.gain)[0, 0] / (2 * h), rel=1e-5)
