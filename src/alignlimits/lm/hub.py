"""Whether the Hugging Face hub can be reached: hub ids load only then (or from the local cache)."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")


def hub_reachable(timeout: float = 2.0) -> bool:
    """False when an offline variable is set or no connection opens within ``timeout`` seconds.

    A quick socket check, so that an offline machine gets a one-line error at once instead of
    the hub client's long retry loop.
    """
    if any(os.environ.get(v, "0").strip().lower() in ("1", "true", "yes", "on") for v in OFFLINE_VARIABLES):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False
