"""The reward-hacking study: evaluator against the theory and direct simulation, aggregations, end to end."""

import json
import re

import numpy as np
import pandas as pd
import pytest

from alignlimits.errors import AlignLimitsError
from alignlimits.pipeline.hacking_study import HackConfig, run_hacking_study
from alignlimits.report.hacking_text import with_prose
from alignlimits.theory.frontier import Frontier
from alignlimits.theory.hacking import (
    BON_KEYS, CurveEvaluator, Intervals, aggregate_proxies, compare, hacking_curve, summarise,
)


def write_run(path, P=24, n=16, seed=0, unexplained=0.0):
    """A run directory whose gold reward is linear in the words of each completion (plus ``unexplained`` noise)."""
    rng = np.random.default_rng(seed)
    vocab = [f"w{i}" for i in range(40)]
    weights = rng.normal(size=40)
    rows = []
    for p in range(P):
        for s in range(n):
            idx = rng.choice(40, size=rng.integers(4, 10), replace=False)
            rows.append({"prompt_id": f"p{p:03d}", "sample_idx": s, "prompt": f"Say something about topic {p}.",
                         "completion": " ".join(vocab[i] for i in idx), "reward": float(weights[idx].sum() / 3 + 0.3 * p / P + unexplained * rng.normal())})
    (path / "samples").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(path / "samples" / "part-00000.parquet")
    return path


def gold_and_proxy(P=10, n=12, seed=0, noise=0.7):
    rng = np.random.default_rng(seed)
    gold = rng.normal(size=P * n)
    return gold, gold + noise * rng.normal(size=P * n), np.repeat([f"q{p}" for p in range(P)], n)


def test_aggregations_against_hand_computed_values():
    P = np.array([[1.0, 4.0, -2.0], [3.0, 0.0, -2.0], [2.0, 2.0, 1.0]])
    assert np.allclose(aggregate_proxies(P, "mean"), [2.0, 2.0, -1.0])
    assert np.allclose(aggregate_proxies(P, "min"), [1.0, 0.0, -2.0])
    # population variance of (1,3,2) = 2/3; of (4,0,2) = 8/3; of (-2,-2,1) = 2
    assert np.allclose(aggregate_proxies(P, "uwo", lam=0.5, ddof=0), [2 - 1 / 3, 2 - 4 / 3, -1 - 1.0])
    # unbiased variance: 1, 4, 3
    assert np.allclose(aggregate_proxies(P, "uwo", lam=0.5, ddof=1), [1.5, 0.0, -2.5])


def test_evaluator_point_estimates_match_the_theory():
    gold, proxy, ids = gold_and_proxy()
    betas = np.array([2.0, 0.5, 0.1])
    ev = CurveEvaluator(gold, ids, betas, [1, 2, 4], n_bootstrap=20)
    curves = ev.tilt_curves(proxy)
    ref = hacking_curve(gold, proxy, betas, ids)
    for key in ("kl", "proxy_gain", "gold_gain", "objective_loss"):
        assert np.allclose(curves[key][0], ref[key], atol=1e-12)
    # the gold frontier is the theory's frontier, exactly for the point estimate
    assert np.allclose(curves["optimal_gold_gain"][0], ref["optimal_gold_gain"], rtol=1e-12)
    front = Frontier(n_bootstrap=0).fit(gold, ids)
    kls = np.array([0.01, 0.2, 1.0, 1.8])
    assert np.allclose(ev.frontier(np.tile(kls, (ev.weights.shape[0], 1)))[0], front.gain_at_kl(kls, extrapolate=True), rtol=1e-12)
    # gold as its own proxy: no gap, at every β and every KL
    own = ev.tilt_curves(gold)
    assert np.abs(own["gap"][0]).max() < 1e-6 and np.nanmax(np.abs(own["gap_at_kl"][0])) < 5e-3
    # bootstrap replicates bracket the point estimate
    lo, hi = np.quantile(curves["gap"][1:], [0.025, 0.975], axis=0)
    assert np.all(lo <= curves["gap"][0] + 1e-9) and np.all(curves["gap"][0] <= hi + 1e-9)


def test_bon_by_proxy_against_direct_simulation():
    gold, proxy, ids = gold_and_proxy(P=4, n=10, seed=3, noise=1.0)
    ev = CurveEvaluator(gold, ids, [1.0], [1, 3, 10], n_bootstrap=10)
    point = ev.bon_curves(proxy)["gold_gain"][0]
    rng = np.random.default_rng(0)
    sims = []
    for N in (1, 3, 10):
        total = 0.0
        for p in np.unique(ids):
            g, q = gold[ids == p], proxy[ids == p]
            draws = np.argsort(rng.random((40_000, g.size)), axis=1)[:, :N]  # N samples without replacement
            best = draws[np.arange(draws.shape[0]), np.argmax(q[draws], axis=1)]
            total += g[best].mean() - g.mean()
        sims.append(total / 4)
    assert np.allclose(point, sims, atol=0.02)
    assert point[0] == pytest.approx(0.0, abs=1e-12) and point[2] == pytest.approx(
        np.mean([gold[ids == p][np.argmax(proxy[ids == p])] - gold[ids == p].mean() for p in np.unique(ids)]))


def test_compare_verdicts():
    rng = np.random.default_rng(0)
    ci = Intervals(0.95, 20)
    clear = 1.0 + 0.1 * rng.normal(size=(101, 5))
    assert compare("x", "y", clear, range(5), "beta", ci)["verdict"] == "shown"
    assert compare("x", "y", -clear, range(5), "beta", ci)["verdict"] == "not shown"
    assert compare("x", "y", 0.05 + rng.normal(size=(101, 5)), range(5), "beta", ci)["verdict"] != "shown"


def test_an_oracle_proxy_never_beats_the_gold_frontier():
    """Proxy = gold: the tilt is the frontier itself, and best-of-N by gold is one law on the n samples."""
    rng = np.random.default_rng(0)
    P, n = 40, 16
    gold = rng.normal(size=P * n)
    ids = np.repeat([f"p{p}" for p in range(P)], n)
    ev = CurveEvaluator(gold, ids, None, [1, 2, 4, 8, 16], n_bootstrap=20)
    tilt_gap = ev.tilt_curves(gold)["gap"]
    assert np.abs(tilt_gap[0]).max() < 1e-6 and np.abs(tilt_gap[1:]).max() < 2e-3  # replicates: interpolation error only
    bon = ev.bon_curves(gold)
    assert np.all(bon["gap"] >= -2e-3), bon["gap"][0]  # every replicate too: one footing throughout
    # best-of-N's displayed gain stays the unbiased estimate; the gap uses the empirical law, labelled so
    assert bon["gold_gain"][0, 1] == pytest.approx(bon["gold_gain_by_gold"][0, 1])
    assert np.all(bon["gold_gain_empirical"][0, 1:] < bon["gold_gain"][0, 1:])


E_MAX_OF_4_NORMALS = 1.0293753730039641


@pytest.mark.parametrize("n_prompts", [6, 10])
def test_intervals_cover_at_few_evaluation_prompts(n_prompts):
    """Prompts of reward sd ~ U(0.5, 1.5): best-of-4's mean gold gain over prompts is exactly E[max of 4 N(0,1)]."""
    rng = np.random.default_rng(n_prompts)
    reps, n, hits = 800, 16, 0
    ids = np.repeat(np.arange(n_prompts), n)
    for r in range(reps):
        sd = rng.uniform(0.5, 1.5, n_prompts)
        gold = (rng.normal(size=(n_prompts, n)) * sd[:, None] + rng.normal(size=(n_prompts, 1))).ravel()
        ev = CurveEvaluator(gold, ids, [1.0], [4], n_bootstrap=200, random_state=r)
        lo, hi = summarise(ev.bon_curves(gold), BON_KEYS, ev.intervals)[0]["gold_gain_ci"]
        hits += lo <= E_MAX_OF_4_NORMALS <= hi
    assert 0.90 <= hits / reps <= 0.99, hits / reps


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    run = write_run(tmp_path_factory.mktemp("run"))
    config = HackConfig(labels=(1.0, 0.25), noise=(0.0, 1.0), seeds=2, ks=(1, 2, 4), n_bootstrap=60, n_features=1024)
    return run, run_hacking_study(run, config)


def test_study_end_to_end(study):
    run, result = study
    saved = json.loads((run / "hacking.json").read_text())
    assert saved["gold"] == "reward" and "expanded percentile" in with_prose(saved)["ci_method"]
    row = saved["per_proxy"][0]["curve"][0]
    for key in ("beta", "kl", "proxy_gain", "gold_gain", "optimal_gold_gain", "gap", "objective_loss"):
        assert key in row
    assert {"gap_ci", "gold_gain_ci", "kl_ci"} <= set(row)
    assert [r["kl"] for r in saved["per_proxy"][0]["at_kl"]] == saved["kl_grid"]
    assert {(e["aggregate"], e["k"], e["members"]) for e in saved["ensembles"]} == {
        (a, k, m) for a in ("mean", "min", "uwo") for k in (1, 2, 4) for m in ("independent", "correlated")}
    assert len(saved["error_sweep"]) == 4 and saved["bon_n"] == [1, 2, 4, 8, 16]
    proxies = pd.read_parquet(run / "proxies.parquet")
    assert {"prompt_id", "sample_idx", "hack_split", "reward"} <= set(proxies.columns)
    assert len(proxies) == 24 * 16 and set(proxies["hack_split"]) == {"train", "eval"}
    assert set(saved["proxies"][0]) >= {"heldout_correlation", "heldout_rmse", "heldout_within_prompt_correlation"}
    # the synthetic problem shows every expected ordering
    verdicts = {c["claim"]: c["verdict"] for c in saved["checks"]}
    assert verdicts["gap grows with proxy error"] == "shown"
    assert verdicts["mean of 4 independent proxies has a smaller gap than the average single proxy"] == "shown"
    # the controlled-error family on every prompt: the four orderings of the theory, each shown with its interval
    c = saved["controlled"]
    assert c["n_prompts"] == 24 and [s["error_size"] for s in c["error_sweep"]] == [0.25, 0.5, 1.0, 2.0]
    assert c["betas"] == saved["betas"] and {e["members"] for e in c["ensembles"]} == {"independent", "correlated (ρ = 0.5)"}
    verdicts = {x["claim"]: x["verdict"] for x in c["checks"]}
    for claim in ("gap grows with proxy error", "gap grows as β falls",
                  "mean of 4 independent proxies has a smaller gap than the average single proxy",
                  "independent members beat correlated (ρ = 0.5) ones (mean of 4)"):
        assert verdicts[claim] == "shown", (claim, c["checks"])
    assert "gap_ci" in c["error_sweep"][0]["curve"][0]


def test_study_on_given_proxy_columns(study):
    run, _ = study
    result = run_hacking_study(run, HackConfig(proxy_cols=["ngram_ind0", "ngram_ind1"], ks=(1, 2), n_bootstrap=20),
                               json_path=run / "given.json")
    assert result["error_sweep"] == [] and [e["k"] for e in result["ensembles"]] == [1, 1, 1, 2, 2, 2]
    assert "hack_split" in result["split"]


def test_study_bad_inputs(study, tmp_path):
    run, _ = study
    with pytest.raises(AlignLimitsError, match="larger than the 2"):
        run_hacking_study(run, HackConfig(proxy_cols=["ngram_ind0", "ngram_ind1"], ks=(1, 4), n_bootstrap=20), json_path=tmp_path / "x.json")
    with pytest.raises(AlignLimitsError, match="larger than the 2 ensemble members"):
        run_hacking_study(run, HackConfig(members=2, ks=(1, 4)), json_path=tmp_path / "x.json")
    frame = pd.read_parquet(run / "proxies.parquet")
    frame["flat"] = frame["prompt_id"].str.len().astype(float)  # constant within every prompt
    frame.to_parquet(tmp_path / "flat.parquet")
    with pytest.raises(AlignLimitsError, match="no ranking information"):
        run_hacking_study(run, HackConfig(proxy_cols=["flat"], ks=(1,), proxies_file=str(tmp_path / "flat.parquet"), n_bootstrap=20),
                          json_path=tmp_path / "x.json")
    frame.iloc[:-5].to_parquet(tmp_path / "short.parquet")
    with pytest.raises(AlignLimitsError, match="not the same samples"):
        run_hacking_study(run, HackConfig(proxy_cols=["ngram_ind0"], ks=(1,), proxies_file=str(tmp_path / "short.parquet"), n_bootstrap=20),
                          json_path=tmp_path / "x.json")
    with pytest.raises(AlignLimitsError, match="at least 8"):
        run_hacking_study(run, HackConfig(labels=(4,), noise=(0.0,), seeds=1, ks=(1,), n_bootstrap=20), json_path=tmp_path / "x.json")
    ev = CurveEvaluator(*gold_and_proxy()[::2], [1.0], [1], n_bootstrap=10)
    with pytest.raises(AlignLimitsError, match="differ in length"):
        ev.tilt_curves(np.zeros(5))


DOUBLED = re.compile(r"\b([a-z]+(?: [a-z]+)?)\W+\1\b", re.IGNORECASE)


def test_defaults_on_a_small_run(tmp_path):
    """12 prompts × 16 samples (the quick preset), a gold reward the features mostly miss: 1/16 of 96 training
    samples is too few labels, so that budget is left out with a note; the closing notes agree with the checks'
    verdicts and intervals, and never repeat themselves."""
    run = write_run(tmp_path, P=12, n=16, seed=5, unexplained=3.0)
    result = with_prose(run_hacking_study(run, HackConfig(n_features=1024)))
    assert {s["labels"] for s in result["error_sweep"]} == {"all", "1/4"}
    assert any("1/16" in note and "left out" in note for note in result["notes"])
    verdicts = {c["claim"]: c["verdict"] for c in result["checks"]}
    for note in result["notes"]:
        assert not DOUBLED.search(note), note
        for word, verdict in (("NOT SHOWN: ", "not shown"), ("INCONCLUSIVE: ", "inconclusive")):
            if note.startswith(word):
                assert verdicts[note[len(word):].split(". ")[0]] == verdict, note
    assert any(note.startswith(("NOT SHOWN: ", "INCONCLUSIVE: ")) for note in result["notes"])
    for c in result["checks"]:
        significant = [p for p in c["per_point"] if p["difference_ci"][0] > 0]
        if c["per_point"]:
            assert f"interval above 0 at {len(significant)}/{len(c['per_point'])}" in c["detail"], c
        if c["verdict"] != "shown" and len(significant) == len(c["per_point"]) > 0:
            assert "hardly differ" in c["detail"], c  # significant everywhere, so say why it is not shown


def test_the_study_runs_the_hacking_stage_on_safety_and_summarization():
    from alignlimits.pipeline.config import resolve_config

    for task in ("safety", "summarization"):
        for preset in ("quick", "full"):
            assert "hacking" in resolve_config(task, preset, {}, {}).methods
    assert "hacking" not in resolve_config("exact", "quick", {}, {}).methods
