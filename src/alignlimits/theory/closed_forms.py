r"""Frontiers known in closed form, the yardsticks of the estimators' tests.

- Gaussian rewards :math:`N(\mu, \sigma^2)`: the tilt is :math:`N(\mu + \sigma^2/\beta, \sigma^2)`,
  :math:`K = \sigma^2/(2\beta^2)`, :math:`\Delta^*(\varepsilon) = \sqrt{2\sigma^2\varepsilon}`
  (the sub-Gaussian bound, attained).
- Bernoulli(p) rewards: :math:`\Delta^*(\varepsilon) = \max\{q - p : \mathrm{kl}(q\|p) \le \varepsilon\}`.
- Uniform(0, 1) rewards: :math:`E_\beta[r] = 1/(1 - e^{-1/\beta}) - \beta`,
  :math:`K = E_\beta[r]/\beta - \log(\beta(e^{1/\beta} - 1))`.
"""

from __future__ import annotations

import numpy as np


def gaussian_frontier(kl, sigma: float = 1.0) -> np.ndarray:
    r""":math:`\Delta^*(\varepsilon) = \sqrt{2\sigma^2\varepsilon}`."""
    return np.sqrt(2 * sigma**2 * np.asarray(kl, dtype=np.float64))


def gaussian_tilt(beta, sigma: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    r"""Gain :math:`\sigma^2/\beta` and KL :math:`\sigma^2/(2\beta^2)`."""
    beta = np.asarray(beta, dtype=np.float64)
    return sigma**2 / beta, sigma**2 / (2 * beta**2)


def bernoulli_kl(q, p) -> np.ndarray:
    r""":math:`\mathrm{kl}(q\|p) = q\log\frac qp + (1-q)\log\frac{1-q}{1-p}`."""
    q = np.asarray(q, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(q > 0, q * np.log(q / p), 0.0)
        b = np.where(q < 1, (1 - q) * np.log((1 - q) / (1 - p)), 0.0)
    return a + b


def bernoulli_frontier(kl, p: float) -> np.ndarray:
    r""":math:`\Delta^*(\varepsilon) = \max\{q - p : \mathrm{kl}(q\|p) \le \varepsilon\}`, by bisection on q ∈ [p, 1]."""
    kl = np.asarray(kl, dtype=np.float64)
    lo, hi = np.full(kl.shape, p), np.ones(kl.shape)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        over = bernoulli_kl(mid, p) > kl
        lo, hi = np.where(over, lo, mid), np.where(over, mid, hi)
    return lo - p


def uniform_tilt(beta) -> tuple[np.ndarray, np.ndarray]:
    r"""Gain over the base mean 1/2 and KL of the tilt of Uniform(0, 1) rewards.

    :math:`E_\beta[r] = 1/(1 - e^{-1/\beta}) - \beta`,
    :math:`K = E_\beta[r]/\beta - \log(\beta(e^{1/\beta} - 1))`, written with ``expm1`` so
    small β does not overflow.
    """
    beta = np.asarray(beta, dtype=np.float64)
    x = 1.0 / beta
    mean = -1.0 / np.expm1(-x) - beta  # 1/(1 - e^{-x}) - β
    log_z = np.log(beta) + x + np.log(-np.expm1(-x))  # log(β(e^{x} - 1))
    return mean - 0.5, mean / beta - log_z


def uniform_frontier(kl) -> np.ndarray:
    r""":math:`\Delta^*(\varepsilon)` of Uniform(0, 1) rewards: the gain of :func:`uniform_tilt` at the β
    whose KL is ε, by bisection in log β (the KL falls from ∞ to 0 as β grows)."""
    kl = np.asarray(kl, dtype=np.float64)
    lo, hi = np.full(kl.shape, -30.0), np.full(kl.shape, 30.0)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        over = uniform_tilt(np.exp(mid))[1] > kl
        lo, hi = np.where(over, mid, lo), np.where(over, hi, mid)
    return uniform_tilt(np.exp(0.5 * (lo + hi)))[0]
