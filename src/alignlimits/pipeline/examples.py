"""Synthetic sample tables with a known frontier, for the demo and for trying the commands.

- ``gaussian.parquet``: per prompt p, reward ~ N(mu_p, sigma_p^2); the per-prompt frontier is
  sqrt(2 sigma_p^2 KL). Also ``proxy_1..4 = reward + noise`` (independent noise, sd 1) for
  `alignlimits hacking`.
- ``bernoulli.parquet``: per prompt, reward ~ Bernoulli(p_p); the frontier is
  max{q - p : kl(q||p) <= KL}.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def write_example_samples(out, prompts: int = 64, n: int = 256, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ids = np.repeat([f"p{i:04d}" for i in range(prompts)], n)
    idx = np.tile(np.arange(n), prompts)
    mu = rng.normal(0, 1, prompts)
    sigma = rng.uniform(0.5, 1.5, prompts)
    reward = np.repeat(mu, n) + np.repeat(sigma, n) * rng.standard_normal(prompts * n)
    gaussian = pd.DataFrame({"prompt_id": ids, "sample_idx": idx, "reward": reward})
    for k in range(1, 5):
        gaussian[f"proxy_{k}"] = reward + rng.standard_normal(reward.size)
    p = rng.uniform(0.05, 0.5, prompts)
    bernoulli = pd.DataFrame({
        "prompt_id": ids, "sample_idx": idx,
        "reward": (rng.random(prompts * n) < np.repeat(p, n)).astype(float),
    })
    paths = [out / "gaussian.parquet", out / "bernoulli.parquet"]
    gaussian.to_parquet(paths[0], index=False)
    bernoulli.to_parquet(paths[1], index=False)
    return paths
