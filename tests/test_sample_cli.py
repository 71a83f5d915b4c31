"""`alignlimits sample`: the table, resumption after a kill, reruns, and every bad input (exact task: fast)."""

import errno
import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from alignlimits.cli import main
from alignlimits.pipeline import sampling_run

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("ALIGNLIMITS_CACHE", str(tmp_path_factory.getbasetemp() / "alcache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def cli(*args):
    """Run the CLI in-process; returns the exit code (0 on success)."""
    old = sys.argv
    sys.argv = ["alignlimits", *map(str, args)]
    try:
        main()
        return 0
    except SystemExit as exc:
        return exc.code
    finally:
        sys.argv = old


def table(run_dir) -> pd.DataFrame:
    parts = sorted(glob.glob(str(Path(run_dir) / "samples" / "*.parquet")))
    return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)


def test_sample_exact_writes_table_and_config(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli("sample", "--task", "exact", "--n", "6", "--out", out, "--quiet") == 0
    df = table(out)
    assert len(df) == 12 * 6
    assert {"prompt_id", "sample_idx", "prompt", "completion", "completion_ids", "logp_base", "n_tokens",
            "truncated", "seed", "split", "exact"} <= set(df.columns)
    assert not df.duplicated(["prompt_id", "sample_idx"]).any()
    assert (df["logp_base"] < 0).all() and df["exact"].notna().all()
    assert set(df["split"]) == {"train", "heldout"}
    assert (df["n_tokens"] == df["completion_ids"].map(len)).all()
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["sampling"]["temperature"] == 1.0 and cfg["sampling"]["top_k"] == 0
    assert cfg["sampling"]["top_p"] == 1.0 and cfg["sampling"]["repetition_penalty"] == 1.0
    assert cfg["versions"]["torch"] and cfg["seeds"]["seed"] == 0 and cfg["model"]["spec"] == "exact-tiny"
    # a finished run: nothing to do, said so
    capsys.readouterr()
    assert cli("sample", "--task", "exact", "--n", "6", "--out", out, "--quiet") == 0
    assert "nothing to do" in capsys.readouterr().err
    assert len(table(out)) == 72
    # a different config is refused, --force replaces it
    assert cli("sample", "--task", "exact", "--n", "4", "--out", out, "--quiet") == 2
    err = capsys.readouterr().err
    assert "different config" in err and "--force" in err and err.count("\n") == 1
    assert cli("sample", "--task", "exact", "--n", "4", "--out", out, "--quiet", "--force") == 0
    assert len(table(out)) == 48


def test_split_and_limit(tmp_path):
    out = tmp_path / "held"
    assert cli("sample", "--task", "exact", "--n", "2", "--split", "heldout", "--out", out, "--quiet") == 0
    df = table(out)
    assert set(df["split"]) == {"heldout"} and df["prompt_id"].nunique() == 4  # split on the text (issue 21): 4 of 12
    out2 = tmp_path / "lim"
    assert cli("sample", "--task", "exact", "--n", "2", "--limit-prompts", "2", "--out", out2, "--quiet") == 0
    assert table(out2)["prompt_id"].nunique() == 2


def test_resume_after_kill(tmp_path):
    """Kill a running `sample` (SIGKILL) after a few parts; rerunning completes it with no lost/duplicated rows."""
    out = tmp_path / "killed"
    env = {**os.environ, "ALIGNLIMITS_SAMPLE_PART_DELAY": "0.7"}
    cmd = [sys.executable, "-c", "from alignlimits.cli import main; main()", "sample", "--task", "exact",
           "--n", "8", "--batch-size", "8", "--out", str(out), "--quiet"]
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 90
        while time.time() < deadline and len(glob.glob(str(out / "samples" / "part-*.parquet"))) < 3:
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    n_parts = len(glob.glob(str(out / "samples" / "part-*.parquet")))
    assert 3 <= n_parts < 12
    before = table(out)
    assert len(before) == n_parts * 8
    assert cli("sample", "--task", "exact", "--n", "8", "--batch-size", "8", "--out", out, "--quiet") == 0
    after = table(out)
    assert len(after) == 12 * 8
    assert not after.duplicated(["prompt_id", "sample_idx"]).any()
    assert set(after["sample_idx"]) == set(range(8))
    # rows written before the kill are untouched
    merged = before.merge(after, on=["prompt_id", "sample_idx"], suffixes=("", "_2"))
    assert len(merged) == len(before) and (merged["completion"] == merged["completion_2"]).all()
    assert not list((out / "samples").glob(".*tmp"))


def test_disk_full_leaves_valid_table(tmp_path, monkeypatch, capsys):
    out = tmp_path / "full"
    real = sampling_run.write_parquet_atomic
    calls = {"n": 0}

    def flaky(frame, path):
        calls["n"] += 1
        if calls["n"] == 3:
            # start writing, then fail like a full disk would
            tmp = path.with_name("." + path.name + ".tmp")
            tmp.write_bytes(b"PAR1 partial")
            tmp.unlink()
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(frame, path)

    monkeypatch.setattr(sampling_run, "write_parquet_atomic", flaky)
    assert cli("sample", "--task", "exact", "--n", "4", "--batch-size", "8", "--out", out, "--quiet") == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "stays valid" in err
    df = table(out)
    assert len(df) == 2 * 2 * 4  # two complete parts of two prompts each
    monkeypatch.setattr(sampling_run, "write_parquet_atomic", real)
    assert cli("sample", "--task", "exact", "--n", "4", "--batch-size", "8", "--out", out, "--quiet") == 0
    df = table(out)
    assert len(df) == 48 and not df.duplicated(["prompt_id", "sample_idx"]).any()


# --------------------------------------------------------------------------- bad input


def _err(capsys):
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    return err


def test_bad_n(tmp_path, capsys):
    assert cli("sample", "--task", "exact", "--n", "0", "--out", tmp_path / "r") == 2
    assert "--n must be at least 1" in _err(capsys)


def test_unknown_model(tmp_path, capsys):
    t = time.time()
    assert cli("sample", "--task", "exact", "--model", "no-such-model", "--n", "2", "--out", tmp_path / "r") == 2
    assert "unknown model 'no-such-model'" in _err(capsys)
    assert time.time() - t < 10


def test_unknown_task_and_split(tmp_path, capsys):
    assert cli("sample", "--task", "poetry", "--out", tmp_path / "r") == 2
    assert "unknown task" in _err(capsys)
    assert cli("sample", "--task", "exact", "--split", "dev", "--out", tmp_path / "r") == 2
    assert "unknown split" in _err(capsys)


def test_empty_prompt_file(tmp_path, capsys):
    f = tmp_path / "empty.txt"
    f.write_text("\n\n")
    assert cli("sample", "--task", "exact", "--prompts", f, "--n", "2", "--out", tmp_path / "r") == 2
    err = _err(capsys)
    assert "empty" in err or "no prompts" in err


def test_prompt_longer_than_context_is_refused(tmp_path, capsys):
    f = tmp_path / "long.txt"
    f.write_text("a b\n" + " ".join(["c"] * 40) + "\n")
    assert cli("sample", "--task", "exact", "--prompts", f, "--n", "2", "--out", tmp_path / "r") == 2
    err = _err(capsys)
    assert "exceeds the model's context of 32 tokens" in err and "has 40 tokens" in err


def test_exact_task_refuses_other_lengths(tmp_path, capsys):
    assert cli("sample", "--task", "exact", "--max-new-tokens", "5", "--out", tmp_path / "r") == 2
    assert "--max-new-tokens 3" in _err(capsys)


def test_reward_returning_nan_reaches_user(tmp_path, capsys, monkeypatch):
    mod = tmp_path / "nanreward_mod.py"
    mod.write_text(
        "def reward(prompts, completions):\n"
        "    return [float('nan') if i == 3 else 1.0 for i, _ in enumerate(completions)]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "r"
    assert cli("sample", "--task", "exact", "--reward", "python:nanreward_mod:reward", "--n", "2",
               "--out", out, "--quiet") == 2
    err = _err(capsys)
    assert "NaN" in err and "row 3" in err
    assert not list((out / "samples").glob("*.parquet"))


def test_reward_failing_to_load(tmp_path, capsys):
    assert cli("sample", "--task", "exact", "--reward", "python:no_such_module_xyz:f", "--n", "2",
               "--out", tmp_path / "r", "--quiet") == 2
    assert "no_such_module_xyz" in _err(capsys)


def test_two_rewards_two_columns(tmp_path, monkeypatch):
    mod = tmp_path / "lenreward_mod.py"
    mod.write_text("def length(prompts, completions):\n    return [len(c) for c in completions]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "r"
    assert cli("sample", "--task", "exact", "--reward", "exact", "--reward", "python:lenreward_mod:length",
               "--n", "2", "--out", out, "--quiet") == 0
    df = table(out)
    assert "exact" in df.columns and len([c for c in df.columns if "length" in c]) == 1


# --------------------------------------------------------------------------- tasks and the split


def test_split_rule_is_per_prompt_text_and_disjoint():
    from alignlimits.lm.tasks import HELDOUT_FRACTION, get_task, split_of

    texts = [f"prompt number {i}" for i in range(4000)]
    sides = [split_of(t) for t in texts]
    assert sides == [split_of(t) for t in texts]  # deterministic
    assert sides == [split_of(f"  prompt  number {i}\n") for i in range(4000)]  # whitespace runs do not matter
    frac = sides.count("heldout") / len(texts)
    assert abs(frac - HELDOUT_FRACTION) < 0.03
    safety = get_task("safety")
    assert len(safety.prompts) >= 64
    train, held = safety.split("train"), safety.split("heldout")
    tr, he = {p["prompt_id"] for p in train.prompts}, {p["prompt_id"] for p in held.prompts}
    assert tr and he and not (tr & he) and len(tr) + len(he) == len(safety.prompts)
    # the side of a prompt does not depend on which other prompts are present
    assert {p["prompt_id"] for p in safety.limit(10).split("heldout").prompts} <= he


@pytest.mark.parametrize("kind", ["txt", "jsonl"])
def test_a_repeated_text_lands_on_one_side_whatever_its_ids(tmp_path, kind):
    """Issue 21, item 5: 24 texts × 3 copies in a prompt file put 11 texts in both splits when the split hashed the id
    (a .txt file's repeats get ids h-…, h-…#2; JSONL rows their own); split on the text, none does, and the overlap
    check compares texts."""
    from alignlimits.lm.tasks import get_task, overlapping_texts

    texts = [f"Tell me something rude about topic {i}." for i in range(24)]
    f = tmp_path / f"p.{kind}"
    if kind == "txt":
        f.write_text("\n".join(t for _ in range(3) for t in texts) + "\n")
    else:
        f.write_text("".join(json.dumps({"id": f"q{c}-{i}", "prompt": t}) + "\n" for c in range(3) for i, t in enumerate(texts)))
    task = get_task("safety", prompts_file=str(f))
    assert len(task.prompts) == 72
    train, held = task.split("train").prompts, task.split("heldout").prompts
    assert held and not {p["text"] for p in train} & {p["text"] for p in held}
    # the check a run makes before evaluating a trained policy: by text, so other ids of a text are caught too
    assert overlapping_texts(task.prompts, [p["prompt_id"] for p in train], [p["prompt_id"] for p in held]) == []
    twin = next(p for p in task.prompts if p["text"] == held[0]["text"] and p["prompt_id"] != held[0]["prompt_id"])
    assert overlapping_texts(task.prompts, [twin["prompt_id"]], [held[0]["prompt_id"]]) == [held[0]["prompt_id"]]


def test_task_sources(tmp_path):
    from alignlimits.errors import AlignLimitsError
    from alignlimits.lm.tasks import get_task

    f = tmp_path / "mine.jsonl"
    f.write_text('{"id": "q1", "prompt": "Roast my cooking."}\n{"id": "q2", "prompt": "Insult my hat."}\n')
    t = get_task("safety", prompts_file=str(f))
    assert [p["prompt_id"] for p in t.prompts] == ["q1", "q2"] and t.default_rewards == ["profanity-logit"]
    ds = tmp_path / "beavertails.jsonl"
    ds.write_text('{"prompt": "Why are people so rude?", "response": "x"}\n{"prompt": "Say a mean word.", "response": "y"}\n')
    t = get_task("safety", dataset=str(ds))
    assert len(t.prompts) == 2 and t.source.startswith("dataset")
    tldr = tmp_path / "tldr.jsonl"
    tldr.write_text('{"post": "My neighbour plays drums at night and I cannot sleep before work.", "summary": "noisy neighbour"}\n')
    t = get_task("summarization", dataset=str(tldr))
    assert t.prompts[0]["text"].startswith("Summarise the following text") and "drums" in t.prompts[0]["source"]
    with pytest.raises(AlignLimitsError, match="either --prompts or --dataset"):
        get_task("safety", prompts_file=str(f), dataset=str(ds))
    bad = tmp_path / "bad.txt"
    bad.write_text("hello there\n")
    with pytest.raises(AlignLimitsError, match="a b c"):
        get_task("exact", prompts_file=str(bad))


def test_two_writers_are_refused(tmp_path, capsys):
    out = tmp_path / "r"
    out.mkdir()
    held = sampling_run._lock_run_dir(out)  # as if another `sample` were running
    try:
        assert cli("sample", "--task", "exact", "--n", "2", "--out", out, "--quiet") == 2
        assert "another `alignlimits sample` is writing" in _err(capsys)
    finally:
        held.close()
    assert cli("sample", "--task", "exact", "--n", "2", "--out", out, "--quiet") == 0
