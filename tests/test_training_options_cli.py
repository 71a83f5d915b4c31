"""The options of training to a budget and of a policy's stated β: one-line errors on bad input."""

import pytest
from cli_helpers import CLI

CASES = [
    (lambda d: ["run", "exact", "--train-minutes", "0", "--out", d / "run"], ["--train-minutes", "> 0"]),
    (lambda d: ["train", "--method", "ppo", "--task", "exact", "--train-minutes", "-2", "--out", d / "run"], ["--train-minutes"]),
    (lambda d: ["run", "exact", "--policy-beta", "mine=0.5", "--out", d / "run"], ["no --policy named", "mine"]),
    (lambda d: ["evaluate", d / "run", "--policy", f"here={d}", "--policy-beta", "here=abc"], ["--policy-beta", "β > 0"]),
    (lambda d: ["run", "exact", "--preset", "converged", "--out", d / "run"], ["unknown preset", "converge"]),
]


@pytest.mark.parametrize("args,needles", CASES)
def test_bad_training_options_are_one_line(tmp_path, args, needles):
    CLI.assert_clean_error(CLI.run(*args(tmp_path)), *needles)
