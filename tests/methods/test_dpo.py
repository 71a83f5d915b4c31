"""DPO (TRL's DPOTrainer through our wrapper) on the exactly solvable task, and its preference pairs.

Pairs ranked by the reward are deterministic preferences, so DPO has no finite optimum (dpo.py's
docstring): it must still land at or under the exact frontier at its own KL, like any policy, and at
the documented overshoot, a KL beyond that of π_β at its β.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from exact_helpers import PROMPTS, assert_resumes_bit_exact, exact_point

from alignlimits.errors import AlignLimitsError
from alignlimits.lm.exact import build_exact_model, exact_prompts, exact_reward
from alignlimits.lm.sampling import score_logprobs
from alignlimits.methods.dpo import DPOOptions, build_preference_pairs, dpo_config, dpo_pairs_from_policy, train_dpo
from alignlimits.methods.progress import training_progress
from alignlimits.methods.trl_common import progress_callback
from alignlimits.theory.groups import Groups
from alignlimits.theory.tilt import tilt

IDS = [p["id"] for p in exact_prompts()]

pytestmark = pytest.mark.usefixtures("one_thread")


def test_pairs_best_worst_all_and_ties():
    prompts = ["p", "p", "p", "p", "q", "q", "r"]
    comps = [[1], [2], [3], [1, 0], [1], [2], [3]]
    rewards = [1.0, 3.0, 3.0, 0.0, 2.0, 2.0, 5.0]
    ids = ["x", "x", "x", "x", "y", "y", "z"]
    bw = build_preference_pairs(prompts, comps, rewards, ids)
    assert [(p["prompt_id"], p["chosen"], p["rejected"]) for p in bw] == [("x", [2], [1, 0])]  # y tied, z alone
    assert (bw[0]["chosen_reward"], bw[0]["rejected_reward"]) == (3.0, 0.0)
    every = build_preference_pairs(prompts, comps, rewards, ids, pairs="all")
    # x: 4 samples, 6 pairs, one tie (3.0 = 3.0) dropped; the chosen is always the higher reward
    assert len(every) == 5 and all(p["chosen_reward"] > p["rejected_reward"] for p in every)
    assert {(tuple(p["chosen"]), tuple(p["rejected"])) for p in every} == {
        ((1,), (1, 0)), ((2,), (1,)), ((2,), (1, 0)), ((3,), (1,)), ((3,), (1, 0))}
    for bad in (dict(pairs="best"), dict(rewards=rewards[:-1]), dict(comps=["a"] * 7),
                dict(rewards=[np.nan] + rewards[1:]), dict(prompts=["p", "p2"] + prompts[2:])):
        kw = dict(prompts=prompts, comps=comps, rewards=rewards, ids=ids, pairs="best-worst") | bad
        with pytest.raises(AlignLimitsError):
            build_preference_pairs(kw["prompts"], kw["comps"], kw["rewards"], kw["ids"], kw["pairs"])


def test_pairs_from_base_samples_keep_the_sampled_tokens(base):
    model, tok, _ = base
    pairs = dpo_pairs_from_policy(model, tok, PROMPTS, IDS, exact_reward, n=8, max_new_tokens=3, seed=0)
    assert 0 < len(pairs) <= len(PROMPTS)
    for p in pairs:
        assert p["chosen_reward"] > p["rejected_reward"]
        for ids, r in ((p["chosen"], p["chosen_reward"]), (p["rejected"], p["rejected_reward"])):
            assert 1 <= len(ids) <= 3 and (len(ids) == 3 or ids[-1] == tok.eos_token_id)  # EOS kept when drawn
            assert exact_reward([p["prompt"]], [tok.decode(ids, skip_special_tokens=True)])[0] == r


def frontier_kl(base_dist, beta):
    """KL of π_β at β, prompt-averaged, by enumeration."""
    P, C = base_dist.logp.shape
    curve = tilt(np.tile(base_dist.rewards, P), np.array([beta]), Groups.equal(P, C), base_dist.probs.reshape(-1))
    return float(curve.kl.mean(1)[0])


def test_dpo_lands_under_the_frontier_past_the_kl_of_its_beta(base, tmp_path):
    model0, tok, base_dist = base
    beta = 0.5
    pairs = dpo_pairs_from_policy(model0, tok, PROMPTS, IDS, exact_reward, n=8, max_new_tokens=3, seed=0)
    model, _ = build_exact_model(0)
    opts = DPOOptions(beta=beta, learning_rate=1e-2, steps=50, batch_size=len(pairs), save_steps=0, progress=False,
                      output_dir=str(tmp_path / "run"))
    policy = train_dpo(opts, model, tok, pairs)
    pt = exact_point(policy, tok, base_dist, beta, "DPO")
    assert pt["gain"] <= pt["frontier_gain"] + 1e-4  # at or under the exact frontier at its KL
    assert pt["gain"] > 0.5  # a real gain (measured 1.47, efficiency 0.76)
    assert pt["kl"] > 2 * frontier_kl(base_dist, beta)  # the overshoot: measured 4.30 against 1.30
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, opts.steps + 1))
    assert rows[0]["rewards/margins"] == 0.0 and rows[0]["loss"] == pytest.approx(np.log(2))  # reference = base
    assert rows[-1]["rewards/accuracies"] == 1.0
    # DPO scored exactly the sampled sequences (no EOS appended to the truncated ones), as the sampler did
    chosen = score_logprobs(model0, tok, [p["prompt"] for p in pairs], [p["chosen"] for p in pairs])
    assert rows[0]["logps/chosen"] == pytest.approx(chosen.mean(), abs=1e-4)
    assert len((tmp_path / "run" / "pairs.jsonl").read_text().splitlines()) == len(pairs)


def test_dpo_resume_continues_from_the_checkpoint(base, tmp_path, monkeypatch):
    from trl import DPOTrainer

    model0, tok, _ = base
    pairs = dpo_pairs_from_policy(model0, tok, PROMPTS, IDS, exact_reward, n=8, max_new_tokens=3, seed=0)
    kw = dict(beta=0.5, learning_rate=1e-2, steps=4, batch_size=4, save_steps=2, progress=False)

    def run(out, resume=None, **more):
        model, _ = build_exact_model(0)
        return train_dpo(DPOOptions(output_dir=str(out), **kw, **more), model, tok, pairs, resume_from_checkpoint=resume)

    calls, loss = [], DPOTrainer.compute_loss

    def dies_in_step_4(self, *a, **k):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt("killed")
        return loss(self, *a, **k)

    def kill(out):
        with monkeypatch.context() as m:
            m.setattr(DPOTrainer, "compute_loss", dies_in_step_4)
            run(out)

    assert_resumes_bit_exact(tmp_path, run, kill)


def test_dpo_config_and_bad_input(tmp_path):
    cfg = dpo_config(DPOOptions(beta=0.2, steps=7, batch_size=8, loss_type="ipo", output_dir=str(tmp_path)))
    assert (cfg.beta, cfg.max_steps, cfg.per_device_train_batch_size, cfg.loss_type) == (0.2, 7, 8, ["ipo"])
    assert cfg.max_length is None and cfg.disable_dropout and not cfg.gradient_checkpointing
    for bad in (dict(beta=0.0), dict(steps=0), dict(batch_size=0), dict(loss_type="kto"), dict(learning_rate=-1.0)):
        with pytest.raises(AlignLimitsError):
            DPOOptions(**bad)
    model, tok = build_exact_model(0)
    with pytest.raises(AlignLimitsError, match="no preference pairs"):
        train_dpo(DPOOptions(output_dir=str(tmp_path / "r"), progress=False), model, tok, [])
    with pytest.raises(AlignLimitsError, match="^DPO options: loss_type"):
        DPOOptions(loss_type="kto")


def test_dpo_progress_bar_shows_the_reward_margin():
    with training_progress(False) as bar:
        cb = progress_callback(bar, "DPO", 0.1)
        cb.on_train_begin(None, SimpleNamespace(max_steps=4, global_step=0), None)
        assert bar.tasks[0].description == "DPO β=0.1"
        cb.on_log(None, None, None, logs={"loss": 0.69, "rewards/margins": 0.125})
        cb.on_log(None, None, None, logs={"train_runtime": 1.0})  # the final summary row: no change
        assert bar.tasks[0].description == "DPO β=0.1 margin 0.125"
