"""The trainable controlled-error proxy: gold plus a fixed normal error of each completion, of the stated size."""

import numpy as np
import pytest
from scipy import stats

from alignlimits.errors import AlignLimitsError
from alignlimits.lm.proxy_reward import ControlledErrorReward, text_normal, word_error
from alignlimits.lm.reward_model import CallableReward


def length(prompts, completions):
    return [float(len(c)) for c in completions]


def test_the_error_is_a_fixed_function_of_the_text_of_the_stated_size():
    gold = CallableReward(length, spec="python:length", name="length")
    proxy = ControlledErrorReward(gold, size=2.0, scale=0.5, seed=3)
    prompts, comps = ["p"] * 4000 + ["q"], [f"c{i}" for i in range(4000)] + ["c0"]
    err = proxy(prompts, comps) - gold(prompts, comps)
    assert np.array_equal(proxy(prompts, comps), proxy(prompts, comps))  # a function of the text, not a draw
    assert err[-1] == err[0]  # the same completion of another prompt: the same error (a systematic one)
    assert stats.kstest(err[:-1] / 1.0, "norm").pvalue > 0.01  # N(0, (2 × 0.5)²)
    assert abs(np.corrcoef(err[:-1], gold(prompts, comps)[:-1])[0, 1]) < 0.05
    assert not np.array_equal(text_normal(4, comps), text_normal(3, comps))
    # systematic: the error is the words', so completions sharing words share it, and a policy can learn it
    g = dict(zip(["a", "b", "c"], text_normal(3, ["a", "b", "c"])))
    assert np.allclose(word_error(3, ["a b", "b  a", "c", ""]),
                       [(g["a"] + g["b"]) / 2**0.5, (g["a"] + g["b"]) / 2**0.5, g["c"], text_normal(3, [""])[0]])
    assert proxy.name == "length_error2" and proxy.spec == "error:2"


def test_size_zero_is_gold_and_bad_sizes_are_one_line():
    gold = CallableReward(length, spec="python:length", name="length")
    assert np.array_equal(ControlledErrorReward(gold, 0.0, 1.0)(["a"], ["xy"]), [2.0])
    for size, scale in ((-1, 1.0), (1, 0.0), (float("nan"), 1.0)):
        with pytest.raises(AlignLimitsError, match="controlled-error proxy"):
            ControlledErrorReward(gold, size, scale)
