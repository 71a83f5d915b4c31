"""Where GRPO lands on the exact task, against π_β and against its own predicted fixed point (issue 21, item 4).

Trains TRL's GRPO (through alignlimits.methods.grpo: β·(G−1)/G passed to TRL, advantages in reward units as in a
study) on the exact task's 12 prompts, and reads every number by enumeration: the policy's KL(π‖π0) and gain, its
KL to π_β (the optimum of E r − β·KL(π‖π0)) and to the tabular fixed point of GRPO's expected update
(:func:`alignlimits.methods.grpo.grpo_fixed_point`), and the same for that fixed point and for π_β.

    .venv/bin/python benchmarks/bench_grpo_fixed_point.py --beta 0.5 --steps 300
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np


def kl(p, q):
    """Mean over prompts of Σ_y p log(p/q)."""
    return float(np.mean(np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1) / q), 0.0), axis=1)))


def describe(name, p, q0, r, beta, pi_beta, fixed):
    gain = float(np.mean(p @ r - q0 @ r))
    return (f"{name:>22}: KL(π‖π0) {kl(p, q0):.3f}  gain {gain:.3f}  KL(π‖π_β) {kl(p, pi_beta):.3f}  "
            f"KL(π‖GRPO fixed point) {kl(p, fixed):.3f}  J = gain − β·KL {gain - beta * kl(p, q0):.3f}")


def main() -> None:
    import torch

    from alignlimits.lm.exact import build_exact_model, exact_distribution, exact_prompts, exact_reward
    from alignlimits.methods.grpo import GRPOOptions, grpo_fixed_point, train_grpo

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--beta", type=float, default=0.5)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--num-generations", type=int, default=8)
    ap.add_argument("--learning-rate", type=float, default=3e-3)
    ap.add_argument("--uncorrected", action="store_true", help="give TRL β itself (it then acts as β·G/(G−1))")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model, tok = build_exact_model(0)
    base = exact_distribution(model, tok)
    q0, r, beta = base.probs, base.rewards, args.beta
    pi_beta = q0 * np.exp((r - r.max()) / beta)
    pi_beta /= pi_beta.sum(axis=1, keepdims=True)
    G = args.num_generations
    fixed = grpo_fixed_point(base.token_ids, q0, r, beta * G / (G - 1) if args.uncorrected else beta)
    reverse = grpo_fixed_point(base.token_ids, q0, r, beta, kl_gradient="reverse")
    print(describe("π_β", pi_beta, q0, r, beta, pi_beta, fixed))
    print(describe("GRPO fixed point", fixed, q0, r, beta, pi_beta, fixed))
    print(describe("... k3 without the ratio", reverse, q0, r, beta, pi_beta, fixed))
    with tempfile.TemporaryDirectory() as tmp:
        opts = GRPOOptions(beta=beta, steps=args.steps, batch_size=64, num_generations=args.num_generations,
                           learning_rate=args.learning_rate, max_new_tokens=3, scale_rewards="none", save_steps=0,
                           progress=False, output_dir=tmp, extra={"beta": beta} if args.uncorrected else {})
        t0 = time.time()
        policy = train_grpo(opts, model, tok, exact_reward, [p["prompt"] for p in exact_prompts()])
        seconds = time.time() - t0
    trained = exact_distribution(policy, tok).probs
    label = f"GRPO, {args.steps} steps" + (", β uncorrected" if args.uncorrected else "")
    print(describe(label, trained, q0, r, beta, pi_beta, fixed) + f"  ({seconds:.0f} s)")


if __name__ == "__main__":
    main()
