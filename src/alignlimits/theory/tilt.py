r"""The optimal KL-regularised policy, the exponential tilt of the base policy.

For a prompt with base distribution :math:`\pi_0` (atoms :math:`r_i` with probabilities
:math:`q_i`) and KL penalty :math:`\beta > 0`:

.. math::

    \pi_\beta(i) = q_i e^{r_i/\beta} / Z_\beta, \qquad Z_\beta = \sum_i q_i e^{r_i/\beta}.

Base samples are the special case :math:`q_i = 1/n`, which gives the self-normalised
estimator of DESIGN §1 (weights :math:`w_i = \mathrm{softmax}(r_i/\beta)`).

Everything is computed with rewards shifted by each prompt's maximum, so
:math:`e^{(r - \max r)/\beta} \le 1` never overflows, and gains use rewards centred on
the base mean, so a shift of the rewards changes nothing. ``beta`` is a grid (shape
``(B,)``) shared by all prompts or one value per prompt (shape ``(B, P)``); results have
shape ``(B, P)``.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from alignlimits.theory.groups import Groups

_CHUNK_ELEMENTS = 2_000_000  # (β values × samples) processed at once; bounds peak memory
_PARALLEL_ELEMENTS = 4_000_000  # below this, threads cost more than they save
_THREADS = min(4, os.cpu_count() or 1)


@dataclass(frozen=True)
class Tilt:
    """Per-prompt quantities of :math:`\\pi_\\beta` against :math:`\\pi_0`, shape ``(B, P)``."""

    beta: np.ndarray
    gain: np.ndarray
    kl: np.ndarray
    kl_reverse: np.ndarray
    variance: np.ndarray
    ess: np.ndarray

    @property
    def jeffreys(self) -> np.ndarray:
        r""":math:`J = \mathrm{KL}(\pi_\beta\|\pi_0) + \mathrm{KL}(\pi_0\|\pi_\beta)`."""
        return self.kl + self.kl_reverse

    @property
    def dkl_dlog_beta(self) -> np.ndarray:
        r""":math:`dK/d\log\beta = -\mathrm{Var}_{\pi_\beta}(r)/\beta^2`."""
        return -self.variance / np.broadcast_to(self.beta, self.kl.shape) ** 2

    @property
    def dgain_dlog_beta(self) -> np.ndarray:
        r""":math:`d\Delta/d\log\beta = -\mathrm{Var}_{\pi_\beta}(r)/\beta`, so :math:`d\Delta/dK = \beta`."""
        return -self.variance / np.broadcast_to(self.beta, self.kl.shape)


def _as_groups(rewards: np.ndarray, groups: Groups | None) -> Groups:
    return groups if groups is not None else Groups.equal(1, rewards.shape[-1])


def _below_peak(rewards: np.ndarray, groups: Groups, q: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Each prompt's highest reward on the support of q, and r − that peak (−inf off the support).

    Shifting by the peak keeps e^{(r−peak)/β} ≤ 1 with at least one term equal to 1 per prompt;
    the peak must be taken where q > 0 (a bootstrap's q leaves samples out), else every weight of
    the prompt underflows to 0 at small β."""
    if q is None:
        peak = groups.max(rewards)
        return peak, rewards - groups.expand(peak)
    support = q > 0
    peak = groups.max(np.where(support, rewards, -np.inf))
    return peak, np.where(support, rewards - groups.expand(peak), -np.inf)


def _beta_grid(beta, groups: Groups) -> np.ndarray:
    beta = np.asarray(beta, dtype=np.float64)
    if beta.ndim == 0:
        beta = beta[None]
    if beta.ndim == 1:
        beta = beta[:, None]
    if not (np.isfinite(beta).all() and (beta > 0).all()):
        raise ValueError("beta must be positive and finite")
    return np.broadcast_to(beta, (beta.shape[0], groups.n_groups))


class TiltedSamples:
    r"""Rewards grouped by prompt, prepared once for evaluating :math:`\pi_\beta` at many β.

    Per β it needs, per prompt, only :math:`\sum e`, :math:`\sum e\,(r-\bar r)`,
    :math:`\sum e\,(r-\bar r)^2`, :math:`\sum e\,(r-\max r)` and :math:`\sum e^2` with
    :math:`e = q\,e^{(r-\max r)/\beta}`: one exp and two reads of e.
    """

    def __init__(self, rewards, groups: Groups | None = None, base_probs=None):
        self.rewards = np.asarray(rewards, dtype=np.float64)
        self.groups = _as_groups(self.rewards, groups)
        self.q = None if base_probs is None else np.asarray(base_probs, dtype=np.float64)
        g = self.groups
        q_flat = g.expand(1.0 / g.sizes) if self.q is None else self.q
        peak, self.exponent = _below_peak(self.rewards, g, self.q)
        base_mean = g.sum(q_flat * self.rewards)
        centred = self.rewards - g.expand(base_mean)
        below_peak = np.where(np.isfinite(self.exponent), self.exponent, 0.0)  # ≤ 0; weight 0 off the support
        self.mean_below_peak = base_mean - peak  # E_π0[r - max r], for the reverse KL
        self.columns = g.stack_columns([np.ones_like(self.rewards), centred, centred * centred, below_peak])

    def at(self, beta) -> Tilt:
        """Evaluate at β of shape (B,) or (B, P)."""
        g = self.groups
        betas = _beta_grid(beta, g)
        out = {k: np.empty(betas.shape) for k in ("gain", "kl", "kl_reverse", "variance", "ess")}

        def fill(lo: int, hi: int) -> None:
            b = betas[lo:hi]
            e = g.divide(self.exponent, b)
            np.exp(e, out=e)
            if self.q is not None:
                e *= self.q
            s, s_c, s_cc, s_below = g.dot_columns(e, self.columns)
            log_s = np.log(s) if self.q is not None else np.log(s / g.sizes)
            gain = s_c / s
            out["gain"][lo:hi] = gain
            out["kl"][lo:hi] = np.maximum(s_below / (b * s) - log_s, 0.0)  # Σ w (r - max)/β - log s
            out["kl_reverse"][lo:hi] = np.maximum(log_s - self.mean_below_peak / b, 0.0)
            out["variance"][lo:hi] = np.maximum(s_cc / s - gain * gain, 0.0)
            out["ess"][lo:hi] = s * s / g.sum_squares(e)

        chunk = max(1, _CHUNK_ELEMENTS // self.rewards.size)
        bounds = [(lo, min(lo + chunk, betas.shape[0])) for lo in range(0, betas.shape[0], chunk)]
        if len(bounds) > 1 and self.rewards.size * betas.shape[0] >= _PARALLEL_ELEMENTS:
            # numpy releases the GIL inside these ufuncs and BLAS calls, so threads use every core
            with ThreadPoolExecutor(_THREADS) as pool:
                list(pool.map(lambda lh: fill(*lh), bounds))
        else:
            for lo, hi in bounds:
                fill(lo, hi)
        return Tilt(beta=np.asarray(betas), **out)


def tilt(rewards, beta, groups: Groups | None = None, base_probs=None) -> Tilt:
    r"""Gain, KL, reverse KL, tilted variance and ESS of :math:`\pi_\beta` for every prompt and β.

    - gain :math:`\Delta = E_{\pi_\beta}[r] - E_{\pi_0}[r]`
    - KL :math:`K = \sum_i w_i \log(w_i/q_i) = E_{\pi_\beta}[r]/\beta - \log Z_\beta`
    - reverse KL :math:`K^- = \log Z_\beta - E_{\pi_0}[r]/\beta`
    - ESS :math:`1/\sum_i w_i^2` (for base samples, :math:`q_i = 1/n`)
    """
    return TiltedSamples(rewards, groups, base_probs).at(beta)


def optimal_policy(rewards, beta: float, base_probs=None) -> np.ndarray:
    r""":math:`\pi_\beta(i) = q_i e^{r_i/\beta} / \sum_j q_j e^{r_j/\beta}` for one prompt (log-sum-exp)."""
    rewards = np.asarray(rewards, dtype=np.float64)
    q = np.full(rewards.shape, 1.0 / rewards.size) if base_probs is None else np.asarray(base_probs, float)
    logits = np.log(q) + (rewards - rewards.max()) / beta
    logits -= logits.max()
    p = np.exp(logits)
    return p / p.sum()


def log_partition(rewards, beta, groups: Groups | None = None, base_probs=None) -> np.ndarray:
    r""":math:`\log Z_\beta = \log E_{\pi_0}[e^{r/\beta}]`, shape ``(B, P)``, by log-sum-exp."""
    rewards = np.asarray(rewards, dtype=np.float64)
    groups = _as_groups(rewards, groups)
    betas = _beta_grid(beta, groups)
    q = groups.expand(1.0 / groups.sizes) if base_probs is None else np.asarray(base_probs, float)
    peak, below = _below_peak(rewards, groups, None if base_probs is None else q)
    e = q * np.exp(groups.divide(below, betas))
    return peak / betas + np.log(groups.sum(e))


def gain(rewards, beta, groups=None, base_probs=None) -> np.ndarray:
    r""":math:`\Delta(\beta) = E_{\pi_\beta}[r] - E_{\pi_0}[r]`."""
    return tilt(rewards, beta, groups, base_probs).gain


def kl_divergence(rewards, beta, groups=None, base_probs=None) -> np.ndarray:
    r""":math:`K(\beta) = \mathrm{KL}(\pi_\beta\|\pi_0) = E_{\pi_\beta}[r]/\beta - \log Z_\beta`."""
    return tilt(rewards, beta, groups, base_probs).kl


def reverse_kl_divergence(rewards, beta, groups=None, base_probs=None) -> np.ndarray:
    r""":math:`K^-(\beta) = \mathrm{KL}(\pi_0\|\pi_\beta) = \log Z_\beta - E_{\pi_0}[r]/\beta`."""
    return tilt(rewards, beta, groups, base_probs).kl_reverse


def jeffreys_divergence(rewards, beta, groups=None, base_probs=None) -> np.ndarray:
    r""":math:`J = K + K^-`; the gain is :math:`\Delta(\beta) = \beta J(\pi_\beta, \pi_0)`."""
    return tilt(rewards, beta, groups, base_probs).jeffreys


def gain_covariance_form(rewards, beta, groups: Groups | None = None, base_probs=None) -> np.ndarray:
    r""":math:`\Delta(\beta) = \mathrm{Cov}_{\pi_0}(r, e^{r/\beta}) / E_{\pi_0}[e^{r/\beta}]`.

    Computed from base moments only (no tilted weights), as an independent check.
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    groups = _as_groups(rewards, groups)
    betas = _beta_grid(beta, groups)
    q = groups.expand(1.0 / groups.sizes) if base_probs is None else np.asarray(base_probs, float)
    _, below = _below_peak(rewards, groups, None if base_probs is None else q)
    scaled_exp = np.exp(groups.divide(below, betas))  # e^{r/β} / e^{max/β}
    mean_exp = groups.sum(q * scaled_exp)
    centred = rewards - groups.expand(groups.sum(q * rewards))
    cov = groups.sum(q * scaled_exp * centred)
    return cov / mean_exp


def effective_sample_size(rewards, beta, groups=None) -> np.ndarray:
    r"""Kish effective sample size of the tilt weights, :math:`1/\sum_i w_i^2`, :math:`w = \mathrm{softmax}(r/\beta)`."""
    return tilt(rewards, beta, groups).ess
