"""Writing run files atomically: a temporary file, flushed to disk, then renamed into place.

A killed run or a full disk leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np


def _json_default(x):
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating):
        return float(x)
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"{type(x).__name__} is not JSON serialisable")


def _atomic(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("." + path.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(obj, path) -> None:
    """JSON (numpy numbers and arrays allowed), indented for people."""
    text = json.dumps(obj, indent=2, default=_json_default) + "\n"
    _atomic(path, lambda fh: fh.write(text.encode("utf-8")))


def write_parquet_atomic(frame, path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    _atomic(path, lambda fh: pq.write_table(table, fh))
