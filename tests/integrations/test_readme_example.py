"""The README's FrontierCallback example, run as written on the exact task (and on SmolLM2, slow), with only the
model, task, reward and sizes swapped, in a scratch directory."""

import json
import re
from pathlib import Path

import pytest
from PIL import Image

README = Path(__file__).resolve().parents[2] / "README.md"


def example() -> str:
    text = README.read_text().split("### The yardstick inside your own trainer", 1)[1]
    return re.search(r"```py\n(.*?)```", text, re.S).group(1)


def run_example(cli, tmp_path, monkeypatch, sample_args, swaps):
    code = example()
    for old, new in swaps.items():
        assert old in code, old
        code = code.replace(old, new)
    monkeypatch.chdir(tmp_path)
    proc = cli.run("sample", *sample_args, "--split", "heldout", "--out", "runs/base", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    exec(compile(code, "README example", "exec"), {"__name__": "readme"})
    rows = [json.loads(x) for x in (tmp_path / "runs/grpo/alignlimits.jsonl").read_text().splitlines()]
    proc = cli.run("plot-training", "runs/grpo/alignlimits.jsonl", "--out", "path.png", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert Image.open(tmp_path / "path.png").size[0] > 500
    return rows


def test_readme_example_on_the_exact_task(cli, tmp_path, monkeypatch):
    rows = run_example(cli, tmp_path, monkeypatch, ["--task", "exact", "--n", "32"], {
        '"smollm2-135m-instruct"': '"exact-tiny"', '"profanity-logit"': '"exact"', '"safety"': '"exact"',
        "max_steps=100": "max_steps=4", "max_completion_length=64": "max_completion_length=3",
        "beta=0.04": "beta=0.5, learning_rate=3e-3"})
    assert [r["step"] for r in rows] == [0, 4] and rows[0]["kl"] == 0 and rows[-1]["kl"] > 0


@pytest.mark.slow
@pytest.mark.model
def test_readme_example_on_smollm2_safety(cli, tmp_path, monkeypatch):
    """One GRPO step of SmolLM2 on safety (194 s with two steps on 2 busy cores): the JSONL holds the fields, the plot is written."""
    rows = run_example(cli, tmp_path, monkeypatch,
                       ["--task", "safety", "--n", "4", "--limit-prompts", "3", "--max-new-tokens", "12"], {
                           "max_steps=100": "max_steps=1", "per_device_train_batch_size=8": "per_device_train_batch_size=4",
                           "max_completion_length=64": "max_completion_length=12", "n=4, every=10": "n=2, every=1"})
    assert [r["step"] for r in rows] == [0, 1]
    assert {"kl", "kl_se", "gain", "gain_ci", "efficiency", "verdict", "objective", "objective_share", "kl_to_target",
            "seconds", "step_seconds", "cost_share", "training_state"} <= set(rows[-1])
    print("cost:", [(r["step"], round(r["seconds"], 2), r.get("step_seconds"), r.get("cost_share")) for r in rows])
