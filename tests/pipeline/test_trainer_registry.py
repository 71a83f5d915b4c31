"""A method added through the registry alone (one entry point, one line) runs through `alignlimits run` and lands
on the KL–reward plane beside best-of-N."""

import json

import pytest
from typer.testing import CliRunner

from alignlimits.cli import run as _run_commands  # noqa: F401  (registers run and train)
from alignlimits.cli.app import app
from alignlimits.errors import AlignLimitsError
from alignlimits.pipeline.trainers import TRAINERS, Trainer


def sharpen(job, record, out, resume):
    """A toy method: the base model with its output logits scaled by 1.5 (a colder softmax, so KL > 0)."""
    import torch

    policy = job.policy()
    with torch.no_grad():
        policy.lm_head.weight.mul_(1.5)
    policy.save_pretrained(record.path)
    job.tokenizer.save_pretrained(record.path)
    return record


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(TRAINERS, "sharpen", Trainer(sharpen))


def test_a_registered_method_lands_on_the_plane(registered, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", "exact", "--methods", "bon,sharpen", "--n", "64", "--eval-n", "64",
                                      "--out", str(out)])
    assert result.exit_code == 0, (result.output, result.exception)
    results = json.loads((out / "results.json").read_text())
    point = next(p for p in results["evaluate"] if p["method"] == "sharpen")
    assert point["label"] == "SHARPEN β=0.5" and point["kl"] > 0 and point["verdict"]
    assert {p["method"] for p in results["evaluate"]} == {"bon", "sharpen"}
    record = json.loads((out / "train" / "sharpen-beta0.5" / "policy_record.json").read_text())
    assert record["config"]["learning_rate"] == Trainer(sharpen).learning_rate["full"]


def test_the_method_lists_come_from_the_registry(registered, tmp_path):
    from alignlimits.pipeline.config import known_methods, resolve_config

    assert "sharpen" in known_methods()
    assert resolve_config("exact", None, {"learning_rates": {"sharpen": 0.5}}, {"methods": ["sharpen"]}).learning_rates["sharpen"] == 0.5
    result = CliRunner().invoke(app, ["train", "--method", "sft", "--task", "exact", "--out", str(tmp_path / "r")])
    assert isinstance(result.exception, AlignLimitsError) and "ppo, grpo, rloo, dpo, sharpen" in str(result.exception)
