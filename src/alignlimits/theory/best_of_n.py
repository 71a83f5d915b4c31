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
    _, counts, ends, atoms = _atoms(groups.sort_within(rewards), groups)
    has_ties = atoms.sizes < groups.sizes

    out = np.empty((N.size, groups.n_groups))
    for n in np.unique(groups.sizes[~has_ties]):
        members = np.nonzero((groups.sizes == n) & ~has_ties)[0]
        p = empirical_bon_weights(int(n), N)
        kl = np.sum(np.where(p > 0, p * np.log(np.maximum(p, 1e-300) * n), 0.0), axis=1)
        out[:, members] = kl[:, None]
    if has_ties.any():
        out[:, has_ties] = _bon_kl_tied(counts, ends, atoms, groups.sizes, N)[:, has_ties]
    return out


def _atoms(ranked: np.ndarray, groups: Groups) -> tuple[np.ndarray, np.ndarray, np.ndarray, Groups]:
    """Distinct rewards of each prompt, from rewards sorted ascending within prompts.

    Returns their values, counts, upper ranks within the prompt (1..n) and their :class:`Groups`.
    """
    labels = groups.labels
    last = np.ones(ranked.size, bool)
    last[:-1] = (ranked[1:] != ranked[:-1]) | (labels[1:] != labels[:-1])
    flat_ends = np.nonzero(last)[0]
    counts = np.diff(np.concatenate([[-1], flat_ends]))
    ends = flat_ends - groups.expand(groups.starts)[flat_ends] + 1
    return ranked[flat_ends], counts, ends, Groups(np.bincount(labels[flat_ends], minlength=groups.n_groups))


def _bon_kl_tied(counts, ends, atoms: Groups, sizes, N) -> np.ndarray:
    n_of = atoms.expand(sizes)
    F_hi, F_lo, q = ends / n_of, (ends - counts) / n_of, counts / n_of
    out = np.empty((N.size, atoms.n_groups))
    chunk = max(1, _CHUNK_ELEMENTS // counts.size)
    for lo in range(0, N.size, chunk):
        Nc = N[lo : lo + chunk, None].astype(np.float64)
        p = np.exp(Nc * np.log(F_hi)) - np.where(F_lo > 0, np.exp(Nc * np.log(np.maximum(F_lo, 1e-300))), 0.0)
        terms = np.where(p > 0, p * (np.log(np.maximum(p, 1e-300)) - np.log(q)), 0.0)
        out[lo : lo + chunk] = atoms.sum(terms)
    return out


# Soft best-of-N's law is a trapezoid sum in s = log t on the lattice s = k·h, over the windows
# (d_j - 40, d_j + 4) of every atom j; beyond them an atom's integrand is below e^-40 (at s → -∞)
# or e^-50 (above), and inside them the trapezoid error is below 1e-16 (the docstring says why).
_SIR_STEP = 0.2
_SIR_WINDOW = (-40.0, 4.0)


def _sir_nodes(d: np.ndarray, atoms: Groups) -> tuple[np.ndarray, Groups]:
    """Lattice points of log t within the atoms' windows, per prompt: (points, their Groups).

    ``d`` must descend within each prompt (atoms in ascending reward), so the windows ascend when
    read backwards; overlapping ones merge into runs, each listed once.
    """
    back = np.arange(d.size)[::-1]
    label = atoms.labels[back]
    lo = np.ceil((d[back] + _SIR_WINDOW[0]) / _SIR_STEP).astype(np.int64)
    hi = np.floor((d[back] + _SIR_WINDOW[1]) / _SIR_STEP).astype(np.int64)
    new_run = np.ones(d.size, bool)
    new_run[1:] = (label[1:] != label[:-1]) | (lo[1:] > hi[:-1] + 1)
    run_starts = np.nonzero(new_run)[0]
    run_lo = lo[run_starts]
    run_len = np.maximum.reduceat(hi, run_starts) - run_lo + 1
    offset = np.repeat(np.cumsum(run_len) - run_len, run_len)
    k = np.repeat(run_lo, run_len) + np.arange(run_len.sum()) - offset
    node_label = np.repeat(label[run_starts], run_len)[::-1]  # prompts ascending again
    return k[::-1] * _SIR_STEP, Groups(np.bincount(node_label, minlength=atoms.n_groups))


def _soft_bon_atom_law(values, masses, atoms: Groups, N: np.ndarray, beta: float) -> np.ndarray:
    r"""Soft best-of-N's mass on each atom (distinct reward of a prompt), shape ``(len(N), atoms)``.

    Atom j has reward :math:`a_j`, base mass :math:`q_j` and :math:`d_j = (\max a - a_j)/\beta`.
    The N draws return atom j with probability
    :math:`p_j = N q_j E[w_j/(w_j + S)]`, :math:`w = e^{-d}`, S the sum of w over the other
    N−1 draws. With :math:`1/x = \int_0^\infty e^{-tx} dt` and :math:`t = e^s`,

    .. math::  p_j = N q_j \int_{-\infty}^{\infty} e^{s - d_j - e^{s - d_j}}\, M(s)^{N-1} ds,
               \qquad M(s) = \sum_l q_l \exp(-e^{s - d_l}).

    The integrand is entire in s and, for :math:`|\mathrm{Im}\, s| \le a < \pi/2`, bounded by
    :math:`|e^{s-d_j}| e^{-\cos a\, e^{\mathrm{Re}\, s - d_j}}` (as :math:`|M| \le 1`), whose
    integral is :math:`1/\cos a`. The trapezoid rule with step h on the whole line is then
    exact to :math:`\frac{2}{\cos a} e^{-2\pi a/h}` (below 1e-17 at h = 0.2, a = 1.4), for any
    β, reward scale, N and ties; the sum is cut to each atom's window, which loses below 1e-16.
    Rounding adds about N·1e-16, and 1e-16·max d from the nodes' positions (max d = range/β).
    Cost: at most 221 nodes per atom, times the prompt's number of atoms.
    """
    d = (atoms.expand(atoms.max(values)) - values) / beta
    nodes, node_groups = _sir_nodes(d, atoms)
    width = int(atoms.sizes.max())
    slot = np.arange(values.size) - atoms.expand(atoms.starts)
    D = np.zeros((atoms.n_groups, width))
    Q = np.zeros((atoms.n_groups, width))  # padding slots have mass 0
    D[atoms.labels, slot], Q[atoms.labels, slot] = d, masses
    powers = (N - 1).astype(np.float64)[:, None]
    integral = np.zeros((N.size, atoms.n_groups, width))
    node_label = node_groups.labels
    chunk = max(1, _CHUNK_ELEMENTS // (width * N.size))
    for lo in range(0, nodes.size, chunk):
        label = node_label[lo : lo + chunk]
        x = np.minimum(nodes[lo : lo + chunk, None] - D[label], 50.0)  # e^-e^50 is 0 already
        ex = np.exp(x)
        tail = np.exp(-ex)
        M = np.einsum("km,km->k", tail, Q[label])
        firsts = np.concatenate([[0], np.nonzero(label[1:] != label[:-1])[0] + 1])
        terms = np.power(M, powers)[:, :, None] * (ex * tail)[None]
        integral[:, label[firsts]] += np.add.reduceat(terms, firsts, axis=1)
    return N[:, None] * masses * (_SIR_STEP * integral[:, atoms.labels, slot])


def soft_bon_law(rewards, N: int, beta: float) -> np.ndarray:
    r"""Exact law of soft best-of-N on the empirical distribution of one prompt's samples.

    Draw N samples with replacement, return :math:`y_k` with probability
    :math:`w_k/\sum_j w_j`, :math:`w = e^{r/\beta}`. With :math:`d_y = (\max r - r_y)/\beta`,

    .. math::  p_y = \frac{N}{n} \int_{-\infty}^{\infty} e^{s - d_y - e^{s - d_y}} M(s)^{N-1} ds,
               \qquad M(s) = \frac{1}{n} \sum_j \exp(-e^{s - d_j}),

    a trapezoid sum in s exact to floating point (see :func:`_soft_bon_atom_law`); tied samples
    share their atom's mass equally. β → ∞ gives 1/n, β → 0 best-of-N with ties shared.
    """
    r = np.asarray(rewards, dtype=np.float64).ravel()
    groups = Groups.equal(1, r.size)
    order = np.argsort(r, kind="stable")
    values, counts, _, atoms = _atoms(r[order], groups)
    law = _soft_bon_atom_law(values, counts / r.size, atoms, _grid(N), _check_beta(beta))[0]
    p = np.empty(r.size)
    p[order] = np.repeat(law / counts, counts)
    return p


def _check_beta(beta) -> float:
    if not beta > 0:
        raise AlignLimitsError(f"soft best-of-N needs β > 0, got {beta}")
    return float(beta)


def soft_bon(rewards, N, beta: float, groups: Groups | None = None) -> tuple[np.ndarray, np.ndarray]:
    r"""Gain and KL of soft best-of-N on each prompt's empirical distribution, shape ``(len(N), P)``.

    gain :math:`= \sum_y p_y r_y - \bar r`, KL :math:`= \sum_y p_y \log(n p_y)
    = \sum_a p_a \log(p_a/q_a)` over distinct rewards a; vectorised over prompts.
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    groups = _groups(rewards, groups)
    N = _grid(N)
    values, counts, _, atoms = _atoms(groups.sort_within(rewards), groups)
    masses = counts / atoms.expand(groups.sizes)
    law = _soft_bon_atom_law(values, masses, atoms, N, _check_beta(beta))
    gains = atoms.sum(law * values) - groups.mean(rewards)
    kls = atoms.sum(np.where(law > 0, law * np.log(np.maximum(law, 1e-300) / masses), 0.0))
    return gains, kls
