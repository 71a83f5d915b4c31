"""The exactly solvable task: enumeration, reward table, exact KL/gain, and temperature-1 sampling."""

import numpy as np
import pytest
from scipy import stats

from alignlimits.errors import AlignLimitsError
from alignlimits.lm import exact
from alignlimits.lm.sampling import generate_batch, score_logprobs


@pytest.fixture(scope="module")
def tiny():
    return exact.build_exact_model(0)


def test_outcome_space_and_reward_table():
    comps = exact.enumerate_completions()
    assert len(comps) == 1 + 3 + 9 + 27 == 40
    assert len(set(comps)) == 40
    texts = [exact.completion_text(c) for c in comps]
    assert len(set(texts)) == 40  # a text identifies its completion
    assert exact.reward_of_text("") == 0.25
    assert exact.reward_of_text("a a") == 2.25
    assert exact.reward_of_text("a a a") == 3.0
    assert exact.reward_of_text("c c c") == -1.5
    assert exact.reward_of_text("a <eos>") == 1.25
    r = exact.exact_reward(["a"] * 3, ["", "b", "c a"])
    np.testing.assert_allclose(r, [0.25, 0.25, 0.75])
    assert [exact.reward_of_ids(c) for c in comps] == [exact.reward_of_text(t) for t in texts]


def test_exact_reward_rejects_foreign_text():
    with pytest.raises(AlignLimitsError, match="row 1"):
        exact.exact_reward(["a", "a"], ["a", "hello world"])
    with pytest.raises(AlignLimitsError):
        exact.exact_reward(["a"], ["a b c a"])


def test_deterministic_from_seed(tiny):
    m2, _ = exact.build_exact_model(0)
    m3, _ = exact.build_exact_model(1)
    sd1, sd2, sd3 = tiny[0].state_dict(), m2.state_dict(), m3.state_dict()
    assert all(np.array_equal(sd1[k].numpy(), sd2[k].numpy()) for k in sd1)
    assert not all(np.array_equal(sd1[k].numpy(), sd3[k].numpy()) for k in sd1)


def test_probabilities_sum_to_one_and_are_nontrivial(tiny):
    model, tok = tiny
    d = exact.exact_distribution(model, tok)
    assert d.probs.shape == (12, 40)
    np.testing.assert_allclose(d.probs.sum(axis=1), 1.0, atol=1e-12)
    entropy = -(d.probs * d.logp).sum(axis=1)
    assert entropy.max() > 1.5  # far from deterministic ...
    assert entropy.min() < np.log(40) - 0.5  # ... and far from uniform
    assert np.ptp(d.mean_reward()) > 0.3  # prompts differ
    # float32 scoring agrees with the float64 enumeration
    d32 = exact.exact_distribution(model, tok, precise=False)
    np.testing.assert_allclose(d32.logp, d.logp, atol=1e-4)


def test_exact_kl_and_gain(tiny):
    import torch

    base, tok = tiny
    policy, _ = exact.build_exact_model(0)
    with torch.no_grad():
        policy.lm_head.weight[1] += 1.0  # a different policy of the same architecture
    kl = exact.exact_kl(policy, base, tokenizer=tok)
    gain = exact.exact_gain(policy, base, tokenizer=tok)
    assert kl.shape == gain.shape == (12,)
    assert np.all(kl > 0)
    assert np.all(np.abs(gain) > 1e-3)
    np.testing.assert_allclose(exact.exact_kl(base, base, tokenizer=tok), 0.0, atol=1e-12)
    # direct check on one prompt
    p = exact.exact_distribution(policy, tok)
    q = exact.exact_distribution(base, tok)
    np.testing.assert_allclose(kl[3], np.sum(p.probs[3] * np.log(p.probs[3] / q.probs[3])), rtol=1e-9)
    np.testing.assert_allclose(gain[3], p.probs[3] @ p.rewards - q.probs[3] @ q.rewards, rtol=1e-9)


def test_temperature_one_samples_match_exact_probabilities(tiny):
    """20,000 samples of one prompt through the real sampler vs the enumerated π0 (chi-square)."""
    model, tok = tiny
    d = exact.exact_distribution(model, tok)
    i = int(np.argmax(-(d.probs * d.logp).sum(axis=1)))  # the highest-entropy prompt
    prompt = d.prompts[i]
    n = 20_000
    counts = np.zeros(40)
    index = {c: j for j, c in enumerate(d.token_ids)}
    logp_err = 0.0
    for b, start in enumerate(range(0, n, 5000)):
        out = generate_batch(model, tok, [prompt] * 5000, exact.MAX_NEW_TOKENS, seed=1000 + b)
        for ids, lp in zip(out.token_ids, out.logp):
            j = index[tuple(ids)]
            counts[j] += 1
            logp_err = max(logp_err, abs(lp - d.logp[i, j]))
        # truncated exactly when no EOS was generated
        assert all(t == (ids[-1] != exact.EOS_ID) for t, ids in zip(out.truncated, out.token_ids))
    assert logp_err < 1e-4
    expected = d.probs[i] * n
    big = expected >= 5
    obs = np.append(counts[big], counts[~big].sum())
    exp = np.append(expected[big], expected[~big].sum())
    chi2, pval = stats.chisquare(obs, exp)
    assert pval > 1e-4, (chi2, pval)


def test_cached_model_matches_built(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNLIMITS_CACHE", str(tmp_path))
    from alignlimits.lm.models import load_model

    lm = load_model("exact-tiny")
    assert not lm.chat
    sd = tiny[0].state_dict()
    for k, v in lm.model.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), sd[k].numpy())
    assert not [p for p in (tmp_path / "models").iterdir() if p.name.startswith(".tmp")]
    lp = score_logprobs(lm.model, lm.tokenizer, ["a b"], [[1, 0]])
    d = exact.exact_distribution(tiny[0], tiny[1], ["a b"])
    np.testing.assert_allclose(lp[0], d.logp[0, d.token_ids.index((1, 0))], atol=1e-5)
