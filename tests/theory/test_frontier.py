"""Frontier queries, budget modes, reliability, and numerical robustness (hypothesis)."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from alignlimits.errors import AlignLimitsError
from alignlimits.theory.frontier import Frontier
from alignlimits.theory.tilt import tilt


def grouped(seed, P=5, n=200):
    rng = np.random.default_rng(seed)
    r = rng.normal(size=(P, n)) * rng.uniform(0.5, 2, size=(P, 1)) + rng.normal(size=(P, 1))
    return r.ravel(), np.repeat(np.arange(P), n)


def test_queries_are_consistent_inverses():
    r, ids = grouped(0)
    f = Frontier(n_bootstrap=0).fit(r, ids)
    kls = np.array([0.05, 0.2, 0.6])
    betas = f.beta_for_kl(kls)
    gains = f.gain_at_kl(kls)
    t = tilt(f.rewards_, betas, f.groups_)
    assert np.allclose(t.kl.mean(axis=1), kls, rtol=1e-10)
    assert np.allclose(t.gain.mean(axis=1), gains, rtol=1e-10)
    assert np.allclose(f.kl_for_gain(gains), kls, rtol=1e-8)


def test_slope_of_frontier_is_beta():
    r, ids = grouped(1)
    f = Frontier(n_bootstrap=0).fit(r, ids)
    eps, h = 0.3, 1e-5
    slope = (f.gain_at_kl(eps + h) - f.gain_at_kl(eps - h))[0] / (2 * h)
    assert slope == pytest.approx(f.beta_for_kl(eps)[0], rel=1e-4)


def test_per_prompt_budget_is_below_shared():
    r, ids = grouped(2)
    shared = Frontier(n_bootstrap=0).fit(r, ids)
    per_prompt = Frontier(budget="per-prompt", n_bootstrap=0).fit(r, ids)
    kls = np.array([0.1, 0.5])
    assert np.all(per_prompt.gain_at_kl(kls) <= shared.gain_at_kl(kls) + 1e-12)
    betas = per_prompt.beta_for_kl(kls)  # (E, P): each prompt meets the budget itself
    t = tilt(per_prompt.rewards_, betas, per_prompt.groups_)
    assert np.allclose(t.kl, kls[:, None], rtol=1e-9)


def test_budget_beyond_samples_is_refused_or_flagged():
    r, ids = grouped(3, P=3, n=30)
    f = Frontier(n_bootstrap=0).fit(r, ids)
    assert f.max_kl_ == pytest.approx(np.log(30))
    with pytest.raises(AlignLimitsError, match="beyond what any reweighting"):
        f.evaluate([np.log(30) + 0.1])
    above = (f.max_reliable_kl_ + f.max_kl_) / 2
    with pytest.raises(AlignLimitsError, match="--extrapolate"):
        f.evaluate([above])
    (point,) = f.evaluate([above], extrapolate=True)
    assert not point.reliable
    assert point.ess_min < f.min_ess + 1e-9


def test_single_sample_prompt_refused():
    with pytest.raises(AlignLimitsError, match="single sample"):
        Frontier().fit(np.array([1.0, 2.0, 3.0]), np.array(["a", "a", "b"]))


def test_constant_rewards_refused():
    with pytest.raises(AlignLimitsError, match="nothing to align"):
        Frontier().fit(np.ones(10))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), scale=st.floats(1e-3, 1e6), shift=st.floats(-1e6, 1e6))
def test_scale_and_shift(seed, scale, shift):
    """Scaling rewards and β by c scales the gain by c and keeps KL; shifting changes nothing."""
    r = np.random.default_rng(seed).normal(size=64)
    betas = np.array([0.1, 1.0, 10.0])
    base = tilt(r, betas)
    scaled = tilt(r * scale + shift, betas * scale)
    # the shifted inputs themselves carry a relative rounding error of about eps * |shift| / scale
    tol = 1e-9 + 1e-13 * abs(shift) / scale
    assert np.allclose(scaled.kl, base.kl, rtol=tol, atol=tol)
    assert np.allclose(scaled.gain, base.gain * scale, rtol=tol, atol=tol * scale)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), log_scale=st.floats(-3, 6), log_beta=st.floats(-6, 2))
def test_no_overflow_or_nan(seed, log_scale, log_beta):
    r = np.random.default_rng(seed).standard_cauchy(size=50) * 10**log_scale
    t = tilt(r, 10**log_beta)
    for x in (t.gain, t.kl, t.kl_reverse, t.ess, t.variance):
        assert np.all(np.isfinite(x))
    assert 0 <= t.kl[0, 0] <= np.log(50) + 1e-9


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), heavy=st.booleans())
def test_frontier_increasing_and_concave(seed, heavy):
    rng = np.random.default_rng(seed)
    r = rng.standard_t(3, size=300) if heavy else rng.normal(size=300)
    f = Frontier(n_bootstrap=0).fit(r)
    kls = np.linspace(0.05, 0.95 * f.max_kl_, 25)
    g = f.gain_at_kl(kls, extrapolate=True)
    assert np.all(np.diff(g) > -1e-10)
    second = g[2:] - 2 * g[1:-1] + g[:-2]
    assert np.all(second <= 1e-8)


def test_extreme_scales_in_frontier():
    r = np.random.default_rng(0).normal(size=500) * 1e4
    f = Frontier(n_bootstrap=50).fit(r)
    (p,) = f.evaluate([0.5])
    assert p.gain == pytest.approx(1e4, rel=0.15)
    assert np.isfinite(p.gain_ci).all()


@pytest.mark.parametrize("budget", ["shared", "per-prompt"])
@pytest.mark.parametrize("debiased", [False, True])
def test_kl_for_gain_inverts_gain_at_kl(budget, debiased):
    """Defect 7 (issue 10): with a per-prompt budget, kl_for_gain of the frontier's own gains at KL
    [0.1, 0.5] returned [0.366, 1.981]."""
    r, ids = grouped(4, P=6, n=200)
    f = Frontier(budget=budget, n_bootstrap=0).fit(r, ids)
    kls = np.array([0.1, 0.5])
    gains = f.gain_at_kl(kls, debiased=debiased)
    assert np.allclose(f.kl_for_gain(gains, debiased=debiased), kls, rtol=1e-8)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), budget=st.sampled_from(["shared", "per-prompt"]), debiased=st.booleans(),
       share=st.floats(0.02, 0.9))
def test_inverse_property(seed, budget, debiased, share):
    rng = np.random.default_rng(seed)
    P, n = int(rng.integers(1, 5)), int(rng.integers(20, 120))
    r = (rng.standard_t(5, size=(P, n)) * rng.uniform(0.2, 3, (P, 1))).ravel()
    f = Frontier(budget=budget, n_bootstrap=0).fit(r, np.repeat(np.arange(P), n))
    kl = share * f.max_reliable_kl_
    gain = f.gain_at_kl(kl, debiased=debiased)
    if not np.isfinite(gain[0]):  # a jackknifed curve need not reach every budget
        return
    back = f.kl_for_gain(gain, debiased=debiased)
    assert back[0] == pytest.approx(kl, rel=1e-7, abs=1e-10)
    assert f.gain_at_kl(back, extrapolate=True, debiased=debiased)[0] == pytest.approx(gain[0], rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("budget", ["shared", "per-prompt"])
def test_max_gain_is_the_reach_of_kl_for_gain(budget):
    """Issue 10 defect 4: a gain above the frontier's maximum needs an infinite KL, and max_gain_ says
    where that starts (shared: the mean of each prompt's top reward less its mean, as β → 0)."""
    r, ids = grouped(5, P=4, n=50)
    r, ids = r[20:], ids[20:]  # the first prompt has 30 samples: its KL stops at log 30, the others' at log 50
    f = Frontier(budget=budget, n_bootstrap=0).fit(r, ids)
    top = np.mean([r[ids == p].max() - r[ids == p].mean() for p in range(4)])
    if budget == "shared":
        assert f.max_gain_ == pytest.approx(top, rel=1e-12)
    else:
        assert f.max_gain_ < top
        assert f.max_gain_ == pytest.approx(f.gain_at_kl(f.max_kl_ * (1 - 1e-9), extrapolate=True)[0], rel=1e-6)
    assert np.isinf(f.kl_for_gain(f.max_gain_ * 1.001)[0])
    assert np.isfinite(f.kl_for_gain(f.max_gain_ * 0.999)[0])


def test_public_fitted_attributes():
    r, ids = grouped(6, P=3, n=40)
    f = Frontier(n_bootstrap=20).fit(r, ids)
    assert np.allclose(f.base_probs_, 1 / 40) and f.base_probs_.shape == r.shape
    assert set(f.curve_debiased_) == {"beta", "kl", "gain"}
    assert np.all(f.curve_debiased_["gain"][5:] > f.curve_["gain"][5:])  # the plain estimate is biased low
    (p,) = f.evaluate([0.2])
    d = p.to_dict()
    assert isinstance(d["gain_debiased"], float) and len(d["gain_debiased_ci"]) == 2
    assert d["gain_debiased_ci"][0] <= d["gain_debiased"] <= d["gain_debiased_ci"][1]
    exact = Frontier().fit([0.0, 1.0, 3.0], base_probs=[0.5, 0.3, 0.2])
    assert np.allclose(exact.base_probs_, [0.5, 0.3, 0.2])
