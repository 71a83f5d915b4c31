"""The streamed frontier (issue 12): chunks of whole prompts, and every number equal to the in-memory fit."""

import numpy as np
import pytest

from alignlimits.errors import AlignLimitsError
from alignlimits.pipeline.analysis import bon_rows
from alignlimits.theory.frontier import Frontier
from alignlimits.theory.groups import Groups
from alignlimits.theory.stream import ChunkedSamples, _ChunkTilts, chunk_bounds
from alignlimits.theory.tilt import TiltedSamples


def ragged(seed=0, P=40, equal=False):
    """P prompts of 20 to 90 samples (``equal``: 64 each), reward μ_p + σ_p·N(0, 1), some ties; ids in grouped order."""
    rng = np.random.default_rng(seed)
    sizes = np.full(P, 64) if equal else rng.integers(20, 90, P)
    r = np.concatenate([np.round(rng.normal(rng.normal(), rng.uniform(0.5, 1.5), s), 2) for s in sizes])
    return r, sizes, np.array([f"p{i:03d}" for i in range(P)], dtype=object)


def source(r, block=333):
    """A pass over r in blocks that do not line up with prompts."""
    return lambda: (r[i:i + block] for i in range(0, r.size, block))


def assert_same(a, b, tol=1e-9):
    a, b = np.asarray(a, float), np.asarray(b, float)
    assert a.shape == b.shape
    assert np.array_equal(np.isnan(a), np.isnan(b))
    assert np.allclose(a[~np.isnan(a)], b[~np.isnan(b)], rtol=tol, atol=tol)


def test_chunks_are_whole_prompts_and_take_picks_prompts():
    r, sizes, _ = ragged()
    samples = ChunkedSamples(source(r), sizes, chunk_samples=300)
    pieces = list(samples.chunks())
    assert len(pieces) > 5
    assert np.array_equal(np.concatenate([p[2] for p in pieces]), r)
    for cols, groups, rewards in pieces:
        assert np.array_equal(groups.sizes, sizes[cols]) and rewards.size == sizes[cols].sum()
    members = np.array([0, 7, 8, 39])
    groups, picked, _ = samples.take(members)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    assert np.array_equal(picked, np.concatenate([r[starts[m]:starts[m + 1]] for m in members]))
    assert np.array_equal(groups.sizes, sizes[members])
    assert np.array_equal(chunk_bounds(np.array([5, 5, 5]), 100), [0, 3])
    with pytest.raises(AlignLimitsError, match="changed while it was read"):
        list(ChunkedSamples(source(r[:-1]), sizes, chunk_samples=300).chunks())


def test_chunk_tilts_are_tilted_samples():
    """The streamed chunks' faster constructor makes the parent's arrays, value for value."""
    r, sizes, _ = ragged(4, P=30, equal=True)
    fast, plain = _ChunkTilts(r, Groups(sizes)), TiltedSamples(r, Groups(sizes))
    for name in ("rewards", "exponent", "base_mean", "mean_below_peak", "columns"):
        assert np.array_equal(getattr(fast, name), getattr(plain, name)), name
    betas = np.geomspace(10, 0.01, 7)
    for a, b in zip(fast.jackknife(betas), plain.jackknife(betas)):
        for name in ("gain", "kl", "kl_reverse", "variance", "ess"):
            assert np.array_equal(getattr(a, name), getattr(b, name)), name


@pytest.mark.parametrize("equal", [False, True])
@pytest.mark.parametrize("budget", ["shared", "per-prompt"])
def test_streamed_fit_equals_in_memory(budget, equal):
    """Curve, budgets (plain, debiased, intervals), reliability, inverses and best-of-N agree to 1e-9."""
    r, sizes, ids = ragged(1, equal=equal)
    options = dict(budget=budget, min_ess=3, n_bootstrap=100)
    memory = Frontier(**options).fit(r, np.repeat(ids, sizes))
    streamed = Frontier(**options).fit_stream(ChunkedSamples(source(r), sizes, chunk_samples=400), ids)
    assert streamed.rewards_ is None and streamed.n_samples_ == memory.n_samples_
    for name in ("curve_", "curve_debiased_"):
        for key, values in getattr(memory, name).items():
            assert_same(values, getattr(streamed, name)[key])
    for attr in ("max_kl_", "max_reliable_kl_", "max_gain_", "base_reward_mean_", "reward_variance_"):
        assert getattr(streamed, attr) == pytest.approx(getattr(memory, attr), rel=1e-12)
    kls = [0.05, 0.3, 1.0]
    for p, q in zip(memory.evaluate(kls, extrapolate=True), streamed.evaluate(kls, extrapolate=True)):
        for key, value in p.to_dict().items():
            assert_same(value, q.to_dict()[key])
    gains = [0.2, 0.6]
    assert_same(memory.kl_for_gain(gains), streamed.kl_for_gain(gains))
    assert_same(memory.kl_for_gain(gains, debiased=True), streamed.kl_for_gain(gains, debiased=True))
    assert_same(memory.gain_at_kl(kls, extrapolate=True, debiased=True),
                streamed.gain_at_kl(kls, extrapolate=True, debiased=True))
    for a, b in zip(bon_rows(memory, [1, 2, 8, 20]), bon_rows(streamed, [1, 2, 8, 20])):
        for key in a:
            assert_same(a[key], b[key])


def test_streamed_fit_resamples_prompts_only():
    r, sizes, ids = ragged(2, P=8)  # below 10 prompts the intervals hold the prompts fixed
    with pytest.raises(AlignLimitsError, match="resamples prompts only"):
        Frontier().fit_stream(ChunkedSamples(source(r), sizes), ids)
    with pytest.raises(AlignLimitsError, match="resamples prompts only"):
        Frontier(bootstrap="samples").fit_stream(ChunkedSamples(source(r), sizes), ids)
    with pytest.raises(AlignLimitsError, match="counts the samples' noise twice"):
        Frontier(bootstrap="prompts+samples").fit_stream(ChunkedSamples(source(r), sizes), ids)
    memory = Frontier(n_bootstrap=0, min_ess=3).fit(r, np.repeat(ids, sizes))
    streamed = Frontier(n_bootstrap=0, min_ess=3).fit_stream(ChunkedSamples(source(r), sizes), ids)
    assert_same(memory.curve_["gain"], streamed.curve_["gain"])


def test_streamed_fit_checks_its_rewards():
    r, sizes, ids = ragged(3)
    bad = r.copy()
    bad[5] = np.nan
    with pytest.raises(AlignLimitsError, match="NaN or infinite"):
        Frontier(n_bootstrap=0).fit_stream(ChunkedSamples(source(bad), sizes), ids)
    sizes = sizes.copy()
    sizes[3], sizes[4] = 1, sizes[3] + sizes[4] - 1
    with pytest.raises(AlignLimitsError, match="p003 have a single sample"):
        Frontier(n_bootstrap=0).fit_stream(ChunkedSamples(source(r), sizes), ids)
