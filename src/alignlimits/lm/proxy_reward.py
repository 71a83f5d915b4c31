r"""A proxy of known error that a trainer can be aligned to: gold plus a fixed error of every completion.

:math:`\hat r(x, y) = r(x, y) + \sigma_e\,z(y)`, with :math:`z(y) = \sum_{w \in y} g(w) / \sqrt{|y|}` over the
words of the completion, each :math:`g(w)` a standard normal drawn from a hash of the seed and the word. The proxy
is a function of the text (the same completion always scores the same, as any reward model does), its error
independent of gold, and the error is *systematic*: like a reward model, the proxy over-values some words wherever
they appear, in any completion of any prompt. A policy can learn that (use the over-valued words), and what it
learns on its training prompts it carries to new ones; an error drawn per completion as a whole could only be
learned where completions repeat (a task as small as the exact one), and on open text would act as noise. The
error's size is stated as a multiple of gold's within-prompt standard deviation on the base samples (``scale``
converts), the family of :func:`alignlimits.methods.proxies.controlled_error_proxies`, which draws such errors per
sample for the hacking curves; this one can be trained against (Gao et al. 2022's over-optimisation experiment).
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np
from scipy import special

from alignlimits.errors import AlignLimitsError
from alignlimits.lm.reward_model import RewardModel


def text_normal(seed: int, texts: Sequence[str]) -> np.ndarray:
    """One standard normal per text, a fixed function of the seed and the text."""
    u = []
    for c in texts:
        digest = hashlib.blake2b(f"{seed}\x00{c}".encode(), digest_size=8).digest()
        u.append((int.from_bytes(digest, "little") + 0.5) / 2.0**64)
    return special.ndtri(np.asarray(u, dtype=np.float64))


def word_error(seed: int, completions: Sequence[str]) -> np.ndarray:
    """z(y) = Σ_w g(w)/√|y| over each completion's words (the empty completion is one word, ""); g = ``text_normal``."""
    words = [c.split() or [""] for c in completions]
    vocab = sorted({w for ws in words for w in ws})
    g = dict(zip(vocab, text_normal(seed, vocab)))
    return np.array([sum(g[w] for w in ws) / np.sqrt(len(ws)) for ws in words], dtype=np.float64)


class ControlledErrorReward(RewardModel):
    """``gold`` plus ``size`` × ``scale`` × z(y), the word error of ``seed`` (:func:`word_error`). ``scale``: gold's
    within-prompt standard deviation on the base samples over z's there, so that the error's is ``size`` × gold's."""

    def __init__(self, gold: RewardModel, size: float, scale: float, seed: int = 0):
        if not (np.isfinite(size) and size >= 0 and np.isfinite(scale) and scale > 0):
            raise AlignLimitsError(f"a controlled-error proxy needs an error size ≥ 0 and a gold spread > 0 "
                                   f"(got size {size}, spread {scale})")
        self.gold, self.size, self.scale, self.seed = gold, float(size), float(scale), int(seed)
        self.batch_size = gold.batch_size
        self.uses_context = gold.uses_context
        self.spec = f"error:{size:g}"
        self.name = f"{gold.name}_error{size:g}".replace(".", "_")
        self.description = (f"{self.name} = {gold.name} + {size:g} × {scale:.3g} × z(words): gold plus a fixed "
                            f"normal error of each word, {size:g} times gold's within-prompt std (seed {seed})")

    def _score(self, prompts: list[str], completions: list[str], **context) -> np.ndarray:
        gold = self.gold(prompts, completions, **context)
        return gold + self.size * self.scale * word_error(self.seed, completions)
