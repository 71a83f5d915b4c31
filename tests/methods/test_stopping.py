"""Per-step objectives relative to each prompt's base level, time budgets and convergence stops, on the exact task."""

import json

import numpy as np
import pytest
from exact_helpers import PROMPTS

from alignlimits.errors import AlignLimitsError
from alignlimits.lm.exact import build_exact_model, exact_reward
from alignlimits.methods.grpo import GRPOOptions, train_grpo
from alignlimits.methods.ppo import PPOConfig, PPOTrainer
from alignlimits.methods.stopping import StepRecorder, StopRule, read_stop

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def levels(base):
    """Each prompt's exact base mean reward: b(x) = E_π0[r | x]."""
    _, _, dist = base
    return dict(zip(PROMPTS, dist.mean_reward().tolist()))


def rows(out):
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def test_ppo_logs_the_objective_relative_to_the_base_level_and_stops_at_its_time_budget(tmp_path, levels):
    model, tok = build_exact_model(0)
    cfg = PPOConfig(beta=0.5, steps=50, batch_size=16, max_new_tokens=3, learning_rate=1e-3, progress=False,
                    output_dir=str(tmp_path / "run"), save_steps=0, max_minutes=1e-9, baselines=levels)
    PPOTrainer(cfg, model, None, tok, exact_reward, PROMPTS).train()
    logged = rows(tmp_path / "run")
    assert len(logged) == 1 and np.isfinite(logged[0]["objective_rel"]) and logged[0]["objective_rel_se"] > 0
    assert read_stop(tmp_path / "run") == {"reason": "time budget", "step": 1, "seconds": pytest.approx(logged[0]["seconds"], abs=0.1)}
    assert (tmp_path / "run" / "policy" / "model.safetensors").is_file()


def test_the_base_policy_scores_zero_relative_to_its_base_level(tmp_path, levels):
    """At step 1 the rollouts come from π0 (KL 0), so objective_rel is 0 within its noise, whatever prompts a step draws."""
    model, tok = build_exact_model(0)
    cfg = PPOConfig(beta=0.5, steps=1, batch_size=64, max_new_tokens=3, learning_rate=1e-3, progress=False,
                    output_dir=str(tmp_path / "run"), save_steps=0, baselines=levels)
    PPOTrainer(cfg, model, None, tok, exact_reward, PROMPTS).train()
    row = rows(tmp_path / "run")[0]
    assert abs(row["objective_rel"]) < 3 * row["objective_rel_se"]
    assert read_stop(tmp_path / "run")["reason"] == "steps"


def test_grpo_logs_the_relative_objective_and_stops_when_converged(tmp_path, levels):
    model, tok = build_exact_model(0)
    opts = GRPOOptions(beta=0.5, learning_rate=3e-3, steps=6, batch_size=16, num_generations=4, max_new_tokens=3,
                       save_steps=0, progress=False, output_dir=str(tmp_path / "run"), baselines=levels,
                       stop_at_ceiling=1e6)  # a ceiling so high that any rise is below a quarter of it
    train_grpo(opts, model, tok, exact_reward, PROMPTS)
    logged = rows(tmp_path / "run")
    assert all(np.isfinite(r["objective_rel"]) and r["objective_rel_se"] > 0 and r["seconds"] > 0 for r in logged)
    assert read_stop(tmp_path / "run")["reason"] == "converged" and len(logged) == 4  # the rule needs 2 windows of 2


def test_step_recorder_and_bad_options():
    rec = StepRecorder({"a": 1.0, "b": -1.0}, beta=2.0)
    rec.rewards(["a", "b", "a"], [2.0, 0.0, 1.0])
    rec.sequence_kl([0.1, 0.3])
    out = rec.flush()
    assert out["objective_rel"] == pytest.approx(np.mean([1.0, 1.0, 0.0]) - 2.0 * 0.2)
    assert rec.flush() == {}
    with pytest.raises(AlignLimitsError, match="no base level"):
        rec.rewards(["c"], [0.0])
    with pytest.raises(AlignLimitsError, match="max_minutes"):
        StopRule(max_minutes=0)
    with pytest.raises(AlignLimitsError, match="give baselines"):
        GRPOOptions(beta=0.5, stop_at_ceiling=1.0)
