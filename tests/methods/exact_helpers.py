"""Exact (enumerated) KL, gain and objective of a policy on the exact task."""

import numpy as np

from alignlimits.lm.exact import exact_distribution, exact_prompts
from alignlimits.theory.groups import Groups
from alignlimits.theory.tilt import log_partition, tilt

PROMPTS = [p["prompt"] for p in exact_prompts()]


def exact_point(policy, tok, base_dist, beta, method):
    """Exact prompt-averaged KL(π‖π0), gain, objective E[r] − β·KL of a policy, the optimum J* and the share
    of the gap J* − J(π0) it closed; printed with the method's name for the test log."""
    d = exact_distribution(policy, tok)
    p = d.probs
    kl = float(np.mean((p * (d.logp - base_dist.logp)).sum(1)))
    reward = float(np.mean(p @ d.rewards))
    base_reward = float(np.mean(base_dist.probs @ base_dist.rewards))
    P, C = base_dist.logp.shape
    groups = Groups.equal(P, C)
    rewards, q = np.tile(base_dist.rewards, P), base_dist.probs.reshape(-1)
    opt = float(beta * np.mean(log_partition(rewards, beta, groups, q)))
    # the exact frontier, shared β: (mean_x K_x(β), mean_x Δ_x(β)) on a dense grid, read at this KL
    curve = tilt(rewards, np.geomspace(0.01, 100, 2000), groups, q)
    ks, gs = curve.kl.mean(1)[::-1], curve.gain.mean(1)[::-1]  # increasing in KL
    pt = dict(kl=kl, gain=reward - base_reward, objective=reward - beta * kl, optimum=opt,
              base_objective=base_reward, frontier_gain=float(np.interp(kl, ks, gs)), kl_cap=float(ks[-1]))
    pt["gap_closed"] = (pt["objective"] - pt["base_objective"]) / (pt["optimum"] - pt["base_objective"])
    print(f"{method} beta={beta}: {pt}, gap closed {pt['gap_closed']:.3f}, J/J* {pt['objective'] / pt['optimum']:.3f}, "
          f"efficiency {pt['gain'] / pt['frontier_gain']:.3f}")
    return pt


class FailAfter:
    """The exact reward, until its ``n``-th call: then the process "dies" (a kill mid-step)."""

    name = "exact"

    def __init__(self, n):
        self.n, self.calls = n, 0

    def __call__(self, prompts, completions):
        from alignlimits.lm.exact import exact_reward

        self.calls += 1
        if self.calls > self.n:
            raise KeyboardInterrupt("killed")
        return exact_reward(prompts, completions)


def checkpoints(out) -> list[str]:
    return sorted(p.name for p in out.glob("checkpoint-*"))


def assert_resumes_bit_exact(tmp_path, run, kill) -> None:
    """A 4-step run saving every 2 steps, killed in step 4 by ``kill`` (which runs the trainer), refuses to
    start over on its checkpoint, resumes to the same weights as an uninterrupted run and keeps one checkpoint.

    ``run(out, resume=None, **options)`` trains and returns the policy."""
    import json

    import pytest
    import torch

    from alignlimits.errors import AlignLimitsError

    full = run(tmp_path / "a", keep_checkpoints=True)
    assert checkpoints(tmp_path / "a") == ["checkpoint-2", "checkpoint-4"]
    with pytest.raises(KeyboardInterrupt):
        kill(tmp_path / "b")
    assert checkpoints(tmp_path / "b") == ["checkpoint-2"]
    with pytest.raises(AlignLimitsError, match="already holds checkpoints"):
        run(tmp_path / "b")
    resumed = run(tmp_path / "b", resume=True)
    rows = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert checkpoints(tmp_path / "b") == ["checkpoint-4"]  # only what resuming needs, plus policy/
    a, b = full.state_dict(), resumed.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k
