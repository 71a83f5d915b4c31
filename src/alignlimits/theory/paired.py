r"""The paired bootstrap over held-out prompts, and the frontier read on each of its replicates.

One design serves every interval that involves the frontier: a point's (:mod:`alignlimits.theory.comparison`),
the frontier's own at each KL budget (:meth:`~alignlimits.theory.frontier.Frontier.evaluate`, the band of
:func:`frontier_band`) and the objective's ceiling. Its footing:

- ``"prompts"`` (the default from ``MIN_PROMPTS_TO_RESAMPLE`` prompts on): prompts resampled with
  replacement, the prompts a sample of a population. Each prompt's samples stay as they are: resampling
  them as well would count their noise twice (it is already in the spread of the prompt means);
- ``"samples"`` (fewer prompts, where resampling prompts means nothing): the prompts held fixed, the
  samples resampled with replacement within each prompt; the intervals are about these prompts only.

Every interval is ``estimate ± t·se`` with the bootstrap se (:meth:`_Design.interval`), not a percentile
one: replicates of order-statistic and ratio estimators on resampled data are biased (resampling ties the
top samples) while their spread is right.

A replicate's frontier is its own tilt of the (resampled) base samples on the frontier's β nodes, read at
any KL by cubic Hermite interpolation in K with the exact slope :math:`d\Delta^*/dK = \beta`. Its
bias-corrected frontier adds, at the same KL, the fixed-KL correction
(:func:`~alignlimits.theory.frontier_solve.fixed_kl_correction`) of the replicate's own samples at the
nodes, read linearly in K, so the correction's own noise is counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from alignlimits.errors import AlignLimitsError
from alignlimits.theory.frontier_solve import fixed_kl_correction, fixed_kl_parts, read_linear
from alignlimits.theory.groups import Groups
from alignlimits.theory.tilt import TiltedSamples

FOOTINGS = ("auto", "prompts", "samples")
MIN_PROMPTS_TO_RESAMPLE = 10
MAX_UNDEFINED = 0.1
"""Above this share of undefined (NaN) replicates, an interval is undefined."""


def choose_footing(n_prompts: int, footing: str = "auto") -> str:
    """``"prompts"`` from ``MIN_PROMPTS_TO_RESAMPLE`` prompts on, ``"samples"`` below (for ``"auto"``)."""
    if footing not in FOOTINGS:
        raise AlignLimitsError(f"footing must be one of {', '.join(FOOTINGS)}, not {footing!r}")
    if footing != "auto":
        return footing
    return "prompts" if n_prompts >= MIN_PROMPTS_TO_RESAMPLE else "samples"


def _spread(replicates: np.ndarray) -> np.ndarray:
    """Standard deviation (ddof 1) over the last axis of the finite replicates; NaN unless 90% of them are finite."""
    finite = np.isfinite(replicates)
    k = finite.sum(axis=-1)
    mean = np.where(finite, replicates, 0.0).sum(axis=-1) / np.maximum(k, 1)
    var = (np.where(finite, replicates - mean[..., None], 0.0) ** 2).sum(axis=-1) / np.maximum(k - 1, 1)
    return np.where(k >= (1 - MAX_UNDEFINED) * replicates.shape[-1], np.sqrt(var), np.nan)


@dataclass(frozen=True)
class _Design:
    """The replicates of one comparison: prompt weights (R, P), rows summing to 1, and the RNG of the within-prompt resamples."""

    footing: str
    weights: np.ndarray
    rng: np.random.Generator
    confidence: float

    @classmethod
    def make(cls, n_prompts: int, footing: str, n_bootstrap: int, confidence: float, random_state) -> "_Design":
        if n_bootstrap < 2:
            raise AlignLimitsError(f"a bootstrap needs at least 2 replicates (got n_bootstrap={n_bootstrap})")
        if not 0 < confidence < 1:
            raise AlignLimitsError(f"confidence must lie strictly between 0 and 1 (got {confidence})")
        rng = np.random.default_rng(random_state)
        footing = choose_footing(n_prompts, footing)
        if footing == "prompts":
            weights = rng.multinomial(n_prompts, np.full(n_prompts, 1.0 / n_prompts), size=n_bootstrap) / n_prompts
        else:
            weights = np.full((n_bootstrap, n_prompts), 1.0 / n_prompts)
        return cls(footing, weights, rng, confidence)

    @property
    def n_bootstrap(self) -> int:
        return self.weights.shape[0]

    def within(self, groups: Groups) -> tuple[np.ndarray, Groups] | None:
        """Flat indices (R·N,) of R resamples within each prompt and their stacked groups; None on the prompt footing."""
        if self.footing == "prompts":
            return None
        R = self.n_bootstrap
        start, size = groups.expand(groups.starts), groups.expand(groups.sizes)
        idx = start + np.minimum(np.floor(self.rng.random((R, groups.n_total)) * size), size - 1).astype(np.int64)
        return idx.ravel(), Groups(np.tile(groups.sizes, R))

    def reduce(self, per_prompt: np.ndarray) -> np.ndarray:
        """Replicate means of per-prompt values (..., R, P), or (..., 1, P) when every replicate has the same: (..., R)."""
        if per_prompt.shape[-2] == 1:
            return per_prompt[..., 0, :] @ self.weights.T
        return (per_prompt * self.weights).sum(axis=-1)

    def t_and_scale(self, units: tuple[Groups, ...]) -> tuple[float, float]:
        r"""The t quantile and the se's scale of :meth:`interval`: the bootstrap se of a mean of m units is the
        plug-in one, short of the unbiased one by :math:`\sqrt{(m-1)/m}`, so it is scaled back, and t has
        m − 1 degrees of freedom: m = P prompts on the prompt footing; on the sample footing, the fewest
        samples of a prompt among ``units`` for the scale and :math:`\sum_p (n_p - 1)` (the fewest over
        ``units``) for t."""
        if self.footing == "prompts":
            m = df = self.weights.shape[1] - 1
        else:
            m = min(int(g.sizes.min()) for g in units) - 1
            df = min(g.n_total - g.n_groups for g in units)
        scale = float(np.sqrt((m + 1) / m)) if m > 0 else 1.0
        return float(stats.t.ppf(0.5 + self.confidence / 2, max(df, 1))), scale

    def interval(self, estimate, replicates, units: tuple[Groups, ...]) -> tuple[np.ndarray, np.ndarray]:
        """``estimate ± t·se`` and se (NaN where over 10% of the replicates are): se the replicates' standard
        deviation (last axis) times the scale of :meth:`t_and_scale`."""
        t, scale = self.t_and_scale(units)
        se = _spread(replicates) * scale
        half = t * se
        return np.stack([estimate - half, estimate + half], axis=-1), se

    def describe(self, what: str) -> str:
        P, R, level = self.weights.shape[1], self.n_bootstrap, f"{100 * self.confidence:g}%"
        how = f"{level} interval = estimate ± t·(bootstrap se), {R} replicates"
        if self.footing == "prompts":
            return (f"paired bootstrap over the {P} held-out prompts, resampled with replacement (a sample of a "
                    f"population of prompts), each prompt's {what} moving together; {how}, se scaled by √(P/(P−1)), "
                    f"t with {P - 1} df")
        return (f"paired bootstrap with the {P} held-out prompts held fixed (too few to resample): {what} resampled "
                f"with replacement within each prompt; {how}, se scaled by √(n/(n−1)); about these prompts only")


# ---------------------------------------------------------------- the frontier on each replicate
def _top_node(rewards: np.ndarray, groups: Groups, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""Per prompt, the plain curve's β → 0 limit (all mass on the top atoms):
    :math:`K = -\log \pi_0(r = \max r)`, :math:`\Delta = \max r - E_{\pi_0} r`."""
    top = groups.max(rewards)
    return -np.log(groups.sum(q * (rewards == groups.expand(top)))), top - groups.sum(q * rewards)


def _read_curve(K: np.ndarray, D: np.ndarray, slopes: np.ndarray, x: np.ndarray, beyond: np.ndarray) -> np.ndarray:
    r"""Δ at KL ``x`` (R,) on each replicate's curve, nodes K, D (R, G) with K ascending and slopes dΔ/dK (G,).

    Cubic Hermite in K between nodes; below the first node :math:`\Delta_0\sqrt{x/K_0}` (the small-KL
    limit :math:`\sqrt{2\sigma^2 K}`); 0 at x ≤ 0; ``beyond`` (R,) past the last node.
    """
    rows, G = np.arange(K.shape[0]), K.shape[1]
    idx = np.clip((K < x[:, None]).sum(axis=1), 1, G - 1)
    k0, k1, f0, f1 = K[rows, idx - 1], K[rows, idx], D[rows, idx - 1], D[rows, idx]
    h = k1 - k0
    t = np.clip(np.where(h > 0, (x - k0) / np.where(h > 0, h, 1.0), 0.0), 0.0, 1.0)
    t2, t3 = t * t, t * t * t
    out = ((2 * t3 - 3 * t2 + 1) * f0 + (t3 - 2 * t2 + t) * h * slopes[idx - 1]
           + (-2 * t3 + 3 * t2) * f1 + (t3 - t2) * h * slopes[idx])
    out = np.where(x < K[:, 0], D[:, 0] * np.sqrt(np.maximum(x, 0.0) / K[:, 0]), out)
    return np.where(x > K[:, -1], beyond, out)


class _FrontierReplicates:
    """The frontier's replicates on a design: base means and curves per replicate, read at any KL.

    On the prompt footing (and for an exact frontier) every replicate reweights the frontier's own
    per-prompt node values, so nothing is recomputed (a streamed frontier works too); on the sample footing
    the resampled base samples of every replicate are tilted at the frontier's β nodes.
    """

    def __init__(self, frontier, design: _Design):
        if frontier.budget != "shared":
            raise AlignLimitsError("points are compared with the shared-β frontier (a budget on the prompt-averaged KL); "
                                   "fit it with budget='shared'")
        self.frontier, self.design = frontier, design
        resample = None if frontier.exact_ else design.within(frontier.groups_)
        if resample is None:
            self.rewards, self.groups = frontier.rewards_, frontier.groups_
            self.shape = (1, frontier.n_prompts_)
            self.base_mean = np.asarray(frontier.base_means_, float).reshape(self.shape)
            self._samples = None
        else:
            idx, g = resample
            self.rewards, self.groups = frontier.rewards_[idx], g  # the base samples of every replicate, stacked
            self.shape = (design.n_bootstrap, frontier.n_prompts_)
            self.base_mean = self.base_means(self.rewards, g).reshape(self.shape)
            self._samples = TiltedSamples(self.rewards, g)
        self._curves, self._values = {}, {}

    def _node_values(self, debiased: bool) -> dict:
        """Per prompt at the β nodes (G, R·P or P): KL, gain and tilted variance, the top-atom limit (R·P or P);
        with ``debiased`` also the Lagrangian's jackknife correction and the plug-in KL's variance (each computed
        once)."""
        f, betas, out = self.frontier, np.asarray(self.frontier.curve_["beta"], float), self._values
        if self._samples is None and not out:
            t = f.nodes_["tilt"]
            out.update(k_top=f.max_kl_per_prompt_, d_top=f.top_gain_per_prompt_, kl=t.kl, gain=t.gain,
                       variance=t.variance, lag=f.nodes_["lag"], kl_var=f.nodes_["kl_variance"])
        elif not out:
            k_top, d_top = _top_node(self.rewards, self.groups, self.groups.expand(1.0 / self.groups.sizes))
            t = self._samples.at(betas)
            out.update(k_top=k_top, d_top=d_top, kl=t.kl, gain=t.gain, variance=t.variance)
        if debiased and "lag" not in out:
            out["lag"], out["kl_var"] = fixed_kl_parts(self._samples, betas)
        return out

    def curve(self, debiased: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """Each replicate's plain curve: K (R, G+1) made non-decreasing, Δ (R, G+1) and the slopes dΔ/dK = β (G+1,),
        ending with the top-atom limit; and with ``debiased`` the fixed-KL correction at its first G nodes
        (R, G), else None. An exact frontier has no correction."""
        debiased = debiased and not self.frontier.exact_
        if debiased not in self._curves:
            betas = np.asarray(self.frontier.curve_["beta"], float)
            v = self._node_values(debiased)

            def reduce(x):  # (G, R·P or P) -> (R, G)
                return self.design.reduce(np.asarray(x).reshape(-1, *self.shape)).T

            K = np.hstack([reduce(v["kl"]), reduce(v["k_top"][None])])
            D = np.hstack([reduce(v["gain"]), reduce(v["d_top"][None])])
            K = np.maximum.accumulate(K, axis=1)
            C = None
            if debiased:
                C = fixed_kl_correction(reduce(v["lag"]), reduce(v["kl_var"]), reduce(v["variance"]), betas[None, :],
                                        self.frontier.n_prompts_)
            self._curves[debiased] = (K, D, np.concatenate([betas, [0.0]]), C)
        return self._curves[debiased]

    @staticmethod
    def base_means(rewards: np.ndarray, groups: Groups, base_probs=None) -> np.ndarray:
        """Base mean reward per prompt."""
        q = groups.expand(1.0 / groups.sizes) if base_probs is None else base_probs
        return groups.sum(q * rewards)

    def per_prompt(self, values: np.ndarray) -> np.ndarray:
        """A law's values on the stacked base samples (..., R·P or P), shaped (..., R|1, P) for ``reduce``."""
        return values.reshape(*values.shape[:-1], *self.base_mean.shape)

    def gain_at(self, kl: np.ndarray, debiased: bool) -> np.ndarray:
        """Each replicate's frontier gain at its own KL (R,): plain (its top gain past its reach) or bias-corrected
        (the plain one plus its correction read linearly in K; NaN past its last β node)."""
        K, D, slopes, C = self.curve(debiased)
        plain = _read_curve(K, D, slopes, kl, D[:, -1])
        return plain if C is None else plain + read_linear(K[:, :-1], C, kl)


def frontier_gain(frontier, kl, debiased: bool = False) -> np.ndarray:
    """The frontier's gain (plain or bias-corrected) at any KL: 0 at KL ≤ 0, reliable or not, held at its value
    next to the largest attainable KL beyond it (the plain one); NaN where the bias-corrected curve does not
    reach the KL."""
    kl = np.atleast_1d(np.asarray(kl, dtype=np.float64))
    out = np.zeros(kl.shape)
    inside = kl > 0
    if inside.any():
        capped = np.minimum(kl[inside], frontier.max_kl_ * (1 - 1e-9))
        out[inside] = frontier.gain_at_kl(capped, extrapolate=True, debiased=debiased)
    return out


def frontier_label(frontier, debiased: bool) -> str:
    """Which frontier judged a point, in words."""
    if frontier.exact_:
        return "the exact frontier (base probabilities known)"
    return ("the bias-corrected frontier (gain_debiased: fixed-KL jackknife)" if debiased
            else "the plain frontier (ratio estimator, exact on the empirical distribution)")


@dataclass(frozen=True)
class Band:
    """The frontier with its interval at KL budgets, on a comparison's footing."""

    kl: np.ndarray
    gain: np.ndarray
    gain_ci: np.ndarray
    footing: str

    def to_list(self) -> list[dict]:
        """The ``frontier_band`` JSON: one ``{kl, gain, lo, hi}`` per budget."""
        return [{"kl": float(k), "gain": float(g), "lo": float(lo), "hi": float(hi)}
                for k, g, (lo, hi) in zip(self.kl, self.gain, self.gain_ci)]


def band_replicates(replicates: _FrontierReplicates, kls, debiased: bool) -> np.ndarray:
    """The frontier's gain at each KL budget on every replicate: (E, R)."""
    R = replicates.design.n_bootstrap
    return np.stack([replicates.gain_at(np.full(R, k), debiased) for k in np.atleast_1d(kls)])


def frontier_band(frontier, kls, *, debiased: bool = False, footing: str = "auto", confidence: float = 0.95,
                  n_bootstrap: int = 200, random_state=0) -> Band:
    """The frontier's gain at each KL budget with its interval, bootstrapped on the footing of the points compared
    with it (:func:`~alignlimits.theory.comparison.compare_policy`, :func:`~alignlimits.theory.comparison.compare_law`
    with the same ``footing``); :meth:`~alignlimits.theory.frontier.Frontier.evaluate` gives the same intervals."""
    kls = np.atleast_1d(np.asarray(kls, dtype=np.float64))
    design = _Design.make(frontier.n_prompts_, footing, n_bootstrap, confidence, random_state)
    gain = frontier_gain(frontier, kls, debiased)
    reps = band_replicates(_FrontierReplicates(frontier, design), kls, debiased)
    ci, _ = design.interval(gain, reps, (frontier.groups_,))
    return Band(kls, gain, ci, design.describe("base samples") + "; " + frontier_label(frontier, debiased))
