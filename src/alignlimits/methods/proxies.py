r"""Proxy reward models trained on gold-labelled base samples (the synthetic-gold setup).

The task's reward model is the *gold* reward; a *proxy* is a small model fitted to gold labels of
a subset of base samples, so its error against gold is known everywhere. Here a proxy is ridge
regression (closed form, numpy) on text features:

- ``features="ngram"``: hashed word 1–2-grams and character 3–5-grams of the completion (signed
  hashing into ``n_features`` buckets, sublinear counts, rows L2-normalised), plus two shape
  features: log(1 + words) and the fraction of the completion's words that occur in the prompt's
  document. Fast, no model.
- ``features="minilm"``: the all-MiniLM-L6-v2 unit embedding e(c) of the completion and the
  elementwise product e(c) ⊙ e(d) with the embedding of the prompt's document d (the summarisation
  source, or the prompt itself; see :func:`alignlimits.lm.builtin_rewards.extract_document`), so that a
  linear head can represent prompt–completion similarity; plus the same two shape features.

A proxy's error is set by how many labels it sees and how noisy they are:
:class:`GoldLabelledProxy` draws ``labels`` labelled rows from a pool (a count, or a fraction of
the pool), adds Gaussian noise of standard deviation ``noise × std(gold labels)``, resamples the
labelled rows with replacement (bootstrap) and fits :class:`RidgeProxy`. Members of an ensemble
with their own ``random_state`` get their own labelled rows, noise and resample (independent
errors); members sharing ``label_state`` see the same labelled rows with the same noise and differ
only by their resample (correlated errors).

Both estimators are scikit-learn style: ``fit`` returns ``self``, fitted attributes end in ``_``.

Beside these *trained* proxies (the realistic case, whose error is whatever the features miss), the
*controlled-error* family (:func:`controlled_error_proxies`) is gold plus Gaussian error of a chosen size
and correlation: the setting of the hacking theorems, placed on the task's real reward distribution.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from alignlimits.errors import AlignLimitsError
from alignlimits.seeding import derive_seed

FEATURES = ("ngram", "minilm")
MIN_LABELS = 8

_WORD = re.compile(r"[a-z0-9']+")


# --------------------------------------------------------------------------- features
def _hash(token: str) -> int:
    return zlib.crc32(token.encode("utf-8"))


def _shape_features(completions: Sequence[str], contexts: Sequence[str] | None) -> np.ndarray:
    words = [_WORD.findall((c or "").lower()) for c in completions]
    n_words = np.array([len(w) for w in words], dtype=np.float64)
    overlap = np.zeros(len(words))
    if contexts is not None:
        vocab_cache: dict[str, set] = {}
        for i, (w, ctx) in enumerate(zip(words, contexts)):
            if ctx not in vocab_cache:
                vocab_cache[ctx] = set(_WORD.findall((ctx or "").lower()))
            if w:
                overlap[i] = sum(t in vocab_cache[ctx] for t in w) / len(w)
    return np.stack([np.log1p(n_words), overlap], axis=1)


def ngram_features(completions: Sequence[str], contexts: Sequence[str] | None = None, n_features: int = 4096,
                   word_ngrams: tuple[int, int] = (1, 2), char_ngrams: tuple[int, int] = (3, 5)) -> np.ndarray:
    """Hashed n-gram features of each completion, shape ``(len(completions), n_features + 2)``.

    Word n-grams (lower-cased ``[a-z0-9']+`` tokens) and character n-grams (within the lower-cased
    text padded by one space) are hashed with CRC-32 into ``n_features`` signed buckets; counts are
    made sublinear (log1p of the absolute sum, sign kept) and each row is L2-normalised. Two shape
    columns follow: log(1 + words) and the fraction of words found in the context (0 without one).
    Deterministic across processes (no Python ``hash``).
    """
    if n_features < 16:
        raise AlignLimitsError(f"n-gram features need at least 16 hash buckets, got {n_features}")
    n = len(completions)
    rows, cols, signs = [], [], []
    for i, text in enumerate(completions):
        text = (text or "").lower()
        toks = _WORD.findall(text)
        grams = []
        for k in range(word_ngrams[0], word_ngrams[1] + 1):
            grams += ["w:" + " ".join(toks[j : j + k]) for j in range(len(toks) - k + 1)]
        padded = f" {' '.join(text.split())} "
        for k in range(char_ngrams[0], char_ngrams[1] + 1):
            grams += ["c:" + padded[j : j + k] for j in range(len(padded) - k + 1)]
        for g in grams:
            h = _hash(g)
            rows.append(i)
            cols.append(h % n_features)
            signs.append(1.0 if (h >> 31) & 1 else -1.0)
    X = np.zeros((n, n_features))
    if rows:
        np.add.at(X, (np.asarray(rows), np.asarray(cols)), np.asarray(signs))
    X = np.sign(X) * np.log1p(np.abs(X))
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    X /= np.where(norms > 0, norms, 1.0)
    return np.hstack([X, _shape_features(completions, contexts)])


def minilm_features(completions: Sequence[str], contexts: Sequence[str] | None = None, encoder=None) -> np.ndarray:
    """[e(c), e(c) ⊙ e(context), shape features] with e the all-MiniLM-L6-v2 unit embedding.

    Without contexts the product block is left out. ``encoder`` (a
    :class:`alignlimits.lm.builtin_rewards.MiniLMEncoder`) is loaded when not given.
    """
    if encoder is None:
        from alignlimits.lm.builtin_rewards import MiniLMEncoder

        encoder = MiniLMEncoder()
    e_c = encoder.encode(list(completions))
    blocks = [e_c]
    if contexts is not None:
        unique = list(dict.fromkeys(contexts))
        e_u = encoder.encode(unique)
        index = {u: j for j, u in enumerate(unique)}
        blocks.append(e_c * e_u[[index[c] for c in contexts]])
    blocks.append(_shape_features(completions, contexts))
    return np.hstack(blocks)


def text_features(kind: str, completions: Sequence[str], prompts: Sequence[str] | None = None, **options) -> np.ndarray:
    """Features of ``kind`` (``ngram`` or ``minilm``) for completions, with the prompts' documents as context."""
    if kind not in FEATURES:
        raise AlignLimitsError(f"unknown proxy features {kind!r}; use one of {', '.join(FEATURES)}")
    contexts = None
    if prompts is not None:
        from alignlimits.lm.builtin_rewards import extract_document

        cache: dict[str, str] = {}
        contexts = []
        for p in prompts:
            if p not in cache:
                cache[p] = extract_document(p)
            contexts.append(cache[p])
    if kind == "ngram":
        return ngram_features(completions, contexts, **options)
    return minilm_features(completions, contexts, **options)


# --------------------------------------------------------------------------- ridge
@dataclass
class RidgeProxy:
    r"""Ridge regression in closed form, the penalty chosen by leave-one-out cross-validation.

    Minimises :math:`\sum_i w_i (y_i - b - x_i^\top\theta)^2 + \alpha\|\theta\|^2` (intercept b not
    penalised). With :math:`Z = \mathrm{diag}(\sqrt w)(X - \bar x_w)` and the eigendecomposition of
    :math:`ZZ^\top` (n ≤ d, dual) or :math:`Z^\top Z` (n > d, primal), every α of the grid costs
    O(n·rank): the leave-one-out residuals are :math:`e_i / (1 - H_{ii})`, H the hat matrix (intercept
    included), and ``alpha="loo"`` takes the α of the smallest mean squared LOO residual on a grid of
    ``n_alphas`` values from 1e-6 to 10 times the largest eigenvalue. (Generalised CV is not used: with
    fewer samples than features it always picks the interpolating α → 0.) ``alpha`` a number fixes it.

    Fitted: ``coef_``, ``intercept_``, ``alpha_``, ``loo_mse_``, ``n_features_in_``.
    """

    alpha: float | str = "loo"
    n_alphas: int = 36

    def fit(self, X, y, sample_weight=None) -> "RidgeProxy":
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64).ravel()
        if X.ndim != 2 or X.shape[0] != y.size:
            raise AlignLimitsError(f"features ({X.shape}) and labels ({y.size}) do not describe the same samples")
        w = np.ones(y.size) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64).ravel()
        keep = w > 0
        X, y, w = X[keep], y[keep], w[keep]
        if keep.sum() < 2:
            raise AlignLimitsError("ridge needs at least 2 labelled samples")
        W = w.sum()
        mu = w @ X / W
        y_bar = float(w @ y / W)
        s = np.sqrt(w)
        Z = (X - mu) * s[:, None]
        t = (y - y_bar) * s
        n, d = Z.shape
        self.n_features_in_ = d
        if n <= d:
            lam, U = np.linalg.eigh(Z @ Z.T)
            ok = lam > lam.max() * 1e-10 if lam.max() > 0 else np.zeros_like(lam, bool)
            lam, U = lam[ok], U[:, ok]
            V = None
        else:
            lam, V = np.linalg.eigh(Z.T @ Z)
            ok = lam > lam.max() * 1e-10 if lam.max() > 0 else np.zeros_like(lam, bool)
            lam, V = lam[ok], V[:, ok]
            U = (Z @ V) / np.sqrt(lam)
        if lam.size == 0:  # features constant over the labelled rows: predict the mean
            self.alpha_, self.loo_mse_ = float("nan"), float("nan")
            self.coef_, self.intercept_ = np.zeros(d), y_bar
            return self
        p = U.T @ t  # coordinates of t on the left singular vectors
        if self.alpha in ("loo", "gcv"):
            grid = lam.max() * np.logspace(-6, 1, self.n_alphas)
            h = lam[:, None] / (lam[:, None] + grid[None, :])  # (r, A)
            resid = t[:, None] - U @ (p[:, None] * h)  # (n, A), in the √w-scaled space
            lev = w[:, None] / W + (U ** 2) @ h
            loo = resid / np.maximum(1.0 - lev, 1e-9)
            mse = (loo ** 2).sum(axis=0) / W
            best = int(np.argmin(mse))
            self.alpha_, self.loo_mse_ = float(grid[best]), float(mse[best])
        else:
            if not float(self.alpha) > 0:
                raise AlignLimitsError(f"ridge alpha must be positive, got {self.alpha}")
            self.alpha_, self.loo_mse_ = float(self.alpha), float("nan")
        if V is None:
            self.coef_ = Z.T @ (U @ (p / (lam + self.alpha_)))
        else:
            self.coef_ = V @ (np.sqrt(lam) * p / (lam + self.alpha_))
        self.intercept_ = float(y_bar - mu @ self.coef_)
        return self

    def predict(self, X) -> np.ndarray:
        if not hasattr(self, "coef_"):
            raise AlignLimitsError("this proxy is not fitted yet; call fit first")
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise AlignLimitsError(f"proxy was fitted on {self.n_features_in_} features, got {X.shape[-1]}")
        return X @ self.coef_ + self.intercept_


# --------------------------------------------------------------------------- gold-labelled proxies
def resolve_labels(labels, pool_size: int) -> int:
    """A label budget as a count: an int ≥ 1 (more than 1 means a count), or a fraction in (0, 1]."""
    labels = float(labels)
    if not labels > 0:
        raise AlignLimitsError(f"labels must be a positive count or a fraction in (0, 1], got {labels:g}")
    if labels <= 1.0:
        return max(1, int(round(labels * pool_size)))
    if labels != int(labels):
        raise AlignLimitsError(f"a label count must be a whole number, got {labels:g}")
    return int(labels)


@dataclass
class GoldLabelledProxy:
    """A ridge proxy fitted to ``labels`` noisy gold labels drawn from a pool of rows.

    Parameters
    ----------
    labels: a count, or a fraction of the pool (``1.0`` = every pool row).
    noise: label noise, as a multiple of the labelled gold's standard deviation.
    bootstrap: resample the labelled rows with replacement before fitting.
    random_state: seed of the resample, and of the labelled rows and noise unless ``label_state``.
    label_state: seed of the labelled rows and their noise; members sharing it have correlated errors.
    alpha: ridge penalty, or ``"loo"`` (leave-one-out on the distinct labelled rows, before the resample).
    min_labels: fewer labelled rows than this is an error.

    Fitted: ``labelled_rows_`` (indices into the arrays given to ``fit``), ``n_labels_``,
    ``noise_sd_``, ``labels_`` (the noisy labels), ``sample_weight_`` (bootstrap counts),
    ``ridge_``, ``coef_``, ``intercept_``, ``alpha_``.
    """

    labels: float = 1.0
    noise: float = 0.0
    bootstrap: bool = True
    random_state: int = 0
    label_state: int | None = None
    alpha: float | str = "loo"
    min_labels: int = MIN_LABELS
    name: str = field(default="proxy")

    def fit(self, X, gold, pool=None) -> "GoldLabelledProxy":
        X = np.asarray(X, dtype=np.float64)
        gold = np.asarray(gold, dtype=np.float64).ravel()
        if X.shape[0] != gold.size:
            raise AlignLimitsError(f"features have {X.shape[0]} rows but gold has {gold.size}; they must describe the same samples")
        pool = np.arange(gold.size) if pool is None else np.asarray(pool, dtype=np.int64)
        if not float(self.noise) >= 0:
            raise AlignLimitsError(f"label noise must be ≥ 0 (a multiple of the gold std), got {self.noise}")
        n_labels = resolve_labels(self.labels, pool.size)
        if n_labels > pool.size:
            raise AlignLimitsError(f"proxy {self.name!r} asks for {n_labels} labels but only {pool.size} training samples exist; lower --labels")
        if n_labels < self.min_labels:
            raise AlignLimitsError(
                f"proxy {self.name!r} would see {n_labels} labelled samples (labels={self.labels:g} of {pool.size} training "
                f"samples); it needs at least {self.min_labels}: use a larger --labels or sample more prompts"
            )
        label_seed = self.random_state if self.label_state is None else self.label_state
        label_rng = np.random.default_rng(derive_seed(label_seed, "proxy", "labels"))
        rows = np.sort(label_rng.choice(pool, size=n_labels, replace=False))
        y = gold[rows]
        if np.ptp(y) == 0:
            raise AlignLimitsError(f"proxy {self.name!r}: all {n_labels} labelled samples have the same gold reward; there is nothing to learn")
        self.noise_sd_ = float(self.noise * y.std())
        y = y + self.noise_sd_ * label_rng.standard_normal(n_labels)
        if self.bootstrap:
            boot_rng = np.random.default_rng(derive_seed(self.random_state, "proxy", "resample"))
            counts = np.bincount(boot_rng.integers(0, n_labels, n_labels), minlength=n_labels).astype(np.float64)
        else:
            counts = np.ones(n_labels)
        self.labelled_rows_, self.n_labels_, self.labels_, self.sample_weight_ = rows, n_labels, y, counts
        alpha = self.alpha
        if alpha in ("loo", "gcv") and self.bootstrap:
            # cross-validate on the distinct labelled rows: duplicates of a resample make it pick too small a penalty
            alpha = RidgeProxy(alpha="loo").fit(X[rows], y).alpha_
            alpha = alpha if np.isfinite(alpha) else 1.0
        self.ridge_ = RidgeProxy(alpha=alpha).fit(X[rows], y, sample_weight=counts)
        self.coef_, self.intercept_, self.alpha_ = self.ridge_.coef_, self.ridge_.intercept_, self.ridge_.alpha_
        return self

    def predict(self, X) -> np.ndarray:
        if not hasattr(self, "ridge_"):
            raise AlignLimitsError(f"proxy {self.name!r} is not fitted yet; call fit first")
        return self.ridge_.predict(X)


def proxy_error(gold, proxy, prompt_ids=None) -> dict:
    """Error of a proxy against gold: ``correlation``, ``rmse``, and ``within_prompt_correlation``.

    The within-prompt correlation (both centred on each prompt's mean) is what a tilt or best-of-N
    sees: they only compare samples of the same prompt.
    """
    gold = np.asarray(gold, dtype=np.float64)
    proxy = np.asarray(proxy, dtype=np.float64)
    if gold.shape != proxy.shape:
        raise AlignLimitsError(f"gold and proxy differ in length ({gold.size} vs {proxy.size}); they must score the same samples")

    def corr(a, b):
        sa, sb = a.std(), b.std()
        return float(((a - a.mean()) * (b - b.mean())).mean() / (sa * sb)) if sa > 0 and sb > 0 else float("nan")

    out = {"correlation": corr(gold, proxy), "rmse": float(np.sqrt(np.mean((gold - proxy) ** 2)))}
    if prompt_ids is not None:
        ids = np.asarray(prompt_ids)
        _, inv = np.unique(ids, return_inverse=True)
        counts = np.bincount(inv)

        def centre(a):
            return a - (np.bincount(inv, weights=a) / counts)[inv]

        out["within_prompt_correlation"] = corr(centre(gold), centre(proxy))
    return out


def controlled_error_proxies(gold, size: float, scale: float, k: int = 1, rho: float = 0.0, random_state: int = 0) -> np.ndarray:
    r"""K proxies of known error on the samples of ``gold``, shape ``(K, n)``:
    :math:`\hat r_k = r + \sigma_e(\sqrt{\rho}\,z_0 + \sqrt{1-\rho}\,z_k)`, every z standard normal and
    independent across samples, :math:`\sigma_e` = ``size`` × ``scale`` (the gold reward's within-prompt
    standard deviation). Members' errors have pairwise correlation ρ, so the mean of K has error variance
    :math:`\sigma_e^2(\rho + (1-\rho)/K)`: ρ = 0 independent members, ρ → 1 one shared error."""
    gold = np.asarray(gold, dtype=np.float64).ravel()
    if not size >= 0 or not scale > 0:
        raise AlignLimitsError(f"the error size must be ≥ 0 (a multiple of the gold within-prompt std), got {size}")
    if not 0 <= rho < 1:
        raise AlignLimitsError(f"the members' error correlation ρ must be in [0, 1), got {rho}")
    rng = np.random.default_rng(random_state)
    shared = rng.standard_normal(gold.size)
    own = rng.standard_normal((int(k), gold.size))
    return gold + size * scale * (np.sqrt(rho) * shared + np.sqrt(1 - rho) * own)

