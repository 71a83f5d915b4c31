import numpy as np
import pytest

from alignlimits.theory.best_of_n import bon_kl_bound
from alignlimits.theory.closed_forms import gaussian_frontier
from alignlimits.theory.frontier import Frontier
from alignlimits.theory.planning import bon_n_for_kl, plan_for_gain, plan_for_kl


@pytest.fixture(scope="module")
def frontier():
    return Frontier(n_bootstrap=0).fit(np.random.default_rng(0).normal(size=100_000))


def test_plan_for_gain(frontier):
    plan = plan_for_gain(frontier, 1.0)
    assert plan.kl == pytest.approx(0.5, rel=0.03)  # Gaussian: gain sqrt(2 KL)
    assert plan.beta == pytest.approx(1.0, rel=0.03)  # slope of the frontier = 1/gain for sigma = 1
    # smallest N: E[max of N standard normals] ≥ 1 first at N = 4 (1.029; N = 3 gives 0.846)
    assert plan.bon_n == 4
    assert plan.bon_kl_bound == pytest.approx(bon_kl_bound(4)[0])


def test_plan_for_kl(frontier):
    plan = plan_for_kl(frontier, 0.5)
    assert plan.gain == pytest.approx(gaussian_frontier(0.5), rel=0.02)
    assert bon_kl_bound(plan.bon_n)[0] <= 0.5 < bon_kl_bound(plan.bon_n + 1)[0]


def test_unreachable_gain(frontier):
    plan = plan_for_gain(frontier, 100.0)
    assert plan.kl == np.inf and plan.bon_n is None


def test_bon_n_for_kl_inverts_bound():
    for N in (2, 7, 300):
        assert bon_n_for_kl(bon_kl_bound(N)[0]) == pytest.approx(N, rel=1e-9)
