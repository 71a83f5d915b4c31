"""The CLI's contract, through the installed `alignlimits` script as a user runs it.

Every usage mistake (unknown option or command, missing or malformed argument) and a closed output
pipe: exit 2, one line on stderr saying what to do, no traceback. `--json -` writes strict JSON
and nothing else to stdout. Small data and unreachable questions explain themselves.
"""

import json
import os
import subprocess

import pytest
import typer.main

from alignlimits.pipeline.examples import write_example_samples
from cli_helpers import CLI

run = CLI.run
assert_clean_error = CLI.assert_clean_error


def strict_json(text: str):
    """json.loads that refuses NaN and Infinity, as JavaScript and strict parsers do."""
    def refuse(name):
        raise ValueError(f"not JSON: {name}")
    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """5 prompts × 8 samples: too few for the old fixed min-ess of 10."""
    return write_example_samples(tmp_path_factory.mktemp("small"), prompts=5, n=8)[0]


@pytest.mark.parametrize("args, needles", [
    (["frontier", "x.parquet", "--min-es", "5"], ["--min-es", "--min-ess", "alignlimits frontier --help"]),
    (["frontier"], ["missing argument", "frontier --help"]),
    (["run"], ["missing argument", "run --help"]),
    (["sample"], ["missing option '--out'"]),
    (["evaluate"], ["missing argument"]),
    (["plan"], ["missing argument"]),
    (["hack"], ["missing argument"]),
    (["hacking", "x.parquet", "--gold", "reward"], ["missing option '--proxy'"]),
    (["train", "--method", "ppo"], ["missing option '--out'"]),
    (["frontier", "x.parquet", "--min-ess", "abc"], ["invalid value", "--min-ess"]),
    (["frotnier"], ["no such command", "frontier"]),
    (["--verison"], ["no such option", "--version"]),
])
def test_usage_errors_are_one_line(args, needles):
    assert_clean_error(run(*args), *needles)


def test_bare_command_prints_help():
    proc = run()
    assert proc.returncode in (0, 2) and "Traceback" not in proc.stderr
    assert "Usage" in proc.stdout + proc.stderr and "frontier" in proc.stdout + proc.stderr


def test_version():
    from alignlimits import __version__

    proc = run("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"alignlimits {__version__}" and not proc.stderr


def test_broken_pipe_is_one_line(small):
    read, write = os.pipe()
    os.close(read)  # the reader has already gone, as after `| head -1`
    try:
        proc = subprocess.run([*CLI.command, "frontier", str(small)], stdout=write, stderr=subprocess.PIPE, text=True)
    finally:
        os.close(write)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "pipe closed" in lines[0] and "--json FILE" in lines[0], proc.stderr


def test_json_to_stdout_is_only_json(small):
    proc = run("frontier", small, "--json", "-")
    assert proc.returncode == 0, proc.stderr
    result = strict_json(proc.stdout)
    assert result["min_ess"] == 2.0 and result["budgets"], "5 × 8 samples: the default min-ess leaves a reliable range"
    assert "Frontier" in proc.stderr and "Frontier" not in proc.stdout
    assert "left out" in proc.stderr and "--extrapolate" in proc.stderr  # the budgets it could not show, and why


def test_nothing_reliable_says_how_to_fix(small):
    proc = run("frontier", small, "--min-ess", "10")
    assert proc.returncode == 0, proc.stderr
    assert "no KL budget is reliable" in proc.stdout
    for fix in ("--min-ess", "--extrapolate", "more samples"):
        assert fix in proc.stdout.replace("\n", " ")
    proc = run("frontier", small, "--min-ess", "10", "--extrapolate", "--json", "-")
    assert [b["kl"] for b in strict_json(proc.stdout)["budgets"]] == [0.1, 0.5, 1.0, 2.0]


def test_plan_small_data_explains_itself(small):
    proc = run("plan", small, "--kl", "0.5")
    assert proc.returncode == 0, proc.stderr
    assert "largest reliable gain" in proc.stdout and "ESS ≥ 2" in proc.stdout
    assert_clean_error(run("plan", small, "--kl", "1.5"), "beyond the reliable range", "--min-ess", "--extrapolate")


def test_plan_unreachable_target_is_refused_with_json(small):
    proc = run("plan", small, "--target-gain", "100", "--json", "-")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "largest reachable gain" in proc.stderr
    result = strict_json(proc.stdout)
    assert result["kl"] is None and "largest reachable gain" in result["refused"]
    assert 0 < result["max_reliable_gain"] < result["max_gain"] < 100


def test_no_bootstrap_says_no_interval(small):
    proc = run("frontier", small, "--n-bootstrap", "0", "--kl", "0.1", "--bon", "1,2")
    assert proc.returncode == 0, proc.stderr
    assert "(no interval)" in proc.stdout and "intervals: none" in proc.stdout


def test_run_directory_stands_for_its_base_samples(small, tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "base").mkdir(parents=True)
    (run_dir / "state.json").write_text("{}")
    (run_dir / "base" / "samples.parquet").write_bytes(small.read_bytes())
    proc = run("frontier", run_dir, "--json", "-")
    assert proc.returncode == 0, proc.stderr
    assert strict_json(proc.stdout)["n_samples"] == 40 and "base samples" in proc.stderr
    assert_clean_error(run("sample", "--task", "exact", "--out", run_dir), "run", "another --out")


def test_every_option_has_help_and_default():
    from alignlimits.cli import analysis, hack, run as run_cmds, sample  # noqa: F401  (they register commands)
    from alignlimits.cli.app import app

    group = typer.main.get_command(app)
    missing = []
    for name, command in group.commands.items():
        for param in command.params:
            if param.param_type_name != "option" or param.name == "help":
                continue
            text = (param.help or "").lower()
            shown = param.required or param.is_flag or (param.default is not None and param.show_default is not False)
            if not text or not (shown or "default" in text):
                missing.append(f"{name} {param.opts[0]}")
    assert not missing, f"options without help or a stated default: {missing}"


def test_beta_and_betas_mean_the_same():
    from alignlimits.cli import analysis, hack, run as run_cmds  # noqa: F401
    from alignlimits.cli.app import app

    group = typer.main.get_command(app)
    for name in ("run", "train", "hack", "hacking"):
        opts = {o for p in group.commands[name].params for o in p.opts}
        assert {"--betas", "--beta"} <= opts, name


def test_transformers_advisories_are_silenced():
    import sys

    code = ("from alignlimits.cli import _quiet_third_parties; _quiet_third_parties(); "
            "from transformers.utils import logging; "
            "logging.get_logger('transformers.trainer_utils').warning_once('mtime may not be reliable')")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRANSFORMERS_")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 0 and "mtime" not in proc.stderr, proc.stderr
