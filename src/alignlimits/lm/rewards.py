"""Loading reward models: ``load_reward(spec)`` turns a ``--reward`` value into a callable that scores completions.

Every reward model has

- ``.name``: the column it becomes in the sample table (``profanity``, ``minilm_summary``, ``hf_<id>``,
  ``python_<function>``, ``exact``);
- ``.spec``: the ``--reward`` value it was loaded from (error messages name it);
- ``.description``: one line stating the formula, for the run's outputs;
- ``__call__(prompts, completions, *, prompt_ids=None, sources=None) -> np.ndarray`` (float64, one value per
  completion), scored in batches of ``.batch_size``.

Specs (:data:`KNOWN_SPECS`):

``profanity``
    Safety: ``log(1 - p)`` with ``p`` = P(offensive) of the completion from ``alt-profanity-check``, ``1 - p``
    floored at 1e-4 (range [-9.21, 0], higher = safer). See :class:`ProfanityReward`.
``profanity-logit``
    The same classifier as log-odds of "not offensive": ``log(1 - p) - log(p)``, p clipped to [1e-4, 1 - 1e-4].
``minilm-summary``
    Summarisation: cosine similarity of the summary and the source document under all-MiniLM-L6-v2, minus a
    length penalty. See :class:`MiniLMSummaryReward`.
``hf:ID_OR_PATH`` / ``hf:ID_OR_PATH:LABEL``
    Any ``AutoModelForSequenceClassification``: the single logit, or a named label's log-odds.
    See :class:`HFClassifierReward`.
``python:MODULE:FUNCTION`` / ``python:path/to/file.py:FUNCTION``
    A user callable ``f(prompts, completions) -> list[float]``.
``exact``
    The fixed reward table of the ``exact`` task (:func:`alignlimits.lm.exact.exact_reward`).

Errors (all :class:`~alignlimits.errors.AlignLimitsError`, one line) name the reward spec and, for bad values,
the offending row index (and its ``prompt_id`` when the caller passes ``prompt_ids``): a reward that fails to
load, raises, returns the wrong number of values, or returns NaN/inf.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Sequence

from alignlimits.errors import AlignLimitsError
from alignlimits.lm.builtin_rewards import MiniLMSummaryReward, ProfanityReward
from alignlimits.lm.hf_reward import HFClassifierReward
from alignlimits.lm.reward_model import CallableReward, RewardModel, column_name, short_error

KNOWN_SPECS = (
    "profanity",
    "profanity-logit",
    "minilm-summary",
    "hf:ID_OR_PATH[:LABEL]",
    "python:MODULE:FUNCTION",
    "python:FILE.py:FUNCTION",
    "exact",
)


def _load_python(spec: str) -> CallableReward:
    body = spec[len("python:"):]
    if ":" not in body:
        raise AlignLimitsError(
            f"reward {spec!r}: expected python:MODULE:FUNCTION or python:path/to/file.py:FUNCTION"
        )
    target, func_name = body.rsplit(":", 1)
    if not target or not func_name.isidentifier():
        raise AlignLimitsError(
            f"reward {spec!r}: expected python:MODULE:FUNCTION or python:path/to/file.py:FUNCTION"
        )
    try:
        if target.endswith(".py") or os.sep in target or "/" in target:
            path = Path(target).expanduser()
            if not path.is_file():
                raise AlignLimitsError(f"reward {spec!r} failed to load: no such file {target!r}")
            mod_name = f"alignlimits_user_reward_{column_name(str(path.resolve()))}"
            mspec = importlib.util.spec_from_file_location(mod_name, path)
            if mspec is None or mspec.loader is None:
                raise AlignLimitsError(f"reward {spec!r} failed to load: cannot import {target!r} as Python")
            module = importlib.util.module_from_spec(mspec)
            sys.modules[mod_name] = module
            try:
                mspec.loader.exec_module(module)
            except BaseException:
                sys.modules.pop(mod_name, None)
                raise
        else:
            module = importlib.import_module(target)
    except AlignLimitsError:
        raise
    except Exception as err:  # noqa: BLE001
        raise AlignLimitsError(f"reward {spec!r} failed to load: importing {target!r} raised {short_error(err)}") from None
    func = getattr(module, func_name, None)
    if func is None:
        raise AlignLimitsError(f"reward {spec!r} failed to load: {target!r} has no attribute {func_name!r}")
    if not callable(func):
        raise AlignLimitsError(f"reward {spec!r} failed to load: {target}:{func_name} is not callable")
    return CallableReward(func, spec=spec, name="python_" + column_name(func_name))


def _load_exact(spec: str) -> CallableReward:
    try:
        from alignlimits.lm.exact import exact_reward
    except Exception as err:  # noqa: BLE001
        raise AlignLimitsError(f"reward 'exact' failed to load: {short_error(err)}") from None
    doc = (exact_reward.__doc__ or "").strip().splitlines()
    desc = "exact = " + (doc[0].strip().rstrip(".") if doc else "the exact task's fixed reward table")
    return CallableReward(exact_reward, spec="exact", name="exact", description=desc)


# --------------------------------------------------------------------------- entry point


def load_reward(spec: str, *, device: str | None = None) -> RewardModel:
    """Load the reward model named by ``spec`` (see the module docstring for the accepted specs)."""
    if not isinstance(spec, str) or not spec.strip():
        raise AlignLimitsError(f"empty reward name; use one of: {', '.join(KNOWN_SPECS)}")
    spec = spec.strip()
    key = spec.lower()
    if key == "profanity":
        return ProfanityReward(logit=False)
    if key in ("profanity-logit", "profanity_logit"):
        return ProfanityReward(logit=True)
    if key in ("minilm-summary", "minilm_summary"):
        return MiniLMSummaryReward(device=device)
    if key == "exact":
        return _load_exact(spec)
    if key.startswith("hf:"):
        return HFClassifierReward(spec, device=device)
    if key.startswith("python:"):
        return _load_python(spec)
    raise AlignLimitsError(f"unknown reward {spec!r}; known rewards: {', '.join(KNOWN_SPECS)}")


def load_rewards(specs: Sequence[str], *, device: str | None = None) -> list[RewardModel]:
    """Load several rewards; refuses two that would write the same column."""
    models = [load_reward(s, device=device) for s in specs]
    seen: dict[str, str] = {}
    for m in models:
        if m.name in seen:
            raise AlignLimitsError(
                f"rewards {seen[m.name]!r} and {m.spec!r} would both write column {m.name!r}; give each reward once"
            )
        seen[m.name] = m.spec
    return models
