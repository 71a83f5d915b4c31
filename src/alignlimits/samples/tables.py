"""Sample tables (DESIGN §2): one row per (prompt, sample), read from Parquet, JSONL or CSV into memory.

A run directory is read through its ``samples/`` folder of Parquet parts (or a single
``samples.parquet``). Every problem with the input is an :class:`AlignLimitsError` naming
what is wrong and where.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from alignlimits.errors import AlignLimitsError

SAMPLE_ID_COLUMNS = ("sample_idx", "sample_id")
METADATA_COLUMNS = {
    "prompt_id", "sample_idx", "sample_id", "prompt", "completion", "completion_ids", "logp_base",
    "logp_policy", "n_tokens", "method", "beta", "seed", "truncated", "split",
}
FORMATS = (".parquet", ".jsonl", ".json", ".csv")


@dataclass
class SampleTable:
    """A validated sample table: ``frame`` plus the reward columns checked to be finite numbers."""

    frame: pd.DataFrame
    source: str
    notes: list[str] = field(default_factory=list)

    @property
    def prompt_ids(self) -> np.ndarray:
        return self.frame["prompt_id"].to_numpy()

    def rewards(self, column: str) -> np.ndarray:
        return self.frame[column].to_numpy(dtype=np.float64)


def _parquet_parts(run_dir: Path) -> list[Path]:
    parts = sorted((run_dir / "samples").glob("*.parquet")) if (run_dir / "samples").is_dir() else []
    single = run_dir / "samples.parquet"
    return parts or ([single] if single.exists() else [])


def _read_file(path: Path) -> pd.DataFrame:
    suffixes = [s.lower() for s in path.suffixes]
    compressed = suffixes[-1:] == [".gz"]
    kind = (suffixes[-2] if compressed and len(suffixes) > 1 else suffixes[-1]) if suffixes else ""
    if kind not in FORMATS:
        raise AlignLimitsError(
            f"{path}: unknown format {''.join(path.suffixes) or '(no extension)'}; use .parquet, .jsonl, .csv "
            "(optionally .gz)"
        )
    try:
        if kind == ".parquet":
            if compressed:
                with gzip.open(path) as fh:
                    return pd.read_parquet(fh)
            return pd.read_parquet(path)
        if kind in (".jsonl", ".json"):
            return pd.read_json(path, lines=kind == ".jsonl", compression="gzip" if compressed else None,
                                dtype={"prompt_id": str})
        return pd.read_csv(path, compression="gzip" if compressed else None, dtype={"prompt_id": str})
    except AlignLimitsError:
        raise
    except pd.errors.EmptyDataError:
        raise AlignLimitsError(f"{path} is empty: it holds no sample rows") from None
    except (OSError, EOFError, ValueError, gzip.BadGzipFile) as err:
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise AlignLimitsError(f"{path} could not be read as {kind[1:]} ({detail}); is it truncated or corrupt?") from None
    except Exception as err:  # pyarrow raises its own types for corrupt files
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise AlignLimitsError(f"{path} could not be read as {kind[1:]} ({detail}); is it truncated or corrupt?") from None


def read_table(path) -> pd.DataFrame:
    """Read a sample file or a run directory into a DataFrame, unvalidated."""
    path = Path(path)
    if not path.exists():
        raise AlignLimitsError(f"{path} does not exist; give a sample file (.parquet/.jsonl/.csv) or a run directory")
    if path.is_dir():
        parts = _parquet_parts(path)
        if not parts:
            raise AlignLimitsError(f"{path} is a directory without samples/ or samples.parquet; run `alignlimits sample` into it first")
        frame = pd.concat([_read_file(p) for p in parts], ignore_index=True)
    else:
        try:
            with open(path, "rb"):
                pass
        except OSError as err:
            raise AlignLimitsError(f"{path} cannot be opened ({err.strerror}); check the path and its permissions") from None
        frame = _read_file(path)
    if len(frame) == 0:
        raise AlignLimitsError(f"{path} holds no sample rows")
    return frame


def _row_list(rows: np.ndarray, limit: int = 3, total: int | None = None) -> str:
    """The first ``limit`` row numbers and how many more (of ``total``, default all of ``rows``)."""
    total = rows.size if total is None else total
    shown = ", ".join(str(int(r)) for r in rows[:limit])
    return shown + (f" and {total - limit} more" if total > limit else "")


def _reward_problems(col: str, source: str, found: dict[str, tuple[int, np.ndarray]]) -> AlignLimitsError:
    """The error for bad values in a reward column: ``found`` maps "non-numeric", "NaN/missing",
    "infinite" to (how many, the first row numbers)."""
    problems = [f"{count} {kind} (rows {_row_list(rows, total=count)})" for kind, (count, rows) in found.items() if count]
    return AlignLimitsError(
        f"reward column {col!r} in {source} has {'; '.join(problems)}; fix them or pass --drop-invalid to drop those rows"
    )


def _missing_columns(source: str, needed: list[str], columns: list[str], reward_cols: list[str]) -> AlignLimitsError | None:
    missing = [c for c in needed if c not in columns]
    if not missing:
        return None
    return AlignLimitsError(
        f"{source} has no column {', '.join(repr(c) for c in missing)}; its columns are: "
        f"{', '.join(map(str, columns))}" + (" (choose one with --reward-col)" if set(missing) & set(reward_cols) else "")
    )


def _duplicates_error(source: str, id_col: str, count: int, rows: np.ndarray) -> AlignLimitsError:
    return AlignLimitsError(
        f"{source} has {count} duplicate (prompt_id, {id_col}) rows (rows {_row_list(rows, total=count)}); "
        "remove the duplicates (a resumed run must not repeat samples)"
    )


def validate(frame: pd.DataFrame, reward_cols, source: str = "samples", drop_invalid: bool = False,
             id_col: str | None = None) -> SampleTable:
    """Check columns and reward values; returns a :class:`SampleTable` with ``prompt_id`` as strings.

    Row numbers in messages count data rows from 0.
    """
    reward_cols = [reward_cols] if isinstance(reward_cols, str) else list(reward_cols)
    needed = ["prompt_id", *reward_cols] + ([id_col] if id_col else [])
    missing = _missing_columns(source, needed, list(frame.columns), reward_cols)
    if missing:
        raise missing
    frame = frame.copy()
    frame["prompt_id"] = frame["prompt_id"].astype(str)
    notes: list[str] = []
    bad_any = np.zeros(len(frame), bool)
    for col in reward_cols:
        values = pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=np.float64)
        non_numeric = np.nonzero(pd.isna(values) & ~pd.isna(frame[col]).to_numpy())[0]
        nan_rows = np.nonzero(pd.isna(frame[col]).to_numpy())[0]
        inf_rows = np.nonzero(np.isinf(values))[0]
        if (non_numeric.size or nan_rows.size or inf_rows.size) and not drop_invalid:
            raise _reward_problems(col, source, {"non-numeric": (non_numeric.size, non_numeric),
                                                 "NaN/missing": (nan_rows.size, nan_rows),
                                                 "infinite": (inf_rows.size, inf_rows)})
        bad_any |= ~np.isfinite(values)
        frame[col] = values
    if bad_any.any():
        notes.append(f"dropped {int(bad_any.sum())} of {len(frame)} rows with invalid rewards (--drop-invalid)")
        frame = frame.loc[~bad_any].reset_index(drop=True)
        if len(frame) == 0:
            raise AlignLimitsError(f"{source}: no rows left after dropping invalid rewards")
    id_col = id_col or next((c for c in SAMPLE_ID_COLUMNS if c in frame.columns), None)
    if id_col:
        dup = frame.duplicated(["prompt_id", id_col], keep="first").to_numpy()
        if dup.any():
            rows = np.nonzero(dup)[0]
            raise _duplicates_error(source, id_col, rows.size, rows)
    return SampleTable(frame=frame, source=source, notes=notes)


def default_reward_column(frame: pd.DataFrame, source: str = "samples") -> str:
    """``reward`` if present, else the table's only numeric non-metadata column."""
    numeric = [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])]
    return _pick_reward_column(list(frame.columns), numeric, source)


def _pick_reward_column(columns: list, numeric: list, source: str) -> str:
    if "reward" in columns:
        return "reward"
    numeric = [c for c in numeric if c not in METADATA_COLUMNS]
    if len(numeric) == 1:
        return numeric[0]
    raise AlignLimitsError(
        f"{source} has no 'reward' column and {'several' if numeric else 'no'} candidate reward columns"
        f"{' (' + ', '.join(numeric) + ')' if numeric else ''}; name one with --reward-col "
        f"(columns: {', '.join(map(str, columns))})"
    )


def read_samples(path, reward_cols=None, drop_invalid: bool = False, id_col: str | None = None) -> SampleTable:
    """Read and validate a sample table (file or run directory); ``reward_cols=None`` picks the default."""
    frame = read_table(path)
    if reward_cols is None:
        reward_cols = default_reward_column(frame, str(path))
    return validate(frame, reward_cols, str(path), drop_invalid, id_col)


# ---------------------------------------------------------------------------------------------------
# Parquet streamed: bounded memory for `alignlimits frontier` on tables larger than memory
