r"""Proxy rewards, reward hacking, and reward ensembles.

With a proxy :math:`\hat r = r + e`, the proxy-optimal policy
:math:`\hat\pi_\beta \propto \pi_0 e^{\hat r/\beta}` has true (gold) gain
:math:`\mathrm{Cov}_{\pi_0}(r, e^{\hat r/\beta}) / E_{\pi_0}[e^{\hat r/\beta}]`. The
**hacking gap** at β is the gold frontier at the same KL minus that gain; the
**objective loss** is :math:`\beta\,\mathrm{KL}(\hat\pi_\beta\|\pi_\beta)`, what the proxy
costs in the regularised objective :math:`E_\pi r - \beta\,\mathrm{KL}(\pi\|\pi_0)`.
Both grow with the error and as β falls.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from alignlimits.errors import AlignLimitsError
from alignlimits.theory.frontier import Frontier
from alignlimits.theory.groups import Groups

AGGREGATES = ("mean", "min", "uwo")


@dataclass(frozen=True)
class ProxyTilt:
    """The proxy-optimal tilt against the gold reward, per β and prompt, shape ``(B, P)``."""

    beta: np.ndarray
    kl: np.ndarray
    proxy_gain: np.ndarray
    gold_gain: np.ndarray
    objective_loss: np.ndarray


def proxy_tilt(gold, proxy, beta, groups: Groups | None = None) -> ProxyTilt:
    r"""Tilt :math:`\pi_0` by the proxy and score it by gold.

    - KL :math:`\mathrm{KL}(\hat\pi_\beta\|\pi_0)`, proxy gain :math:`E_{\hat\pi_\beta}\hat r - E_{\pi_0}\hat r`
    - gold gain :math:`E_{\hat\pi_\beta} r - E_{\pi_0} r`
    - objective loss :math:`\beta\,\mathrm{KL}(\hat\pi_\beta\|\pi_\beta)
      = \beta \sum_i \hat w_i \log(\hat w_i / w_i)`, w the gold tilt's weights.
    """
    gold = np.asarray(gold, dtype=np.float64)
    proxy = np.asarray(proxy, dtype=np.float64)
    if gold.shape != proxy.shape:
        raise AlignLimitsError(f"gold and proxy rewards differ in length ({gold.size} vs {proxy.size}); they must score the same samples")
    groups = groups if groups is not None else Groups.equal(1, gold.size)
    betas = np.atleast_1d(np.asarray(beta, dtype=np.float64))
    if (betas <= 0).any():
        raise AlignLimitsError("β must be positive")
    n = groups.expand(groups.sizes).astype(np.float64)
    gold_c = gold - groups.expand(groups.mean(gold))
    proxy_c = proxy - groups.expand(groups.mean(proxy))
    a_hat = (proxy - groups.expand(groups.max(proxy)))[None, :] / betas[:, None]
    a = (gold - groups.expand(groups.max(gold)))[None, :] / betas[:, None]
    e_hat, e = np.exp(a_hat), np.exp(a)
    s_hat, s = groups.sum(e_hat), groups.sum(e)
    w_hat = e_hat / groups.expand(s_hat)
    kl = groups.sum(w_hat * (a_hat + np.log(n))) - np.log(s_hat)
    # log(ŵ/w) = (â - log ŝ) - (a - log s)
    kl_to_gold_tilt = groups.sum(w_hat * (a_hat - a)) - np.log(s_hat) + np.log(s)
    return ProxyTilt(
        beta=betas,
        kl=np.maximum(kl, 0.0),
        proxy_gain=groups.sum(w_hat * proxy_c),
        gold_gain=groups.sum(w_hat * gold_c),
        objective_loss=betas[:, None] * np.maximum(kl_to_gold_tilt, 0.0),
    )


def hacking_curve(gold, proxy, beta, prompt_ids=None, gold_frontier: Frontier | None = None) -> dict:
    """Per β (shared by all prompts): the ``hacking`` JSON's keys, as arrays.

    ``beta``, ``kl``, ``proxy_gain``, ``gold_gain``, ``optimal_gold_gain`` (the gold frontier
    at the same mean KL: 0 at KL 0, its top gain at the largest attainable KL), ``gap``
    (= optimal − gold gain) and ``objective_loss``.
    """
    gold = np.asarray(gold, dtype=np.float64)
    proxy = np.asarray(proxy, dtype=np.float64)
    if prompt_ids is None:
        groups, order = Groups.equal(1, gold.size), np.arange(gold.size)
    else:
        groups, order, _ = Groups.from_labels(np.asarray(prompt_ids))
    frontier = gold_frontier or Frontier(n_bootstrap=0).fit(gold, prompt_ids)
    pt = proxy_tilt(gold[order], proxy[order], beta, groups)
    kl = pt.kl.mean(axis=1)
    # the tilt's KL reaches both ends of the frontier's range, where gain_at_kl has no β to solve for
    inside = (kl > 0) & (kl < frontier.max_kl_ * (1 - 1e-9))
    optimal = np.where(kl > 0, frontier.max_gain_, 0.0)
    if inside.any():
        optimal[inside] = frontier.gain_at_kl(kl[inside], extrapolate=True)
    gold_gain = pt.gold_gain.mean(axis=1)
    return {
        "beta": pt.beta,
        "kl": kl,
        "proxy_gain": pt.proxy_gain.mean(axis=1),
        "gold_gain": gold_gain,
        "optimal_gold_gain": optimal,
        "gap": optimal - gold_gain,
        "objective_loss": pt.objective_loss.mean(axis=1),
    }


def expanded_tail(n_units: int, confidence: float) -> float:
    r"""Tail probability of each end of Hesterberg's expanded percentile interval (2015).

    Percentile intervals from m resampled units (prompts) are too narrow for small m; the
    expansion reads the replicates at :math:`\Phi(-\sqrt{m/(m-1)}\, t_{m-1, 1-\alpha/2})`
    instead of α/2, α = 1 − confidence.
    """
    if n_units < 2:
        raise AlignLimitsError(f"a bootstrap interval needs at least 2 independent units (prompts), got {n_units}")
    alpha = 1 - confidence
    return float(stats.norm.cdf(-np.sqrt(n_units / (n_units - 1)) * stats.t.ppf(1 - alpha / 2, n_units - 1)))


def aggregate_proxies(proxies, how: str = "mean", lam: float = 1.0, ddof: int = 0) -> np.ndarray:
    r"""Combine K proxy rewards (shape ``(K, n)``) into one.

    - ``mean``: :math:`\frac1K\sum_k \hat r_k` (independent errors of variance v become v/K)
    - ``min``: worst case :math:`\min_k \hat r_k`
    - ``uwo``: uncertainty-weighted :math:`\mathrm{mean} - \lambda\,\mathrm{Var}`, with the
      population variance (``ddof=0``, the default) or the unbiased one (``ddof=1``).
    """
    proxies = np.atleast_2d(np.asarray(proxies, dtype=np.float64))
    if how not in AGGREGATES:
        raise AlignLimitsError(f"unknown ensemble aggregate {how!r}; use one of {', '.join(AGGREGATES)}")
    if how == "mean":
        return proxies.mean(axis=0)
    if how == "min":
        return proxies.min(axis=0)
    if proxies.shape[0] <= ddof:
        raise AlignLimitsError(f"the unbiased variance needs at least 2 proxies, got {proxies.shape[0]}")
    return proxies.mean(axis=0) - lam * proxies.var(axis=0, ddof=ddof)
