"""Coverage of the frontier's bootstrap intervals on data with a known answer."""

import numpy as np

from alignlimits.theory.closed_forms import gaussian_frontier
from alignlimits.theory.frontier import Frontier

MEAN_SIGMA2 = 1 / 12 + 1.0  # sigma_p ~ Uniform(0.5, 1.5): E[sigma^2] = Var + mean^2


def dataset(rng, P, n):
    """Prompts with Gaussian rewards of random scale: the shared-β frontier is sqrt(2 E[sigma^2] KL)."""
    sigma = rng.uniform(0.5, 1.5, P)
    mu = rng.normal(size=P)
    r = mu[:, None] + sigma[:, None] * rng.standard_normal((P, n))
    return r.ravel(), np.repeat(np.arange(P), n)


def coverage(mode, datasets, P, n, kl, replicates):
    rng = np.random.default_rng(12345)
    truth = gaussian_frontier(kl, np.sqrt(MEAN_SIGMA2))
    hits = 0
    for _ in range(datasets):
        r, ids = dataset(rng, P, n)
        f = Frontier(n_bootstrap=replicates, bootstrap=mode, random_state=int(rng.integers(1 << 31))).fit(r, ids)
        (p,) = f.evaluate([kl])
        hits += p.gain_ci[0] <= truth <= p.gain_ci[1]
    return hits / datasets


def test_prompt_bootstrap_coverage():
    # 400 data sets: the standard error of the coverage estimate is about 1.1 points
    cov = coverage("prompts", datasets=400, P=40, n=300, kl=0.1, replicates=200)
    assert 0.90 <= cov <= 0.99, cov


def test_prompt_and_sample_bootstrap_coverage():
    cov = coverage("prompts+samples", datasets=150, P=8, n=200, kl=0.1, replicates=100)
    assert 0.90 <= cov <= 0.99, cov
