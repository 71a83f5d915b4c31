"""Seconds per training step and tokens/s of PPO and GRPO, and GRPO's wrapper overhead over TRL.

    .venv/bin/python benchmarks/bench_trainers.py                       # default model (SmolLM2-135M), safety task
    .venv/bin/python benchmarks/bench_trainers.py --exact               # the exact task's tiny model
    .venv/bin/python benchmarks/bench_trainers.py --batch 8 --max-new-tokens 32 --steps 4 --lora

What is measured, for each trainer, on the same prompts, reward, batch and lengths:

* **PPO** (``alignlimits.methods.ppo``): one step = ``--batch`` rollouts + scoring + ``ppo_epochs``
  (4) passes; seconds per step and completion tokens generated per second of step time.
* **GRPO through our wrapper** (``alignlimits.methods.grpo.build_grpo_trainer``) and **TRL's
  GRPOTrainer run directly** (the same ``GRPOConfig``, a plain reward function, no callbacks):
  one step = ``--batch`` completions (``--batch / --generations`` prompts) + one update.  The
  ratio wrapper/direct is the wrapper's overhead (target ≤ 1.1).

The first step of every run is a warm-up and is not counted; figures are medians over the
remaining steps; the two GRPO variants run interleaved, ``--repeats`` times each; reported are
the best (lowest) of each compared, and the median over adjacent (wrapper, direct) pairs of their
ratio.  On a shared machine, load from other processes moves step times by 2× or more between
runs: trust the ratio only when the runs of one variant agree with each other.  The wrapper adds
a callback, a reward adapter and one masked sum per step, so its overhead is constant per step;
on the exact task (``--exact``, many cheap steps) it is the largest relative to the step.  Completions are sampled at temperature 1, so lengths vary between runs:
tokens/s is the fairer comparison, and both are printed.  Results go to stdout and, as JSON,
to ``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path


def _load(args):
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.exact:
        from alignlimits.lm.exact import build_exact_model, exact_prompts, exact_reward

        model_fn = lambda: build_exact_model(0)  # noqa: E731
        prompts = [p["prompt"] for p in exact_prompts()]
        return model_fn, prompts, prompts, exact_reward, "exact-tiny", 3
    from alignlimits.lm.models import load_model
    from alignlimits.lm.rewards import load_reward
    from alignlimits.lm.tasks import get_task

    task = get_task(args.task)
    reward = load_reward(args.reward or task.default_rewards[0])

    def model_fn():
        lm = load_model(args.model)
        return lm.model, lm.tokenizer

    lm = load_model(args.model)
    rows = task.prompts[: args.prompts]
    prompts = [lm.format_prompt(r["text"]) for r in rows]
    del lm
    return model_fn, prompts, reward, args.model or "smollm2-135m-instruct", args.max_new_tokens


class _StepTimer:
    """A TrainerCallback recording each optimizer step's wall time and completion tokens."""

    def __init__(self):
        from transformers import TrainerCallback

        timer = self

        class CB(TrainerCallback):
            def on_step_begin(self, a, state, control, **kw):
                timer._t0 = time.perf_counter()

            def on_step_end(self, a, state, control, **kw):
                timer.seconds.append(time.perf_counter() - timer._t0)

            def on_log(self, a, state, control, logs=None, **kw):
                if logs and "completions/mean_length" in logs:
                    timer.mean_lengths.append(float(logs["completions/mean_length"]))

        self.seconds: list[float] = []
        self.mean_lengths: list[float] = []
        self.callback = CB()


def _summary(seconds: list[float], tokens: list[float]) -> dict:
    s, t = seconds[1:] or seconds, tokens[1:] or tokens  # drop the warm-up step
    return {
        "seconds_per_step": statistics.median(s),
        "tokens_per_s": statistics.median([tk / sec for tk, sec in zip(t, s)]),
        "completion_tokens_per_step": statistics.mean(t),
        "steps_timed": len(s),
    }


def bench_ppo(args, model_fn, prompts, reward, max_new, out: Path) -> dict:
    from alignlimits.methods.ppo import PPOConfig, PPOTrainer

    model, tok = model_fn()
    cfg = PPOConfig(
        beta=0.1, steps=args.steps + 1, batch_size=args.batch, num_minibatches=args.minibatches,
        micro_batch_size=args.micro_batch, max_new_tokens=max_new, learning_rate=1e-5 if not args.exact else 1e-3,
        use_lora=args.lora, output_dir=str(out), save_steps=0, progress=False,
    )
    PPOTrainer(cfg, model, None, tok, reward, prompts).train()
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return _summary([r["seconds"] for r in rows], [r["completion_tokens_mean"] * args.batch for r in rows])


def bench_grpo(args, model_fn, prompts, reward, max_new, out: Path, direct: bool) -> dict:
    from datasets import Dataset

    from alignlimits.methods.grpo import GRPOOptions, build_grpo_trainer, grpo_config

    model, tok = model_fn()
    opts = GRPOOptions(
        beta=0.1, steps=args.steps + 1, batch_size=args.batch, num_generations=args.generations,
        max_new_tokens=max_new, learning_rate=1e-5 if not args.exact else 3e-3, use_lora=args.lora,
        output_dir=str(out), save_steps=0, progress=False,
    )
    timer = _StepTimer()
    if direct:
        from peft import LoraConfig
        from transformers.trainer_callback import PrinterCallback
        from trl import GRPOTrainer

        from alignlimits.methods.trl_common import ensure_loadable

        def plain_reward(prompts, completions, **kw):
            return [float(x) for x in reward(prompts, completions)]

        if not args.lora:
            from alignlimits.methods.lora import float32_master_weights

            model = float32_master_weights(model)
            ensure_loadable(model, opts)  # TRL loads its reference from the model's path
        trainer = GRPOTrainer(
            model=model, reward_funcs=plain_reward, args=grpo_config(opts), processing_class=tok,
            train_dataset=Dataset.from_dict({"prompt": prompts}),
            peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                                   task_type="CAUSAL_LM") if args.lora else None,
        )
        trainer.remove_callback(PrinterCallback)
    else:
        trainer = build_grpo_trainer(opts, model, tok, reward, prompts)
    trainer.add_callback(timer.callback)
    trainer.train()
    tokens = [m * args.batch for m in timer.mean_lengths]
    return _summary(timer.seconds, tokens)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--exact", action="store_true", help="the exact task's tiny model instead of --model")
    p.add_argument("--model", default=None, help="model id/path/built-in name (default: smollm2-135m-instruct)")
    p.add_argument("--task", default="safety", help="prompts and default reward (safety or summarization)")
    p.add_argument("--reward", default=None, help="reward spec (default: the task's)")
    p.add_argument("--prompts", type=int, default=32, help="number of training prompts")
    p.add_argument("--batch", type=int, default=8, help="rollouts/completions per step (both trainers)")
    p.add_argument("--generations", type=int, default=4, help="GRPO group size (divides --batch)")
    p.add_argument("--minibatches", type=int, default=1, help="PPO minibatches per epoch")
    p.add_argument("--micro-batch", type=int, default=None, help="PPO sequences per forward pass")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--steps", type=int, default=3, help="timed steps (one warm-up step is added)")
    p.add_argument("--repeats", type=int, default=2, help="interleaved runs of each GRPO variant")
    p.add_argument("--lora", action="store_true", help="LoRA (r=16) instead of full fine-tuning")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    p.add_argument("--only", default="ppo,grpo", help="comma list: ppo, grpo")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)

    import torch
    import transformers
    import trl

    model_fn, prompts, reward, model_name, max_new = _load(args)
    which = {w.strip() for w in args.only.split(",")}
    result = {
        "model": model_name,
        "task": "exact" if args.exact else args.task,
        "batch": args.batch,
        "max_new_tokens": max_new,
        "num_generations": args.generations,
        "lora": args.lora,
        "device": "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)",
        "loadavg_1min_start": os.getloadavg()[0],
        "cpu_count": os.cpu_count(),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__,
                     "python": platform.python_version()},
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if "ppo" in which:
            result["ppo"] = bench_ppo(args, model_fn, prompts, reward, max_new, tmp / "ppo")
            print(f"PPO  : {result['ppo']['seconds_per_step']:.3f} s/step, {result['ppo']['tokens_per_s']:.1f} tokens/s", flush=True)
        if "grpo" in which:
            runs: dict[str, list[dict]] = {"wrapper": [], "direct": []}
            for r in range(args.repeats):
                for name in ("wrapper", "direct"):
                    res = bench_grpo(args, model_fn, prompts, reward, max_new, tmp / f"grpo-{name}-{r}", name == "direct")
                    runs[name].append(res)
                    print(f"GRPO {name:7s} run {r}: {res['seconds_per_step']:.3f} s/step, {res['tokens_per_s']:.1f} tokens/s", flush=True)
            best = {k: min(v, key=lambda x: x["seconds_per_step"]) for k, v in runs.items()}
            result["grpo_wrapper"], result["grpo_trl"] = best["wrapper"], best["direct"]
            result["grpo_runs"] = runs
            result["grpo_overhead_seconds_ratio"] = best["wrapper"]["seconds_per_step"] / best["direct"]["seconds_per_step"]
            result["grpo_overhead_tokens_ratio"] = (
                max(x["tokens_per_s"] for x in runs["direct"]) / max(x["tokens_per_s"] for x in runs["wrapper"])
            )
            # each wrapper run against the direct run right after it (closest in time, same load)
            pairs = [w["seconds_per_step"] / d["seconds_per_step"] for w, d in zip(runs["wrapper"], runs["direct"])]
            result["grpo_overhead_pair_ratios"] = pairs
            result["grpo_overhead_pair_ratio_median"] = statistics.median(pairs)
            print(f"GRPO : wrapper {best['wrapper']['seconds_per_step']:.3f} s/step vs TRL {best['direct']['seconds_per_step']:.3f} "
                  f"s/step: best-vs-best ratio {result['grpo_overhead_seconds_ratio']:.3f} (tokens/s ratio "
                  f"{result['grpo_overhead_tokens_ratio']:.3f}); median of adjacent-pair ratios "
                  f"{result['grpo_overhead_pair_ratio_median']:.3f}", flush=True)
    result["loadavg_1min_end"] = os.getloadavg()[0]
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
