"""Issue 24: the study under a multi-process launch, two CPU processes over gloo (torchrun), on the exact task.

One launch writes one consistent run directory; a killed launch resumes to the same numbers; a launch that cannot
work (a batch that does not split, another number of processes than the run was trained under) is refused."""

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_helpers import CLI

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
RUN = ["run", "exact", "--steps", "24", "--eval-n", "64", "--methods", "bon,ppo"]  # PPO checkpoints every 6 steps
PPO_DIR = Path("train") / "ppo-beta0.5"


def config(tmp_path: Path, **values) -> Path:
    # torchrun's parser takes `--n` for an abbreviation of its own options, so n goes in the config file
    path = tmp_path / f"config-{len(values)}.yaml"
    path.write_text("".join(f"{k}: {v}\n" for k, v in {"n": 64, **values}.items()))
    return path


def launch(out: Path, cfg: Path, **kwargs):
    command = [*TORCHRUN, "-m", "alignlimits", *RUN, "--config", str(cfg), "--out", str(out)]
    return subprocess.run(command, capture_output=True, text=True, **kwargs)


def metrics(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / PPO_DIR / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in ("seconds", "tokens_per_s")} for row in rows]


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist")
    proc = launch(tmp / "run", config(tmp))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp / "run", config(tmp)


def test_a_two_process_run_writes_one_consistent_run_dir(launched):
    run_dir, _ = launched
    state = json.loads((run_dir / "state.json").read_text())["stages"]
    assert set(state) == {"base", "frontier", "train-base", "train-ppo-beta0.5", "eval-ppo-beta0.5"}
    assert json.loads((run_dir / "launch.json").read_text()) == {"world_size": 2}
    record = json.loads((run_dir / PPO_DIR / "policy_record.json").read_text())
    assert record["config"]["world_size"] == 2 and record["config"]["batch_size"] == 64
    results = json.loads((run_dir / "results.json").read_text())
    assert results["config"]["world_size"] == 2
    assert [r["step"] for r in metrics(run_dir)] == list(range(1, 25))  # rank 0 alone wrote each step, once
    assert json.loads((run_dir / PPO_DIR / "stop.json").read_text())["step"] == 24
    assert not list((run_dir / PPO_DIR).glob("checkpoint-*"))


def test_training_under_another_number_of_processes_is_refused(launched, tmp_path):
    run_dir, cfg = launched
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    proc = CLI.run(*RUN[:-1], "bon,ppo,rloo", "--config", cfg, "--out", copy)  # one process trains RLOO into it
    CLI.assert_clean_error(proc, "2 process", "--nproc_per_node 2")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_batch_that_does_not_split_is_refused_before_any_process_waits(tmp_path):
    cfg = config(tmp_path, batch_size=65, num_generations=5)
    # rank 0 of a two-process launch, alone: the refusal comes before any collective, so it cannot hang
    env = {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    alone = CLI.run(*RUN, "--config", cfg, "--out", tmp_path / "a", env={**__import__("os").environ, **env}, timeout=60)
    CLI.assert_clean_error(alone, "batch_size 65", "2 processes")
    # under torchrun both processes refuse alike, one says so; torchrun then reports their exit code 2 its own way
    both = launch(tmp_path / "b", cfg, timeout=60)
    ours = [line for line in both.stderr.splitlines() if line.startswith("alignlimits:")]
    assert len(ours) == 1 and "batch_size 65 does not split over the 2 processes" in ours[0], both.stderr
    assert "exitcode  : 2" in both.stderr and "alignlimits/" not in both.stderr  # no traceback of ours
    assert not (tmp_path / "b").exists()


@pytest.mark.slow
def test_a_killed_two_process_launch_resumes_to_the_same_numbers(launched, tmp_path):
    run_dir, cfg = launched
    out = tmp_path / "run"
    command = [*TORCHRUN, "-m", "alignlimits", *RUN, "--config", str(cfg), "--out", str(out)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while not list((out / PPO_DIR).glob("checkpoint-*/trainer_state.json")):
        assert proc.poll() is None and time.time() - t0 < 120, "no checkpoint before the launch ended"
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)  # torchrun passes it to both processes
    proc.wait(timeout=60)
    assert "train-ppo-beta0.5" not in json.loads((out / "state.json").read_text())["stages"]
    again = launch(out, cfg)
    assert again.returncode == 0, again.stderr[-3000:]
    assert metrics(out) == metrics(run_dir)  # every step once, and the numbers of the uninterrupted launch
    points = [json.loads((d / "results.json").read_text())["evaluate"] for d in (out, run_dir)]
    assert [(p["label"], p["kl"], p["gain"]) for p in points[0]] == [(p["label"], p["kl"], p["gain"]) for p in points[1]]


def test_ppo_refuses_a_sharded_launch_and_a_minibatch_that_does_not_split(monkeypatch, tmp_path):
    from alignlimits.errors import AlignLimitsError
    from alignlimits.lm.exact import build_exact_model, exact_reward
    from alignlimits.methods.ppo import PPOConfig, PPOTrainer

    model, tok = build_exact_model(0)
    cfg = PPOConfig(beta=0.5, steps=1, batch_size=8, max_new_tokens=3, output_dir=str(tmp_path), progress=False)
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    with pytest.raises(AlignLimitsError, match="data-parallel only"):
        PPOTrainer(cfg, model, None, tok, exact_reward, ["a"])
    monkeypatch.setenv("WORLD_SIZE", "2")  # checked before any collective: no process group needed
    with pytest.raises(AlignLimitsError, match=r"minibatch \(batch_size / num_minibatches\) 3 does not split"):
        PPOConfig(beta=0.5, steps=1, batch_size=6, num_minibatches=2, output_dir=str(tmp_path))
