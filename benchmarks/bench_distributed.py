"""Do PPO, GRPO and RLOO land on the same point under two processes as under one? (issue 24)

    .venv/bin/python benchmarks/bench_distributed.py                 # 5 seeds, ppo grpo rloo, the exact task's defaults
    .venv/bin/python benchmarks/bench_distributed.py --seeds 3 --methods ppo --steps 30 --json out.json

Each (method, seed) is trained twice with ``alignlimits train --task exact`` (its defaults: β 0.5, batch 64, 60 steps):
once as one process, once under ``torchrun --nproc_per_node 2`` (gloo on CPU; the batch is global, each process takes
half). The trained policy's point is exact, by enumeration of the tiny model's completions (KL(π‖π0) and
E_π r − E_π0 r, averaged over the task's prompts), so the only noise is training's own: the seeds. For each method
and coordinate it prints the mean over seeds under each launch and z = (mean₂ − mean₁) / √(se₁² + se₂²), se the
standard error over seeds; |z| < 2 is agreement within noise. The two launches draw different rollouts (each process
samples its share with its own stream), so equal numbers are not expected, equal distributions are.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

LAUNCHERS = {1: [sys.executable, "-m", "alignlimits"],
             2: [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "alignlimits"]}


def train(method: str, processes: int, seed: int, steps: int | None, out: Path, env: dict | None = None) -> Path:
    """The policy ``alignlimits train`` leaves in ``out`` (``env``: the launch's environment, e.g. no visible GPU)."""
    extra = ["--steps", str(steps)] if steps else []
    command = [*LAUNCHERS[processes], "train", "--method", method, "--task", "exact", "--seed", str(seed), *extra,
               "--out", str(out)]
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    if proc.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{proc.stderr[-2000:]}")
    return next((out / "train").glob(f"{method}-beta*/policy"))


def exact_point(policy_dir: Path) -> tuple[float, float]:
    from transformers import AutoModelForCausalLM

    from alignlimits.lm.exact import build_exact_model, exact_gain, exact_kl

    policy = AutoModelForCausalLM.from_pretrained(str(policy_dir), local_files_only=True).eval()
    base, _ = build_exact_model(0)
    return float(np.mean(exact_kl(policy, base))), float(np.mean(exact_gain(policy, base)))


def z_score(a: list[float], b: list[float]) -> float:
    se = np.sqrt(np.var(a, ddof=1) / len(a) + np.var(b, ddof=1) / len(b))
    return float((np.mean(b) - np.mean(a)) / se) if se > 0 else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", default="ppo,grpo,rloo")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--first-seed", type=int, default=0, help="Seeds first-seed, first-seed + 1, ...: more of them later.")
    ap.add_argument("--steps", type=int, default=None, help="Default: the exact task's (60).")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    points: dict = {}
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods.split(","):
            for processes in (1, 2):
                for seed in range(args.first_seed, args.first_seed + args.seeds):
                    out = Path(tmp) / f"{method}-{processes}-{seed}"
                    kl, gain = exact_point(train(method, processes, seed, args.steps, out))
                    points.setdefault(method, {}).setdefault(processes, []).append({"seed": seed, "kl": kl, "gain": gain})
                    print(f"{method} {processes} process(es) seed {seed}: KL {kl:.4f} gain {gain:.4f}", flush=True)
    summary = {}
    print(f"\n{'method':<6} {'coord':<5} {'1 process':>18} {'2 processes':>18} {'z':>6}")
    for method, by in points.items():
        for coord in ("kl", "gain"):
            one, two = ([p[coord] for p in by[n]] for n in (1, 2))
            z = z_score(one, two)
            summary.setdefault(method, {})[coord] = {"one": one, "two": two, "z": z}
            cells = [f"{np.mean(v):.4f} ± {np.std(v, ddof=1) / np.sqrt(len(v)):.4f}" for v in (one, two)]
            print(f"{method:<6} {coord:<5} {cells[0]:>18} {cells[1]:>18} {z:>+6.2f}")
    print(f"\n{time.time() - t0:.0f} s; load {os.getloadavg()[0]:.2f}; {os.cpu_count()} CPUs")
    if args.json:
        args.json.write_text(json.dumps({"seeds": list(range(args.first_seed, args.first_seed + args.seeds)),
                                         "steps": args.steps, "points": summary}, indent=2))


if __name__ == "__main__":
    main()
