r"""Best-of-N and soft best-of-N, from base samples.

Best-of-N draws N samples from :math:`\pi_0` and keeps the one of highest reward. For
continuous rewards its law is :math:`\pi_0(y) N F(r(y))^{N-1}`: the tilt of :math:`\pi_0`
by :math:`\log F(r)` with :math:`\beta = 1/(N-1)`, which is why it sits near the frontier.

Soft best-of-N (sampling-importance-resampling) draws N samples and returns :math:`y_i`
with probability :math:`\mathrm{softmax}(r_i/\beta)`; it tends to :math:`\pi_\beta` as
N grows.

All functions take flat rewards grouped by prompt (:class:`Groups`) and a grid of N;
they return arrays of shape ``(len(N), P)``.
"""

from __future__ import annotations

import numpy as np
from scipy.special import gammaln

from alignlimits.errors import AlignLimitsError
from alignlimits.theory.groups import Groups

_CHUNK_ELEMENTS = 4_000_000


def _grid(N) -> np.ndarray:
    N = np.atleast_1d(np.asarray(N))
    if N.size == 0 or (N < 1).any() or (N != np.round(N)).any():
        raise AlignLimitsError("best-of-N needs whole numbers N ≥ 1")
    return N.astype(np.int64)


def _groups(values, groups: Groups | None) -> Groups:
    return groups if groups is not None else Groups.equal(1, np.asarray(values).size)


def _check_n(N: np.ndarray, groups: Groups) -> None:
    n_min = int(groups.sizes.min())
    if N.max() > n_min:
        raise AlignLimitsError(
            f"best-of-{N.max()} needs at least {N.max()} samples per prompt, but a prompt has only {n_min}; "
            f"ask for N ≤ {n_min} or sample more"
        )


def _per_size(groups: Groups, values_sorted: np.ndarray, weights_for_size) -> np.ndarray:
    """``sum_i W_n[k, i] x_(i)`` per prompt, one matrix product per distinct group size n."""
    P = groups.n_groups
    out = None
    starts = groups.starts
    for n in np.unique(groups.sizes):
        members = np.nonzero(groups.sizes == n)[0]
        rows = (starts[members][:, None] + np.arange(n)[None, :])
        W = weights_for_size(int(n))  # (len(N), n)
        block = values_sorted[rows] @ W.T  # (members, len(N))
        if out is None:
            out = np.empty((W.shape[0], P))
        out[:, members] = block.T
    return out


def order_statistic_weights(n: int, N) -> np.ndarray:
    r"""Weights of the unbiased best-of-N estimator: :math:`C(i-1, N-1)/C(n, N)` for ranks i = 1..n.

    Computed with log-binomials, so n of :math:`10^4` and more is fine; rows sum to 1.
    """
    N = _grid(N)[:, None]
    i = np.arange(1, n + 1)[None, :]
    log_w = (
        gammaln(i) - gammaln(N) - gammaln(np.maximum(i - N + 1, 1))
        - (gammaln(n + 1) - gammaln(N + 1) - gammaln(n - N + 1))
    )
    return np.where(i >= N, np.exp(log_w), 0.0)


def empirical_bon_weights(n: int, N) -> np.ndarray:
    r"""Law of best-of-N with replacement from n equally likely samples: :math:`(i/n)^N - ((i-1)/n)^N` by rank i."""
    N = _grid(N)[:, None]
    F = np.arange(0, n + 1) / n
    powered = np.exp(N * np.log(np.maximum(F, 1e-300)))
    powered[:, 0] = 0.0
    return np.diff(powered, axis=1)


def bon_expected_reward(values, N, groups: Groups | None = None, sort_by=None) -> np.ndarray:
    r"""Unbiased :math:`E[r \text{ of best-of-}N]` from n ≥ N samples per prompt.

    :math:`\hat E_N = \sum_{i=N}^{n} \frac{\binom{i-1}{N-1}}{\binom{n}{N}} r_{(i)}`, rewards sorted
    ascending. With ``sort_by`` (e.g. a proxy reward) the samples are ranked by it and
    ``values`` (e.g. the gold reward) are averaged: best-of-N selected by one reward and
    scored by another. Ties in ``sort_by`` are broken by averaging ``values`` over the tie.
    """
    values = np.asarray(values, dtype=np.float64)
    groups = _groups(values, groups)
    N = _grid(N)
    _check_n(N, groups)
    ranked = _ranked(values, groups, sort_by)
    return _per_size(groups, ranked, lambda n: order_statistic_weights(n, N))


def bon_empirical_reward(values, N, groups: Groups | None = None, sort_by=None) -> np.ndarray:
    r"""Expected reward of best-of-N drawn with replacement from the empirical distribution.

    :math:`\sum_a (F_a^N - F_{a-1}^N) r_a` over distinct rewards a; equal to the rank form
    :math:`\sum_i ((i/n)^N - ((i-1)/n)^N) r_{(i)}` because tied ranks telescope.
    """
    values = np.asarray(values, dtype=np.float64)
    groups = _groups(values, groups)
    N = _grid(N)
    ranked = _ranked(values, groups, sort_by)
    return _per_size(groups, ranked, lambda n: empirical_bon_weights(n, N))


def _ranked(values: np.ndarray, groups: Groups, sort_by) -> np.ndarray:
    """``values`` in ascending order of ``sort_by`` within each prompt, tied keys sharing their mean."""
    if sort_by is None:
        return groups.sort_within(values)
    key = np.asarray(sort_by, dtype=np.float64)
    order = np.lexsort((key, groups.labels))
    key_sorted, vals = key[order], values[order]
    new_block = np.ones(key.size, bool)
    new_block[1:] = (key_sorted[1:] != key_sorted[:-1]) | (groups.labels[order][1:] != groups.labels[order][:-1])
    block = np.cumsum(new_block) - 1
    block_mean = np.bincount(block, vals) / np.bincount(block)
    return block_mean[block]


def bon_kl_bound(N) -> np.ndarray:
    r""":math:`\mathrm{KL}(\text{BoN}_N\|\pi_0) \le \log N - (N-1)/N`, with equality for continuous rewards."""
    N = _grid(N).astype(np.float64)
    return np.log(N) - (N - 1) / N


def bon_kl_empirical(rewards, N, groups: Groups | None = None) -> np.ndarray:
    r"""Exact KL of best-of-N on the empirical distribution, ties merged into one atom.

    Atom a (distinct reward) has base mass :math:`q_a` and best-of-N mass
    :math:`p_a = F_a^N - F_{a-1}^N`; KL :math:`= \sum_a p_a \log(p_a/q_a)`. Prompts without
    ties share one value per sample size n, computed once.
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    groups = _groups(rewards, groups)
    N = _grid(N)
    ranked = groups.sort_within(rewards)
    labels = groups.labels
    same_group_next = np.zeros(ranked.size, bool)
    same_group_next[:-1] = labels[1:] == labels[:-1]
    # a rank closes a block of ties unless the next rank is in the same prompt with the same reward
    tie_next = np.zeros(ranked.size, bool)
    tie_next[:-1] = same_group_next[:-1] & (ranked[1:] == ranked[:-1])
    block_end = ~tie_next
    has_ties = groups.sum(tie_next.astype(np.float64)) > 0

    out = np.empty((N.size, groups.n_groups))
    for n in np.unique(groups.sizes[~has_ties]):
        members = np.nonzero((groups.sizes == n) & ~has_ties)[0]
        p = empirical_bon_weights(int(n), N)
        kl = np.sum(np.where(p > 0, p * np.log(np.maximum(p, 1e-300) * n), 0.0), axis=1)
        out[:, members] = kl[:, None]
    if has_ties.any():
        out[:, has_ties] = _bon_kl_tied(ranked, groups, block_end, N)[:, has_ties]
    return out


def _bon_kl_tied(ranked, groups: Groups, block_end, N) -> np.ndarray:
    position = np.arange(ranked.size) - groups.expand(groups.starts) + 1  # rank within prompt, 1..n
    n_of = groups.expand(groups.sizes)
    ends = np.nonzero(block_end)[0]
    F_hi = position[ends] / n_of[ends]
    first_in_group = np.ones(ends.size, bool)
    first_in_group[1:] = groups.labels[ends][1:] != groups.labels[ends][:-1]
    F_lo = np.where(first_in_group, 0.0, np.concatenate([[0.0], F_hi[:-1]]))
    q = F_hi - F_lo
    block_groups = Groups(np.bincount(groups.labels[ends], minlength=groups.n_groups))
    out = np.empty((N.size, groups.n_groups))
    chunk = max(1, _CHUNK_ELEMENTS // ends.size)
    for lo in range(0, N.size, chunk):
        Nc = N[lo : lo + chunk, None].astype(np.float64)
        p = np.exp(Nc * np.log(F_hi)) - np.where(F_lo > 0, np.exp(Nc * np.log(np.maximum(F_lo, 1e-300))), 0.0)
        terms = np.where(p > 0, p * (np.log(np.maximum(p, 1e-300)) - np.log(q)), 0.0)
        out[lo : lo + chunk] = block_groups.sum(terms)
    return out


def soft_bon_law(rewards, N: int, beta: float, n_nodes: int = 4000) -> np.ndarray:
    r"""Exact law of soft best-of-N on the empirical distribution of one prompt's samples.

    Draw N samples with replacement, return :math:`y_k` with probability
    :math:`w_k/\sum_j w_j`, :math:`w = e^{(r - \max r)/\beta}`. Using
    :math:`1/x = \int_0^\infty e^{-tx} dt`,

    .. math::  p_y = N q_y w_y \int_0^\infty e^{-t w_y} M(t)^{N-1} dt,
               \qquad M(t) = \sum_j q_j e^{-t w_j},

    a one-dimensional integral, computed by quadrature in :math:`\log t` (error below
    1e-6 in total mass; the result is renormalised).
    """
    r = np.asarray(rewards, dtype=np.float64)
    n = r.size
    q = np.full(n, 1.0 / n)
    if N == 1:
        return q
    w = np.exp((r - r.max()) / beta)
    w_floor = max(w[w > 0].min(), 1e-12) if (w > 0).any() else 1.0
    s = np.linspace(np.log(1e-12 / N), np.log(80.0 / w_floor), n_nodes)
    t = np.exp(s)
    ds = s[1] - s[0]
    log_M = np.log(np.exp(-np.outer(t, w)) @ q)  # (nodes,)
    log_integrand = -np.outer(w, t) + (N - 1) * log_M[None, :] + s[None, :]  # dt = t ds
    trapezoid = np.full(n_nodes, ds)
    trapezoid[[0, -1]] = ds / 2
    integral = np.exp(log_integrand) @ trapezoid + 1e-12 / N  # + ∫ from 0 to the first node
    p = N * q * w * integral
    return p / p.sum()


def soft_bon(rewards, N, beta: float, groups: Groups | None = None) -> tuple[np.ndarray, np.ndarray]:
    r"""Gain and KL of soft best-of-N on each prompt's empirical distribution, shape ``(len(N), P)``.

    gain :math:`= \sum_y p_y r_y - \bar r`, KL :math:`= \sum_y p_y \log(n p_y)`.
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    groups = _groups(rewards, groups)
    N = _grid(N)
    if not beta > 0:
        raise AlignLimitsError(f"soft best-of-N needs β > 0, got {beta}")
    gains = np.empty((N.size, groups.n_groups))
    kls = np.empty_like(gains)
    for g, (start, size) in enumerate(zip(groups.starts, groups.sizes)):
        r = rewards[start : start + size]
        for k, n_draws in enumerate(N):
            p = soft_bon_law(r, int(n_draws), beta)
            gains[k, g] = p @ r - r.mean()
            kls[k, g] = np.sum(np.where(p > 0, p * np.log(np.maximum(p, 1e-300) * size), 0.0))
    return gains, kls
