"""`alignlimits frontier` streams Parquet (issue 12): the streamed reader sees what the in-memory one sees,
the frontier's JSON is the same either way, and bad input still gives the same one-line errors."""

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import alignlimits.samples.streaming as data
import alignlimits.theory.stream as stream
from alignlimits.samples import NotStreamable, read_samples, stream_samples
from alignlimits.errors import AlignLimitsError
from alignlimits.pipeline.analysis import frontier_result
from alignlimits.theory.groups import Groups

from cli_helpers import CLI


def table(P=36, seed=0, layout="contiguous"):
    """P prompts of 24 to 40 samples (string ids, ``sample_idx``); ``interleaved``: rows in random order."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(24, 40, P)
    frame = pd.DataFrame({
        "prompt_id": np.repeat([f"q{(7 * i) % P:03d}" for i in range(P)], sizes),
        "sample_idx": np.concatenate([np.arange(s) for s in sizes]),
        "reward": np.concatenate([rng.normal(rng.normal(), rng.uniform(0.5, 1.5), s) for s in sizes]),
    })
    if layout == "interleaved":
        frame = frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    return frame


def write(frame, path, rows_per_group=100):
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=rows_per_group)
    return path


@pytest.fixture
def small_batches(monkeypatch):
    """Batches, spill buckets and chunks far smaller than the table, so every seam is crossed."""
    monkeypatch.setattr(data, "STREAM_BATCH_ROWS", 70)
    monkeypatch.setattr(stream, "CHUNK_SAMPLES", 150)


def in_memory(path, drop_invalid=False):
    t = read_samples(path, drop_invalid=drop_invalid)
    groups, order, ids = Groups.from_labels(t.prompt_ids)
    return t, groups.sizes, ids, t.rewards("reward")[order]


@pytest.mark.parametrize("layout", ["contiguous", "interleaved"])
def test_reader_sees_the_in_memory_table(tmp_path, small_batches, layout):
    path = write(table(layout=layout), tmp_path / "s.parquet")
    _, sizes, ids, rewards = in_memory(path)
    with stream_samples(path) as streamed:
        assert streamed.reward_col == "reward"
        assert list(streamed.prompt_ids) == list(ids) and np.array_equal(streamed.sizes, sizes)
        for _ in range(2):  # every pass reads the same
            assert np.array_equal(np.concatenate(list(streamed.blocks())), rewards)
        spill = streamed.spill
        assert sorted(f.name for f in spill.iterdir()) == ["rewards.f64" if layout == "interleaved" else "scanned.f64"]
    assert not spill.exists()


def test_without_room_for_the_copy_it_reads_the_parquet_again(tmp_path, small_batches, monkeypatch):
    def full(values, fh):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(data, "_append", full)
    path = write(table(seed=6), tmp_path / "s.parquet")
    with stream_samples(path) as streamed:
        assert list(streamed.spill.iterdir()) == []
        assert np.array_equal(np.concatenate(list(streamed.blocks())), in_memory(path)[3])
    path = write(table(seed=6, layout="interleaved"), tmp_path / "i.parquet")
    monkeypatch.setattr(data, "_spill_grouped", lambda *a: full(None, None))
    message = error_of(lambda: stream_samples(path))
    assert "not contiguous" in message and "TMPDIR" in message


def assert_same_json(a, b, path="", tol=1e-9):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            assert_same_json(a[k], b[k], f"{path}.{k}", tol)
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for x, y in zip(a, b):
            assert_same_json(x, y, path, tol)
    elif isinstance(a, float):
        assert b == pytest.approx(a, rel=tol, abs=tol, nan_ok=True), path
    else:
        assert a == b, path


@pytest.mark.parametrize("layout", ["contiguous", "interleaved"])
@pytest.mark.parametrize("budget", ["shared", "per-prompt"])
def test_frontier_result_is_the_same_streamed(tmp_path, small_batches, layout, budget):
    frame = table(seed=1, layout=layout)
    frame.loc[[3, 50, 51], "reward"] = [np.nan, np.inf, -np.inf]
    path = write(frame, tmp_path / "s.parquet")
    options = dict(budget=budget, n_bootstrap=50, bon=[1, 2, 4, 16])
    memory = frontier_result(read_samples(path, drop_invalid=True), "reward", **options)
    with stream_samples(path, drop_invalid=True) as streamed:
        result = frontier_result(streamed, "reward", **options)
    assert result["notes"][0] == f"dropped 3 of {len(frame)} rows with invalid rewards (--drop-invalid)"
    assert_same_json(memory, result)


def error_of(call):
    with pytest.raises(AlignLimitsError) as err:
        call()
    return str(err.value)


@pytest.mark.parametrize("layout", ["contiguous", "interleaved"])
def test_bad_input_gives_the_in_memory_errors(tmp_path, small_batches, layout):
    frame = table(seed=2, layout=layout)
    bad = frame.copy()
    bad.loc[[5, 90, 91, 92, 200], "reward"] = [np.nan, np.inf, np.nan, np.nan, np.nan]
    path = write(bad, tmp_path / "nan.parquet")
    assert error_of(lambda: stream_samples(path)) == error_of(lambda: read_samples(path))
    dup = frame.copy()
    dup.loc[[10, 150, 151], "sample_idx"] = dup.loc[[11, 152, 152], "sample_idx"].to_numpy()
    dup.loc[[10, 150, 151], "prompt_id"] = dup.loc[[11, 152, 152], "prompt_id"].to_numpy()
    path = write(dup, tmp_path / "dup.parquet")
    message = error_of(lambda: stream_samples(path))
    assert message == error_of(lambda: read_samples(path)) and "duplicate (prompt_id, sample_idx)" in message
    path = write(frame.rename(columns={"reward": "score", "sample_idx": "seed"}).assign(gold=1.0), tmp_path / "two.parquet")
    assert error_of(lambda: stream_samples(path)) == error_of(lambda: read_samples(path))
    assert error_of(lambda: stream_samples(path, "reward")) == error_of(lambda: read_samples(path, ["reward"]))
    path = write(frame.assign(reward=np.nan), tmp_path / "none.parquet")
    assert error_of(lambda: stream_samples(path, drop_invalid=True)) == error_of(lambda: read_samples(path, drop_invalid=True))


def test_what_the_streamed_reader_leaves_to_the_in_memory_one(tmp_path):
    frame = table(seed=3)
    for odd in (frame.assign(prompt_id=frame["prompt_id"].str[1:].astype(float)),  # float ids: "1.0" in memory
                frame.assign(reward=frame["reward"].astype(str))):  # text rewards: parsed in memory
        with pytest.raises(NotStreamable):
            stream_samples(write(odd, tmp_path / "odd.parquet"))
    frame.to_csv(tmp_path / "s.csv", index=False)
    with pytest.raises(NotStreamable):
        stream_samples(tmp_path / "s.csv")
    ints = frame.assign(prompt_id=frame["prompt_id"].str[1:].astype(int))  # int ids become "7" either way
    path = write(ints, tmp_path / "ints.parquet")
    with stream_samples(path) as streamed:
        assert list(streamed.prompt_ids) == list(in_memory(path)[2])


def test_run_directory_of_parts(tmp_path, small_batches):
    frame = table(seed=4)
    (tmp_path / "run" / "samples").mkdir(parents=True)
    half = len(frame) // 2
    write(frame.iloc[:half], tmp_path / "run" / "samples" / "part-000.parquet")
    write(frame.iloc[half:], tmp_path / "run" / "samples" / "part-001.parquet")
    _, sizes, ids, rewards = in_memory(tmp_path / "run")
    with stream_samples(tmp_path / "run") as streamed:
        assert list(streamed.prompt_ids) == list(ids) and np.array_equal(streamed.sizes, sizes)
        assert np.array_equal(np.concatenate(list(streamed.blocks())), rewards)


def test_command_output_is_the_same_for_parquet_and_csv(tmp_path):
    """The command streams the Parquet table (40 prompts, rows shuffled) and reads the CSV in memory."""
    frame = table(P=40, seed=5, layout="interleaved")
    write(frame, tmp_path / "s.parquet")
    frame.to_csv(tmp_path / "s.csv", index=False)
    out = {}
    for kind in ("parquet", "csv"):
        proc = CLI.run("frontier", tmp_path / f"s.{kind}", "--kl", "0.1,0.2", "--json", tmp_path / f"{kind}.json")
        assert proc.returncode == 0, proc.stderr
        out[kind] = json.loads((tmp_path / f"{kind}.json").read_text())
    assert_same_json(out["csv"], out["parquet"])
    bad = frame.copy()
    bad.loc[7, "reward"] = np.inf
    CLI.assert_clean_error(CLI.run("frontier", write(bad, tmp_path / "bad.parquet")), "1 infinite (rows 7)", "--drop-invalid")


def test_sigterm_removes_the_spill(tmp_path):
    """A command ended by SIGTERM (a scheduler's kill, `timeout`) unwinds: the spill in TMPDIR goes with it."""
    import os
    import subprocess
    import sys

    path = write(table(), tmp_path / "s.parquet")
    script = ("import os, signal, sys, time\n"
              "from alignlimits.cli import _on_sigterm\n"
              "from alignlimits.samples import stream_samples\n"
              "signal.signal(signal.SIGTERM, _on_sigterm)\n"
              f"t = stream_samples({str(path)!r})\n"
              "print(t.spill, flush=True)\n"
              "os.kill(os.getpid(), signal.SIGTERM)\n"
              "time.sleep(30)\n")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "TMPDIR": str(tmp)})
    spill = done.stdout.strip()
    assert spill.startswith(str(tmp)) and done.returncode == 143
    assert done.stderr.strip() == "alignlimits: terminated; run the same command again to resume."
    assert not list(tmp.iterdir())
