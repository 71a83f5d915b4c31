"""The plain measurement (:func:`measure_policy`) against exact answers, and PPO's curve measured by it."""

import copy
import json

import numpy as np
import pytest
import torch
from exact_samples import IDS, PROMPTS

from alignlimits.lm.exact import build_exact_model, exact_distribution, exact_reward
from alignlimits.methods.measure import JSONL, Yardstick, frontier_prompts, measure_policy
from alignlimits.methods.ppo import PPOConfig, PPOTrainer
from alignlimits.theory.frontier import Frontier

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def frontier(base_table):
    return Frontier(min_ess=8).fit(base_table.rewards("exact"), base_table.prompt_ids)


def test_the_base_model_measures_zero_kl_and_a_perturbed_policy_its_exact_kl(base_table, frontier):
    base, tok = build_exact_model(0)
    prompts, ids = frontier_prompts(frontier, base_table)
    assert sorted(ids) == sorted(IDS) and prompts == [PROMPTS[IDS.index(i)] for i in ids]
    same = measure_policy(base, tok, base, frontier, "exact", prompts, ids, n=32, beta=0.5, max_new_tokens=3)
    assert same["kl"] == 0 and same["kl_se"] == 0
    assert abs(same["gain"]) < 3 * (same["gain_ci"][1] - same["gain_ci"][0])
    policy = copy.deepcopy(base)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.15 * torch.randn_like(p))
    point = measure_policy(policy, tok, base, frontier, exact_reward, prompts, ids, n=256, beta=0.5, seed=3, max_new_tokens=3)
    pd, bd = exact_distribution(policy, tok), exact_distribution(base, tok)
    exact_kl = np.mean(np.sum(pd.probs * (pd.logp - bd.logp), axis=1))
    assert abs(point["kl"] - exact_kl) < 4 * point["kl_se"] and point["kl"] > 0.05
    assert {"efficiency", "verdict", "objective", "objective_share", "kl_to_target", "seconds"} <= set(point)
    assert point["objective"] == pytest.approx(point["gain"] - 0.5 * point["kl"])


def test_a_lora_policy_measures_against_itself_with_its_adapters_off(base_table, frontier):
    """π0 of a LoRA policy is the policy with its adapters off (PPO's and the TRL trainers' yardstick with LoRA):
    scored like any model, it gives the base model's log-probabilities, so the trained adapters' KL is measured."""
    from peft import LoraConfig, get_peft_model

    from alignlimits.lm.sampling import score_logprobs
    from alignlimits.methods.measure import adapters_off

    base, tok = build_exact_model(0)
    policy = get_peft_model(copy.deepcopy(base), LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    off = adapters_off(policy)
    ids = [[1, 2, 0], [3, 3, 3]]
    assert np.allclose(score_logprobs(off, tok, PROMPTS[:2], ids), score_logprobs(base, tok, PROMPTS[:2], ids))
    prompts, pids = frontier_prompts(frontier, base_table)
    point = measure_policy(policy, tok, off, frontier, "exact", prompts, pids, n=16, beta=0.5, max_new_tokens=3)
    assert point["kl"] > 0


def test_ppo_measures_its_own_curve_without_changing_its_training(base_table, frontier, tmp_path):
    _, tok = build_exact_model(0)
    prompts, ids = frontier_prompts(frontier, base_table)
    cfg = dict(beta=0.5, learning_rate=3e-3, steps=4, batch_size=16, max_new_tokens=3, save_steps=0, progress=False)

    def run(out, yardstick=None):
        model, _ = build_exact_model(0)
        trainer = PPOTrainer(PPOConfig(output_dir=str(out), **cfg), model, None, tok, exact_reward, PROMPTS,
                             yardstick=yardstick)
        return trainer.train()

    ys = Yardstick(frontier, "exact", prompts, ids, beta=0.5, n=8, every=3, seed=7, max_new_tokens=3)
    measured, plain = run(tmp_path / "m", ys), run(tmp_path / "p")
    for k, v in plain.state_dict().items():
        assert torch.equal(v, measured.state_dict()[k]), k  # the yardstick leaves training as it was
    rows = [json.loads(x) for x in (tmp_path / "m" / JSONL).read_text().splitlines()]
    assert [r["step"] for r in rows] == [3, 4]  # every 3 steps, and at the last
    base, _ = build_exact_model(0)
    last = measure_policy(measured, tok, base, frontier, "exact", prompts, ids, n=8, beta=0.5, seed=7, max_new_tokens=3)
    assert rows[-1]["kl"] == pytest.approx(last["kl"], abs=1e-9) and rows[-1]["gain"] == pytest.approx(last["gain"], abs=1e-9)
    assert rows[-1]["training_state"] == "undetermined"
