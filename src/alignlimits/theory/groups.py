"""Samples grouped by prompt: ragged groups stored flat, reduced without a Python loop."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Groups:
    """Contiguous groups of a flat array: group g is ``values[starts[g]:starts[g] + sizes[g]]``.

    Reductions take arrays whose last axis runs over the flat samples and return the
    same leading axes with one entry per group. When every group has the same size the
    reductions reshape instead of using ``reduceat`` (several times faster).
    """

    sizes: np.ndarray

    def __post_init__(self):
        sizes = np.asarray(self.sizes, dtype=np.int64)
        if sizes.ndim != 1 or sizes.size == 0 or (sizes < 1).any():
            raise ValueError("groups need at least one sample each")
        object.__setattr__(self, "sizes", sizes)

    @classmethod
    def from_labels(cls, labels) -> tuple["Groups", np.ndarray, np.ndarray]:
        """Group by label; returns (groups, order that makes groups contiguous, unique labels)."""
        labels = np.asarray(labels)
        if labels.size and labels.ndim == 1:
            # already contiguous (each label in one run)? then no sort is needed
            run_starts = np.concatenate([[0], np.nonzero(labels[1:] != labels[:-1])[0] + 1])
            run_labels = labels[run_starts]
            if np.unique(run_labels).size == run_labels.size:
                sizes = np.diff(np.concatenate([run_starts, [labels.size]]))
                return cls(sizes), np.arange(labels.size), run_labels
        uniques, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
        order = np.argsort(inverse, kind="stable")
        return cls(counts), order, uniques

    @classmethod
    def equal(cls, n_groups: int, size: int) -> "Groups":
        return cls(np.full(n_groups, size, dtype=np.int64))

    @property
    def n_groups(self) -> int:
        return int(self.sizes.size)

    @property
    def n_total(self) -> int:
        return int(self.sizes.sum())

    @property
    def starts(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.sizes)[:-1]])

    @property
    def uniform_size(self) -> int | None:
        return int(self.sizes[0]) if (self.sizes == self.sizes[0]).all() else None

    @property
    def labels(self) -> np.ndarray:
        """Group index of every flat sample."""
        return np.repeat(np.arange(self.n_groups), self.sizes)

    def sum(self, x: np.ndarray) -> np.ndarray:
        n = self.uniform_size
        if n is not None:
            return x.reshape(*x.shape[:-1], self.n_groups, n).sum(axis=-1)
        return np.add.reduceat(x, self.starts, axis=-1)

    def max(self, x: np.ndarray) -> np.ndarray:
        n = self.uniform_size
        if n is not None:
            return x.reshape(*x.shape[:-1], self.n_groups, n).max(axis=-1)
        return np.maximum.reduceat(x, self.starts, axis=-1)

    def mean(self, x: np.ndarray) -> np.ndarray:
        return self.sum(x) / self.sizes

    def expand(self, per_group: np.ndarray) -> np.ndarray:
        """Repeat a per-group array (last axis = groups) onto the flat samples."""
        n = self.uniform_size
        if n is not None:
            return np.repeat(per_group, n, axis=-1)
        return np.repeat(per_group, self.sizes, axis=-1)

    def stack_columns(self, columns: list[np.ndarray]) -> np.ndarray:
        """Prepare flat columns for :meth:`dot_columns`: shape (P, k, n) for equal groups, else (k, N)."""
        stacked = np.stack(columns)
        n = self.uniform_size
        if n is not None:
            return np.ascontiguousarray(stacked.reshape(len(columns), self.n_groups, n).transpose(1, 0, 2))
        return stacked

    def dot_columns(self, x: np.ndarray, prepared: np.ndarray) -> np.ndarray:
        """Per group, the dot product of each row of ``x`` (B, N) with each prepared column: (k, B, P).

        Equal groups use one batched matrix product per row, reading ``x`` once.
        """
        n = self.uniform_size
        if n is not None:
            out = np.empty((prepared.shape[1], x.shape[0], self.n_groups))
            for row in range(x.shape[0]):
                out[:, row, :] = np.matmul(prepared, x[row].reshape(self.n_groups, n, 1))[:, :, 0].T
            return out
        return np.stack([self.sum(x * col) for col in prepared])

    def sum_squares(self, x: np.ndarray) -> np.ndarray:
        """Per group, the sum of squares of each row of ``x`` (B, N): (B, P)."""
        n = self.uniform_size
        if n is not None:
            shaped = x.reshape(x.shape[0], self.n_groups, n)
            return np.einsum("bpn,bpn->bp", shaped, shaped)
        return self.sum(x * x)

    def subset(self, members: np.ndarray) -> tuple["Groups", np.ndarray]:
        """The groups ``members`` (indices) alone, and the flat positions of their samples."""
        sizes = self.sizes[members]
        new_starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        flat = np.repeat(self.starts[members] - new_starts, sizes) + np.arange(sizes.sum())
        return Groups(sizes), flat

    def resample_within(self, rng: np.random.Generator) -> np.ndarray:
        """Flat indices of a resample with replacement within each group, drawn for all groups at once."""
        u = rng.random(self.n_total)
        return np.minimum((self.expand(self.starts) + np.floor(u * self.expand(self.sizes))).astype(np.int64),
                          self.n_total - 1)

    def divide(self, flat: np.ndarray, per_group: np.ndarray) -> np.ndarray:
        """``flat / expand(per_group)`` for ``per_group`` of shape (B, P): shape (B, N), without the repeat."""
        n = self.uniform_size
        if n is not None:
            shaped = flat.reshape(self.n_groups, n)[None, :, :] / per_group[:, :, None]
            return shaped.reshape(per_group.shape[0], -1)
        return flat / self.expand(per_group)

    def sort_within(self, x: np.ndarray) -> np.ndarray:
        """Sort each group ascending, groups staying in place."""
        n = self.uniform_size
        if n is not None:
            return np.sort(x.reshape(self.n_groups, n), axis=1).reshape(-1)
        return x[np.lexsort((x, self.labels))]
