"""Sample tables read in passes (:func:`stream_samples`): bounded memory, for `alignlimits frontier` on Parquet
tables larger than memory, with the same checks and errors as :mod:`alignlimits.samples.tables`."""

from __future__ import annotations

import json
import shutil
import tempfile
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from alignlimits.errors import AlignLimitsError
from alignlimits.samples.tables import (
    SAMPLE_ID_COLUMNS,
    _duplicates_error,
    _missing_columns,
    _parquet_parts,
    _pick_reward_column,
    _reward_problems,
)

STREAM_BATCH_ROWS = 1 << 20  # rows per Parquet batch read


class NotStreamable(Exception):
    """The table needs the in-memory reader (:func:`read_table`, :func:`validate`): it is not Parquet, or
    a column has a type the streamed reader does not take. Those readers then answer, errors included."""


@dataclass
class StreamedTable:
    """A Parquet sample table read in passes, never whole: one scan gives each prompt's id and number of
    valid samples; :meth:`blocks` starts a pass yielding the rewards in prompt order, read from a
    float64 copy in a temporary directory (``spill``, removed by :meth:`close`), or from the Parquet
    again if that copy could not be written.

    Prompts are in the order ``Groups.from_labels`` gives the in-memory table: first appearance when
    each prompt's rows are contiguous, else sorted ids (the copy is then regrouped through bucket
    files). Within a prompt, rows keep their file order.
    """

    source: str
    reward_col: str
    prompt_ids: np.ndarray
    sizes: np.ndarray
    notes: list[str]
    read: Callable[[], Iterator[np.ndarray]]  # starts a pass
    spill: Path | None = None

    @property
    def n_prompts(self) -> int:
        return int(self.sizes.size)

    def blocks(self):
        return self.read()

    def close(self) -> None:
        if self.spill is not None:
            shutil.rmtree(self.spill, ignore_errors=True)
            self.spill = None

    def __enter__(self) -> "StreamedTable":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _stream_parts(path: Path) -> list[Path]:
    if path.is_dir():
        parts = _parquet_parts(path)
    else:
        parts = [path] if path.is_file() and path.suffix.lower() == ".parquet" else []
    if not parts:
        raise NotStreamable(f"{path}: not a Parquet file or a directory of Parquet parts")
    return parts


def _frame_columns(schema) -> list[str]:
    """The DataFrame columns pandas would make: the schema's names less the stored pandas index."""
    meta = json.loads((schema.metadata or {}).get(b"pandas", b"{}") or b"{}")
    index = {c for c in meta.get("index_columns", []) if isinstance(c, str)}
    return [n for n in schema.names if n not in index]


def _stream_types(schema, reward_col: str, id_col: str | None) -> None:
    """Refuse (NotStreamable) column types the in-memory reader converts differently: prompt ids must be
    text (plain or dictionary) or integers, rewards numbers, sample ids integers."""
    ids = schema.field("prompt_id").type
    ids = ids.value_type if pa.types.is_dictionary(ids) else ids
    if not (pa.types.is_string(ids) or pa.types.is_large_string(ids) or pa.types.is_integer(ids)):
        raise NotStreamable(f"prompt_id of type {ids}")
    reward = schema.field(reward_col).type
    if not (pa.types.is_floating(reward) or pa.types.is_integer(reward)):
        raise NotStreamable(f"{reward_col} of type {reward}")
    if id_col and not pa.types.is_integer(schema.field(id_col).type):
        raise NotStreamable(f"{id_col} of type {schema.field(id_col).type}")


def _check_parts(parts: list[Path], source: str, reward_col: str | None, id_col: str | None):
    """The reward and sample-id columns of the parts' common schema, checked as validate() does."""
    try:
        metas = [pq.read_metadata(p) for p in parts]
        schemas = [pq.read_schema(p) for p in parts]
    except Exception as err:  # unreadable: read_table says how
        raise NotStreamable(str(err)) from None
    columns = _frame_columns(schemas[0])
    if any(_frame_columns(x) != columns for x in schemas[1:]) or sum(m.num_rows for m in metas) == 0:
        raise NotStreamable("parts with different columns, or no rows")
    schema = schemas[0]
    if reward_col is None:
        numeric = [c for c in columns if _numeric(schema.field(c).type)]
        reward_col = _pick_reward_column(columns, numeric, source)
    missing = _missing_columns(source, ["prompt_id", reward_col] + ([id_col] if id_col else []), columns, [reward_col])
    if missing:
        raise missing
    id_col = id_col or next((c for c in SAMPLE_ID_COLUMNS if c in columns), None)
    _stream_types(schema, reward_col, id_col)
    return reward_col, id_col


def _numeric(t) -> bool:
    t = t.value_type if pa.types.is_dictionary(t) else t
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)


def _batches(parts: list[Path], columns: list[str], source: str):
    """Record batches of ``columns`` from every part in turn, prompt ids as dictionaries; a read failure is
    a one-line error. Each pass opens the parts afresh, without pre-buffering: a reader that pre-buffers
    keeps every column chunk it read until it is closed, memory as large as the columns."""
    try:
        for part in parts:
            with pq.ParquetFile(part, read_dictionary=["prompt_id"], pre_buffer=False) as f:
                yield from f.iter_batches(batch_size=STREAM_BATCH_ROWS, columns=columns)
    except Exception as err:  # pyarrow raises its own types for corrupt files
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise AlignLimitsError(f"{source} could not be read as parquet ({detail}); is it truncated or corrupt?") from None


def _as_float(column) -> np.ndarray:
    """A reward column as float64, nulls as NaN (as pandas reads them)."""
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)


class _Codes:
    """Prompt ids to integer codes, in order of first sight, from each batch's dictionary."""

    def __init__(self):
        self.index: dict[str, int] = {}

    def __call__(self, column) -> np.ndarray:
        if not pa.types.is_dictionary(column.type):
            if pa.types.is_integer(column.type):
                column = pc.cast(column, pa.string())
            column = column.dictionary_encode()
        if column.null_count:
            raise NotStreamable("missing prompt ids")
        indices = column.indices.to_numpy(zero_copy_only=False)
        used = np.flatnonzero(np.bincount(indices, minlength=len(column.dictionary)))  # a dictionary may hold more
        words = column.dictionary.take(pa.array(used)).to_pylist()
        local = np.zeros(len(column.dictionary), np.int64)
        local[used] = np.fromiter((self.index.setdefault(w, len(self.index)) for w in words), np.int64, len(words))
        return local[indices]

    def ids(self) -> np.ndarray:
        out = np.empty(len(self.index), dtype=object)
        out[:] = list(self.index)
        return out


class _FirstRows:
    """How many rows were flagged, and the first few row numbers."""

    def __init__(self, keep: int = 3):
        self.count, self.rows, self.keep = 0, np.zeros(0, np.int64), keep

    def add(self, rows: np.ndarray, count: int | None = None) -> None:
        """Flag ``rows`` (of ``count`` flagged when only the first few are given)."""
        self.count += rows.size if count is None else count
        self.rows = np.sort(np.concatenate([self.rows, rows]))[: self.keep]


def _duplicate_rows(codes: np.ndarray, sids: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Rows repeating an earlier row's (prompt, sample id): all but the first of each key, as
    ``DataFrame.duplicated(keep="first")`` marks them (the inputs are in row order, each prompt's rows together)."""
    if not ((codes[1:] == codes[:-1]) & (sids[1:] <= sids[:-1])).any():
        return np.zeros(0, np.int64)  # sample ids rise within every prompt: none repeats
    order = np.lexsort((sids, codes))  # stable: equal keys stay in row order
    c, s = codes[order], sids[order]
    again = (c[1:] == c[:-1]) & (s[1:] == s[:-1])
    return rows[order][1:][again]


@dataclass
class _Scan:
    """What one pass over the table learns: codes, valid rows per code, first sight, contiguity, problems."""

    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    first: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    runs: int = 0
    last: int = -1
    rows: int = 0
    kept: int = 0
    nan: _FirstRows = field(default_factory=_FirstRows)
    inf: _FirstRows = field(default_factory=_FirstRows)
    dups: _FirstRows = field(default_factory=_FirstRows)
    carry: tuple | None = None  # the last run of (codes, sample ids, rows), not yet checked for duplicates

    def add(self, codes: np.ndarray, rewards: np.ndarray, sids: np.ndarray | None, drop: bool) -> None:
        nan, inf = np.isnan(rewards), np.isinf(rewards)
        for flags, found in ((nan, self.nan), (inf, self.inf)):
            found.add(self.rows + np.flatnonzero(flags)[: found.keep], int(flags.sum()))
        self.rows += codes.size
        if drop:
            ok = ~(nan | inf)
            codes, sids = codes[ok], None if sids is None else sids[ok]
        n = int(codes.max()) + 1 if codes.size else 0
        if n > self.counts.size:
            self.counts = np.concatenate([self.counts, np.zeros(n - self.counts.size, np.int64)])
            self.first = np.concatenate([self.first, np.full(n - self.first.size, -1, np.int64)])
        self.counts += np.bincount(codes, minlength=self.counts.size)
        starts = np.flatnonzero(np.concatenate([[True], codes[1:] != codes[:-1]])) if codes.size else np.zeros(0, np.int64)
        seen, at = np.unique(codes[starts], return_index=True)  # first sight of a code is at a run's start
        new = self.first[seen] < 0
        self.first[seen[new]] = self.kept + starts[at[new]]
        self.runs += starts.size - int(codes.size > 0 and codes[0] == self.last)
        self.last = int(codes[-1]) if codes.size else self.last
        if sids is not None:
            self._check_runs(codes, sids, self.kept + np.arange(codes.size), final=False)
        self.kept += codes.size

    def _check_runs(self, codes, sids, rows, final: bool) -> None:
        """Duplicates among whole runs of a prompt (right when every prompt's rows are contiguous)."""
        if self.carry is not None:
            codes, sids, rows = (np.concatenate([a, b]) for a, b in zip(self.carry, (codes, sids, rows)))
        starts = np.flatnonzero(codes[1:] != codes[:-1]) + 1
        cut = codes.size if final else int(starts[-1]) if starts.size else 0  # the last run may go on
        self.carry = (codes[cut:], sids[cut:], rows[cut:])
        if cut:
            self.dups.add(_duplicate_rows(codes[:cut], sids[:cut], rows[:cut]))

    def finish(self) -> None:
        if self.carry is not None:
            self._check_runs(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), final=True)

    @property
    def contiguous(self) -> bool:
        return self.runs == int(np.count_nonzero(self.counts))


def _prompt_order(scan: _Scan, codes: _Codes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ids and sizes of the prompts with valid rows, in ``Groups.from_labels``'s order (first sight when
    contiguous, else sorted ids), and each code's position in that order (-1: no valid rows)."""
    valid = np.flatnonzero(scan.counts)
    ids = codes.ids()
    order = valid[np.argsort(scan.first[valid] if scan.contiguous else ids[valid], kind="stable")]
    position = np.full(scan.counts.size, -1, np.int64)
    position[order] = np.arange(order.size)
    return ids[order], scan.counts[order], position


def _sample_ids(batch, id_col: str | None) -> np.ndarray | None:
    if id_col is None:
        return None
    column = batch.column(2)
    if column.null_count:
        raise NotStreamable(f"missing {id_col}")
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.int64)


def _reward_blocks(parts: list[Path], reward_col: str, source: str, drop: bool):
    """A pass over a table whose prompts are contiguous: its rewards in file order (less invalid rows)."""
    for batch in _batches(parts, [reward_col], source):
        values = _as_float(batch.column(0))
        yield values[np.isfinite(values)] if drop else values


def _file_blocks(path: Path):
    """A pass over a grouped spill file of float64 rewards."""
    with open(path, "rb") as fh:
        while (block := np.fromfile(fh, np.float64, count=STREAM_BATCH_ROWS)).size:
            yield block


def _spill_grouped(parts: list[Path], columns, source: str, codes: _Codes, position: np.ndarray, sizes: np.ndarray,
                   drop: bool, spill: Path) -> tuple[Path, _FirstRows]:
    """Rewrite the valid rewards grouped by prompt (rows of a prompt in file order) into ``spill``/rewards.f64:
    rows go to bucket files of consecutive prompts (about STREAM_BATCH_ROWS rewards each), each bucket is
    sorted on its own. Duplicate (prompt, sample id) rows are found per bucket."""
    bucket_of = (np.cumsum(sizes) - sizes) // STREAM_BATCH_ROWS
    fields = [("pos", np.int64), ("reward", np.float64)] + ([("sid", np.int64), ("row", np.int64)] if len(columns) > 2 else [])
    kept = 0
    for batch in _batches(parts, columns, source):
        rewards = _as_float(batch.column(1))
        ok = np.isfinite(rewards) if drop else np.ones(rewards.size, bool)
        rec = np.empty(int(ok.sum()), fields)
        rec["pos"], rec["reward"] = position[codes(batch.column(0))[ok]], rewards[ok]
        if len(fields) > 2:
            rec["sid"], rec["row"] = _sample_ids(batch, columns[2])[ok], kept + np.arange(rec.size)
        kept += rec.size
        buckets = bucket_of[rec["pos"]]
        rec, buckets = rec[np.argsort(buckets, kind="stable")], np.sort(buckets, kind="stable")
        for k, lo, hi in _runs(buckets):
            with open(spill / f"{k}.bin", "ab") as fh:
                rec[lo:hi].tofile(fh)
    dups, grouped = _FirstRows(), spill / "rewards.f64"
    with open(grouped, "wb") as out:
        for k in np.unique(bucket_of):
            rec = np.fromfile(spill / f"{k}.bin", fields)
            (spill / f"{k}.bin").unlink()
            rec = rec[np.argsort(rec["pos"], kind="stable")]
            np.ascontiguousarray(rec["reward"]).tofile(out)
            if len(fields) > 2:
                dups.add(_duplicate_rows(rec["pos"], rec["sid"], rec["row"]))
    return grouped, dups


def _runs(sorted_values: np.ndarray):
    """(value, start, stop) of each run of equal values in a sorted array."""
    starts = np.concatenate([[0], np.flatnonzero(sorted_values[1:] != sorted_values[:-1]) + 1])
    stops = np.concatenate([starts[1:], [sorted_values.size]])
    return zip(sorted_values[starts].tolist(), starts.tolist(), stops.tolist())


class _RawCopy:
    """The valid rewards in file order, written as float64 to a temporary file while the table is scanned:
    later passes read it back instead of decoding the Parquet again. A write that fails (a full disk) only
    drops the copy: the passes then decode the Parquet."""

    def __init__(self, path: Path):
        try:
            self.fh, self.path = open(path, "wb"), path
        except OSError:
            self.fh, self.path = None, None

    def write(self, values: np.ndarray) -> None:
        if self.fh is not None:
            try:
                _append(values, self.fh)
            except OSError:
                self.drop()

    def drop(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.path.unlink(missing_ok=True)
        self.fh, self.path = None, None

    def close(self) -> Path | None:
        if self.fh is not None:
            try:
                self.fh.close()
            except OSError:
                self.drop()
        return self.path


def _append(values: np.ndarray, fh) -> None:
    values.tofile(fh)


def _scan(parts: list[Path], columns: list[str], source: str, drop: bool, raw: _RawCopy) -> tuple[_Codes, _Scan]:
    codes, scan = _Codes(), _Scan()
    for batch in _batches(parts, columns, source):
        rewards = _as_float(batch.column(1))
        scan.add(codes(batch.column(0)), rewards, _sample_ids(batch, columns[2] if len(columns) > 2 else None), drop)
        raw.write(rewards[np.isfinite(rewards)] if drop else rewards)
    scan.finish()
    return codes, scan


def stream_samples(path, reward_col: str | None = None, drop_invalid: bool = False,
                   id_col: str | None = None) -> StreamedTable:
    """Scan a Parquet sample table (file or run directory) in bounded memory and check it as
    :func:`validate` does, with the same errors; :class:`NotStreamable` when it needs :func:`read_samples`.

    One pass reads the prompt ids as dictionary codes (never a Python string per row), the reward and
    the sample-id column, and copies the valid rewards to a temporary file (8 bytes a sample, in
    ``TMPDIR``) that later passes read; prompts whose rows are not contiguous are regrouped into it
    through bucket files. :meth:`StreamedTable.close` removes them.
    """
    path = Path(path)
    source = str(path)
    parts = _stream_parts(path)
    reward_col, id_col = _check_parts(parts, source, reward_col, id_col)
    columns = ["prompt_id", reward_col] + ([id_col] if id_col else [])
    spill = Path(tempfile.mkdtemp(prefix="alignlimits-stream-"))
    try:
        table = _stream_table(parts, columns, source, drop_invalid, spill)
    except BaseException:
        shutil.rmtree(spill, ignore_errors=True)
        raise
    weakref.finalize(table, shutil.rmtree, spill, True)
    return table


def _stream_table(parts: list[Path], columns: list[str], source: str, drop: bool, spill: Path) -> StreamedTable:
    reward_col, id_col = columns[1], columns[2] if len(columns) > 2 else None
    raw = _RawCopy(spill / "scanned.f64")
    codes, scan = _scan(parts, columns, source, drop, raw)
    if (scan.nan.count or scan.inf.count) and not drop:
        raise _reward_problems(reward_col, source, {"NaN/missing": (scan.nan.count, scan.nan.rows),
                                                    "infinite": (scan.inf.count, scan.inf.rows)})
    dropped = scan.rows - scan.kept
    notes = [f"dropped {dropped} of {scan.rows} rows with invalid rewards (--drop-invalid)"] if dropped else []
    if scan.kept == 0:
        raise AlignLimitsError(f"{source}: no rows left after dropping invalid rewards")
    ids, sizes, position = _prompt_order(scan, codes)
    if scan.contiguous:
        copy = raw.close()
        if scan.dups.count:
            raise _duplicates_error(source, id_col, scan.dups.count, scan.dups.rows)
        read = (lambda: _file_blocks(copy)) if copy else (lambda: _reward_blocks(parts, reward_col, source, dropped > 0))
        return StreamedTable(source, reward_col, ids, sizes, notes, read=read, spill=spill)
    raw.drop()
    try:
        grouped, dups = _spill_grouped(parts, columns, source, codes, position, sizes, dropped > 0, spill)
    except OSError as err:
        raise AlignLimitsError(
            f"{source}: its prompts' rows are not contiguous, and regrouping them needs about "
            f"{32 * scan.kept / 2**30:.2g} GiB in {spill.parent} ({err.strerror}); set TMPDIR to a larger disk, "
            "or sort the table by prompt_id"
        ) from None
    if dups.count:
        raise _duplicates_error(source, id_col, dups.count, dups.rows)
    return StreamedTable(source, reward_col, ids, sizes, notes, read=lambda: _file_blocks(grouped), spill=spill)
