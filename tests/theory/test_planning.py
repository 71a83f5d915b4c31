import numpy as np
import pytest

from alignlimits.theory.best_of_n import bon_kl_bound
from alignlimits.theory.closed_forms import gaussian_frontier
from alignlimits.theory.frontier import Frontier
from alignlimits.theory.planning import bon_n_for_kl, gain_limits, plan_for_gain, plan_for_kl


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


def test_gain_limits_on_known_samples():
    rewards = np.array([0.0, 1.0, 2.0, 1.0, 1.0, 5.0])
    f = Frontier(n_bootstrap=0, min_ess=2).fit(rewards, ["a"] * 3 + ["b"] * 3)
    limits = gain_limits(f)
    # each prompt's best sample: (2 − 1 + 5 − 7/3) / 2
    assert limits.max_gain == pytest.approx((1 + 5 - 7 / 3) / 2, rel=1e-12)
    assert limits.max_reliable_gain == pytest.approx(f.gain_at_kl(f.max_reliable_kl_)[0])
    assert 0 < limits.max_reliable_gain < limits.max_gain
    # the frontier reaches the reliable gain exactly at the reliable KL, and never the supremum
    assert f.kl_for_gain(limits.max_reliable_gain)[0] == pytest.approx(f.max_reliable_kl_, rel=1e-6)
    assert f.kl_for_gain(limits.max_gain)[0] == np.inf


def test_plan_refuses_like_frontier():
    import pandas as pd

    from alignlimits.samples import validate
    from alignlimits.pipeline.analysis import plan_result

    rng = np.random.default_rng(1)
    table = validate(pd.DataFrame({"prompt_id": np.repeat(["a", "b", "c"], 8), "reward": rng.normal(size=24)}), ["reward"])
    ok = plan_result(table, "reward", kl=0.1)
    assert ok["refused"] is None and ok["reliable"] and ok["gain"] > 0
    between = 0.5 * (ok["max_reliable_gain"] + ok["max_gain"])
    refused = plan_result(table, "reward", target_gain=between)
    assert refused["kl"] is None and "--extrapolate" in refused["refused"] and "reliable" in refused["refused"]
    stretched = plan_result(table, "reward", target_gain=between, extrapolate=True)
    assert stretched["refused"] is None and not stretched["reliable"]
    assert ok["max_reliable_kl"] < stretched["kl"] < ok["max_kl"]
    beyond = plan_result(table, "reward", target_gain=ok["max_gain"] * 1.01, extrapolate=True)
    assert "largest reachable gain" in beyond["refused"]
    assert "beyond any reweighting" in plan_result(table, "reward", kl=ok["max_kl"], extrapolate=True)["refused"]
