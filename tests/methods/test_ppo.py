"""PPO on the exactly solvable task: the trained policy's exact KL and gain, against the known optimum.

The optimum of E[r] − β·KL(π‖π0) (prompt-averaged, one shared β) is J* = β·mean_x log Z_β(x), reached by
π_β ∝ π0·e^{r/β}. The test asks PPO to close ≥ 90% of the gap between the base policy's objective
J(π0) = E_π0[r] and J* — stricter than J ≥ 0.9·J* here, since π0 alone already has J(π0) ≈ 0.54·J*.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from exact_helpers import PROMPTS, FailAfter, exact_point
import torch

from alignlimits.errors import AlignLimitsError
from alignlimits.lm.exact import build_exact_model, exact_reward
from alignlimits.methods.checkpoints import last_checkpoint
from alignlimits.methods.ppo import SCALE_ROLLOUTS, PPOConfig, PPOTrainer, score_scale

# Settings for the tiny model: a large learning rate and many cheap steps (see PPOConfig docs).
EXACT_PPO = dict(learning_rate=1e-3, steps=200, batch_size=64, num_minibatches=4, max_new_tokens=3, progress=False)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.slow
@pytest.mark.parametrize("beta", [0.5, 1.0])
def test_ppo_reaches_the_optimum_on_the_exact_task(base, tmp_path, beta):
    model0, tok, base_dist = base
    model, _ = build_exact_model(0)
    cfg = PPOConfig(beta=beta, output_dir=str(tmp_path / "run"), save_steps=0, seed=0, **EXACT_PPO)
    policy = PPOTrainer(cfg, model, None, tok, exact_reward, PROMPTS).train()
    pt = exact_point(policy, tok, base_dist, beta, "PPO")
    assert pt["gain"] <= pt["frontier_gain"] + 1e-4  # nothing beats the frontier
    assert pt["objective"] <= pt["optimum"] + 1e-4  # nor the optimum
    assert pt["gap_closed"] >= 0.9
    assert pt["objective"] >= 0.9 * pt["optimum"]
    assert pt["gain"] >= 0.9 * pt["frontier_gain"]
    # the run directory: one metrics row per step, checkpoint at the end, the final policy
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, cfg.steps + 1))
    assert {"reward_mean", "kl_k1_mean", "loss", "clipfrac", "approx_kl"} <= set(rows[0])
    assert last_checkpoint(tmp_path / "run").name == f"checkpoint-{cfg.steps}"
    assert (tmp_path / "run" / "policy" / "model.safetensors").is_file()
    # the measured rollout KL of the last steps is the policy's KL (k1 is unbiased)
    tail = np.mean([r["kl_k1_mean"] for r in rows[-20:]])
    assert abs(tail - pt["kl"]) < 0.25


@pytest.mark.parametrize("lora", [False, True])
def test_ppo_resume_reproduces_the_uninterrupted_run(tmp_path, lora):
    _, tok = build_exact_model(0)
    kw = dict(beta=0.5, learning_rate=3e-3, steps=6, batch_size=16, num_minibatches=2, max_new_tokens=3,
              save_steps=3, progress=False, use_lora=lora, lora_r=4, lora_alpha=8)

    def run(out, reward, resume=None, **more):
        model, _ = build_exact_model(0)
        trainer = PPOTrainer(PPOConfig(output_dir=str(out), **kw, **more), model, None, tok, reward, PROMPTS)
        return trainer, trainer.train(resume_from_checkpoint=resume)

    def checkpoints(out):
        return sorted(p.name for p in out.glob("checkpoint-*"))

    _, full = run(tmp_path / "a", exact_reward, keep_checkpoints=True)
    assert checkpoints(tmp_path / "a") == ["checkpoint-3", "checkpoint-6"]
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", FailAfter(4))  # dies in step 5, after checkpoint-3
    assert checkpoints(tmp_path / "b") == ["checkpoint-3"]
    assert len((tmp_path / "b" / "metrics.jsonl").read_text().splitlines()) == 4
    with pytest.raises(AlignLimitsError, match="already holds checkpoints"):
        run(tmp_path / "b", exact_reward)  # a fresh start would clobber the run
    trainer, resumed = run(tmp_path / "b", exact_reward, resume=True)
    assert trainer.step == 6
    assert checkpoints(tmp_path / "b") == ["checkpoint-6"]  # only what resuming needs, plus policy/
    assert len(trainer.score_pool) == SCALE_ROLLOUTS  # 4 steps × 16 rollouts, carried across the resume
    a, b = full.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    rows = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    rows_a = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r["reward_mean"] for r in rows] == [r["reward_mean"] for r in rows_a]
    assert all(r["objective_absolute"] == pytest.approx(r["reward_mean"] - kw["beta"] * r["kl_k1_mean"]) for r in rows)
    if lora:
        assert (tmp_path / "b" / "policy" / "adapter_model.safetensors").is_file()
        # the reference is the base with adapters disabled: still π0
        base_model, _ = build_exact_model(0)
        with resumed.disable_adapter():
            x = torch.tensor([[1, 2, 3]])
            assert torch.allclose(resumed(x).logits, base_model(x).logits, atol=1e-6)


def test_ppo_is_invariant_to_an_affine_reward_change_with_beta_scaled_alike(tmp_path):
    """r → a·r + b with β → a·β has the same optimum; with score normalisation PPO takes the same
    steps too (the summary reward's offset of 0.6 once let the value loss steer the shared trunk)."""
    _, tok = build_exact_model(0)

    def trained(name, scale, shift, **kw):
        model, _ = build_exact_model(0)
        cfg = PPOConfig(beta=0.5 * scale, learning_rate=3e-3, steps=3, batch_size=16, max_new_tokens=3,
                        save_steps=0, progress=False, output_dir=str(tmp_path / name), **kw)
        reward = lambda p, c: scale * np.asarray(exact_reward(p, c)) + shift  # noqa: E731
        return PPOTrainer(cfg, model, None, tok, reward, PROMPTS).train().state_dict()

    base, moved = trained("a", 1.0, 0.0), trained("b", 10.0, 7.0)
    for k in base:
        assert torch.allclose(base[k], moved[k], atol=1e-5), k
    raw, raw_moved = trained("c", 1.0, 0.0, normalize_scores=False), trained("d", 10.0, 7.0, normalize_scores=False)
    assert any(not torch.allclose(raw[k], raw_moved[k], atol=1e-5) for k in raw)


def test_ppo_bad_input(tmp_path):
    model, tok = build_exact_model(0)
    for bad in (dict(beta=0.0), dict(beta=-1.0), dict(batch_size=10, num_minibatches=4), dict(steps=0),
                dict(lr_schedule="cosine"), dict(report_to=["mlflow"]), dict(clip_range=0.0)):
        with pytest.raises(AlignLimitsError):
            PPOConfig(**bad)
    cfg = PPOConfig(beta=0.5, steps=2, batch_size=8, max_new_tokens=3, output_dir=str(tmp_path / "r"), progress=False)
    with pytest.raises(AlignLimitsError, match="no training prompts"):
        PPOTrainer(cfg, model, None, tok, exact_reward, [])

    def nan_reward(prompts, completions):
        out = exact_reward(prompts, completions)
        out[3] = np.nan
        return out

    with pytest.raises(AlignLimitsError, match="row 3"):
        PPOTrainer(cfg, model, None, tok, nan_reward, PROMPTS).train()
    with pytest.raises(AlignLimitsError, match="returned 1 scores"):
        PPOTrainer(cfg, model, None, tok, lambda p, c: [0.0], PROMPTS).train()


def test_ppo_reward_sees_the_prompt_given_to_the_model(tmp_path):
    """One prompt form: the reward is called with the formatted prompt the model is given (the form the
    base table and evaluation score), not the task's raw text."""
    model, tok = build_exact_model(0)
    formatted = [f"  {p} " for p in PROMPTS]  # a stand-in chat template: same tokens, other text
    seen = []

    def prompt_dependent(prompts, completions):
        seen.extend(prompts)
        return np.asarray(exact_reward(prompts, completions)) + [len(p) for p in prompts]

    cfg = PPOConfig(beta=0.5, steps=1, batch_size=12, max_new_tokens=3, output_dir=str(tmp_path / "r"), progress=False)
    PPOTrainer(cfg, model, None, tok, prompt_dependent, formatted).train()
    assert sorted(seen) == sorted(formatted)  # one epoch of the 12 prompts, exactly as given


def test_ppo_trains_float32_master_weights_whatever_the_policy_dtype(tmp_path):
    _, tok = build_exact_model(0)
    cfg = dict(beta=0.5, steps=1, batch_size=8, max_new_tokens=3, save_steps=0, progress=False)
    model, _ = build_exact_model(0)
    trainer = PPOTrainer(PPOConfig(output_dir=str(tmp_path / "full"), **cfg), model.to(torch.bfloat16), None, tok,
                         exact_reward, PROMPTS)
    assert {p.dtype for p in trainer.policy.parameters()} == {torch.float32}
    assert {p.dtype for p in trainer.ref_policy.parameters()} == {torch.float32}  # π and π0 at one precision
    model, _ = build_exact_model(0)
    trainer = PPOTrainer(PPOConfig(output_dir=str(tmp_path / "lora"), use_lora=True, lora_r=2, lora_alpha=4, **cfg),
                         model.to(torch.bfloat16), None, tok, exact_reward, PROMPTS)
    params = dict(trainer.policy.named_parameters())
    assert {p.dtype for p in params.values() if p.requires_grad} == {torch.float32}  # the adapters
    assert {p.dtype for p in params.values() if not p.requires_grad} == {torch.bfloat16}  # the frozen base
    trainer.train()  # a mixed bf16 base / float32 adapter model trains
    assert all(p.dtype == torch.float32 for p in trainer.optimizer.param_groups[0]["params"])


def test_score_scale_guards_a_nearly_constant_first_batch():
    """A heavy-tailed reward (P(not offensive)-like: ≈ 1, rarely ≈ 0) whose first 8 rollouts are nearly
    constant: the first batch's std alone (≈ 1e-5) would put a later 0 at z ≈ −1e5; the floored scale keeps
    |z| ≤ 10·|r − μ0|/RMS."""
    rng = np.random.default_rng(0)
    first = 0.999 + 1e-5 * rng.standard_normal(8)
    assert first.std(ddof=1) < 1e-4
    mu0, sd0 = score_scale(first)
    assert sd0 == pytest.approx(0.1 * np.sqrt(np.mean(first**2)))
    assert abs((0.0 - mu0) / sd0) <= 10.01
    assert score_scale(np.zeros(8)) == (0.0, 1.0)


def test_pooled_score_scale_is_close_to_the_rewards_std():
    """Bernoulli reward (1 w.p. 0.97, 0 w.p. 0.03; std 0.171): E[σ0] by enumeration over the number of zeros
    k ~ Binomial(n, 0.03) matches simulation, and pooled over 64 rollouts it is within 3% of the std, while
    the unguarded std of 8 rollouts is 0 with probability 0.78 and 54% low on average."""
    from scipy.stats import binom

    p, n = 0.03, SCALE_ROLLOUTS
    k = np.arange(n + 1)
    exact = sum(binom.pmf(kk, n, p) * score_scale(np.r_[np.zeros(kk), np.ones(n - kk)])[1] for kk in k)
    draws = np.where(np.random.default_rng(1).random((4000, n)) < p, 0.0, 1.0)
    simulated = np.mean([score_scale(d)[1] for d in draws])
    assert simulated == pytest.approx(exact, abs=4 * 0.05 / np.sqrt(4000))
    assert exact == pytest.approx(np.sqrt(p * (1 - p)), rel=0.03)
    k8 = np.arange(9)
    raw8 = sum(binom.pmf(kk, 8, p) * np.r_[np.zeros(kk), np.ones(8 - kk)].std(ddof=1) for kk in k8)
    assert raw8 < 0.5 * np.sqrt(p * (1 - p))


def test_ppo_pools_the_score_scale_over_the_first_rollouts(tmp_path):
    model, tok = build_exact_model(0)
    calls = []

    def heavy(prompts, completions):  # a nearly constant first batch, then the exact reward's spread
        calls.append(1)
        r = np.asarray(exact_reward(prompts, completions))
        return 1.0 + 1e-6 * r if len(calls) == 1 else r

    cfg = PPOConfig(beta=0.5, steps=2, batch_size=8, max_new_tokens=3, save_steps=0, output_dir=str(tmp_path / "r"),
                    progress=False)
    trainer = PPOTrainer(cfg, model, None, tok, heavy, PROMPTS)
    trainer.train()
    pool = np.asarray(trainer.score_pool)
    assert len(pool) == 16  # both steps' rollouts (fewer than SCALE_ROLLOUTS so far)
    assert pool[:8].std() < 1e-5 and score_scale(pool[:8])[1] >= 0.1  # step 1: the floor held
    assert score_scale(pool)[1] == pytest.approx(pool.std(ddof=1))  # step 2: the pooled spread


def test_ppo_resume_refuses_pickled_objects(tmp_path):
    """Checkpoint state is read with weights_only=True: a pickle that would run code is refused, not run."""
    _, tok = build_exact_model(0)
    cfg = dict(beta=0.5, steps=2, batch_size=8, max_new_tokens=3, save_steps=1, progress=False,
               output_dir=str(tmp_path / "r"))
    model, _ = build_exact_model(0)
    PPOTrainer(PPOConfig(**{**cfg, "steps": 1}), model, None, tok, exact_reward, PROMPTS).train()
    marker = tmp_path / "ran"
    torch.save({"x": _Payload(str(marker))}, tmp_path / "r" / "checkpoint-1" / "rng.pt")
    model, _ = build_exact_model(0)
    with pytest.raises(AlignLimitsError, match="refusing to unpickle"):
        PPOTrainer(PPOConfig(**cfg), model, None, tok, exact_reward, PROMPTS).train(resume_from_checkpoint=True)
    assert not marker.exists()


class _Payload:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))
