"""GRPO (TRL's GRPOTrainer through our wrapper) on the exactly solvable task.

GRPO does not target π_β (k3 KL in the loss, rewards divided by the group std), so the test asks what
holds for any policy — its exact (KL, gain) lies on or under the exact frontier — and that it buys a
real reward gain; it prints how close it comes (efficiency = gain / frontier gain at its KL, and its
objective E[r] − β·KL against the optimum β·log Z_β).
"""

from __future__ import annotations

import json

import pytest
from exact_helpers import PROMPTS, FailAfter, assert_resumes_bit_exact, exact_point
import torch

from alignlimits.errors import AlignLimitsError
from alignlimits.lm.exact import build_exact_model, exact_reward
from alignlimits.methods.grpo import GRPOOptions, build_grpo_trainer, grpo_config, train_grpo
from alignlimits.methods.trl_common import TRLReward

EXACT_GRPO = dict(learning_rate=3e-3, steps=100, batch_size=64, num_generations=8, max_new_tokens=3, progress=False)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.slow
@pytest.mark.parametrize("beta", [0.5, 1.0])
def test_grpo_lands_under_the_frontier_and_gains(base, tmp_path, beta):
    _, tok, base_dist = base
    model, _ = build_exact_model(0)
    opts = GRPOOptions(beta=beta, output_dir=str(tmp_path / "run"), save_steps=0, seed=0, **EXACT_GRPO)
    policy = train_grpo(opts, model, tok, exact_reward, PROMPTS)
    pt = exact_point(policy, tok, base_dist, beta, "GRPO")
    assert pt["kl"] < pt["kl_cap"]  # inside the tabulated frontier
    assert pt["gain"] <= pt["frontier_gain"] + 1e-4
    assert pt["objective"] <= pt["optimum"] + 1e-4
    assert pt["gain"] >= 0.5 * pt["frontier_gain"] and pt["gain"] > 0.3  # a real gain
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, opts.steps + 1))
    assert {"reward", "kl", "kl_k1_mean", "loss", "reward_mean", "objective"} <= set(rows[0])
    assert all(r["objective"] == pytest.approx(r["reward"] - beta * r["kl_k1_mean"]) for r in rows)
    assert (tmp_path / "run" / "policy" / "model.safetensors").is_file()


def test_grpo_resume_continues_from_the_checkpoint(tmp_path):
    _, tok = build_exact_model(0)
    kw = dict(beta=0.5, learning_rate=3e-3, steps=4, batch_size=16, num_generations=4, max_new_tokens=3,
              save_steps=2, progress=False)

    def run(out, resume=None, reward=exact_reward, **more):
        model, _ = build_exact_model(0)
        return train_grpo(GRPOOptions(output_dir=str(out), **kw, **more), model, tok, reward, PROMPTS,
                          resume_from_checkpoint=resume)

    assert_resumes_bit_exact(tmp_path, run, kill=lambda out: run(out, reward=FailAfter(3)))  # dies in step 4


def test_grpo_config_and_bad_input(tmp_path):
    cfg = grpo_config(GRPOOptions(beta=0.1, steps=7, batch_size=16, num_generations=4, max_new_tokens=5,
                                  scale_rewards="none", loss_type="dr_grpo", output_dir=str(tmp_path)))
    assert (cfg.beta, cfg.max_steps, cfg.per_device_train_batch_size, cfg.num_generations) == (0.1, 7, 16, 4)
    assert (cfg.scale_rewards, cfg.loss_type, cfg.max_completion_length) == ("none", "dr_grpo", 5)
    assert (cfg.temperature, cfg.top_p, cfg.top_k, cfg.use_vllm) == (1.0, 1.0, 0, False)
    assert not cfg.gradient_checkpointing
    assert cfg.generation_kwargs["no_repeat_ngram_size"] == 0
    for bad in (dict(beta=0.0), dict(beta=-0.1), dict(batch_size=10, num_generations=4), dict(num_generations=1),
                dict(scale_rewards="std"), dict(loss_type="ppo"), dict(report_to=["mlflow"])):
        with pytest.raises(AlignLimitsError):
            GRPOOptions(**bad)
    with pytest.raises(AlignLimitsError, match="^GRPO options: num_generations"):
        GRPOOptions(num_generations=1)
    with pytest.raises(TypeError):  # the options every TRL trainer shares are keyword-only
        GRPOOptions(0.1, 100, 16, 8, 1, 1e-6, "linear", 0.2, "group", "dapo", 64, True)
    r = TRLReward(exact_reward, method="GRPO")
    assert r.__name__ == "exact_reward"
    assert r(prompts=["a", "b"], completions=["a a", ""], completion_ids=[[1, 1], [0]]) == [2.25, 0.25]
    with pytest.raises(AlignLimitsError, match="^GRPO: reward .* row 1"):
        TRLReward(lambda p, c: [0.0, float("nan")], method="GRPO")(prompts=["a", "b"], completions=["a", "b"])


def test_grpo_reward_sees_the_prompt_given_to_the_model(tmp_path):
    """One prompt form: the reward is called with the formatted prompt the model is given."""
    model, tok = build_exact_model(0)
    formatted = [f"  {p} " for p in PROMPTS]  # a stand-in chat template: same tokens, other text
    seen = []

    def prompt_dependent(prompts, completions):
        seen.extend(prompts)
        return [float(len(p)) + r for p, r in zip(prompts, exact_reward(prompts, completions))]

    opts = GRPOOptions(beta=0.5, steps=1, batch_size=16, num_generations=4, max_new_tokens=3, save_steps=0,
                       progress=False, output_dir=str(tmp_path / "r"))
    train_grpo(opts, model, tok, prompt_dependent, formatted)
    assert seen and set(seen) <= set(formatted)


@pytest.mark.parametrize("lora", [False, True])
def test_grpo_trains_float32_master_weights_whatever_the_model_dtype(tmp_path, lora):
    model, tok = build_exact_model(0)
    opts = GRPOOptions(beta=0.5, steps=1, batch_size=8, num_generations=4, max_new_tokens=3, progress=False,
                       use_lora=lora, lora_r=2, lora_alpha=4, output_dir=str(tmp_path / "r"))
    trainer = build_grpo_trainer(opts, model.to(torch.bfloat16), tok, exact_reward, PROMPTS)
    assert {p.dtype for p in trainer.model.parameters() if p.requires_grad} == {torch.float32}
    if not lora:  # TRL builds the reference at the policy's dtype: the same precision
        assert {p.dtype for p in trainer.ref_model.parameters()} == {torch.float32}
