r"""A proxy of known error that a trainer can be aligned to: gold plus a fixed error of every completion.

:math:`\hat r(x, y) = r(x, y) + \sigma_e\,z(y)`, with :math:`z(y)` a standard normal drawn from a hash of the seed
and the completion's text, so the proxy is a function of the text (the same completion always scores the same, as
any reward model does) whose error is independent of gold and across completions. The error does not depend on the
prompt: a reward model's errors are systematic, it over-values a kind of answer wherever it appears, so what a
policy learns of them on its training prompts it carries to new ones (an error drawn per prompt and completion
would average out on held-out prompts, and no over-optimisation would show there). The error's size is stated as a
multiple of gold's within-prompt standard deviation on the base samples (``scale``), the family of
:func:`alignlimits.methods.proxies.controlled_error_proxies`, which draws such errors per sample for the hacking
curves; this one can be trained against (Gao et al. 2022's over-optimisation experiment).
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np
from scipy import special

from alignlimits.errors import AlignLimitsError
from alignlimits.lm.reward_model import RewardModel


def text_normal(seed: int, completions: Sequence[str]) -> np.ndarray:
    """One standard normal per completion, a fixed function of the seed and the text."""
    u = []
    for c in completions:
        digest = hashlib.blake2b(f"{seed}\x00{c}".encode(), digest_size=8).digest()
        u.append((int.from_bytes(digest, "little") + 0.5) / 2.0**64)
    return special.ndtri(np.asarray(u, dtype=np.float64))


class ControlledErrorReward(RewardModel):
    """``gold`` plus an error of standard deviation ``size`` × ``scale`` (``scale``: gold's within-prompt standard
    deviation on the base samples), fixed per text by ``seed``."""

    def __init__(self, gold: RewardModel, size: float, scale: float, seed: int = 0):
        if not (np.isfinite(size) and size >= 0 and np.isfinite(scale) and scale > 0):
            raise AlignLimitsError(f"a controlled-error proxy needs an error size ≥ 0 and a gold spread > 0 "
                                   f"(got size {size}, spread {scale})")
        self.gold, self.size, self.scale, self.seed = gold, float(size), float(scale), int(seed)
        self.batch_size = gold.batch_size
        self.uses_context = gold.uses_context
        self.spec = f"error:{size:g}"
        self.name = f"{gold.name}_error{size:g}".replace(".", "_")
        self.description = (f"{self.name} = {gold.name} + {size:g} × {scale:.3g} × z(completion): gold plus a fixed "
                            f"normal error of each completion, {size:g} times gold's within-prompt std (seed {seed})")

    def _score(self, prompts: list[str], completions: list[str], **context) -> np.ndarray:
        gold = self.gold(prompts, completions, **context)
        return gold + self.size * self.scale * text_normal(self.seed, completions)
