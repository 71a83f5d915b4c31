"""Sampling and scoring throughput: alignlimits' sampler vs a bare ``model.generate`` loop, auto vs fixed batch size.

    .venv/bin/python benchmarks/bench_sampling.py [--model smollm2-135m-instruct] [--prompts 8] [--n 8]
                                                  [--max-new-tokens 32] [--batch-sizes 4,8,16,32] [--repeats 2]

Workload: the first ``--prompts`` built-in safety prompts (chat template applied), ``--n`` samples each,
``--max-new-tokens`` tokens at most. Both sides run the same batches with the same per-call seeds, so they
draw the same samples and generate the same tokens; the bare loop only calls ``model.generate(do_sample=True,
top_k=0)`` and keeps nothing else, the sampler also records exact log-probs and splits completions at EOS.
Throughput = completion tokens (EOS included) per second. Each figure is the best of ``--repeats`` runs,
interleaved, because the machine may be shared. Teacher-forced scoring of the same completions is compared
with a bare forward loop the same way.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--batch-sizes", default="4,8,16,32")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from alignlimits.lm.models import load_model
    from alignlimits.lm.sampling import (
        _pad_left, auto_batch_size, derive_seed, encode_prompt, sample_completions, score_logprobs,
    )
    from alignlimits.lm.tasks import get_task

    lm = load_model(args.model)
    model, tok = lm.model, lm.tokenizer
    task = get_task("safety").limit(args.prompts)
    texts = [lm.format_prompt(p["text"]) for p in task.prompts]
    ids = [encode_prompt(tok, t) for t in texts]
    T = args.max_new_tokens
    auto = auto_batch_size(model, prompt_len=max(len(i) for i in ids), max_new_tokens=T)
    sizes = sorted({int(b) for b in args.batch_sizes.split(",")} | {auto})
    pad = tok.pad_token_id

    def run_sampler(bs: int) -> tuple[float, int, list]:
        t = time.perf_counter()
        res = sample_completions(model, tok, texts, args.n, T, seed=0, batch_size=bs)
        dt = time.perf_counter() - t
        n_tok = int(sum(r.n_tokens.sum() for r in res))
        comps = [(texts[r.prompt_index], ids_) for r in res for ids_ in r.token_ids]
        return dt, n_tok, comps

    def run_bare(bs: int) -> float:
        flat = [ids[pi] for pi in range(len(texts)) for _ in range(args.n)]
        t = time.perf_counter()
        for j, start in enumerate(range(0, len(flat), bs)):
            x, m = _pad_left(flat[start : start + bs], pad, model.device)
            torch.manual_seed(derive_seed(0, j))
            with torch.inference_mode():
                model.generate(input_ids=x, attention_mask=m, do_sample=True, top_k=0, max_new_tokens=T,
                               pad_token_id=pad)
        return time.perf_counter() - t

    rows = []
    comps_at = {}
    for bs in sizes:
        best_s, best_b, n_tok = float("inf"), float("inf"), 0
        for _ in range(args.repeats):
            dt, n_tok, comps = run_sampler(bs)
            best_s = min(best_s, dt)
            best_b = min(best_b, run_bare(bs))
        comps_at[bs] = comps
        rows.append((bs, n_tok, n_tok / best_s, n_tok / best_b))
        print(f"  batch {bs:4d}: sampler {n_tok / best_s:7.1f} tok/s   bare generate {n_tok / best_b:7.1f} tok/s", flush=True)

    # teacher-forced scoring of the same completions, at the auto scoring batch size
    comps = comps_at[auto]
    prompts_s = [c[0] for c in comps]
    comp_ids = [c[1] for c in comps]
    n_score = sum(len(c) for c in comp_ids)
    sbs = auto_batch_size(model, prompt_len=max(len(i) for i in ids) + T, max_new_tokens=0, scoring=True)
    best_sc, best_fw = float("inf"), float("inf")
    for _ in range(args.repeats):
        t = time.perf_counter()
        score_logprobs(model, tok, prompts_s, comp_ids, batch_size=sbs)
        best_sc = min(best_sc, time.perf_counter() - t)
        seqs = [encode_prompt(tok, p) + list(c) for p, c in zip(prompts_s, comp_ids)]
        t = time.perf_counter()
        for start in range(0, len(seqs), sbs):
            x, m = _pad_left(seqs[start : start + sbs], pad, model.device)
            with torch.inference_mode():
                model(input_ids=x, attention_mask=m, use_cache=False)
        best_fw = min(best_fw, time.perf_counter() - t)

    best_fixed = max(r[2] for r in rows if r[0] != auto or auto in {int(b) for b in args.batch_sizes.split(",")})
    auto_row = next(r for r in rows if r[0] == auto)
    print()
    print(f"model {args.model} on {lm.info['device']} ({lm.info['dtype']}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print(f"workload: {len(texts)} prompts x {args.n} samples, max_new_tokens {T}; best of {args.repeats}")
    print()
    print("| batch | completion tokens | sampler tok/s | bare generate tok/s | ratio |")
    print("|---:|---:|---:|---:|---:|")
    for bs, n_tok, s, b in rows:
        mark = " (auto)" if bs == auto else ""
        print(f"| {bs}{mark} | {n_tok} | {s:.1f} | {b:.1f} | {s / b:.3f} |")
    print()
    print(f"auto batch size {auto}: {auto_row[2]:.1f} tok/s = {auto_row[2] / best_fixed:.3f} x the best fixed batch size")
    print(f"teacher-forced scoring (batch {sbs}): {n_score / best_sc:.1f} tok/s scored vs bare forward "
          f"{n_score / best_fw:.1f} tok/s (ratio {best_fw / best_sc:.3f})")


def engines_main() -> None:
    """``--engines``: whole ``alignlimits sample --engine E`` commands (imports, model load, vLLM's engine start
    and shutdown, rewards and Parquet parts included), engines interleaved over ``--repeats`` rounds with the
    1-minute load average before each, then vLLM's time split into start / generation / shutdown in this
    process, and (``--cache-prompts K``) the hf engine with and without its shared prompt cache.

        .venv/bin/python benchmarks/bench_sampling.py --engines --task summarization --prompts 10 --n 8 \
            --max-new-tokens 48 [--long-docs] [--repeats 2] [--engine-list hf,vllm] [--cache-prompts 3]

    ``--long-docs``: prompts of about 350 tokens, the built-in summarisation documents concatenated in pairs
    (document 2i, a blank line, document 2i+1; i = 0..9 for 10 prompts) and written as a ``--prompts`` JSONL
    file with ``document`` fields, so each prompt is the summarisation instruction around two documents.
    """
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    ap = argparse.ArgumentParser()
    ap.add_argument("--engines", action="store_true")
    ap.add_argument("--task", default="summarization")
    ap.add_argument("--prompts", type=int, default=10)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--long-docs", action="store_true")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--engine-list", default="hf,vllm")
    ap.add_argument("--cache-prompts", type=int, default=0, help="prompts for the hf shared-cache comparison (0: skip)")
    args = ap.parse_args()
    cli = str(Path(sys.executable).with_name("alignlimits"))
    with tempfile.TemporaryDirectory() as tmp:
        prompts_file = long_documents(Path(tmp) / "long_docs.jsonl", args.prompts) if args.long_docs else None
        common = ["sample", "--task", args.task, "--n", str(args.n), "--max-new-tokens", str(args.max_new_tokens),
                  "--quiet", *(["--prompts", str(prompts_file)] if prompts_file else ["--limit-prompts", str(args.prompts)])]
        times: dict[str, list[float]] = {}
        for rnd in range(args.repeats):
            for engine in filter(None, args.engine_list.split(",")):
                out = f"{tmp}/{engine}-{rnd}"
                load = open("/proc/loadavg").read().split()[0]
                t0 = time.perf_counter()
                subprocess.run([cli, *common, "--engine", engine, "--out", out], check=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                times.setdefault(engine, []).append(time.perf_counter() - t0)
                print(f"round {rnd + 1}: sample --engine {engine}: {times[engine][-1]:.1f} s whole command "
                      f"(load {load} before; {args.task}, {args.prompts} prompts x {args.n} x <= {args.max_new_tokens} "
                      f"tokens{', long documents' if prompts_file else ''})", flush=True)
        if {"hf", "vllm"} <= set(times):
            ratios = [h / v for h, v in zip(times["hf"], times["vllm"])]
            print(f"hf / vllm per round: {', '.join(f'{r:.2f}' for r in ratios)}", flush=True)
        if "vllm" in times:
            vllm_breakdown(args.task, prompts_file, args.prompts, args.n, args.max_new_tokens)
    if args.cache_prompts:
        shared_cache_gain(args.task, args.cache_prompts, args.n, args.max_new_tokens)


def long_documents(path, k: int):
    """``k`` prompts of two built-in summarisation documents each (2i and 2i+1), as a JSONL prompt file."""
    import json
    from importlib.resources import files

    rows = [json.loads(line) for line in files("alignlimits.lm").joinpath("data/summarization_docs.jsonl").read_text().splitlines()]
    with open(path, "w") as fh:
        for i in range(k):
            a, b = rows[2 * i], rows[2 * i + 1]
            doc = a["document"].strip() + "\n\n" + b["document"].strip()
            fh.write(json.dumps({"id": f"long-{i:02d}", "document": doc}) + "\n")
    return path


def vllm_breakdown(task_name: str, prompts_file, k: int, n: int, max_new: int) -> None:
    """Where a vLLM command's time goes, in this process: engine start, the one generate call, shutdown."""
    from alignlimits.lm.engines import make_engine
    from alignlimits.lm.sampling import encode_prompt
    from alignlimits.pipeline.context import StudyContext

    ctx = StudyContext.resolve(task_name, prompts=str(prompts_file) if prompts_file else None)
    texts = ctx.model_texts(ctx.prompts("all", k).prompts)
    engine = make_engine("vllm", ctx.lm, seed=0)
    t0 = time.perf_counter()
    engine.llm()
    t1 = time.perf_counter()
    res = engine.sample(texts, n, max_new, seed=0)
    t2 = time.perf_counter()
    engine.close()
    t3 = time.perf_counter()
    n_prompt = sum(len(encode_prompt(ctx.lm.tokenizer, t)) for t in texts)
    tok = int(sum(r.n_tokens.sum() for r in res))
    print(f"vllm in-process: engine start {t1 - t0:.1f} s, generate {t2 - t1:.1f} s ({tok} tokens, {tok / (t2 - t1):.1f} "
          f"tok/s; {n_prompt} prompt tokens), shutdown {t3 - t2:.1f} s; load {open('/proc/loadavg').read().split()[0]}",
          flush=True)


def shared_cache_gain(task_name: str, k: int, n: int, max_new: int) -> None:
    """The hf engine with each prompt encoded once (its KV cache shared by its n samples) vs once per sample,
    in generation and in teacher-forced scoring (:func:`alignlimits.lm.sampling.score_logprobs`)."""
    import numpy as np

    from alignlimits.lm import sampling
    from alignlimits.lm.tasks import get_task
    from alignlimits.pipeline.context import StudyContext

    ctx = StudyContext.resolve(task_name, dtype="float32")
    lm = ctx.lm
    texts = ctx.model_texts(get_task(task_name).limit(k).prompts)
    n_prompt = sum(len(sampling.encode_prompt(lm.tokenizer, t)) for t in texts)
    shared = sampling._shared_prompt_cache
    for label, cache in (("prompt encoded once", shared), ("prompt encoded per sample", lambda *a: None)):
        sampling._shared_prompt_cache = cache
        t = time.perf_counter()
        res = sampling.sample_completions(lm.model, lm.tokenizer, texts, n, max_new, seed=0)
        dt = time.perf_counter() - t
        tok = int(sum(r.n_tokens.sum() for r in res))
        t = time.perf_counter()  # teacher forcing shares the prompt's pass the same way (evaluation scores twice)
        scored = sampling.score_logprobs(lm.model, lm.tokenizer, [texts[r.prompt_index] for r in res for _ in range(n)],
                                         [ids for r in res for ids in r.token_ids])
        dt_score = time.perf_counter() - t
        err = float(np.max(np.abs(scored - np.concatenate([r.logp for r in res]))))
        print(f"hf, {label}: {dt:.1f} s, {tok / dt:.1f} tok/s ({k} prompts, {n_prompt} prompt tokens, x {n}, "
              f"<= {max_new} tokens); teacher-forced scoring {dt_score:.1f} s; "
              f"max |logp - teacher forcing| = {err:.1e}", flush=True)
    sampling._shared_prompt_cache = shared


if __name__ == "__main__":
    import sys

    engines_main() if "--engines" in sys.argv else main()
