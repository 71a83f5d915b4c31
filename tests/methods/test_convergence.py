"""The convergence rule on simulated per-step objectives with a known answer (ceiling J* = 1)."""

import numpy as np
import pytest

from alignlimits.methods.convergence import CONVERGED, LEARNING, UNDETERMINED, convergence


def test_a_noisy_curve_that_cannot_resolve_a_quarter_of_the_ceiling_is_never_converged():
    """Per-step noise 1 over 8 steps, or 2 over 40: the window rise's noise exceeds J*/4 = 0.25, flat or not. With the
    steps' own standard errors (as the trainers log them) never converged; from the curve alone, rarely."""
    rng = np.random.default_rng(0)
    for sd, curve in ((1.0, rng.normal(0.0, 1.0, (300, 8))), (2.0, rng.normal(-0.5, 2.0, (300, 40)))):
        assert {convergence(c, 1.0, se=np.full(c.size, sd)).state for c in curve} == {UNDETERMINED}
        assert np.mean([convergence(c, 1.0).converged for c in curve]) < 0.02


def test_a_curve_that_rose_and_plateaued_is_converged():
    rng = np.random.default_rng(1)
    steps = np.arange(80)
    rise = 0.7 * (1 - np.exp(-steps / 8))  # at its plateau by the last half
    states = [convergence(rise + rng.normal(0, 0.1, 80), 1.0).state for _ in range(200)]
    assert np.mean([s == CONVERGED for s in states]) >= 0.95


def test_a_curve_still_rising_is_learning():
    rng = np.random.default_rng(2)
    states = [convergence(np.linspace(0, 1.5, 40) + rng.normal(0, 0.05, 40), 1.0).state for _ in range(100)]
    assert set(states) == {LEARNING}


def test_a_flat_precise_curve_at_the_base_level_is_converged_there():
    """The rule speaks of the plateau, not of its height: the share of the ceiling says that."""
    rng = np.random.default_rng(3)
    assert convergence(rng.normal(0.0, 0.05, 40), 1.0).state == CONVERGED


def test_too_few_steps_or_no_ceiling_cannot_tell():
    assert convergence([0.1, 0.2, 0.2], 1.0).state == UNDETERMINED
    assert convergence([0.2] * 8, 1.0).window == 2
    assert convergence(np.full(40, 0.3), float("nan")).state == UNDETERMINED
    assert convergence([0.1] * 10 + [None, float("nan")], 1.0).state == CONVERGED


def test_final_objective_is_the_last_windows_mean_with_its_standard_error():
    """Where training ended: the last K = steps/4 steps' mean, se = spread/√K (the spread floored by the steps' errors);
    over simulated plateaus its ±1.96·se interval covers the plateau about 95% of the time."""
    from alignlimits.methods.convergence import final_objective

    end, se, window = final_objective([0, 0, 0, 0, 1, 2, 3, 4], [0.1] * 8)
    assert (end, window) == (3.5, 2) and se == pytest.approx(np.sqrt(0.5) / np.sqrt(2))
    assert final_objective([0.0, 1.0, 1.0, 1.0])[1] == 0.0
    assert final_objective([None, 1.0, 1.0, 1.0, 1.0], [0.2] * 5)[1] == pytest.approx(0.2 / np.sqrt(2))
    rng = np.random.default_rng(3)
    hits = [abs(e - 0.7) <= 1.96 * s for e, s, _ in
            (final_objective(0.7 * (1 - np.exp(-np.arange(80) / 4)) + rng.normal(0, 0.3, 80)) for _ in range(1000))]
    assert 0.90 <= np.mean(hits) <= 0.99
