"""The reward-model interface: :class:`RewardModel` validates and batches every reward's scores, and
:class:`CallableReward` makes any Python callable one.

Every reward model has ``.name`` (its column in the sample table), ``.spec`` (the ``--reward`` value it was
loaded from), ``.description`` (one line stating the formula) and ``__call__(prompts, completions, *,
prompt_ids=None, sources=None) -> np.ndarray`` (float64, one value per completion), scored in batches of
``.batch_size``. Errors (:class:`~alignlimits.errors.AlignLimitsError`, one line) name the spec and, for bad
values, the offending row index (and its ``prompt_id`` when the caller passes ``prompt_ids``).
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, Sequence

import numpy as np

from alignlimits.errors import AlignLimitsError


#: Context arguments a reward may use besides prompts and completions (the pipeline may pass them to every
#: reward; rewards that do not use one ignore it).
CONTEXT_KEYS = ("sources",)


def short_error(err: BaseException, limit: int = 200) -> str:
    """``Type: message`` on one line, cut to ``limit`` characters."""
    msg = " ".join(str(err).split())
    if len(msg) > limit:
        msg = msg[: limit - 3] + "..."
    return f"{type(err).__name__}: {msg}" if msg else type(err).__name__


def _rows(a: int, b: int) -> str:
    return f"row {a}" if b - a == 1 else f"rows {a}-{b - 1}"


class RewardModel:
    """Base class: validation and batching around :meth:`_score` (which subclasses implement)."""

    name: str = "reward"
    spec: str = "reward"
    description: str = ""
    batch_size: int = 64
    #: Which of :data:`CONTEXT_KEYS` :meth:`_score` accepts as keyword arguments.
    uses_context: tuple[str, ...] = ()

    def _score(self, prompts: list[str], completions: list[str], **context) -> Sequence[float]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.spec!r} -> column {self.name!r}>"

    def __call__(
        self,
        prompts: Sequence[str],
        completions: Sequence[str],
        *,
        prompt_ids: Sequence[Any] | None = None,
        **context: Sequence[Any] | None,
    ) -> np.ndarray:
        prompts = ["" if p is None else str(p) for p in prompts]
        completions = ["" if c is None else str(c) for c in completions]
        n = len(completions)
        if len(prompts) != n:
            raise AlignLimitsError(
                f"reward {self.spec!r} was given {len(prompts)} prompts but {n} completions; pass one prompt per completion"
            )
        if prompt_ids is not None:
            prompt_ids = list(prompt_ids)
        if prompt_ids is not None and len(prompt_ids) != n:
            raise AlignLimitsError(
                f"reward {self.spec!r} was given {len(prompt_ids)} prompt ids for {n} completions; pass one per completion"
            )
        unknown = set(context) - set(CONTEXT_KEYS)
        if unknown:
            raise TypeError(f"unknown reward context argument(s): {', '.join(sorted(unknown))}")
        ctx: dict[str, list] = {}
        for key, val in context.items():
            if val is None or key not in self.uses_context:
                continue
            val = list(val)
            if len(val) != n:
                raise AlignLimitsError(
                    f"reward {self.spec!r} was given {len(val)} {key} for {n} completions; pass one per completion"
                )
            ctx[key] = val

        out = np.empty(n, dtype=np.float64)
        bs = max(1, int(self.batch_size))
        for a in range(0, n, bs):
            b = min(n, a + bs)
            batch_ctx = {k: v[a:b] for k, v in ctx.items()}
            try:
                vals = self._score(prompts[a:b], completions[a:b], **batch_ctx)
            except AlignLimitsError:
                raise
            except Exception as err:  # noqa: BLE001 - any failure inside a reward is reported with its rows
                raise AlignLimitsError(
                    f"reward {self.spec!r} failed on {_rows(a, b)}{self._ids(prompt_ids, a)}: {short_error(err)}; "
                    "fix the reward model or the inputs it was given"
                ) from err
            try:
                arr = np.asarray(vals, dtype=np.float64)
            except (TypeError, ValueError) as err:
                raise AlignLimitsError(
                    f"reward {self.spec!r} returned non-numeric values for {_rows(a, b)} ({short_error(err)}); "
                    "it must return one float per completion"
                ) from None
            arr = arr.reshape(-1) if arr.ndim == 2 and 1 in arr.shape else arr
            if arr.ndim != 1 or arr.shape[0] != b - a:
                got = arr.shape[0] if arr.ndim == 1 else f"an array of shape {arr.shape}"
                raise AlignLimitsError(
                    f"reward {self.spec!r} returned {got} values for a batch of {b - a} completions ({_rows(a, b)}); "
                    "it must return one float per completion"
                )
            bad = np.flatnonzero(~np.isfinite(arr))
            if bad.size:
                i = int(bad[0])
                what = "NaN" if math.isnan(arr[i]) else ("inf" if arr[i] > 0 else "-inf")
                more = f" (and {bad.size - 1} more in that batch)" if bad.size > 1 else ""
                raise AlignLimitsError(
                    f"reward {self.spec!r} returned {what} for row {a + i}{self._ids(prompt_ids, a + i)}{more}; "
                    "a reward must be a finite float for every completion"
                )
            out[a:b] = arr
        return out

    @staticmethod
    def _ids(prompt_ids, i: int) -> str:
        if prompt_ids is None:
            return ""
        return f" (prompt_id {prompt_ids[i]!r})"


# --------------------------------------------------------------------------- Python callables and exact


class CallableReward(RewardModel):
    """A Python callable ``f(prompts: list[str], completions: list[str]) -> list[float]`` as a reward."""

    batch_size = 4096

    def __init__(self, func: Callable, *, spec: str, name: str, description: str | None = None, batch_size: int | None = None):
        self.func = func
        self.spec = spec
        self.name = name
        doc = (getattr(func, "__doc__", None) or "").strip().splitlines()
        self.description = description or f"{name} = {spec}" + (f": {doc[0].strip()}" if doc else "")
        if batch_size:
            self.batch_size = batch_size

    def _score(self, prompts, completions, **_):
        return self.func(prompts, completions)


def column_name(text: str) -> str:
    """``text`` as a column-name fragment: runs of other characters become ``_``, lower case."""
    s = re.sub(r"[^0-9a-zA-Z]+", "_", text).strip("_").lower()
    return s or "model"


def reward_device(device: str | None = None):
    """The torch device of a neural reward model: ``device``, else ``ALIGNLIMITS_DEVICE``, else CUDA when present."""
    import os

    import torch

    return torch.device(device or os.environ.get("ALIGNLIMITS_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu"))
