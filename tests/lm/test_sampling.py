"""Sampler and teacher-forced scorer on the exact tiny model (fast); the real model is in test_models.py."""

import numpy as np
import pytest
import torch

from alignlimits.errors import AlignLimitsError
from alignlimits.lm import exact
from alignlimits.lm.sampling import (
    BASE_SAMPLING, auto_batch_size, check_prompt_lengths, encode_prompt, generate_batch, sample_completions,
    score_logprobs,
)


@pytest.fixture(scope="module")
def tiny():
    return exact.build_exact_model(0)


def test_sampler_and_scorer_agree_with_left_padding(tiny):
    model, tok = tiny
    prompts = ["a", "b c", "c a", "a a"] * 16  # prompts of different lengths in one batch
    out = generate_batch(model, tok, prompts, 3, seed=7)
    scored = score_logprobs(model, tok, prompts, out.token_ids, batch_size=5)
    assert np.max(np.abs(out.logp - scored)) < 1e-3
    # scoring one by one (no padding at all) gives the same
    single = np.array([score_logprobs(model, tok, [p], [c])[0] for p, c in zip(prompts[:8], out.token_ids[:8])])
    assert np.max(np.abs(single - scored[:8])) < 1e-4
    # per-token scores sum to the sequence score and cover exactly the completion tokens
    per_tok = score_logprobs(model, tok, prompts[:8], out.token_ids[:8], per_token=True)
    for lp, ids, s in zip(per_tok, out.token_ids[:8], scored[:8]):
        assert len(lp) == len(ids)
        assert abs(lp.sum() - s) < 1e-5  # other batches, other padding and caching: float32 rounding only


def test_eos_and_truncation(tiny):
    model, tok = tiny
    out = generate_batch(model, tok, ["b"] * 200, 3, seed=3)
    for ids, nt, tr in zip(out.token_ids, out.n_tokens, out.truncated):
        assert nt == len(ids) and 1 <= nt <= 3
        assert exact.EOS_ID not in ids[:-1]  # nothing kept after EOS
        assert tr == (ids[-1] != exact.EOS_ID)
        if tr:
            assert nt == 3
    assert out.truncated.any() and (~out.truncated).any()
    # EOS counted in the log-prob: completion "" has log π = log π(<eos>|x) < 0
    empty = [lp for ids, lp in zip(out.token_ids, out.logp) if ids == [exact.EOS_ID]]
    assert empty and all(lp < 0 for lp in empty)


def test_generation_config_is_ignored(tiny):
    """A checkpoint's sampling defaults (top_k, temperature, penalties) must not change π0."""
    model, tok = tiny
    saved = model.generation_config
    try:
        from transformers import GenerationConfig

        model.generation_config = GenerationConfig(
            eos_token_id=exact.EOS_ID, pad_token_id=exact.EOS_ID, do_sample=True, top_k=1, temperature=0.05,
            repetition_penalty=5.0, top_p=0.1, min_new_tokens=3,
        )
        out = generate_batch(model, tok, ["b c"] * 400, 3, seed=11)
        assert model.generation_config.top_k == 1  # restored afterwards
    finally:
        model.generation_config = saved
    assert len({tuple(i) for i in out.token_ids}) > 5  # top_k=1 would give one completion
    assert any(len(i) < 3 for i in out.token_ids)  # min_new_tokens=3 would forbid early EOS
    scored = score_logprobs(model, tok, ["b c"] * 400, out.token_ids)
    assert np.max(np.abs(out.logp - scored)) < 1e-3


def test_seeded_and_batched(tiny):
    model, tok = tiny
    a = sample_completions(model, tok, ["a", "b", "c"], 5, 3, seed=1, batch_size=4)
    b = sample_completions(model, tok, ["a", "b", "c"], 5, 3, seed=1, batch_size=4)
    assert [r.token_ids for r in a] == [r.token_ids for r in b]
    assert all(len(r.token_ids) == 5 and all(x is not None for x in r.token_ids) for r in a)
    seen = []
    sample_completions(model, tok, ["a", "b", "c"], 5, 3, seed=1, batch_size=4, on_batch=lambda *x: seen.append(x))
    assert sum(x[1] for x in seen) == 15 and seen[-1][0] == 3
    with pytest.raises(AlignLimitsError, match="--n"):
        sample_completions(model, tok, ["a"], 0, 3)


def test_base_sampling_settings_recorded():
    assert BASE_SAMPLING["temperature"] == 1.0 and BASE_SAMPLING["top_p"] == 1.0
    assert BASE_SAMPLING["top_k"] == 0 and BASE_SAMPLING["repetition_penalty"] == 1.0


def test_auto_batch_size(tiny, monkeypatch):
    model, _ = tiny
    bs = auto_batch_size(model, prompt_len=4, max_new_tokens=3)
    assert 16 <= bs <= 1024
    monkeypatch.setenv("ALIGNLIMITS_BATCH_SIZE", "7")
    assert auto_batch_size(model, prompt_len=4, max_new_tokens=3) == 7
    monkeypatch.setenv("ALIGNLIMITS_BATCH_SIZE", "x")
    with pytest.raises(AlignLimitsError):
        auto_batch_size(model, prompt_len=4, max_new_tokens=3)


def test_bad_inputs(tiny):
    model, tok = tiny
    with pytest.raises(AlignLimitsError, match="one of each"):
        score_logprobs(model, tok, ["a"], [[1], [2]])
    with pytest.raises(AlignLimitsError, match="empty prompt"):
        encode_prompt(tok, "")
    with pytest.raises(AlignLimitsError, match="max_new_tokens"):
        generate_batch(model, tok, ["a"], 0)
    with pytest.raises(AlignLimitsError, match="'long'.*context of 32"):
        check_prompt_lengths(tok, ["a", " ".join(["b"] * 30)], ["short", "long"], 3, 32)
    assert check_prompt_lengths(tok, ["a b"], ["ok"], 3, 32) == [2]
    assert score_logprobs(model, tok, [], []).shape == (0,)


def test_scorer_under_another_model(tiny):
    """The scorer gives log π(y|x) under any model: here a float64 copy agrees with the float32 one."""
    import copy

    model, tok = tiny
    out = generate_batch(model, tok, ["c c"] * 32, 3, seed=5)
    m64 = copy.deepcopy(model).to(torch.float64)
    s64 = score_logprobs(m64, tok, ["c c"] * 32, out.token_ids)
    assert np.max(np.abs(s64 - out.logp)) < 1e-4


def test_peft_wrapped_model_also_samples_the_base_distribution():
    """PEFT's generate calls the wrapped model: its generation_config must be neutralised too."""
    from peft import LoraConfig, get_peft_model
    from transformers import GenerationConfig

    model, tok = exact.build_exact_model(0)
    model.generation_config = GenerationConfig(eos_token_id=0, pad_token_id=0, do_sample=True, top_k=1,
                                               suppress_tokens=[1, 2])
    wrapped = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    out = generate_batch(wrapped, tok, ["b c"] * 300, 3, seed=1)
    assert len({tuple(i) for i in out.token_ids}) > 5
    assert any(1 in i or 2 in i for i in out.token_ids)
    assert model.generation_config.top_k == 1  # restored
    scored = score_logprobs(wrapped, tok, ["b c"] * 300, out.token_ids)
    assert np.max(np.abs(out.logp - scored)) < 1e-3


def test_each_prompt_is_encoded_once_per_call(tiny, monkeypatch):
    """k samples of a prompt share one prefill: the prompt tokens the model reads do not grow with k."""
    from alignlimits.lm import sampling

    model, tok = tiny
    seen = []
    real_forward = model.forward

    def counting_forward(*args, **kwargs):
        seen.append(int(kwargs["input_ids"].numel()))
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", counting_forward)
    prompts = ["a b c a", "c"] * 40  # two lengths: left padding inside the shared prefill
    out = sampling.generate_batch(model, tok, prompts, 3, seed=2)
    width = max(len(encode_prompt(tok, p)) for p in prompts)
    assert seen[0] == 2 * (width - 1)  # the two distinct prompts, all but their last token
    assert seen[1] == len(prompts)  # generate then feeds one token per row
    seen.clear()
    scored = score_logprobs(model, tok, prompts, out.token_ids)  # scoring shares the prompt's pass too
    cmax = max(len(c) for c in out.token_ids)
    assert seen == [2 * (width - 1), len(prompts) * (1 + cmax)]
    assert np.max(np.abs(out.logp - scored)) < 1e-3
    assert sampling._shared_prompt_cache(model, [[1, 2], [3, 4]], 0, "cpu") is None  # nothing repeats
