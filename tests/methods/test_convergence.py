"""The convergence rule on per-step objectives with a known answer."""

import numpy as np

from alignlimits.methods.convergence import convergence


def test_flat_noisy_objective_converged_in_most_runs():
    rng = np.random.default_rng(0)
    hits = [convergence(rng.normal(0.5, 0.1, 40)).converged for _ in range(400)]
    assert 0.9 <= np.mean(hits) <= 0.99  # a one-sided 5% test: flat curves pass about 95% of the time


def test_rising_objective_not_converged():
    rng = np.random.default_rng(1)
    rising = [convergence(np.linspace(0, 1, 40) + rng.normal(0, 0.05, 40)).converged for _ in range(100)]
    assert not any(rising)


def test_too_few_steps_cannot_tell():
    c = convergence([0.1, 0.2, 0.2])
    assert not c.converged and np.isnan(c.rise)
    assert convergence([0.1, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2]).window == 2
