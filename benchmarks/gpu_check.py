"""The Python steps of ``benchmarks/gpu_check.sh`` (see there); each prints one JSON object on stdout.

    python benchmarks/gpu_check.py bf16 MODEL [--prompts 8] [--max-new-tokens 32]
    python benchmarks/gpu_check.py point [--seeds 3] [--steps N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def bf16_agreement(spec: str, prompts: int, max_new_tokens: int) -> dict:
    """Sequence log-probs of sampled completions teacher-forced in float32 and under bf16 autocast (what the
    trainers run on a GPU): their largest and mean absolute difference, in nats."""
    import numpy as np
    import torch

    from alignlimits.lm.models import load_model
    from alignlimits.lm.sampling import generate_batch, score_logprobs
    from alignlimits.lm.tasks import get_task

    lm = load_model(spec, dtype=torch.float32)
    task = get_task("exact" if spec.startswith("exact-tiny") else "safety")
    texts = [lm.format_prompt(p["text"]) for p in task.prompts[:prompts]]
    batch = generate_batch(lm.model, lm.tokenizer, texts, max_new_tokens, seed=0)
    full = score_logprobs(lm.model, lm.tokenizer, texts, batch.token_ids)
    with torch.autocast(str(lm.device).split(":")[0], dtype=torch.bfloat16):
        half = score_logprobs(lm.model, lm.tokenizer, texts, batch.token_ids)
    diff = np.abs(np.asarray(full) - np.asarray(half))
    return {"model": spec, "device": str(lm.device), "sequences": len(texts), "max_abs_nats": float(diff.max()),
            "mean_abs_nats": float(diff.mean()), "mean_tokens": float(np.mean(batch.n_tokens))}


def gpu_vs_cpu_point(seeds: int, steps: int | None) -> dict:
    """PPO on the exact task, one process under torchrun on the GPU (if any) and one on the CPU, per seed; the exact
    points and the z-scores of their difference (as benchmarks/bench_distributed.py computes them)."""
    import torch

    from bench_distributed import LAUNCHERS, exact_point, train, z_score

    LAUNCHERS[1] = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
                    "-m", "alignlimits"]
    cpu_env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    points = {"gpu": [], "cpu": []}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(seeds):
            for where, env in (("gpu", None), ("cpu", cpu_env)):
                kl, gain = exact_point(train("ppo", 1, seed, steps, Path(tmp) / f"{where}-{seed}", env=env))
                points[where].append({"seed": seed, "kl": kl, "gain": gain})
    z = {c: z_score([p[c] for p in points["cpu"]], [p[c] for p in points["gpu"]]) for c in ("kl", "gain")}
    return {"cuda": torch.cuda.is_available(), "points": points, "z": z}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="step", required=True)
    bf16 = sub.add_parser("bf16")
    bf16.add_argument("model")
    bf16.add_argument("--prompts", type=int, default=8)
    bf16.add_argument("--max-new-tokens", type=int, default=32)
    point = sub.add_parser("point")
    point.add_argument("--seeds", type=int, default=3)
    point.add_argument("--steps", type=int, default=None)
    args = ap.parse_args()
    if args.step == "bf16":
        result = bf16_agreement(args.model, args.prompts, args.max_new_tokens)
    else:
        result = gpu_vs_cpu_point(args.seeds, args.steps)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
