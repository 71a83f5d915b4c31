"""`alignlimits run` end to end on the exact task: outputs, resumption after kills, bad input."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import CLI

FAST = ["--steps", "6", "--n", "64", "--eval-n", "64", "--methods", "bon,soft-bon,ppo"]


def alignlimits(*args, env=None):
    return [sys.executable, "-m", "alignlimits", *map(str, args)]


def run(*args):
    return subprocess.run(alignlimits(*args), capture_output=True, text=True)


def wait_for(predicate, proc, timeout=300):
    t0 = time.time()
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"finished before the kill point: {proc.stderr.read() if proc.stderr else ''}")
        if time.time() - t0 > timeout:
            raise AssertionError("kill point not reached in time")
        time.sleep(0.2)


def stages(run_dir: Path) -> dict:
    path = run_dir / "state.json"
    return json.loads(path.read_text())["stages"] if path.exists() else {}


def comparable(results: dict) -> list:
    return [(e["label"], round(e["kl"], 9), round(e["gain"], 9)) for e in results["evaluate"]]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "run"
    proc = run("run", "exact", "--out", out, *FAST)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_outputs(uninterrupted):
    results = json.loads((uninterrupted / "results.json").read_text())
    for key in ("frontier", "frontier_band", "soft_bon", "evaluate", "plan", "examples", "config", "versions", "timings", "exact_frontier"):
        assert key in results, key
    methods = {e["method"] for e in results["evaluate"]}
    assert {"bon", "soft-bon", "ppo"} <= methods
    ppo = next(e for e in results["evaluate"] if e["method"] == "ppo")
    assert ppo["kl"] > 0 and ppo["kl_se"] > 0 and ppo["gain"] > 0
    assert ppo["gain"] <= ppo["optimal_gain_at_kl"] + 4 * (ppo["gain_ci"][1] - ppo["gain_ci"][0])
    # its objective against its own ceiling J*(β), and how its training ended
    assert ppo["objective"] == pytest.approx(ppo["gain"] - ppo["beta"] * ppo["kl"])
    assert ppo["objective_gap"] == pytest.approx(ppo["objective_optimal"] - ppo["objective"])
    assert ppo["kl_to_target"] == pytest.approx(ppo["objective_gap"] / ppo["beta"])
    assert ppo["training_state"] in ("converged", "learning", "undetermined") and ppo["stopped"]["reason"] == "steps"
    assert all(np.isfinite(c["objective"]) and c["se"] > 0 for c in ppo["training_curve"])
    html = (uninterrupted / "report.html").read_text()
    assert "data:image/png;base64" in html
    assert (uninterrupted / "plane.png").stat().st_size > 10_000
    rerun = run("run", "exact", "--out", uninterrupted, *FAST)
    assert rerun.returncode == 0 and "done earlier" in rerun.stdout + rerun.stderr


def test_killed_twice_resumes_to_the_same_numbers(uninterrupted, tmp_path):
    out = tmp_path / "run"
    # first kill: after the base samples and the frontier, before training ends
    proc = subprocess.Popen(alignlimits("run", "exact", "--out", out, *FAST), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: "frontier" in stages(out), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # second kill: in the middle of PPO, once a checkpoint exists
    proc = subprocess.Popen(alignlimits("run", "exact", "--out", out, *FAST), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: any((out / "train" / "ppo-beta0.5").glob("checkpoint-*/trainer_state.json")), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert "eval-ppo-beta0.5" not in stages(out)
    done = run("run", "exact", "--out", out, *FAST)
    assert done.returncode == 0, done.stderr[-3000:]
    a = json.loads((uninterrupted / "results.json").read_text())
    b = json.loads((out / "results.json").read_text())
    assert comparable(a) == comparable(b)


def test_ctrl_c_stops_cleanly(tmp_path):
    out = tmp_path / "run"
    # the run pauses after the base stage (a test hook), so the signal lands in a known place, never at exit;
    # a shell's background jobs ignore SIGINT, and children inherit that: restore the default
    env = {**os.environ, "ALIGNLIMITS_TEST_PAUSE_AFTER": "base"}
    proc = subprocess.Popen(alignlimits("run", "exact", "--out", out, *FAST), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env=env, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    wait_for(lambda: "base" in stages(out), proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "run the same command again to resume" in err
    assert "Traceback" not in err
    again = run("run", "exact", "--out", out, *FAST)
    assert again.returncode == 0, again.stderr[-2000:]


def test_bad_input(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("steps: 3\nbogus: 1\nalso_bad: 2\n")
    CLI.assert_clean_error(run("run", "exact", "--config", cfg, "--out", tmp_path / "a"), "unknown keys", "also_bad", "bogus")
    cfg.write_text("preset: full\n")
    CLI.assert_clean_error(run("run", "exact", "--config", cfg, "--preset", "quick", "--out", tmp_path / "a"), "conflicts")
    CLI.assert_clean_error(run("run", "exact", "--reward", "nonesuch", "--out", tmp_path / "b"), "nonesuch")
    CLI.assert_clean_error(run("run", "exact", "--betas", "0.1,-1", "--out", tmp_path / "c"), "β must be > 0")
    CLI.assert_clean_error(run("train", "--method", "kto", "--beta", "0.1", "--task", "exact", "--out", tmp_path / "d"), "unknown method")
    old = tmp_path / "old"
    old.mkdir()
    (old / "state.json").write_text(json.dumps({"format": 0, "stages": {}}))
    (old / "run_config.json").write_text("{}")
    CLI.assert_clean_error(run("run", "exact", "--out", old), "format 0")
    CLI.assert_clean_error(run("evaluate", tmp_path / "nowhere"), "no run")
    CLI.assert_clean_error(run("run", "exact", "--policy", f"mine={tmp_path / 'absent'}", "--out", tmp_path / "e"), "no folder")
    CLI.assert_clean_error(run("evaluate", tmp_path / "f", "--task", "exact", "--policy", "="), "NAME=PATH")
    cfg.write_text(f"policies:\n  mine: {tmp_path / 'absent'}\n")
    CLI.assert_clean_error(run("run", "exact", "--config", cfg, "--out", tmp_path / "g"), "does not exist")
    CLI.assert_clean_error(run("run", "exact", "--engine", "bogus", "--out", tmp_path / "h"), "bogus")


def test_training_prompts_in_evaluation_refused(tmp_path, monkeypatch):
    import pandas as pd

    from alignlimits.pipeline.config import resolve_config
    from alignlimits.pipeline.study import Study

    study = Study(resolve_config("exact", None, {}, {}), tmp_path / "run")
    monkeypatch.setattr(study, "base_table", lambda: type("T", (), {"frame": pd.DataFrame({"prompt_id": ["x-a", "x-b"]})})())
    train_dir = tmp_path / "run" / "train" / "ppo-beta0.5"
    train_dir.mkdir(parents=True)
    (train_dir / "train_prompts.json").write_text(json.dumps(["x-c", "x-b"]))
    from alignlimits.errors import AlignLimitsError

    with pytest.raises(AlignLimitsError, match="used to train ppo-beta0.5"):
        study.check_no_overlap(train_dir)
    study.check_no_overlap(train_dir, allow=True)
    (train_dir / "train_prompts.json").write_text(json.dumps(["x-c"]))
    study.check_no_overlap(train_dir)
    # issue 21, item 5: compared by text, a held-out prompt's text under another id is caught too
    study.ctx.task.prompts.append({"prompt_id": "b-again", "text": " b "})
    (train_dir / "train_prompts.json").write_text(json.dumps(["x-c", "b-again"]))
    with pytest.raises(AlignLimitsError, match="used to train ppo-beta0.5"):
        study.check_no_overlap(train_dir)


def _key_paths(value, prefix: str = "") -> set[str]:
    """Every key path of a results.json (lists by the union of their dict items' keys)."""
    if isinstance(value, dict):
        return {p for k, v in value.items() for p in {f"{prefix}{k}"} | _key_paths(v, f"{prefix}{k}.")}
    if isinstance(value, list):
        return {p for item in value for p in _key_paths(item, f"{prefix}[].")}
    return set()


def test_report_fixture_has_the_current_format(uninterrupted):
    """The report's test fixture is a real results.json of this format: a fresh run's keys are all in it."""
    fresh = json.loads((uninterrupted / "results.json").read_text())
    fixture = json.loads((Path(__file__).parents[1] / "report" / "fixtures" / "results.json").read_text())
    assert fixture["version"] == fresh["version"]
    # what an exact run writes that the (safety) fixture lacks; the exact frontier and the exact task's config are its own
    missing = {p for p in _key_paths(fresh) - _key_paths(fixture)
               if not p.startswith(("exact_frontier", "config.", "versions.", "timings.")) and not p.endswith("_null_reason")}
    assert not missing, sorted(missing)


def test_same_seed_same_numbers_as_the_stored_run(uninterrupted):
    """A refactor must not move the numbers: the base samples' frontier and laws equal a stored run's."""
    import numpy as np

    stored = json.loads((Path(__file__).parent / "fixtures" / "exact_run.json").read_text())
    fresh = json.loads((uninterrupted / "results.json").read_text())
    assert fresh["frontier"]["base_reward_mean"] == pytest.approx(stored["base_reward_mean"], rel=1e-9)
    assert fresh["frontier"]["max_reliable_kl"] == pytest.approx(stored["max_reliable_kl"], rel=1e-6)
    curve = [[c["beta"], c["kl"], c["gain"]] for c in fresh["frontier"]["curve"][::8]]
    np.testing.assert_allclose(curve, stored["curve"], rtol=1e-6)
    points = {p["label"]: [p["kl"], p["gain"], p["efficiency"]] for p in fresh["evaluate"]}
    for label, *numbers in stored["points"]:
        np.testing.assert_allclose(points[label], numbers, rtol=1e-6, err_msg=label)


def test_exact_task_points_are_judged_against_the_exact_frontier(uninterrupted):
    """Issue 21, item 9: on the exact task the true frontier is known by enumeration, so a trained point is judged
    against it (and says so), not against the one estimated from base samples; best-of-N's laws stay on the base
    samples' (plain) frontier, the footing they are computed on."""
    import numpy as np

    fresh = json.loads((uninterrupted / "results.json").read_text())
    exact = sorted((e["kl"], e["gain"]) for e in fresh["exact_frontier"])
    ppo = next(p for p in fresh["evaluate"] if p["method"] == "ppo")
    assert ppo["judged_against"] == "exact" and "exact frontier" in ppo["footing"]
    assert ppo["optimal_gain_at_kl"] == pytest.approx(np.interp(ppo["kl"], *zip(*exact)), rel=2e-3)
    assert ppo["gain_gap"] == pytest.approx(ppo["gain"] - ppo["optimal_gain_at_kl"], abs=1e-12)
    assert {p["judged_against"] for p in fresh["evaluate"] if p["method"] in ("bon", "soft-bon")} == {"plain"}
