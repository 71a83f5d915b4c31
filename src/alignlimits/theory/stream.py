r"""Rewards of many prompts read in runs of whole prompts, never held all at once.

:class:`ChunkedSamples` is the streamed counterpart of
:class:`~alignlimits.theory.tilt.TiltedSamples`: the same :meth:`~ChunkedSamples.at` and
:meth:`~ChunkedSamples.jackknife`, evaluated one chunk of whole prompts at a time (a pass over
the data per call), with per-prompt results equal to the in-memory ones. Everything the
frontier needs besides the tilt at given β is a per-prompt statistic
(:func:`prompt_summary`, best-of-N's values via :meth:`~ChunkedSamples.map`) or the rewards of
a few prompts (:meth:`~ChunkedSamples.take`), so memory is set by the chunk size and the
number of prompts, not by the number of samples.

The data comes from ``read()``, a callable that starts a pass and yields float64 arrays of any
length holding the rewards in prompt order (the order of ``sizes``).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from alignlimits.errors import AlignLimitsError
from alignlimits.theory.groups import Groups
from alignlimits.theory.tilt import _PARALLEL_ELEMENTS, Tilt, TiltedSamples, _beta_grid

CHUNK_SAMPLES = 500_000  # rewards per chunk of whole prompts: 4 MB, ~0.1 GB with the jackknife's work arrays
_WORKERS = min(2, os.cpu_count() or 1)  # chunks evaluated at once (numpy releases the GIL); each holds a chunk's work arrays


@dataclass(frozen=True)
class PromptSummary:
    """Per-prompt base statistics under base probabilities q (1/n for samples), shape (P,) each."""

    mean: np.ndarray  # Σ q r
    variance: np.ndarray  # Σ q (r − mean)²
    top: np.ndarray  # max r
    bottom: np.ndarray  # min r
    top_mass: np.ndarray  # Σ q [r = max r]

    @classmethod
    def concat(cls, parts: list["PromptSummary"]) -> "PromptSummary":
        return cls(*(np.concatenate([getattr(p, k) for p in parts]) for k in cls.__dataclass_fields__))


def prompt_summary(rewards: np.ndarray, groups: Groups, q: np.ndarray | None = None) -> PromptSummary:
    """Mean, variance, extremes and the base mass at the top of each prompt's rewards (q: 1/n if None)."""
    q = groups.expand(1.0 / groups.sizes) if q is None else q
    mean = groups.sum(q * rewards)
    top = groups.max(rewards)
    return PromptSummary(
        mean=mean,
        variance=groups.sum(q * (rewards - groups.expand(mean)) ** 2),
        top=top,
        bottom=-groups.max(-rewards),
        top_mass=groups.sum(q * (rewards == groups.expand(top))),
    )


class _ChunkTilts(TiltedSamples):
    """:class:`TiltedSamples` of one chunk, built with fewer copies when its prompts have equal sizes (the
    usual case): the columns are written in place in the (P, 4, n) layout that ``Groups.stack_columns``
    makes, instead of stacked and transposed. The arrays are the parent constructor's, value for value
    (``tests/theory/test_stream.py`` compares them); a pass at a few β costs about a third less."""

    def __init__(self, rewards: np.ndarray, groups: Groups):
        n = groups.uniform_size
        if n is None:
            super().__init__(rewards, groups)
            return
        P = groups.n_groups
        r = rewards.reshape(P, n)
        self.rewards, self.groups, self.q, self._top_and_rest = rewards, groups, None, None
        peak = r.max(axis=1)
        self.exponent = (r - peak[:, None]).reshape(-1)  # r - max r: finite, as the rewards are
        self.base_mean = (rewards * (1.0 / n)).reshape(P, n).sum(axis=1)
        self.mean_below_peak = self.base_mean - peak
        columns = np.empty((P, 4, n))
        columns[:, 0] = 1.0
        np.subtract(r, self.base_mean[:, None], out=columns[:, 1])
        np.multiply(columns[:, 1], columns[:, 1], out=columns[:, 2])
        columns[:, 3] = self.exponent.reshape(P, n)
        self.columns = columns


def chunk_bounds(sizes: np.ndarray, chunk_samples: int = CHUNK_SAMPLES) -> np.ndarray:
    """Prompt indices that cut ``sizes`` into runs of whole prompts of about ``chunk_samples`` rewards
    (a prompt larger than that is a chunk of its own): ``[0, ..., P]``."""
    ends = np.cumsum(sizes)
    cuts = np.searchsorted(ends, np.arange(chunk_samples, ends[-1], chunk_samples), side="left") + 1
    return np.unique(np.concatenate([[0], cuts, [sizes.size]]))


class ChunkedSamples:
    """Rewards grouped by prompt, read chunk by chunk (a pass per call); see the module docstring.

    ``read()`` starts a pass and yields the rewards in prompt order, in arrays of any length;
    ``sizes`` are the samples of each prompt; ``chunk_samples``: rewards per chunk (default
    ``CHUNK_SAMPLES``).
    """

    def __init__(self, read: Callable[[], Iterable[np.ndarray]], sizes, chunk_samples: int | None = None):
        self.read = read
        self.groups = Groups(np.asarray(sizes, dtype=np.int64))
        self.chunk_samples = chunk_samples or CHUNK_SAMPLES
        self.bounds = chunk_bounds(self.groups.sizes, self.chunk_samples)

    def chunks(self, members: np.ndarray | None = None) -> Iterator[tuple[slice, Groups, np.ndarray]]:
        """One pass: each run of whole prompts as (its prompt slice, its groups, its rewards).
        ``members``: only the chunks that hold one of these prompts (the others are read past)."""
        sizes, bounds = self.groups.sizes, self.bounds
        ends = np.concatenate([[0], np.cumsum(sizes)])
        wanted = None if members is None else np.unique(np.searchsorted(bounds, members, side="right") - 1)
        pending, held, k = [], 0, 0
        for block in self.read():
            pending.append(np.asarray(block, dtype=np.float64))
            held += pending[-1].size
            while k < bounds.size - 1 and held >= ends[bounds[k + 1]] - ends[bounds[k]]:
                need = int(ends[bounds[k + 1]] - ends[bounds[k]])
                flat = np.concatenate(pending) if len(pending) > 1 else pending[0]
                pending, held = [flat[need:]], flat.size - need
                if wanted is None or k in wanted:
                    lo, hi = int(bounds[k]), int(bounds[k + 1])
                    yield slice(lo, hi), Groups(sizes[lo:hi]), flat[:need]
                k += 1
        if k < bounds.size - 1 or held:
            raise AlignLimitsError(
                f"the sample table changed while it was read: {int(ends[bounds[k]]) + held} rewards where "
                f"{self.groups.n_total} were counted; read it again"
            )

    def each(self, evaluate: Callable[[slice, Groups, np.ndarray], object], members=None,
             workers: int | None = None) -> list:
        """``evaluate(prompt slice, groups, rewards)`` of every chunk (of ``members``' chunks), in order: one
        pass, read in this thread while up to ``workers`` (default ``_WORKERS``) chunks are evaluated on others."""
        workers = _WORKERS if workers is None else workers
        if workers < 2:
            return [evaluate(*chunk) for chunk in self.chunks(members)]
        results, pending = [], deque()
        with ThreadPoolExecutor(workers) as pool:
            for chunk in self.chunks(members):
                pending.append(pool.submit(evaluate, *chunk))
                while len(pending) > workers:
                    results.append(pending.popleft().result())
            results += [f.result() for f in pending]
        return results

    def at(self, beta) -> Tilt:
        """Gain, KL, reverse KL, tilted variance and ESS at β of shape (B,) or (B, P): one pass."""
        return self._tilts(beta, lambda s, b: (s.at(b),))[0]

    def jackknife(self, beta) -> tuple[Tilt, Tilt]:
        """The plain tilt and its delete-one jackknife (:meth:`TiltedSamples.jackknife`): one pass."""
        return self._tilts(beta, lambda s, b: s.jackknife(b))

    def _tilts(self, beta, evaluate) -> tuple[Tilt, ...]:
        betas = _beta_grid(beta, self.groups)
        per_prompt = betas.strides[1] != 0
        plain = {k: np.empty(betas.shape) for k in ("gain", "kl", "kl_reverse", "variance", "ess")}
        # the jackknifed tilt's reverse KL and ESS are the plain ones (TiltedSamples.jackknife): shared
        out = [plain, {**plain, **{k: np.empty(betas.shape) for k in ("gain", "kl", "variance")}}]

        def fill(cols: slice, groups: Groups, rewards: np.ndarray) -> int:
            tilts = evaluate(_ChunkTilts(rewards, groups), betas[:, cols] if per_prompt else betas[:, 0])
            for i, (store, t) in enumerate(zip(out, tilts)):
                for k, arr in store.items():
                    if i == 0 or arr is not plain[k]:
                        arr[:, cols] = getattr(t, k)
            return len(tilts)

        # many β: TiltedSamples spreads each chunk's rows over threads itself; few: chunks go on threads
        inner = betas.shape[0] * self.chunk_samples >= _PARALLEL_ELEMENTS
        n_tilts = self.each(fill, workers=1 if inner else _WORKERS)[0]
        return tuple(Tilt(beta=np.asarray(betas), **store) for store in out[:n_tilts])

    def map(self, statistic: Callable[[np.ndarray, Groups], np.ndarray]) -> np.ndarray:
        """``statistic(rewards, groups)`` (last axis: one value per prompt) over every chunk, joined: one pass."""
        return np.concatenate(self.each(lambda _, g, r: np.asarray(statistic(r, g))), axis=-1)

    def summary(self) -> PromptSummary:
        """:func:`prompt_summary` of every prompt, checking that every reward is finite: one pass."""
        def summarize(_, groups: Groups, rewards: np.ndarray) -> PromptSummary:
            if not np.isfinite(rewards).all():
                raise AlignLimitsError("rewards contain NaN or infinite values; drop or fix them first")
            return prompt_summary(rewards, groups)

        return PromptSummary.concat(self.each(summarize))

    def take(self, members) -> tuple[Groups, np.ndarray, None]:
        """The groups and rewards of the prompts ``members`` (ascending indices) alone: one pass
        reading only their chunks; base probabilities None (1/n), as ``TiltedSamples`` keeps them."""
        members = np.asarray(members, dtype=np.int64)
        parts = []
        for cols, groups, rewards in self.chunks(members):
            local = members[(members >= cols.start) & (members < cols.stop)] - cols.start
            parts.append(rewards[groups.subset(local)[1]])
        return Groups(self.groups.sizes[members]), np.concatenate(parts), None
