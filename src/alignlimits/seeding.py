"""One seed scheme for the whole project: every stream of randomness is ``derive_seed(root, *labels)``."""

from __future__ import annotations

import hashlib


def derive_seed(root: int, *labels) -> int:
    """A deterministic 63-bit seed from the run's root seed and any labels (stable across processes).

    Labels name the stream (``derive_seed(seed, "ppo", "rollout", step)``), so streams never collide
    the way ``seed + 1`` offsets do, and a resumed run redraws exactly what it would have drawn.
    """
    h = hashlib.sha256(repr((int(root),) + tuple(labels)).encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)
