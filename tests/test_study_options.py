"""Each option of `run` is declared once (a StudyConfig field made with `option`): `run` and `train` take exactly the
declared flags, each config key is settable as its declaration says, and messages name what a user can set."""

from dataclasses import fields

import pytest
import typer

from alignlimits.cli import run as _commands  # noqa: F401  (registers run, train, evaluate)
from alignlimits.cli.app import app
from alignlimits.errors import AlignLimitsError
from alignlimits.pipeline.config import StudyConfig, resolve_config, settable

OWN = {"run": {"--out", "--preset", "--config", "--force", "--engine", "--tensor-parallel-size", "--data-parallel-size",
               "--distributed-backend", "--gpu-memory-utilization"},
       "train": {"--method", "--out", "--task", "--preset", "--config", "--force"}}


def options_of(name: str) -> set[str]:
    command = typer.main.get_command(app).commands[name]
    return {opt for p in command.params for opt in (*p.opts, *p.secondary_opts) if opt.startswith("--")}


@pytest.mark.parametrize("name", ["run", "train"])
def test_the_commands_take_exactly_the_declared_flags(name):
    declared = {flag for f in fields(StudyConfig) if f.metadata.get("flags") and (name == "run" or f.metadata["train"])
                for flags in f.metadata["flags"] for flag in flags.split("/")}
    assert options_of(name) == declared | OWN[name]


def test_every_declared_option_reads_its_value_into_the_config(tmp_path):
    from typer.testing import CliRunner

    seen = {}

    def capture(task, preset, file_values, flags):
        seen.update(flags)
        raise AlignLimitsError("stop here")

    args = ["run", "exact", "--model", "m", "--reward", "a", "--reward", "b", "--methods", "bon, ppo", "--beta", "0.5,1",
            "--n", "8", "--eval-n", "4", "--eval-prompts", "3", "--steps", "2", "--max-new-tokens", "5", "--full-finetune",
            "--seed", "7", "--train-minutes", "1.5", "--stop-when-converged", "--device", "cpu", "--policy",
            f"mine={tmp_path}", "--policy-beta", "mine=0.25", "--prompts", "p.txt", "--dataset", "d"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("alignlimits.pipeline.config.resolve_config", capture)
        result = CliRunner().invoke(app, args)
    assert "stop here" in str(result.exception)
    assert seen == dict(model="m", rewards=["a", "b"], methods=["bon", "ppo"], betas=[0.5, 1.0], n=8, eval_n=4,
                        eval_prompts=3, steps=2, max_new_tokens=5, use_lora=False, seed=7, train_minutes=1.5,
                        stop_when_converged=True, device="cpu", policies={"mine": str(tmp_path.resolve())},
                        policy_betas={"mine": 0.25}, prompts="p.txt", dataset="d", engine=None, engine_options=None)
    assert set(seen) - {"engine", "engine_options"} <= {f.name for f in fields(StudyConfig)}


def test_messages_name_what_the_user_can_set():
    assert settable("eval_n") == "--eval-n"
    assert settable("baseline_n") == "baseline_n (config file)"
    with pytest.raises(AlignLimitsError, match=r"^baseline_n \(config file\) must be at least 1"):
        resolve_config("exact", None, {"baseline_n": 0}, {})
    with pytest.raises(AlignLimitsError, match="^--eval-n must be at least 1"):
        resolve_config("exact", None, {}, {"eval_n": 0})
