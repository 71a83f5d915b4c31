"""Aligning a trainer to a proxy and judging it on gold: the path's reading, the option's checks, and Gao et al.
(2022)'s over-optimisation on the exact task (gold's gain turns down while the proxy's keeps rising)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from alignlimits.errors import AlignLimitsError
from alignlimits.pipeline.config import resolve_config
from alignlimits.pipeline.overoptimisation import error_size, overoptimisation

ROOT = Path(__file__).resolve().parents[2]


def rows(gold, proxy, se=0.02):
    return [{"step": 10 * (i + 1), "kl": 0.5 * (i + 1), "gain": g, "gain_ci": [g - 1.959964 * se, g + 1.959964 * se],
             "gain_p": p} for i, (g, p) in enumerate(zip(gold, proxy))]


def test_gold_turning_down_while_the_proxy_rises_is_over_optimisation():
    out = overoptimisation(rows([0.2, 0.4, 0.3, 0.1], [0.3, 0.8, 1.2, 1.5]), "p")
    assert (out["peak_step"], out["peak_gain"], out["last_gain"]) == (20, 0.4, 0.1) and out["turned_down"]
    assert out["drop"] == pytest.approx(0.3) and out["drop_se"] == pytest.approx(0.02 * 2**0.5)
    assert [r["proxy_gain"] for r in out["path"]] == [0.3, 0.8, 1.2, 1.5]
    assert not overoptimisation(rows([0.2, 0.4, 0.38], [0.3, 0.8, 1.2]), "p")["turned_down"]  # within noise
    assert not overoptimisation(rows([0.2, 0.4, 0.1], [0.3, 0.8, 0.5]), "p")["turned_down"]  # the proxy fell too
    assert not overoptimisation(rows([0.2, 0.4, 0.1], [0.3, 0.8, 1.2]), None)["turned_down"]  # no proxy: no claim
    assert overoptimisation(rows([0.2], [0.3]), "p") is None


def test_align_to_and_measure_every_are_checked_in_one_line():
    assert error_size("error:2.5") == 2.5 and error_size("profanity") is None
    with pytest.raises(AlignLimitsError, match="error size must be a number"):
        error_size("error:-1")
    with pytest.raises(AlignLimitsError, match="listed by --reward after the gold one"):
        resolve_config("safety", None, {}, {"align_to": "profanity"})
    cfg = resolve_config("safety", None, {}, {"align_to": "profanity", "rewards": ["profanity-logit", "profanity"]})
    assert cfg.align_to == "profanity"
    assert resolve_config("exact", None, {}, {"measure_every": 5, "methods": ["ppo", "grpo", "rloo"]}).measure_every == 5
    with pytest.raises(AlignLimitsError, match="DPO sees no reward as it trains"):
        resolve_config("exact", None, {}, {"measure_every": 5, "methods": ["ppo", "dpo"]})


def test_a_trl_trainer_is_measured_along_its_path_on_gold_and_the_proxy(tmp_path):
    """RLOO (TRL) aligned to a proxy and measured every 2 steps by the yardstick's callback: the path starts at the
    base model and holds gold's and the proxy's gain at each measured step."""
    config = tmp_path / "c.yaml"
    config.write_text("methods: [rloo]\nalign_to: 'error:1'\nmeasure_every: 2\nmeasure_n: 8\nsteps: 4\nbetas: [0.1]\n")
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "alignlimits", "run", "exact", "--config", str(config), "--out",
                           str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rloo = json.loads((out / "results.json").read_text())["evaluate"][0]
    steps = [r["step"] for r in rloo["path"]["path"]]
    assert steps == [0, 2, 4] and rloo["path"]["path"][0]["kl"] < 0.01
    assert all(r["proxy_gain"] is not None for r in rloo["path"]["path"]) and rloo["proxy"] == "exact_error1"


@pytest.mark.slow
def test_ppo_over_optimises_a_proxy_on_the_exact_task(tmp_path):
    """The shipped config: PPO at β = 0.02 on gold + a word error as large as gold's within-prompt std. Measured on
    the held-out prompts, gold's gain peaks early and falls below the base model's while the proxy's keeps rising
    (measured: gold 0.24 at step 6, KL 1.2 → −0.62 at step 45, KL 8.1; proxy 0.84 → 2.29)."""
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "alignlimits", "run", "exact", "--config",
                           str(ROOT / "configs" / "overoptimise-exact.yaml"), "--out", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ppo = next(p for p in json.loads((out / "results.json").read_text())["evaluate"] if p["method"] == "ppo")
    assert ppo["label"] == "PPO β=0.02 (aligned to error:1)" and ppo["aligned_to"] == "error:1"
    path = ppo["path"]
    assert path["turned_down"] and path["peak_step"] < 45 and path["proxy"] == "exact_error1"
    assert path["path"][-1]["proxy_gain"] > 2 * path["peak_gain"] and path["last_gain"] < 0
    assert ppo["proxy_gain"] > ppo["gain"] + 3 * ppo["proxy_gain_se"]  # held out: the proxy sees gain gold does not
    assert (out / "paths.png").stat().st_size > 10_000
    assert "over-optimisation, gold fell" in (out / "report.html").read_text()
