"""The bias-corrected frontier (delete-one jackknife within prompts, at fixed KL) against closed forms.

Every test checks the debiased number against the true frontier of the distribution the samples
come from, and also checks that the plain ratio estimator misses by more than the tolerance on the
same data: the tests can fail, and would fail if the plain number were shown as the debiased one.
"""

import numpy as np
import pytest

from alignlimits.theory.closed_forms import bernoulli_frontier, gaussian_frontier, uniform_frontier
from alignlimits.theory.frontier import Frontier
from alignlimits.theory.groups import Groups
from alignlimits.theory.tilt import TiltedSamples, tilt


def relative_errors(f: Frontier, kls, truth):
    plain = f.gain_at_kl(kls, extrapolate=True) / truth - 1
    debiased = f.gain_at_kl(kls, extrapolate=True, debiased=True) / truth - 1
    return plain, debiased


def test_gaussian_2000_prompts_16_samples_meets_the_issue_targets():
    """Issues 10 and 21: within 0.8% of √(2σ²KL) at KL 0.1, 0.5 and 1 (measured +0.63%, +0.39%, −0.32%; the plain
    estimate is 3.0%, 4.8% and 7.8% low; inverting the jackknifed curves instead left −1.2% at KL 1)."""
    rng = np.random.default_rng(10)
    P, n = 2000, 16
    r = rng.standard_normal((P, n)).ravel()
    f = Frontier(n_bootstrap=0).fit(r, np.repeat(np.arange(P), n))
    kls = np.array([0.1, 0.5, 1.0])
    tol = np.array([0.008, 0.008, 0.008])
    plain, debiased = relative_errors(f, kls, gaussian_frontier(kls))
    assert np.all(plain < -tol), plain
    assert np.all(np.abs(debiased) < tol), debiased


def test_one_prompt_at_fixed_kl():
    """Issue 21, item 7: at KL 0.25 with 16 samples of one prompt the plain estimate is 0.045 low and the jackknifed
    curves, inverted, left 0.019; the fixed-KL correction leaves 0.011 (4,000 single prompts, each on its own
    budget: the per-prompt frontier is their mean; a brute-force fixed-KL jackknife leaves about 0.006)."""
    rng = np.random.default_rng(11)
    P, n = 4000, 16
    r = rng.standard_normal((P, n)).ravel()
    f = Frontier(budget="per-prompt", n_bootstrap=0, min_ess=1).fit(r, np.repeat(np.arange(P), n))
    truth = gaussian_frontier(0.25)
    assert f.gain_at_kl(0.25, extrapolate=True)[0] - truth < -0.04
    assert abs(f.gain_at_kl(0.25, extrapolate=True, debiased=True)[0] - truth) < 0.013


def test_lagrangian_jackknife_is_exact_where_the_curves_expansion_is_not():
    """The correction at fixed KL is the jackknife of Δ − βK = β log Ẑ − r̄, computed per draw: exact against brute
    force at every β, also far above the rewards' spread, where the jackknifed KL's second-order expansion beyond
    the top 32 draws is off by ~1/(3n²) nats, which β multiplies (at β = 1000, n = 300: −3.3e-3 for 1.8e-6)."""
    from scipy.special import logsumexp

    def lagrangian(x, beta):
        return beta * (logsumexp(x / beta) - np.log(x.size)) - x.mean()

    rng = np.random.default_rng(4)
    for n in (5, 40, 300):
        x = np.round(rng.normal(size=n), 3)
        for beta in (1e3, 10.0, 1.0, 0.1, 1e-3):
            loo = np.mean([lagrangian(np.delete(x, i), beta) for i in range(n)])
            want = (n - 1) * (lagrangian(x, beta) - loo)
            got = TiltedSamples(x).lagrangian_jackknife([beta])[0, 0]
            assert got == pytest.approx(want, rel=1e-6, abs=n * beta * 1e-14), (n, beta)  # brute force rounds


def draw(dist, rng, P, n):
    if dist == "gaussian":
        return rng.standard_normal((P, n)), 0.3, gaussian_frontier(0.3)
    if dist == "bernoulli":
        return (rng.random((P, n)) < 0.5).astype(float), 0.05, bernoulli_frontier(0.05, 0.5)
    return rng.random((P, n)), 0.3, uniform_frontier(0.3)


@pytest.mark.parametrize("dist", ["gaussian", "bernoulli", "uniform"])
@pytest.mark.parametrize("n, tol", [(8, 0.02), (16, 0.01), (64, 0.005)])
def test_closed_forms(dist, n, tol):
    """256,000 rewards per case, as prompts of n samples; the plain bias is 6–9% at n = 8, 3–4% at
    16, 0.7–1.3% at 64."""
    rng = np.random.default_rng(n)
    P = 256_000 // n
    r, kl, truth = draw(dist, rng, P, n)
    f = Frontier(n_bootstrap=0).fit(r.ravel(), np.repeat(np.arange(P), n))
    plain, debiased = relative_errors(f, [kl], truth)
    assert plain[0] < -tol, plain
    assert abs(debiased[0]) < tol, debiased


def brute_force_jackknife(r, groups, beta, q=None):
    """n·θ − (n−1)·mean over the n draws of θ with one draw deleted, for θ = gain, KL, tilted variance."""
    out = {k: np.empty((len(beta), groups.n_groups)) for k in ("gain", "kl", "variance")}
    for g, (s, size) in enumerate(zip(groups.starts, groups.sizes)):
        x = r[s:s + size]
        counts = np.ones(size) if q is None else np.rint(q[s:s + size] * size)
        full = tilt(x, beta, base_probs=counts / size)
        loo = {k: np.zeros(len(beta)) for k in out}
        for i in np.nonzero(counts)[0]:
            c = counts.copy()
            c[i] -= 1
            t = tilt(x, beta, base_probs=c / c.sum())
            for k in out:
                loo[k] += counts[i] / size * getattr(t, k)[:, 0]
        for k in out:
            out[k][:, g] = size * getattr(full, k)[:, 0] - (size - 1) * loo[k]
    return out


def check_jackknife(r, groups, betas, q=None, rtol=1e-9, atol=1e-11):
    _, jk = TiltedSamples(r, groups, q).jackknife(betas)
    want = brute_force_jackknife(r, groups, betas, q)
    for k in want:
        assert np.allclose(getattr(jk, k), want[k], rtol=rtol, atol=atol), k


def test_jackknife_is_exact_for_small_prompts_ragged_and_tied():
    rng = np.random.default_rng(0)
    sizes = np.array([2, 5, 17, 32])
    r = np.round(rng.normal(size=sizes.sum()), 1)  # ties, within and at the top
    check_jackknife(r, Groups(sizes), np.array([0.02, 0.3, 1.0, 30.0]))


def test_jackknife_with_resampled_draws_counts_each_draw():
    """A bootstrap's base_probs are draw counts / n: deleting a draw lowers one count by one."""
    rng = np.random.default_rng(1)
    sizes = np.array([6, 20])
    r = rng.normal(size=26)
    q = np.concatenate([rng.multinomial(s, np.full(s, 1 / s)) / s for s in sizes])
    check_jackknife(r, Groups(sizes), np.array([0.05, 0.5, 4.0]), q)


def test_jackknife_second_order_beyond_the_top_samples_is_close():
    """Prompts larger than the exactly treated top are expanded to second order beyond it."""
    rng = np.random.default_rng(2)
    r = rng.standard_t(4, size=2 * 300)
    check_jackknife(r, Groups.equal(2, 300), np.array([0.1, 0.5, 2.0]), rtol=1e-4, atol=1e-6)


def test_jackknife_stable_when_the_top_reward_dwarfs_the_rest():
    """Deleting a unique top whose lead is 10^6 β must give the tilt of the rest, not 0/0."""
    r = np.array([0.0, 1e-3, 2e-3, 1e3, 5.0, 5.0, 4.0, 4.5])
    groups = Groups(np.array([4, 4]))
    with np.errstate(all="raise", under="ignore"):
        plain, jk = TiltedSamples(r, groups).jackknife(np.array([1e-3, 1.0, 1e4]))
    for t in (plain, jk):
        assert np.all(np.isfinite(t.gain)) and np.all(np.isfinite(t.kl)) and np.all(np.isfinite(t.variance))
    check_jackknife(r, groups, np.array([1e-3, 1.0, 1e4]), atol=1e-8)


def test_exact_fit_debiased_equals_plain():
    atoms, probs = np.array([0.0, 1.0, 2.5]), np.array([0.5, 0.3, 0.2])
    f = Frontier().fit(atoms, base_probs=probs)
    (p,) = f.evaluate([0.3])
    assert p.gain_debiased == p.gain and tuple(p.gain_debiased_ci) == tuple(p.gain_ci)
    assert np.array_equal(f.curve_debiased_["gain"], f.curve_["gain"])
    assert f.gain_at_kl(0.3, debiased=True)[0] == f.gain_at_kl(0.3)[0]


def test_debiased_interval_coverage_gaussian():
    """Paired prompt bootstrap (estimate ± t·se) of the debiased frontier, 500 prompts × 16 Gaussian samples,
    KL 0.1: the truth √(2·0.1) lies inside in 90–100% of 50 data sets (the plain interval: never; it
    is 3.5% low with a standard error of 0.8%). tests/theory/test_bootstrap.py has the other shapes."""
    rng = np.random.default_rng(77)
    P, n, kl, datasets = 500, 16, 0.1, 50
    truth = gaussian_frontier(kl)
    hits, plain_hits = 0, 0
    for _ in range(datasets):
        r = rng.standard_normal(P * n)
        f = Frontier(random_state=int(rng.integers(1 << 31))).fit(r, np.repeat(np.arange(P), n))
        (p,) = f.evaluate([kl], extrapolate=True)
        hits += p.gain_debiased_ci[0] <= truth <= p.gain_debiased_ci[1]
        plain_hits += p.gain_ci[0] <= truth <= p.gain_ci[1]
    assert 0.90 <= hits / datasets, hits
    assert plain_hits / datasets < 0.2, plain_hits


def test_interpolated_correction_is_the_jackknife_between_nodes():
    """Queries between the curve's nodes interpolate the jackknife correction; it must stay within
    1e-3 of the correction itself of the directly computed jackknife."""
    rng = np.random.default_rng(3)
    P, n = 300, 16
    r = (rng.standard_normal((P, n)) * rng.uniform(0.5, 1.5, (P, 1))).ravel()
    f = Frontier(n_bootstrap=0).fit(r, np.repeat(np.arange(P), n))
    u = f._nodes["u"]
    betas = np.exp(0.5 * (u[1:] + u[:-1]))
    betas = betas[f._samples.at(betas).kl.mean(axis=1) < 1.5]  # the reliable range and beyond
    got, plain = f._debiased_at(betas), f._samples.at(betas)
    want = f._samples.jackknife(betas)[1]
    for k in ("gain", "kl"):
        correction = getattr(want, k).mean(axis=1) - getattr(plain, k).mean(axis=1)
        error = getattr(got, k).mean(axis=1) - getattr(want, k).mean(axis=1)
        assert np.all(np.abs(error) <= 1e-3 * np.abs(correction) + 1e-12), k
