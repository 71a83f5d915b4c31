"""A policy trained elsewhere, saved by plain transformers, measured by the study like any other."""

import copy

import numpy as np
import pytest
import torch

from alignlimits.lm.exact import exact_distribution, exact_gain, exact_kl
from alignlimits.lm.models import load_model
from alignlimits.pipeline.config import resolve_config
from alignlimits.pipeline.study import Study


def _independently_updated(tmp_path):
    """The exact task's model after a few plain SGD steps towards completions rich in 'a', saved as a folder."""
    lm = load_model("exact-tiny", device="cpu", dtype="float32")
    model = copy.deepcopy(lm.model).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    ids = lm.tokenizer(["a a a", "b a a", "c a a"], return_tensors="pt")["input_ids"]
    for _ in range(3):
        loss = model(input_ids=ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    path = tmp_path / "someone-elses-checkpoint"
    model.eval().save_pretrained(path)
    lm.tokenizer.save_pretrained(path)
    return lm, model, path


def test_external_checkpoint_measured_as_enumeration(tmp_path):
    lm, policy, path = _independently_updated(tmp_path)
    config = resolve_config("exact", None, {}, {"methods": ["bon"], "n": 64, "eval_n": 256, "policies": {"mine": str(path)},
                                                "policy_betas": {"mine": 0.5}})
    results = Study(config, tmp_path / "run").run()
    point = next(p for p in results["evaluate"] if p["method"] == "external")
    assert point["label"] == "mine"
    heldout = [{"id": p["prompt_id"], "prompt": p["text"]} for p in Study(config, tmp_path / "run").ctx.prompts("heldout").prompts]
    true_kl = float(np.mean(exact_kl(policy, lm.model, heldout, lm.tokenizer)))
    true_gain = float(np.mean(exact_gain(policy, lm.model, heldout, lm.tokenizer)))
    assert true_kl > 0.05  # the update moved the policy
    gain_se = (point["gain_ci"][1] - point["gain_ci"][0]) / (2 * 1.96)
    assert abs(point["kl"] - true_kl) < 4 * point["kl_se"], (point["kl"], true_kl, point["kl_se"])
    assert abs(point["gain"] - true_gain) < 4 * gain_se, (point["gain"], true_gain, gain_se)
    # its stated β gives the ceiling figures: KL(π‖π_β) by enumeration within 3 standard errors
    base, mine = exact_distribution(lm.model, lm.tokenizer, heldout), exact_distribution(policy, lm.tokenizer, heldout)
    tilted = base.logp + base.rewards / 0.5
    tilted -= np.logaddexp.reduce(tilted, axis=1, keepdims=True)
    to_target = float(np.mean((mine.probs * (mine.logp - tilted)).sum(1)))
    se = (point["kl_to_target_ci"][1] - point["kl_to_target_ci"][0]) / (2 * 1.96)
    assert abs(point["kl_to_target"] - to_target) < 3 * se, (point["kl_to_target"], to_target, se)
    assert point["objective_gap"] == pytest.approx(0.5 * point["kl_to_target"])
