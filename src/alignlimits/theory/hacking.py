r"""Proxy rewards, reward hacking and reward ensembles: the project's one hacking-curve engine.

With a proxy :math:`\hat r = r + e`, the proxy-optimal policy
:math:`\hat\pi_\beta \propto \pi_0 e^{\hat r/\beta}` has true (gold) gain
:math:`\mathrm{Cov}_{\pi_0}(r, e^{\hat r/\beta}) / E_{\pi_0}[e^{\hat r/\beta}]`. The
**hacking gap** at β is the gold frontier (:class:`~alignlimits.theory.frontier.Frontier`) at the
same KL minus that gain; the **objective loss** is :math:`\beta\,\mathrm{KL}(\hat\pi_\beta\|\pi_\beta)`,
what the proxy costs in the regularised objective :math:`E_\pi r - \beta\,\mathrm{KL}(\pi\|\pi_0)`.
Both grow with the error and as β falls (Gaussian case in closed form: :func:`gaussian_error_gap`).

:class:`CurveEvaluator` computes every curve of proxy signals against one gold reward on a fixed set of
prompts, with paired bootstrap replicates over prompts; :func:`summarise`, :func:`summarise_at_kl`,
:func:`average_curves` and :func:`compare` turn replicates into rows, intervals and verdicts, and
:func:`error_checks` / :func:`ensemble_checks` test the orderings the theory expects.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from alignlimits.errors import AlignLimitsError
from alignlimits.theory.best_of_n import bon_empirical_reward, bon_expected_reward, bon_kl_bound, bon_kl_empirical
from alignlimits.theory.frontier import Frontier
from alignlimits.theory.groups import Groups
from alignlimits.theory.planning import beta_grid
from alignlimits.theory.tilt import tilt

AGGREGATES = ("mean", "min", "uwo")
TILT_KEYS = ("beta", "kl", "proxy_gain", "gold_gain", "optimal_gold_gain", "gap", "objective_loss")
BON_KEYS = ("n", "kl_bound", "kl_empirical", "proxy_gain", "gold_gain", "gold_gain_empirical", "gold_gain_by_gold",
            "optimal_gold_gain", "gap")
DEFAULT_KL_GRID = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6)
#: the hacking curves' β: the gold frontier's β at these fractions of its largest attainable KL
HACK_KL_FRACTIONS = tuple(np.geomspace(1 / 64, 0.9, 11))


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


def gaussian_error_gap(beta, sigma_r: float, sigma: float) -> dict:
    r"""Closed form for Gaussian gold :math:`r \sim N(\mu, \sigma_r^2)` and an independent Gaussian error of sd σ.

    The proxy tilt is Gaussian in (r, e), shifted by :math:`(\sigma_r^2, \sigma^2)/\beta`, so
    :math:`\mathrm{KL}(\hat\pi_\beta\|\pi_0) = (\sigma_r^2 + \sigma^2)/(2\beta^2)`, gold gain
    :math:`\sigma_r^2/\beta`, frontier there :math:`\sqrt{2\sigma_r^2\,\mathrm{KL}} = \sigma_r\sqrt{\sigma_r^2+\sigma^2}/\beta`:
    gap :math:`\sigma_r(\sqrt{\sigma_r^2+\sigma^2} - \sigma_r)/\beta`, objective loss
    :math:`\beta\,\mathrm{KL}(\hat\pi_\beta\|\pi_\beta) = \sigma^2/(2\beta)`.
    """
    beta = np.asarray(beta, dtype=np.float64)
    total = np.sqrt(sigma_r**2 + sigma**2)
    return {"kl": total**2 / (2 * beta**2), "gold_gain": sigma_r**2 / beta,
            "gap": sigma_r * (total - sigma_r) / beta, "objective_loss": sigma**2 / (2 * beta)}


def hacking_betas(frontier: Frontier, fractions=HACK_KL_FRACTIONS) -> np.ndarray:
    r"""The hacking curves' default β grid (descending): :func:`~alignlimits.theory.planning.beta_grid` at
    ``fractions`` of the gold frontier's largest attainable KL, from gentle tilts to nearly the argmax."""
    return np.sort(beta_grid(frontier, np.asarray(fractions) * frontier.max_kl_, digits=3))[::-1]


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


@dataclass(frozen=True)
class Intervals:
    """Expanded percentile intervals (:func:`expanded_tail`) from replicates over ``n_units`` prompts."""

    confidence: float
    n_units: int

    @property
    def tail(self) -> float:
        return expanded_tail(self.n_units, self.confidence)

    def bounds(self, replicates: np.ndarray) -> np.ndarray:
        """Lower and upper ends over axis 0 (NaN replicates left out), shape ``(2, ...)``."""
        return np.nanquantile(replicates, [self.tail, 1 - self.tail], axis=0)


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


def _hermite_at(K: np.ndarray, D: np.ndarray, S: np.ndarray, q: np.ndarray) -> np.ndarray:
    r"""Row by row, the curve through nodes (K ascending, D) with slopes S = dD/dK, read at q: cubic Hermite
    :math:`h_{00}D_0 + h_{10}hS_0 + h_{01}D_1 + h_{11}hS_1` in each interval; flat past the last node."""
    rows = np.arange(K.shape[0])[:, None]
    idx = np.clip((K[:, None, :] < q[:, :, None]).sum(axis=2), 1, K.shape[1] - 1)
    k0, k1, d0, d1 = K[rows, idx - 1], K[rows, idx], D[rows, idx - 1], D[rows, idx]
    h = np.maximum(k1 - k0, 1e-300)
    t = np.clip((q - k0) / h, 0.0, 1.0)
    t2, t3 = t * t, t * t * t
    out = (2 * t3 - 3 * t2 + 1) * d0 + (t3 - 2 * t2 + t) * h * S[rows, idx - 1] + (3 * t2 - 2 * t3) * d1 \
        + (t3 - t2) * h * S[rows, idx]
    return np.where(q <= 0, 0.0, out)


class CurveEvaluator:
    r"""Curves of proxy signals against gold on a fixed set of prompts, with paired bootstrap replicates.

    The gold frontier is :class:`~alignlimits.theory.frontier.Frontier` fitted on ``gold``: its β nodes,
    each prompt's KL and gain there (so a replicate's frontier is the prompt-weighted mean), and the ends
    (0 at KL 0; each prompt's top reward at its largest KL, flat beyond). Between nodes the frontier is cubic
    Hermite in KL with its exact slope :math:`d\Delta^*/d\varepsilon = \beta` (true of every prompt's tilt, so
    of any prompt-weighted mean), within 1e-4 of :meth:`Frontier.gain_at_kl`'s exact solve, which gives row 0.

    Row 0 of every returned array is the point estimate (all prompts weighted equally); rows 1..R are
    bootstrap replicates (prompts resampled with replacement, the same for every signal), so differences
    between curves are paired. ``betas=None``: :func:`hacking_betas` of this frontier.
    """

    def __init__(self, gold, prompt_ids, betas=None, bon_ns=(1,), n_bootstrap: int = 200, random_state: int = 0,
                 kl_grid=DEFAULT_KL_GRID, confidence: float = 0.95):
        gold = np.asarray(gold, dtype=np.float64)
        self.gold_frontier = Frontier(n_bootstrap=0).fit(gold, prompt_ids)
        f = self.gold_frontier
        self.groups, self.order, self.prompts = Groups.from_labels(np.asarray(prompt_ids))
        self.gold, self.n = f.rewards_, gold.size
        self.betas = hacking_betas(f) if betas is None else np.asarray(betas, dtype=np.float64)
        self.bon_ns = np.asarray(bon_ns, dtype=np.int64)
        self.kl_grid = np.asarray(kl_grid, dtype=np.float64)
        P = self.groups.n_groups
        self.intervals = Intervals(confidence, P) if P > 1 else None
        rng = np.random.default_rng(random_state)
        boots = rng.multinomial(P, np.full(P, 1.0 / P), size=n_bootstrap) / P
        self.weights = np.vstack([np.full((1, P), 1.0 / P), boots])  # (R+1, P)
        self.base_gold = self.groups.mean(self.gold)
        self._nodes_of_frontier()
        bon_gold = bon_expected_reward(self.gold, self.bon_ns, self.groups) - self.base_gold  # (N, P)
        self._bon_by_gold = self.weights @ bon_gold.T

    def _nodes_of_frontier(self) -> None:
        """Each replicate's frontier nodes: KL 0, the Frontier's β nodes, the β → 0 end."""
        f, g, W = self.gold_frontier, self.groups, self.weights
        nodes = f.curve_["beta"]  # descending β: ascending KL
        t = tilt(self.gold, nodes, g)
        K = np.vstack([np.zeros((1, g.n_groups)), t.kl, f.max_kl_per_prompt_[None]])
        D = np.vstack([np.zeros((1, g.n_groups)), t.gain, (g.max(self.gold) - self.base_gold)[None]])
        self._K = np.maximum.accumulate(W @ K.T, axis=1)  # (R+1, G+2)
        self._D = np.maximum.accumulate(W @ D.T, axis=1)
        # slopes: β at the nodes, 0 at the β → 0 end; from KL 0 to the first node, the secant
        S = np.broadcast_to(np.concatenate([[0.0], nodes, [0.0]]), self._K.shape).copy()
        S[:, 0] = self._D[:, 1] / np.maximum(self._K[:, 1], 1e-300)
        self._S = S

    def frontier(self, kl: np.ndarray) -> np.ndarray:
        """Gold frontier gain at each replicate's KL: ``kl`` has shape (R+1, ...). Row 0 (the point estimate) is
        :meth:`Frontier.gain_at_kl`'s exact solve (0 at KL 0, the top gain from the largest attainable KL on);
        the replicates are read off their nodes (:meth:`__init__`). NaN stays NaN."""
        kl = np.asarray(kl, dtype=np.float64)
        flat = np.nan_to_num(kl.reshape(kl.shape[0], -1), nan=0.0)
        gains = _hermite_at(self._K[1:], self._D[1:], self._S[1:], flat[1:])
        f, first = self.gold_frontier, flat[0]
        exact = np.where(first > 0, f.max_gain_, 0.0)
        inside = (first > 0) & (first < f.max_kl_ * (1 - 1e-9))
        if inside.any():
            exact[inside] = f.gain_at_kl(first[inside], extrapolate=True)
        return np.where(np.isnan(kl), np.nan, np.vstack([exact[None], gains]).reshape(kl.shape))

    def frontier_points(self) -> list[dict]:
        """The gold frontier at its β nodes (the JSON's ``gold_frontier``)."""
        c = self.gold_frontier.curve_
        return [{"kl": float(k), "gain": float(d)} for k, d in zip(c["kl"], c["gain"])]

    def _sorted(self, proxy) -> np.ndarray:
        proxy = np.asarray(proxy, dtype=np.float64)
        if proxy.size != self.n:
            raise AlignLimitsError(f"gold and proxy differ in length ({self.n} vs {proxy.size}); they must score the same samples")
        return proxy[self.order]

    def tilt_curves(self, proxy) -> dict[str, np.ndarray]:
        """The proxy tilt per β (:data:`TILT_KEYS`), and its gold gain and gap read at ``kl_grid``."""
        p = self._sorted(proxy)
        pt = proxy_tilt(self.gold, p, self.betas, self.groups)
        W = self.weights
        out = {k: W @ getattr(pt, k).T for k in ("kl", "proxy_gain", "gold_gain", "objective_loss")}
        out["optimal_gold_gain"] = self.frontier(out["kl"])
        out["gap"] = out["optimal_gold_gain"] - out["gold_gain"]
        out["beta"] = np.broadcast_to(self.betas, out["kl"].shape)
        out["gold_gain_at_kl"] = self._at_kl(p)
        out["gap_at_kl"] = self.frontier(np.broadcast_to(self.kl_grid, out["gold_gain_at_kl"].shape)) - out["gold_gain_at_kl"]
        return out

    def _at_kl(self, p: np.ndarray) -> np.ndarray:
        """The tilt's gold gain read at the fixed KLs of ``kl_grid`` (NaN where it never gets there).

        On a β grid of its own, scaled to the proxy's spread, so that every proxy reaches the same
        KLs: comparisons free of how far each proxy moves the policy at a given β.
        """
        g, W = self.groups, self.weights
        spread = float(np.sqrt(g.mean((p - g.expand(g.mean(p))) ** 2).mean())) or 1.0
        dense = proxy_tilt(self.gold, p, spread * np.logspace(1.5, -3, 40), g)
        kl_d, gold_d = W @ dense.kl.T, W @ dense.gold_gain.T
        at = np.full((W.shape[0], self.kl_grid.size), np.nan)
        for r in range(W.shape[0]):
            k = np.concatenate([[0.0], kl_d[r]])
            d = np.concatenate([[0.0], gold_d[r]])
            o = np.argsort(k, kind="stable")
            at[r] = np.interp(self.kl_grid, k[o], d[o], right=np.nan)
        return at

    def bon_curves(self, proxy) -> dict[str, np.ndarray]:
        r"""Best-of-N selected by ``proxy``, scored by gold (:data:`BON_KEYS`).

        ``gold_gain`` (and ``proxy_gain``): the unbiased order-statistics estimate (sampling
        without replacement). ``gap`` stands on the empirical distribution alone: the empirical
        frontier at the exact KL of the best-of-N-by-proxy law
        :math:`p_a = F_a^N - F_{a-1}^N` (proxy atoms, ties merged) minus that law's gold gain
        ``gold_gain_empirical``; no law on the n samples beats the empirical frontier at its KL.
        """
        p = self._sorted(proxy)
        g, W = self.groups, self.weights
        per_prompt = {
            "gold_gain": bon_expected_reward(self.gold, self.bon_ns, g, sort_by=p) - self.base_gold,
            "gold_gain_empirical": bon_empirical_reward(self.gold, self.bon_ns, g, sort_by=p) - self.base_gold,
            "proxy_gain": bon_expected_reward(p, self.bon_ns, g) - g.mean(p),
            "kl_empirical": bon_kl_empirical(p, self.bon_ns, g),
        }
        out = {k: W @ v.T for k, v in per_prompt.items()}
        out["gold_gain_by_gold"] = self._bon_by_gold
        out["optimal_gold_gain"] = self.frontier(out["kl_empirical"])
        out["gap"] = out["optimal_gold_gain"] - out["gold_gain_empirical"]
        shape = out["gold_gain"].shape
        out["n"] = np.broadcast_to(self.bon_ns.astype(float), shape)
        out["kl_bound"] = np.broadcast_to(bon_kl_bound(self.bon_ns), shape)
        return out


def hacking_curve(gold, proxy, beta=None, prompt_ids=None) -> dict:
    """Per β (shared by all prompts), the point estimates of the ``hacking`` JSON's keys (:data:`TILT_KEYS`), as
    arrays: :meth:`CurveEvaluator.tilt_curves` without replicates."""
    ids = np.zeros(np.size(gold), dtype=np.int64) if prompt_ids is None else prompt_ids
    curve = CurveEvaluator(gold, ids, beta, n_bootstrap=0).tilt_curves(proxy)
    return {k: curve[k][0] for k in TILT_KEYS}


def average_curves(curves: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Element-wise mean of several curves' replicate arrays (the average over proxies, paired by replicate)."""
    return {k: np.mean([c[k] for c in curves], axis=0) for k in curves[0]}


def summarise(curve: dict[str, np.ndarray], keys, intervals: Intervals | None) -> list[dict]:
    """Rows of point estimates, with ``<key>_ci`` intervals from the replicates when there are any."""
    rows = []
    with_ci = intervals is not None and curve[keys[0]].shape[0] > 1
    for i in range(curve[keys[0]].shape[1]):
        row = {}
        for k in keys:
            col = curve[k][:, i]
            row[k] = int(col[0]) if k == "n" else float(col[0])
            if with_ci and k not in ("beta", "n", "kl_bound"):
                row[k + "_ci"] = [float(x) for x in intervals.bounds(col[1:])]
        rows.append(row)
    return rows


def summarise_at_kl(curve: dict[str, np.ndarray], kl_grid, intervals: Intervals) -> list[dict]:
    """Gold gain and gap at fixed KL; ``None`` where the proxy's tilts never reach that KL."""
    rows = []
    for i, kl in enumerate(kl_grid):
        row = {"kl": float(kl)}
        for k, name in (("gold_gain_at_kl", "gold_gain"), ("gap_at_kl", "gap")):
            col = curve[k][:, i]
            reps = col[1:][np.isfinite(col[1:])]
            if not np.isfinite(col[0]) or reps.size < 0.5 * (col.size - 1):
                row[name], row[name + "_ci"] = None, None
            else:
                row[name], row[name + "_ci"] = float(col[0]), [float(x) for x in intervals.bounds(reps)]
        rows.append(row)
    return rows


def compare(name: str, expected: str, diff: np.ndarray, xs, x_name: str, intervals: Intervals) -> dict:
    """Verdict on ``diff`` (R+1, B) expected to be > 0 at every x: shown, inconclusive or not shown.

    Shown: the right sign at ≥ 80% of the points, the interval above 0 at half of them or more, and nowhere
    significantly the wrong way; not shown: the right sign at fewer than half, or significantly the wrong way
    anywhere. Points whose estimate is undefined (NaN: a KL some curve never reaches) are left out."""
    finite = np.isfinite(diff[0]) & (np.isfinite(diff[1:]).mean(axis=0) >= 0.5)
    diff, xs = diff[:, finite], np.asarray(list(xs), dtype=float)[finite]
    if diff.shape[1] == 0:
        return {"claim": name, "verdict": "inconclusive", "detail": f"{expected}: no {x_name} value where both curves are defined",
                "per_point": []}
    lo, hi = intervals.bounds(diff[1:])
    point = diff[0]
    B = point.size
    right, sig, wrong_sig = int((point > 0).sum()), int((lo > 0).sum()), int((hi < 0).sum())
    if right >= 0.8 * B and sig >= B / 2 and wrong_sig == 0:
        verdict = "shown"
    elif right < B / 2 or wrong_sig > 0:
        verdict = "not shown"
    else:
        verdict = "inconclusive"
    detail = (
        f"{expected}: right direction at {right}/{B} {x_name} values, {100 * intervals.confidence:g}% interval above 0 at "
        f"{sig}/{B}" + (f", below 0 (significantly the wrong way) at {wrong_sig}/{B}" if wrong_sig else "")
    )
    return {"claim": name, "verdict": verdict, "detail": detail,
            "per_point": [{x_name: float(x), "difference": float(d), "difference_ci": [float(a), float(b)]}
                          for x, d, a, b in zip(xs, point, lo, hi)]}


def error_checks(tilts: list[dict], errors, names: list[str], ev: CurveEvaluator) -> list[dict]:
    """Over an error sweep (one averaged tilt curve per configuration, ``errors`` its error size, ``names`` how
    to say it): the gap grows with the error (largest against smallest, at equal β and at equal KL; inconclusive
    whenever the errors differ by less than 25%, since their order is then noise) and as β falls."""
    if not tilts:
        return []
    ci, betas, errors, checks = ev.intervals, ev.betas, np.asarray(errors, dtype=float), []
    lo_i, hi_i = int(np.argmin(errors)), int(np.argmax(errors))
    if lo_i != hi_i:
        checks.append(compare("gap grows with proxy error", f"gap of the largest-error proxies ({names[hi_i]}) minus that "
                              f"of the smallest-error ones ({names[lo_i]})", tilts[hi_i]["gap"] - tilts[lo_i]["gap"], betas, "beta", ci))
        checks.append(compare("at equal KL: gap grows with proxy error",
                              "gold gain of the smallest-error proxies minus that of the largest-error ones, read at the same KL",
                              tilts[lo_i]["gold_gain_at_kl"] - tilts[hi_i]["gold_gain_at_kl"], ev.kl_grid, "kl", ci))
        if errors[hi_i] < 1.25 * errors[lo_i]:
            why = (f"the configurations' errors hardly differ ({errors[lo_i]:.3g} to {errors[hi_i]:.3g}), so which of them "
                   "has the larger error is itself noise")
            for chk in checks:
                shown = chk["verdict"] == "shown"
                chk["verdict"] = "inconclusive" if shown else chk["verdict"]
                chk["detail"] += f"; inconclusive all the same: {why}" if shown else f"; besides, {why}"
        gaps = np.array([t["gap"][0] for t in tilts])  # (C, B)
        checks[0]["spearman_error_vs_gap"] = [
            {"beta": float(b), "rho": float(stats.spearmanr(errors, gaps[:, j]).statistic) if np.ptp(gaps[:, j]) > 0 else float("nan")}
            for j, b in enumerate(betas)]
    every, order = average_curves(tilts), np.argsort(betas)[::-1]  # large β first
    checks.append(compare("gap grows as β falls", "gap (averaged over all sweep proxies) at each β minus the gap at the next larger β",
                          every["gap"][:, order[1:]] - every["gap"][:, order[:-1]], betas[order[1:]], "beta", ci))
    return [{**c, "expected": True} for c in checks]


def ensemble_checks(tilt: dict, bon: dict, expected: dict[str, bool], pair: tuple[str, str] | None, ev: CurveEvaluator,
                    k: int = 4) -> list[dict]:
    """The mean of ``k`` members against the average single one, per kind of members (``tilt``/``bon``: curves
    keyed by (kind, aggregate, K); ``expected``: whether averaging that kind should help), at equal β, at equal KL
    and for best-of-N; and, for ``pair`` = (independent kind, correlated kind), independent beats correlated."""
    ci, checks = ev.intervals, []
    for kind, helps in expected.items():
        one, many = (kind, "mean", 1), (kind, "mean", k)
        if one not in tilt or many not in tilt:
            continue
        checks += [{**c, "expected": helps} for c in (
            compare(f"mean of {k} {kind} proxies has a smaller gap than the average single proxy",
                    f"average single proxy's gap minus the {k}-member mean ensemble's gap",
                    tilt[one]["gap"] - tilt[many]["gap"], ev.betas, "beta", ci),
            compare(f"at equal KL: mean of {k} {kind} proxies has a smaller gap than the average single proxy",
                    f"the {k}-member mean ensemble's gold gain minus the average single proxy's, read at the same KL (where both reach it)",
                    tilt[many]["gold_gain_at_kl"] - tilt[one]["gold_gain_at_kl"], ev.kl_grid, "kl", ci),
            compare(f"best-of-N: mean of {k} {kind} proxies has a smaller gap than the average single proxy",
                    f"average single proxy's best-of-N gap minus the {k}-member mean ensemble's",
                    bon[one]["gap"][:, 1:] - bon[many]["gap"][:, 1:], ev.bon_ns[1:], "n", ci))]
    ind, cor = ((pair[0], "mean", k), (pair[1], "mean", k)) if pair else (None, None)
    if ind in tilt and cor in tilt:
        checks += [{**c, "expected": True} for c in (
            compare(f"independent members beat {pair[1]} ones (mean of {k})",
                    f"gap of the mean of {k} {pair[1]} proxies minus that of {k} {pair[0]} ones",
                    tilt[cor]["gap"] - tilt[ind]["gap"], ev.betas, "beta", ci),
            compare(f"at equal KL: independent members beat {pair[1]} ones (mean of {k})",
                    f"gold gain of the mean of {k} {pair[0]} proxies minus that of {k} {pair[1]} ones, read at the same KL",
                    tilt[ind]["gold_gain_at_kl"] - tilt[cor]["gold_gain_at_kl"], ev.kl_grid, "kl", ci))]
    return checks
