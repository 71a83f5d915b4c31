r"""Solving the frontier for β, and its bias correction at fixed KL.

**Solving.** Every query of :class:`~alignlimits.theory.frontier.Frontier` at a KL budget or a gain is a
safeguarded Newton iteration in log β on the (prompt-averaged) tilt, with the exact derivatives
:math:`dK/d\log\beta = -\mathrm{Var}_{\pi_\beta}(r)/\beta^2` and :math:`d\Delta/d\log\beta = \beta\,dK/d\log\beta`.

**The bias-corrected frontier (fixed-KL jackknife).** The plain estimate :math:`\hat\Delta^*(\varepsilon)
= \bar\Delta(\hat\beta)`, :math:`\bar K(\hat\beta) = \varepsilon`, is biased low by O(1/n). Its
delete-one jackknife *at fixed KL* (each deletion re-solves β so that the KL stays ε) is, to second order in
a deletion's change of the curves,

.. math::

    \hat\Delta^*_{JK}(\varepsilon) = \hat\Delta^*(\varepsilon) + \overline{c^\Delta - \hat\beta c^K}(\hat\beta)
    + \frac{\widehat{\mathrm{Var}}\,\bar K(\hat\beta)}{2\,\overline{\mathrm{Var}_{\pi_\beta} r}/\hat\beta^3},

with :math:`c^\Delta, c^K` each prompt's jackknife correction of the gain and the KL at fixed β
(:meth:`~alignlimits.theory.tilt.TiltedSamples.jackknife`): the first term is the jackknife of the
Lagrangian :math:`\Delta - \beta K` at the plain β (a deletion moves the point along a curve of slope β),
the second the low bias of inverting a noisy KL curve (:math:`\widehat{\mathrm{Var}}\,\bar K = \sum_p
\widehat{\mathrm{Var}}\,\hat K_p / P^2`, :meth:`~alignlimits.theory.tilt.TiltedSamples.kl_variance`;
:math:`-d\bar K/d\beta = \overline{\mathrm{Var}_{\pi_\beta} r}/\beta^3`), which falls as 1/P with a
shared β. The second term is capped at the first's size, where the expansion fails (a tilt carried by
one or two samples, near the largest attainable KL). The per-prompt budget takes each prompt's own
terms (no 1/P). Inverting the jackknifed KL and gain curves instead, as this module did before, drops
the second term and adds an error of order :math:`(c^K)^2` that stays at any number of prompts.
"""

from __future__ import annotations

import numpy as np

from alignlimits.theory.tilt import Tilt, TiltedSamples


def _hermite(u, u0, u1, f0, f1, d0, d1, slope: bool = False):
    """Cubic Hermite interpolation on [u0, u1] from values and derivatives (all broadcastable);
    ``slope``: its derivative in u instead."""
    h = u1 - u0
    t = (u - u0) / h
    t2, t3 = t * t, t * t * t
    if slope:
        return (6 * t2 - 6 * t) * (f0 - f1) / h + (3 * t2 - 4 * t + 1) * d0 + (3 * t2 - 2 * t) * d1
    return (
        (2 * t3 - 3 * t2 + 1) * f0
        + (t3 - 2 * t2 + t) * h * d0
        + (-2 * t3 + 3 * t2) * f1
        + (t3 - t2) * h * d1
    )



def fixed_kl_parts(samples, beta, groups=None) -> np.ndarray:
    r"""Per prompt at β, stacked (2, B, P): the Lagrangian's jackknife correction at fixed β
    (:meth:`~alignlimits.theory.tilt.TiltedSamples.lagrangian_jackknife`) and the plug-in KL's variance
    (:meth:`~alignlimits.theory.tilt.TiltedSamples.kl_variance`); ``samples`` a
    :class:`~alignlimits.theory.tilt.TiltedSamples`, or flat rewards grouped by ``groups``."""
    if not isinstance(samples, TiltedSamples):
        samples = TiltedSamples(samples, groups)
    return np.stack(samples.fixed_kl_parts(beta))


def fixed_kl_correction(lag, kl_var, variance, beta, n_prompts: int) -> np.ndarray:
    r"""The fixed-KL jackknife's correction (module docstring), from prompt means of the Lagrangian's jackknife
    correction ``lag``, the plug-in KL's variance ``kl_var`` and the tilted variance ``variance`` at β:
    :math:`C = \text{lag} + \min(T, |\text{lag}|)`,
    :math:`T = (\text{kl\_var}/P) / (2\,\text{variance}/\beta^3)` with P = ``n_prompts`` (1 for one prompt
    on its own budget)."""
    lag, kl_var, variance = (np.asarray(x, dtype=np.float64) for x in (lag, kl_var, variance))
    curvature = 2 * variance / np.asarray(beta, dtype=np.float64) ** 3
    with np.errstate(divide="ignore", invalid="ignore"):
        term = np.where(curvature > 0, kl_var / n_prompts / np.where(curvature > 0, curvature, 1.0), np.inf)
    return lag + np.minimum(term, np.abs(lag))


def read_linear(K: np.ndarray, C: np.ndarray, x: np.ndarray) -> np.ndarray:
    r"""C at KL ``x`` (R,) from nodes K, C (R, G) with K ascending: linear in K between nodes,
    :math:`C_0\sqrt{x/K_0}` below the first (a correction vanishes with the gain), NaN past the last."""
    rows, G = np.arange(K.shape[0]), K.shape[1]
    idx = np.clip((K < x[:, None]).sum(axis=1), 1, G - 1)
    k0, k1 = K[rows, idx - 1], K[rows, idx]
    h = k1 - k0
    t = np.clip(np.where(h > 0, (x - k0) / np.where(h > 0, h, 1.0), 0.0), 0.0, 1.0)
    out = (1 - t) * C[rows, idx - 1] + t * C[rows, idx]
    out = np.where(x < K[:, 0], C[:, 0] * np.sqrt(np.maximum(x, 0.0) / K[:, 0]), out)
    return np.where(x > K[:, -1], np.nan, out)


def _mean_gain(t: Tilt, met: np.ndarray) -> np.ndarray:
    """The prompt mean of the gain at each budget, NaN where a budget was not met (by any prompt)."""
    return np.where(met if met.ndim == 1 else met.all(axis=1), t.gain.mean(axis=1), np.nan)



class _Solver:
    """Frontier's solving and correcting half (a mixin of :class:`~alignlimits.theory.frontier.Frontier`)."""

    def _solve_beta(
        self, targets: np.ndarray, of: str = "kl", samples: TiltedSamples | None = None, prompt_weights=None,
        start=None, debiased: bool = False,
    ) -> tuple[np.ndarray, Tilt, np.ndarray]:
        """β at which the (prompt-weighted) mean KL or gain equals each target: safeguarded Newton in log β
        (:meth:`_newton`) on ``samples`` (default: the fitted ones). Returns β, the tilt there, and whether
        each target was met (a jackknifed curve need not reach every target)."""
        return self._solve_together([self._newton(targets, of, prompt_weights, start, debiased)], samples)[0]

    def _solve_together(self, solvers: list, samples=None) -> list[tuple[np.ndarray, Tilt, np.ndarray]]:
        """Run :meth:`_newton` solvers in lockstep: each round evaluates the plain tilt once at the β of every
        solver still running (streamed samples: one pass over the data for all of them). A solver's iterates
        are those it has alone, so its answer is too."""
        samples = self._samples if samples is None else samples
        asks = {i: next(solver) for i, solver in enumerate(solvers)}
        answers: list = [None] * len(solvers)
        while asks:
            running = list(asks)
            t = samples.at(np.concatenate([asks[i] for i in running], axis=0))
            ends = np.cumsum([0] + [asks[i].shape[0] for i in running])
            for i, lo, hi in zip(running, ends[:-1], ends[1:]):
                rows = Tilt(**{k: v[lo:hi] for k, v in vars(t).items()})
                try:
                    asks[i] = solvers[i].send(rows)
                except StopIteration as done:
                    answers[i] = done.value
                    del asks[i]
        return answers

    def _newton(self, targets: np.ndarray, of: str, prompt_weights, start, debiased: bool):
        """A generator: yields the β (E,) or (E, P) at which it needs the plain tilt, is sent that tilt, and
        returns β, the tilt there and which targets were met (see :meth:`_solve_beta`).

        Both quantities fall as β grows, with exact derivatives ``dkl_dlog_beta`` and
        ``dgain_dlog_beta``. The start comes from the curve nodes unless given. ``debiased``: of the
        jackknifed curves of the fitted samples (:meth:`_debiased_at`).
        """
        per_prompt = self.budget == "per-prompt"
        w = None if prompt_weights is None else np.asarray(prompt_weights, float) / np.sum(prompt_weights)

        def reduce(x):
            if per_prompt:
                return x
            return (x.mean(axis=1) if w is None else x @ w)[:, None]

        deriv = "dkl_dlog_beta" if of == "kl" else "dgain_dlog_beta"
        u = self._nodes["u"]
        lo = np.full((targets.size, 1), u.min() - 30.0)
        hi = np.full((targets.size, 1), u.max() + 30.0)
        if start is None:
            # cubic Hermite between the curve nodes, with exact derivatives, then bisection on it
            t_nodes: Tilt = self._nodes["tilt_debiased" if debiased else "tilt"]
            f_nodes, d_nodes = reduce(getattr(t_nodes, of)), reduce(getattr(t_nodes, deriv))  # rise along nodes
            idx = np.clip((f_nodes[None, :, :] < targets[:, None, None]).sum(axis=1), 1, u.size - 1)
            cols = np.arange(f_nodes.shape[1])[None, :]
            knots = (u[idx - 1], u[idx], f_nodes[idx - 1, cols], f_nodes[idx, cols], d_nodes[idx - 1, cols], d_nodes[idx, cols])
            a, b = u[idx - 1], u[idx]  # u falls along the nodes
            for _ in range(50):
                mid = 0.5 * (a + b)
                too_big = _hermite(mid, *knots) > targets[:, None]  # too much: β must grow, root above mid
                a, b = np.where(too_big, a, mid), np.where(too_big, mid, b)
            x = 0.5 * (a + b)
        else:
            x = np.log(np.asarray(start, float)).reshape(targets.size, -1)
        tol = 1e-12 * np.maximum(1.0, np.abs(targets[:, None]))
        for _ in range(100):
            t = yield np.exp(x) if per_prompt else np.exp(x[:, 0])
            t = self._debias(t) if debiased else t
            err = reduce(getattr(t, of)) - targets[:, None]
            if np.all(np.abs(err) <= tol):
                break
            # too much KL (or gain) means β is too small: the root lies above x
            lo, hi = np.where(err > 0, x, lo), np.where(err > 0, hi, x)
            newton = x - err / np.minimum(reduce(getattr(t, deriv)), -1e-300)
            inside = (newton > lo) & (newton < hi) & np.isfinite(newton)
            x = np.where(inside, newton, 0.5 * (lo + hi))
        betas, met = np.exp(x), np.abs(err) <= 1e3 * tol
        return (betas, t, met) if per_prompt else (betas[:, 0], t, met[:, 0])

    def _debiased_at(self, beta) -> Tilt:
        """The jackknifed tilt at any β: the plain tilt plus each prompt's jackknife correction, exact
        at the curve's nodes and cubic-Hermite interpolated in log β between them (with its slopes
        there, from the variance's correction; ends held constant). The correction is O(1/n) and
        smooth, so this is the jackknife to ~1e-4 of the correction, at the cost of the plain tilt.
        The variance returned is the one the interpolated KL's slope implies, so Newton steps on it
        are exact."""
        return self._debias(self._samples.at(beta))

    def _debias(self, t: Tilt) -> Tilt:
        """The plain tilt ``t`` made the jackknifed one (:meth:`_debiased_at`)."""
        if self.exact_:
            return t
        u_nodes, corr = self._nodes["u"][::-1], {k: v[::-1] for k, v in self._nodes["correction"].items()}
        u = np.clip(np.log(t.beta), u_nodes[0], u_nodes[-1])
        hi = np.clip(np.searchsorted(u_nodes, u), 1, u_nodes.size - 1)
        lo, cols = hi - 1, np.arange(u.shape[1])[None, :]
        b0, b1 = np.exp(u_nodes[lo]), np.exp(u_nodes[hi])
        v0, v1 = corr["variance"][lo, cols], corr["variance"][hi, cols]
        out = {}
        for name, power in (("kl", 2), ("gain", 1)):
            c = corr[name]
            knots = (u, u_nodes[lo], u_nodes[hi], c[lo, cols], c[hi, cols], -v0 / b0**power, -v1 / b1**power)
            out[name] = getattr(t, name) + _hermite(*knots)
            if name == "kl":
                out["variance"] = t.variance - t.beta**2 * _hermite(*knots, slope=True)
        return Tilt(beta=t.beta, kl_reverse=t.kl_reverse, ess=t.ess, **out)

    # ---------------------------------------------------------------- the fixed-KL correction at any KL
    def _prompt_corrections(self, kls: np.ndarray) -> np.ndarray:
        """Per-prompt budget: each prompt's fixed-KL correction at KL ε (E, P), read linearly in its own KL."""
        K, C = self._correction["kl"], self._correction["c"]  # (G, P)
        E, P = kls.size, K.shape[1]
        out = read_linear(np.repeat(K.T, E, axis=0), np.repeat(C.T, E, axis=0), np.tile(kls, P))
        return out.reshape(P, E).T

    def _correction_at(self, kls) -> np.ndarray:
        """The bias-corrected frontier less the plain one at each KL (E,), read linearly in KL between the curve's
        nodes: 0 for an exact fit, NaN past the last node."""
        kls = np.atleast_1d(np.asarray(kls, dtype=np.float64))
        if self._correction is None:
            return np.zeros(kls.shape)
        if self.budget == "per-prompt":
            return self._prompt_corrections(kls).mean(axis=1)
        K, C = self._correction["kl"], self._correction["c"]
        shape = (kls.size, K.size)
        return read_linear(np.broadcast_to(K, shape), np.broadcast_to(C, shape), kls)

    def _kl_for_corrected_gain(self, gains: np.ndarray, corrected: bool = True) -> np.ndarray:
        r"""The KL ε at which the bias-corrected frontier (or, ``corrected=False``, the plain per-prompt one) gains
        each of ``gains``: safeguarded Newton in ε with slope :math:`d\Delta^*/d\varepsilon = \bar\beta` (the
        correction's slope, a few per cent of it, is left out: the steps contract all the same); inf where the
        curve never reaches the gain."""
        curve = self.curve_debiased_ if corrected else self.curve_
        known = np.isfinite(curve["gain"])
        k_nodes, g_nodes = curve["kl"][known], np.maximum.accumulate(curve["gain"][known])
        top = g_nodes[-1] if corrected else self.max_gain_
        eps = np.interp(gains, g_nodes, k_nodes)
        lo, hi = np.zeros(gains.shape), np.full(gains.shape, k_nodes[-1] if corrected else self.max_kl_)
        betas, tol, err = None, 1e-12 * np.maximum(1.0, np.abs(gains)), np.full(gains.shape, np.inf)
        for _ in range(100):
            betas, t, _ = self._solve_beta(eps, start=betas)
            err = t.gain.mean(axis=1) + (self._correction_at(eps) if corrected else 0.0) - gains
            if np.all((np.abs(err) <= tol) | (gains >= top)):
                break
            lo, hi = np.where(err < 0, eps, lo), np.where(err > 0, eps, hi)
            newton = eps - err / (betas.mean(axis=1) if betas.ndim == 2 else betas)
            eps = np.where((newton > lo) & (newton < hi), newton, 0.5 * (lo + hi))
        return np.where((np.abs(err) <= 1e3 * tol) & (gains < top), eps, np.inf)
