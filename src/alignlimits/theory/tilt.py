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
_EXACT_TOP = 32  # per prompt, the highest rewards whose deletion the jackknife treats exactly
_CACHE_RATIO = 8  # the jackknife's (β, top, prompt) chunks hold _CHUNK_ELEMENTS / 8 entries: cache-sized


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
        self.base_mean = base_mean
        self._top_and_rest = None  # the jackknife's layout, made on first use
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
            for k, v in _moments(b, s, s_c, s_cc, s_below, g.sum_squares(e), log_s, self.mean_below_peak).items():
                out[k][lo:hi] = v

        _in_chunks(fill, betas.shape[0], self.rewards.size)
        return Tilt(beta=np.asarray(betas), **out)

    def kl_variance(self, beta) -> np.ndarray:
        r"""Variance of each prompt's plug-in KL at fixed β over its n draws (delta method), shape (B, P).

        The influence of draw y on :math:`\hat K = \overline{r e^{r/\beta}}/(\beta\,\overline{e^{r/\beta}})
        - \log\overline{e^{r/\beta}}` is :math:`n w_y a_y + 1` with
        :math:`a = (r - E_{\pi_\beta} r)/\beta - 1` and w the tilt's weight per draw, so
        :math:`\mathrm{Var}\,\hat K \approx \sum_{\text{draws}} w^2 a^2 - 1/n` (the delete-one jackknife's
        variance to leading order). With ``base_probs`` as draw counts / n (a bootstrap resample),
        :math:`\sum_{\text{draws}} w^2 a^2 = \sum_i q_i x_i^2 a_i^2 / (n (\sum_i q_i x_i)^2)`,
        :math:`x = e^{(r - \max r)/\beta}`.
        """
        return self.fixed_kl_parts(beta)[1]

    def lagrangian_jackknife(self, beta) -> np.ndarray:
        r"""Each prompt's delete-one jackknife correction of the Lagrangian
        :math:`\hat L(\beta) = \hat\Delta - \beta\hat K = \beta\log\hat Z_\beta - \bar r` at fixed β, shape (B, P).

        With :math:`x = e^{(r - \max r)/\beta}` and S its sum over the n draws, deleting draw i gives
        :math:`\hat L_{(-i)} - \hat L = \beta\log\frac{(S - x_i)\,n}{S\,(n-1)} - (\bar r_{(-i)} - \bar r)`, so
        :math:`c^L = n\hat L - (n-1)\overline{\hat L_{(-i)}} - \hat L
        = -\beta\frac{n-1}{n}\sum_i \log\frac{(S - x_i)\,n}{S\,(n-1)}`, exact per draw (no expansion: the
        jackknifed KL's own expansion loses :math:`\beta c^K` when β far exceeds the rewards' spread). The sum
        without a unique top is summed apart from it (about the second-highest reward where it underflows).
        With ``base_probs`` as draw counts / n (a bootstrap resample) each draw counts once.
        """
        return self.fixed_kl_parts(beta)[0]

    def fixed_kl_parts(self, beta) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`lagrangian_jackknife` and :meth:`kl_variance` from one pass, each (B, P)."""
        g = self.groups
        betas = _beta_grid(beta, g)
        lag, var = np.empty(betas.shape), np.empty(betas.shape)
        n = g.sizes.astype(np.float64)
        m = None if self.q is None else self.q * g.expand(n)  # draw counts
        peak = self.exponent == 0.0
        k = g.sum(peak * (1.0 if m is None else m))  # draws at the top
        not_peak = np.isfinite(self.exponent) & ~peak

        def fill(lo: int, hi: int) -> None:
            b = betas[lo:hi]
            x = np.exp(g.divide(self.exponent, b))
            mx = x if m is None else x * m
            s = g.sum(mx)
            log_rest = self._log_sum_below_top(b, g.sum(mx * not_peak), not_peak, m)
            with np.errstate(divide="ignore"):
                log_top = np.where(k > 1, np.log(k - 1 + np.exp(log_rest)), log_rest)  # deleting one top draw
                logs = np.where(peak, g.expand(log_top), np.log(np.maximum(g.expand(s) - x, 1e-300)))
            logs = logs - g.expand(np.log(s)) + g.expand(np.log(n / (n - 1)))
            lag[lo:hi] = -b * (n - 1) / n * g.sum(logs if m is None else np.where(m > 0, logs * m, 0.0))
            e = x if self.q is None else x * self.q
            s_c = g.dot_columns(e, self.columns)[1]
            s2, s2_c, s2_cc = g.dot_columns(e * x, self.columns)[:3]
            gain = s_c / (s if m is None else s / n)
            num = (s2_cc - 2 * gain * s2_c + gain * gain * s2) / b**2 - 2 * (s2_c - gain * s2) / b + s2
            var[lo:hi] = num / (s * s if m is None else n * (s / n) ** 2) - 1.0 / n

        _in_chunks(fill, betas.shape[0], self.rewards.size)
        return lag, np.maximum(var, 0.0)

    def _log_sum_below_top(self, b: np.ndarray, direct: np.ndarray, not_peak: np.ndarray, m) -> np.ndarray:
        """log Σ x over each prompt's draws below its top (B, P): ``direct`` where it does not underflow, else
        retaken about the second-highest reward (-inf where there is none)."""
        g = self.groups
        with np.errstate(divide="ignore"):
            out = np.log(direct)
        low = direct < 1e-250
        if low.any():
            second = g.max(np.where(not_peak, self.exponent, -np.inf))
            shift = np.where(np.isfinite(second), second, 0.0)
            x2 = np.exp(g.divide(np.where(not_peak, self.exponent - g.expand(shift), -np.inf), b))
            with np.errstate(divide="ignore"):
                retaken = shift / b + np.log(g.sum(x2 if m is None else x2 * m))
            out = np.where(low, retaken, out)
        return out

    def jackknife(self, beta) -> tuple[Tilt, Tilt]:
        r"""The plain tilt and its delete-one jackknife within each prompt, at β of shape (B,) or (B, P).

        For θ = gain, KL and tilted variance of a prompt's n draws (base samples; with ``base_probs``,
        draw counts / n, as a bootstrap resample gives them):
        :math:`\theta_{JK} = n\hat\theta - (n-1)\,\overline{\hat\theta_{(-i)}}` (Quenouille–Tukey),
        the mean over deleting each draw once. It removes the :math:`O(1/n)` term of the ratio estimator's bias
        at fixed β; what remains shrinks faster in n but grows as the tilt's weight gathers on few draws (the
        frontier's own residual, at fixed KL, is measured in ``tests/theory/test_debias.py``). Deleting draw i
        removes its term from the
        prompt's sums: with :math:`x = e^{(r - \max r)/\beta}` and :math:`\tau_i = x_i/(\sum_j x_j - x_i)`,
        each ratio :math:`R^v = \sum x v/\sum x` moves by :math:`\tau_i (R^v - v_i)` and
        :math:`\log\sum x` by :math:`-\log(1 + \tau_i)`. That is exact for each prompt's
        ``_EXACT_TOP`` highest rewards (a unique top deleted leaves the sums of the others, taken
        about the second highest reward if they underflow about the top); beyond them
        :math:`\tau_i \le 1/\text{_EXACT_TOP}` and the sums over i are expanded to second order
        (moments of :math:`x^2`), an O(n) pass like the plain one; that loses up to about
        :math:`n_{\text{rest}}/(3(n-1)^3)` nats of KL when β far exceeds the rewards' spread (every τ near
        1/(n−1)), which is why the frontier's correction uses :meth:`lagrangian_jackknife` instead. The jackknifed
        tilt's variance
        is the jackknifed variance, so its ``dkl_dlog_beta`` and ``dgain_dlog_beta`` are the slopes of
        the jackknifed curves; its ``kl_reverse`` and ``ess`` are the plain ones (ESS over draws).
        """
        g = self.groups
        betas = _beta_grid(beta, g)
        lay = self._layout()
        plain = {k: np.empty(betas.shape) for k in ("gain", "kl", "kl_reverse", "variance", "ess")}
        jk = {k: np.empty(betas.shape) for k in ("gain", "kl", "variance")}

        def fill(lo: int, hi: int) -> None:
            p, j = _jackknife_chunk(lay, g, betas[lo:hi], self.mean_below_peak)
            for k in plain:
                plain[k][lo:hi] = p[k]
            for k in jk:
                jk[k][lo:hi] = j[k]

        # chunks of the (β, top, prompt) arrays stay in cache
        _in_chunks(fill, betas.shape[0], max(self.rewards.size, lay.m.size * _CACHE_RATIO))
        beta_out = np.asarray(betas)
        return (Tilt(beta=beta_out, **plain),
                Tilt(beta=beta_out, kl_reverse=plain["kl_reverse"], ess=plain["ess"], **jk))

    def _layout(self) -> "_TopAndRest":
        if self._top_and_rest is None:
            self._top_and_rest = _TopAndRest.make(self.rewards, self.groups, self.q, self.base_mean, self.columns)
        return self._top_and_rest


def _top_indices(masked: np.ndarray, groups: Groups, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices (k, P) of each prompt's k highest finite values, highest first, and which exist."""
    n = groups.uniform_size
    if n is not None:
        values = -masked.reshape(groups.n_groups, n)
        local = np.argpartition(values, k - 1, axis=1)[:, :k] if k < n else np.tile(np.arange(n), (groups.n_groups, 1))
        local = np.take_along_axis(local, np.argsort(np.take_along_axis(values, local, 1), axis=1, kind="stable"), 1)
        idx = groups.starts[:, None] + local
        valid = np.ones(idx.shape, bool)
    else:
        order = np.lexsort((-masked, groups.labels))
        rank = np.arange(k)[None, :]
        valid = rank < groups.sizes[:, None]
        idx = order[groups.starts[:, None] + np.minimum(rank, groups.sizes[:, None] - 1)]
    return idx.T, (valid & np.isfinite(masked[idx])).T


@dataclass(frozen=True)
class _TopAndRest:
    """Each prompt's ``_EXACT_TOP`` highest rewards on the support as (k, P) arrays, highest first,
    apart from the rest of its draws, for :meth:`TiltedSamples.jackknife`."""

    n: np.ndarray  # draws per prompt
    unique: np.ndarray  # the top reward is one draw
    gap: np.ndarray  # top reward - the next distinct sample's (0 if none)
    exponent: np.ndarray  # (k, P): r - top, -inf where absent
    m: np.ndarray  # (k, P) draw counts, 0 where absent
    w: np.ndarray  # (k, P) draw counts of the deletions done in the top's frame (all but a unique top)
    cols: np.ndarray  # (3, k, P): centred r, its square, r - top (0 where absent)
    rest_gap: np.ndarray  # top reward - the rest's highest (inf without a rest)
    rest_exponent: np.ndarray | None  # (N,): r - the rest's highest on the rest, -inf elsewhere; None: no rest
    rest_m: np.ndarray | None  # (N,) draw counts; None: one each
    columns: np.ndarray  # TiltedSamples.columns: 1, centred r, its square, r - top

    @classmethod
    def make(cls, rewards, groups: Groups, q, base_mean, columns) -> "_TopAndRest":
        if groups.sizes.min() < 2:
            raise ValueError("the jackknife needs at least 2 draws per prompt")
        m = None if q is None else np.rint(q * groups.expand(groups.sizes))
        masked = rewards if m is None else np.where(m > 0, rewards, -np.inf)
        idx, valid = _top_indices(masked, groups, int(min(_EXACT_TOP, groups.sizes.max())))
        r = np.where(valid, rewards[idx], -np.inf)
        top_m = np.where(valid, 1.0 if m is None else m[idx], 0.0)
        peak = r[0]
        unique = (top_m[0] == 1) & (r[1] < peak)
        below = np.where(valid, r - peak, 0.0)
        c = np.where(valid, r - base_mean, 0.0)
        rest = np.ones(rewards.size, bool) if m is None else m > 0
        rest[idx[valid]] = False
        rest_top = groups.max(np.where(rest, rewards, -np.inf))  # -inf without a rest: its scale e^{-inf} is 0
        rest_exponent = None
        if rest.any():  # r - rest_top on the rest, -inf elsewhere, built in place (it is as large as the data)
            rest_exponent = groups.expand(rest_top)
            np.subtract(rewards, rest_exponent, out=rest_exponent)
            rest_exponent[~rest] = -np.inf
        return cls(
            n=groups.sizes.astype(float), unique=unique, gap=np.where(valid[1], peak - r[1], 0.0),
            exponent=r - peak, m=top_m, w=np.where(np.arange(len(r))[:, None] == 0, top_m * ~unique, top_m),
            cols=np.stack([c, c * c, below]), rest_gap=peak - rest_top,
            rest_exponent=rest_exponent,
            rest_m=m, columns=columns,
        )

    def rest_sums(self, groups: Groups, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Σ m y·(1, c, c², r − top) and the same with y², y = e^{(r − the rest's highest)/β}, over
        the rest."""
        if self.rest_exponent is None:
            zeros = np.zeros((4, *beta.shape))
            return zeros, zeros
        y = groups.divide(self.rest_exponent, beta)
        np.exp(y, out=y)
        e = y if self.rest_m is None else y * self.rest_m
        first = groups.dot_columns(e, self.columns)
        e *= y
        return first, groups.dot_columns(e, self.columns)


def _jackknife_chunk(lay: _TopAndRest, groups: Groups, b: np.ndarray, mean_below_peak) -> tuple[dict, dict]:
    """Plain moments and jackknifed gain, KL, variance at β rows ``b`` (B, P); see TiltedSamples.jackknife."""
    rest, rest2 = lay.rest_sums(groups, b)
    sigma = np.exp(-lay.rest_gap / b)  # the rest's frame in the top's
    x = np.exp(lay.exponent / b[:, None, :])  # (B, k, P), 1 at the top
    mx = lay.m * x
    others = [mx[:, 1:].sum(axis=1) + sigma * rest[0]]  # sums without the first (top) entry
    others += [(mx[:, 1:] * col[1:]).sum(axis=1) + sigma * rest[i] for i, col in enumerate(lay.cols, 1)]
    top = [lay.m[0]] + [lay.m[0] * col[0] for col in lay.cols]
    s, s_c, s_cc, s_b = (a + o for a, o in zip(top, others))
    plain = _moments(b, s, s_c, s_cc, s_b, (mx * x).sum(axis=1) + sigma**2 * rest2[0], np.log(s / lay.n),
                     mean_below_peak)
    ratio = [s_c / s, s_cc / s, s_b / s]
    # deletions in the top's frame, exact: Σ w τ (R - v) and Σ w log(1 + τ), τ = x/(s - x)
    xe = np.where(lay.w > 0, x, 0.0)
    tau = xe / (s[:, None, :] - xe)
    a = lay.w * tau
    sum_a = a.sum(axis=1)
    sum_d = [R * sum_a - (a * col).sum(axis=1) for R, col in zip(ratio, lay.cols)]
    sum_log = -(lay.w * np.log1p(tau)).sum(axis=1)
    a *= tau
    sum_dc2 = (ratio[0] ** 2 * a.sum(axis=1) - 2 * ratio[0] * (a * lay.cols[0]).sum(axis=1)
               + (a * lay.cols[1]).sum(axis=1))
    # the rest, to second order in t = σ y / s
    u1, u2 = sigma / s, (sigma / s) ** 2
    for i, R in enumerate(ratio):
        sum_d[i] += u1 * (R * rest[0] - rest[i + 1]) + u2 * (R * rest2[0] - rest2[i + 1])
    sum_log -= u1 * rest[0] + 0.5 * u2 * rest2[0]
    sum_dc2 += u2 * (ratio[0] ** 2 * rest2[0] - 2 * ratio[0] * rest2[1] + rest2[2])
    n = lay.n
    d_gain, d_var = sum_d[0], sum_d[1] - 2 * ratio[0] * sum_d[0] - sum_dc2
    d_kl = sum_d[2] / b - sum_log - np.log(n / (n - 1)) * (n - lay.unique)
    if lay.unique.any():
        k0, g0, v0 = _without_unique_top(lay, b, others, rest)
        d_kl += np.where(lay.unique, k0 - plain["kl"], 0.0)
        d_gain += np.where(lay.unique, g0 - plain["gain"], 0.0)
        d_var += np.where(lay.unique, v0 - plain["variance"], 0.0)
    f = (n - 1) / n
    return plain, {"gain": plain["gain"] - f * d_gain, "kl": plain["kl"] - f * d_kl,
                   "variance": plain["variance"] - f * d_var}


def _without_unique_top(lay: _TopAndRest, b: np.ndarray, others: list, rest: np.ndarray) -> tuple[np.ndarray, ...]:
    """KL, gain and variance of a prompt's tilt with its unique top deleted, from the sums of the
    others; where those underflow about the top (its lead ≫ β) they are retaken about the second."""
    s, s_c, s_cc, s_b = others
    low = lay.unique & (s < 1e-250)
    if low.any():  # frame of the second highest: KL from r - second, so no large terms cancel
        x = np.exp((lay.exponent[1:] + lay.gap) / b[:, None, :])
        mx = lay.m[1:] * x
        sigma = np.exp(-(lay.rest_gap - lay.gap) / b)
        below_second = lay.cols[2, 1:] + lay.gap
        redo = [mx.sum(axis=1) + sigma * rest[0], (mx * lay.cols[0, 1:]).sum(axis=1) + sigma * rest[1],
                (mx * lay.cols[1, 1:]).sum(axis=1) + sigma * rest[2],
                (mx * below_second).sum(axis=1) + sigma * (rest[3] + lay.gap * rest[0])]
        s, s_c, s_cc, s_b = (np.where(low, r, o) for r, o in zip(redo, (s, s_c, s_cc, s_b)))
    s = np.where(lay.unique, s, 1.0)
    gain = s_c / s
    return s_b / (b * s) - np.log(s / (lay.n - 1)), gain, s_cc / s - gain * gain

def _moments(b, s, s_c, s_cc, s_below, s_sq, log_s, mean_below_peak) -> dict:
    """Gain, KL, reverse KL, variance and ESS of a prompt's tilt from its sums of x = q e^{(r-max)/β}
    times 1, centred r, its square and r - max, of x², and log of the normalised Σ x."""
    gain = s_c / s
    return {
        "gain": gain,
        "kl": np.maximum(s_below / (b * s) - log_s, 0.0),  # Σ w (r - max)/β - log s
        "kl_reverse": np.maximum(log_s - mean_below_peak / b, 0.0),
        "variance": np.maximum(s_cc / s - gain * gain, 0.0),
        "ess": s * s / s_sq,
    }


def _in_chunks(fill, n_betas: int, n_samples: int) -> None:
    """Call ``fill(lo, hi)`` over chunks of the β rows that bound peak memory, on threads when large."""
    chunk = max(1, _CHUNK_ELEMENTS // n_samples)
    bounds = [(lo, min(lo + chunk, n_betas)) for lo in range(0, n_betas, chunk)]
    if len(bounds) > 1 and n_samples * n_betas >= _PARALLEL_ELEMENTS:
        # numpy releases the GIL inside these ufuncs and BLAS calls, so threads use every core
        with ThreadPoolExecutor(_THREADS) as pool:
            list(pool.map(lambda lh: fill(*lh), bounds))
    else:
        for lo, hi in bounds:
            fill(lo, hi)


def tilt(rewards, beta, groups: Groups | None = None, base_probs=None) -> Tilt:
    r"""Gain, KL, reverse KL, tilted variance and ESS of :math:`\pi_\beta` for every prompt and β.

    - gain :math:`\Delta = E_{\pi_\beta}[r] - E_{\pi_0}[r]`
    - KL :math:`K = \sum_i w_i \log(w_i/q_i) = E_{\pi_\beta}[r]/\beta - \log Z_\beta`
    - reverse KL :math:`K^- = \log Z_\beta - E_{\pi_0}[r]/\beta`
    - ESS :math:`1/\sum_i w_i^2` (for base samples, :math:`q_i = 1/n`)
    """
    return TiltedSamples(rewards, groups, base_probs).at(beta)


def kl_variance(rewards, beta, groups: Groups | None = None, base_probs=None) -> np.ndarray:
    r"""Delta-method variance of each prompt's plug-in KL at fixed β (:meth:`TiltedSamples.kl_variance`), ``(B, P)``."""
    return TiltedSamples(rewards, groups, base_probs).kl_variance(beta)


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
