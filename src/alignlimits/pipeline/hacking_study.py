r"""The reward-hacking study: proxies trained on gold labels, tilted and best-of-N against gold.

On top of a run directory's base samples (the task's reward column is the gold):

1. **Split** the prompts at random (seeded) into a training half, whose samples may be labelled,
   and an evaluation half, on which every curve is computed (so proxy errors are out-of-sample).
2. **Proxies** (:mod:`alignlimits.methods.proxies`): for every (labels, noise) pair of the error
   sweep, ``seeds`` ridge proxies with their own labelled rows, noise and bootstrap resample; for
   the ensembles, ``members`` *independent* proxies (own labels, noise, resample) and ``members``
   *correlated* ones (the same labelled rows and noise, their own resample).
3. **Curves** on the evaluation prompts, per shared β: KL of the proxy-optimal tilt, its proxy and
   gold gains, the gold frontier at the same KL, the gap, and the objective loss
   β·KL(π̂_β‖π_β); per N: best-of-N selected by the proxy and scored by gold (unbiased estimator),
   its exact empirical KL, best-of-N by gold, the frontier at that KL and the gap.
4. **Ensembles** of K members, aggregated by mean, min and mean − λ·Var: members are split into
   disjoint groups of K and the curves averaged over the groups (K = 1 is the average single proxy).
5. **Intervals**: percentile bootstrap over evaluation prompts (resampled with replacement); every
   curve uses the same replicates, so differences between curves are paired. Each replicate
   re-evaluates the gold frontier at that replicate's KL (interpolated on a dense β grid).
6. **Checks**: the expected orderings (gap grows with error and as β falls; mean of 4 independent
   proxies beats the average single proxy; independent members beat correlated ones) are tested and
   reported plainly, whichever way they come out.

Writes ``hacking.json`` and ``proxies.parquet`` (``prompt_id``, ``sample_idx``,
``hack_split``, the gold column and one column per proxy) into the run directory.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from alignlimits.data import read_table, validate
from alignlimits.errors import AlignLimitsError
from alignlimits.pipeline.files import write_json_atomic, write_parquet_atomic
from alignlimits.methods.proxies import FEATURES, GoldLabelledProxy, proxy_error, resolve_labels, text_features
from alignlimits.theory.best_of_n import bon_expected_reward, bon_kl_bound, bon_kl_empirical
from alignlimits.theory.groups import Groups
from alignlimits.theory.hacking import AGGREGATES, aggregate_proxies, proxy_tilt
from alignlimits.theory.tilt import tilt

TILT_KEYS = ("beta", "kl", "proxy_gain", "gold_gain", "optimal_gold_gain", "gap", "objective_loss")
BON_KEYS = ("n", "kl_bound", "kl_empirical", "proxy_gain", "gold_gain", "gold_gain_by_gold", "optimal_gold_gain", "gap")
PROXIES_FILE = "proxies.parquet"
DEFAULT_KL_GRID = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6)


@dataclass
class HackConfig:
    """Settings of the study (all recorded in the JSON)."""

    gold: str | None = None
    features: str = "ngram"
    labels: Sequence[float] = (1.0, 0.25, 0.0625)
    noise: Sequence[float] = (0.0, 0.5, 1.0)
    seeds: int = 4
    ks: Sequence[int] = (1, 2, 4, 8)
    members: int | None = None
    ensemble_labels: float = 0.25
    ensemble_noise: float = 1.0
    aggregates: Sequence[str] = AGGREGATES
    lam: float | None = None
    ddof: int = 0
    betas: Sequence[float] | None = None
    bon: Sequence[int] | None = None
    train_fraction: float = 0.5
    n_bootstrap: int = 200
    confidence: float = 0.95
    seed: int = 0
    n_features: int = 4096
    proxy_cols: Sequence[str] = ()
    proxies_file: str | None = None

    def check(self) -> None:
        if self.features not in FEATURES:
            raise AlignLimitsError(f"unknown --features {self.features!r}; use one of {', '.join(FEATURES)}")
        for a in self.aggregates:
            if a not in AGGREGATES:
                raise AlignLimitsError(f"unknown ensemble aggregate {a!r}; use one of {', '.join(AGGREGATES)}")
        if not self.ks or any(int(k) < 1 for k in self.ks):
            raise AlignLimitsError("--k needs ensemble sizes ≥ 1, e.g. 1,2,4,8")
        if self.members is not None and max(self.ks) > self.members:
            raise AlignLimitsError(f"K = {max(self.ks)} is larger than the {self.members} ensemble members available; lower --k or raise --members")
        if self.seeds < 1:
            raise AlignLimitsError("--seeds must be ≥ 1")
        if not 0 < self.train_fraction < 1:
            raise AlignLimitsError(f"--train-fraction must be in (0, 1), got {self.train_fraction}")
        if self.n_bootstrap < 10:
            raise AlignLimitsError("--n-bootstrap must be at least 10")
        if not 0 < self.confidence < 1:
            raise AlignLimitsError("--confidence must be in (0, 1)")
        if self.betas is not None and any(not b > 0 for b in self.betas):
            raise AlignLimitsError("β must be positive")
        if any(not n >= 0 for n in self.noise) or not self.ensemble_noise >= 0:
            raise AlignLimitsError("label noise must be ≥ 0 (a multiple of the gold std)")
        if self.ddof not in (0, 1):
            raise AlignLimitsError("the variance of mean − λ·Var uses ddof 0 (population) or 1 (unbiased)")


# --------------------------------------------------------------------------- bootstrap evaluation
class CurveEvaluator:
    """Curves of proxy signals against gold on a fixed set of prompts, with paired bootstrap replicates.

    Row 0 of every returned array is the point estimate (all prompts weighted equally); rows
    1..R are bootstrap replicates (prompts resampled with replacement, the same for every signal).
    """

    def __init__(self, gold, prompt_ids, betas, bon_ns, n_bootstrap: int = 200, seed: int = 0, n_grid: int = 256,
                 kl_grid=DEFAULT_KL_GRID):
        gold = np.asarray(gold, dtype=np.float64)
        self.kl_grid = np.asarray(kl_grid, dtype=np.float64)
        self.groups, self.order, self.prompts = Groups.from_labels(np.asarray(prompt_ids))
        g = self.groups
        self.gold = gold[self.order]
        self.n = gold.size
        self.betas = np.asarray(betas, dtype=np.float64)
        self.bon_ns = np.asarray(bon_ns, dtype=np.int64)
        P = g.n_groups
        rng = np.random.default_rng([seed, 7])
        boots = rng.multinomial(P, np.full(P, 1.0 / P), size=n_bootstrap) / P
        self.weights = np.vstack([np.full((1, P), 1.0 / P), boots])  # (R+1, P)
        # gold frontier per prompt on a dense β grid, plus the KL = 0 and β → 0 limits
        spread = float(np.max(g.max(self.gold) + g.max(-self.gold)))
        if spread <= 0:
            raise AlignLimitsError("the gold reward is the same for every sample of every prompt: there is nothing to align toward")
        grid = spread * np.logspace(2, -5, n_grid)
        t = tilt(self.gold, grid, g)
        at_peak = self.gold == g.expand(g.max(self.gold))
        max_kl = -np.log(g.sum(at_peak / g.expand(g.sizes.astype(float))))
        max_gain = g.max(self.gold) - g.mean(self.gold)
        K = np.vstack([np.zeros((1, P)), t.kl, max_kl[None]])
        D = np.vstack([np.zeros((1, P)), t.gain, max_gain[None]])
        self._K = np.maximum.accumulate(self.weights @ K.T, axis=1)  # (R+1, G) ascending KL
        self._D = np.maximum.accumulate(self.weights @ D.T, axis=1)
        self.base_gold = g.mean(self.gold)
        bon_gold = bon_expected_reward(self.gold, self.bon_ns, g) - self.base_gold  # (N, P)
        self._bon_by_gold = self.weights @ bon_gold.T

    def frontier(self, kl: np.ndarray) -> np.ndarray:
        """Gold frontier gain at each replicate's KL: ``kl`` has shape (R+1, ...)."""
        out = np.empty_like(kl)
        for r in range(kl.shape[0]):
            out[r] = np.interp(kl[r], self._K[r], self._D[r])
        return out

    def _sorted(self, proxy) -> np.ndarray:
        proxy = np.asarray(proxy, dtype=np.float64)
        if proxy.size != self.n:
            raise AlignLimitsError(f"gold and proxy differ in length ({self.n} vs {proxy.size}); they must score the same samples")
        return proxy[self.order]

    def tilt_curves(self, proxy) -> dict[str, np.ndarray]:
        p = self._sorted(proxy)
        pt = proxy_tilt(self.gold, p, self.betas, self.groups)
        W = self.weights
        out = {k: W @ getattr(pt, k).T for k in ("kl", "proxy_gain", "gold_gain", "objective_loss")}
        out["optimal_gold_gain"] = self.frontier(out["kl"])
        out["gap"] = out["optimal_gold_gain"] - out["gold_gain"]
        out["beta"] = np.broadcast_to(self.betas, out["kl"].shape)
        # the same curve read at fixed KL (comparisons free of how far each proxy moves the policy at a given β)
        # on a β grid of its own, scaled to the proxy's spread, so that every proxy reaches the same KLs
        g = self.groups
        spread = float(np.sqrt(g.mean((p - g.expand(g.mean(p))) ** 2).mean())) or 1.0
        dense = proxy_tilt(self.gold, p, spread * np.logspace(1.5, -3, 40), g)
        kl_d, gold_d = W @ dense.kl.T, W @ dense.gold_gain.T
        at = np.full((W.shape[0], self.kl_grid.size), np.nan)
        for r in range(W.shape[0]):
            k = np.concatenate([[0.0], kl_d[r]])
            d = np.concatenate([[0.0], gold_d[r]])
            o = np.argsort(k, kind="stable")
            at[r] = np.interp(self.kl_grid, k[o], d[o], right=np.nan)
        out["gold_gain_at_kl"] = at
        out["gap_at_kl"] = self.frontier(np.broadcast_to(self.kl_grid, at.shape).copy()) - at
        return out

    def bon_curves(self, proxy) -> dict[str, np.ndarray]:
        p = self._sorted(proxy)
        g, W = self.groups, self.weights
        gold_gain = bon_expected_reward(self.gold, self.bon_ns, g, sort_by=p) - self.base_gold
        proxy_gain = bon_expected_reward(p, self.bon_ns, g) - g.mean(p)
        kl_emp = bon_kl_empirical(p, self.bon_ns, g)
        out = {"gold_gain": W @ gold_gain.T, "proxy_gain": W @ proxy_gain.T, "kl_empirical": W @ kl_emp.T}
        out["gold_gain_by_gold"] = self._bon_by_gold
        out["optimal_gold_gain"] = self.frontier(out["kl_empirical"])
        out["gap"] = out["optimal_gold_gain"] - out["gold_gain"]
        shape = out["gold_gain"].shape
        out["n"] = np.broadcast_to(self.bon_ns.astype(float), shape)
        out["kl_bound"] = np.broadcast_to(bon_kl_bound(self.bon_ns), shape)
        return out


def average_curves(curves: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Element-wise mean of several curves' replicate arrays (the average over proxies, paired by replicate)."""
    return {k: np.mean([c[k] for c in curves], axis=0) for k in curves[0]}


def summarise(curve: dict[str, np.ndarray], keys, confidence: float) -> list[dict]:
    """Rows of point estimates with ``<key>_ci`` percentile intervals from the replicates."""
    tail = (1 - confidence) / 2
    rows = []
    for i in range(curve[keys[0]].shape[1]):
        row = {}
        for k in keys:
            col = curve[k][:, i]
            row[k] = int(col[0]) if k == "n" else float(col[0])
            if k not in ("beta", "n", "kl_bound"):
                lo, hi = np.quantile(col[1:], [tail, 1 - tail])
                row[k + "_ci"] = [float(lo), float(hi)]
        rows.append(row)
    return rows


def summarise_at_kl(curve: dict[str, np.ndarray], kl_grid, confidence: float) -> list[dict]:
    """Gold gain and gap at fixed KL; ``None`` where the proxy's tilts never reach that KL."""
    tail = (1 - confidence) / 2
    rows = []
    for i, kl in enumerate(kl_grid):
        row = {"kl": float(kl)}
        for k, name in (("gold_gain_at_kl", "gold_gain"), ("gap_at_kl", "gap")):
            col = curve[k][:, i]
            reps = col[1:][np.isfinite(col[1:])]
            if not np.isfinite(col[0]) or reps.size < 0.5 * (col.size - 1):
                row[name], row[name + "_ci"] = None, None
            else:
                lo, hi = np.quantile(reps, [tail, 1 - tail])
                row[name], row[name + "_ci"] = float(col[0]), [float(lo), float(hi)]
        rows.append(row)
    return rows


def compare(name: str, expected: str, diff: np.ndarray, xs, x_name: str, confidence: float) -> dict:
    """Verdict on ``diff`` (R+1, B) expected to be > 0 at every x: shown, inconclusive or not shown.

    Points whose estimate is undefined (NaN: a KL some curve never reaches) are left out."""
    tail = (1 - confidence) / 2
    finite = np.isfinite(diff[0]) & (np.isfinite(diff[1:]).mean(axis=0) >= 0.5)
    diff, xs = diff[:, finite], np.asarray(list(xs), dtype=float)[finite]
    if diff.shape[1] == 0:
        return {"claim": name, "verdict": "inconclusive", "detail": f"{expected}: no {x_name} value where both curves are defined",
                "per_point": []}
    lo, hi = np.nanquantile(diff[1:], [tail, 1 - tail], axis=0)
    point = diff[0]
    B = point.size
    right = int((point > 0).sum())
    sig = int((lo > 0).sum())
    wrong_sig = int((hi < 0).sum())
    if right >= 0.8 * B and sig >= B / 2 and wrong_sig == 0:
        verdict = "shown"
    elif right < B / 2 or wrong_sig > 0:
        verdict = "not shown"
    else:
        verdict = "inconclusive"
    detail = (
        f"{expected}: right direction at {right}/{B} {x_name} values, {100 * confidence:g}% interval excludes 0 at "
        f"{sig}/{B}" + (f", significantly the wrong way at {wrong_sig}/{B}" if wrong_sig else "")
    )
    return {
        "claim": name, "verdict": verdict, "detail": detail,
        "per_point": [
            {x_name: float(x), "difference": float(d), "difference_ci": [float(a), float(b)]}
            for x, d, a, b in zip(xs, point, lo, hi)
        ],
    }


# --------------------------------------------------------------------------- study
def _split_prompts(ids: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    unique = np.unique(ids)
    if unique.size < 4:
        raise AlignLimitsError(f"the study needs at least 4 prompts (2 to train proxies, 2 to evaluate); the table has {unique.size}")
    rng = np.random.default_rng([seed, 3])
    perm = rng.permutation(unique)
    n_train = int(np.clip(round(fraction * unique.size), 2, unique.size - 2))
    return np.isin(ids, perm[:n_train])


def _label_name(x: float) -> str:
    if x <= 1:
        inv = 1 / x
        return "all" if x == 1 else (f"1/{int(round(inv))}" if abs(inv - round(inv)) < 1e-9 else f"{x:g}")
    return f"{int(x)}"


def _check_signal(name: str, values: np.ndarray, groups: Groups) -> None:
    spread = groups.max(values) + groups.max(-values)
    scale = max(1.0, float(np.abs(values).max()))
    if np.all(spread <= 1e-12 * scale):
        raise AlignLimitsError(f"proxy {name!r} is constant within every prompt: it carries no ranking information (more labels or less noise?)")


def _pairwise_error_correlation(gold: np.ndarray, preds: list[np.ndarray], groups: Groups) -> float:
    """Mean pairwise correlation of members' prompt-centred errors (1 = fully shared errors)."""
    if len(preds) < 2:
        return float("nan")
    E = np.stack([p - gold for p in preds])
    E = E - groups.expand(groups.mean(E))
    C = np.corrcoef(E)
    return float(C[~np.eye(len(preds), dtype=bool)].mean())


def _explanations(parts: dict) -> list[str]:
    """Closing notes: the likely reasons the data do not show an expected ordering."""
    out, why = [], []
    if parts["n_eval_prompts"] < 20:
        why.append("few_prompts")
        out.append(f"only {parts['n_eval_prompts']} evaluation prompts: the intervals are wide; sample more prompts to tell the curves apart")
    errs = parts["sweep_errors"]
    if len(errs) > 1 and max(errs) < 1.25 * min(errs):
        why.append("narrow_error_range")
        out.append(f"the error sweep barely changes the proxies' held-out error (1 − within-prompt correlation {min(errs):.3g} to {max(errs):.3g}): "
                   "label budget and noise are not what limits these proxies, so their gaps cannot separate")
    if np.isfinite(parts["error_correlation"]) and parts["error_correlation"] > 0.5:
        why.append("shared_errors")
        r = parts.get("member_correlation", float("nan"))
        out.append(f"independent members' held-out errors are strongly correlated (mean pairwise {parts['error_correlation']:.2f}; members' "
                   f"within-prompt correlation with gold {r:.2f}): most of each proxy's error is the part of the gold reward the "
                   "features cannot represent, which every member shares and averaging cannot remove")
    g, groups = parts["gold"], parts["groups"]
    dev = np.abs(g - groups.expand(groups.mean(g)))
    top = dev >= np.quantile(dev, 0.95)
    share = float((dev[top] ** 2).sum() / max((dev ** 2).sum(), 1e-300))
    if share > 0.5:
        why.append("heavy_tailed_gold")
        out.append(f"the gold reward is heavy-tailed: the 5% most extreme samples carry {100 * share:.0f}% of its within-prompt variance, "
                   "so a few samples decide every gap and the curves are noisy")
    parts["explained_by"] = why
    if not out:
        out.append("no simple cause found (enough prompts, a real error range, members with mostly independent errors)")
    return out


def default_betas(gold_sd: float) -> np.ndarray:
    """From 3× to 1/30 of the gold reward's within-prompt standard deviation, 11 points."""
    return gold_sd * np.logspace(0.5, -1.5, 11)


def run_hacking_study(source, config: HackConfig | None = None, json_path=None, proxies_path=None,
                      log: Callable[[str], None] | None = None, write_json: bool = True) -> dict:
    """Run the study on a run directory (or sample file); returns the ``hacking`` JSON dict.

    ``json_path``/``proxies_path`` default to ``hacking.json`` and ``proxies.parquet`` inside a run
    directory; for a sample file nothing is written unless given (``write_json=False``: no JSON). The plot
    (:func:`alignlimits.report.hacking_plots.plot_hacking_study`) is drawn by the caller (report layer).

    BLAS runs single-threaded here (through ``threadpoolctl`` when installed): the matrices are small
    (at most a few thousand rows), and on a shared 2-core machine threaded BLAS made the study ~3× slower.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - optional
        return _run_hacking_study(source, config, json_path, proxies_path, log, write_json)
    with threadpool_limits(limits=1, user_api="blas"):
        return _run_hacking_study(source, config, json_path, proxies_path, log, write_json)


def _run_hacking_study(source, config, json_path, proxies_path, log, write_json) -> dict:
    started = time.perf_counter()
    config = config or HackConfig()
    config.check()
    say = log or (lambda msg: None)
    source = Path(source)
    frame = read_table(source)
    if config.gold is None:
        from alignlimits.data import default_reward_column

        config.gold = default_reward_column(frame, str(source))
    if "sample_idx" not in frame.columns:
        frame = frame.copy()
        frame["sample_idx"] = frame.groupby(frame["prompt_id"].astype(str)).cumcount()
    missing = [c for c in config.proxy_cols if c not in frame.columns]
    if missing:
        frame = _join_proxies(frame, missing, source, config.proxies_file)
    table = validate(frame, [config.gold, *config.proxy_cols], str(source))
    frame = table.frame.reset_index(drop=True)
    ids = frame["prompt_id"].to_numpy()
    gold = frame[config.gold].to_numpy(dtype=np.float64)
    if not config.proxy_cols:
        is_train = _split_prompts(ids, config.train_fraction, config.seed)
        split_note = (f"prompts split at random (seed {config.seed}): {config.train_fraction:g} train (labels drawn from their "
                      "samples), the rest evaluation (every curve and error below is on evaluation prompts only)")
    elif "hack_split" in frame.columns and (frame["hack_split"] == "eval").any():
        is_train = (frame["hack_split"] != "eval").to_numpy()
        split_note = "evaluation rows of the proxies file's hack_split column (the proxies were trained on the others)"
    else:
        is_train = np.zeros(len(frame), bool)
        split_note = "proxies given: every prompt is evaluated"
    train_rows, eval_rows = np.nonzero(is_train)[0], np.nonzero(~is_train)[0]
    g_all, o_all, _ = Groups.from_labels(ids)
    gold_sorted = gold[o_all]
    gold_sd = float(np.sqrt(g_all.mean((gold_sorted - g_all.expand(g_all.mean(gold_sorted))) ** 2).mean()))
    if gold_sd <= 0:
        raise AlignLimitsError(f"gold column {config.gold!r} is the same for every sample of every prompt: there is nothing to align toward")
    lam = float(config.lam) if config.lam is not None else 1.0 / gold_sd
    betas = np.asarray(config.betas, dtype=np.float64) if config.betas is not None else default_betas(gold_sd)
    eval_ids = ids[eval_rows]
    eval_groups, _, _ = Groups.from_labels(eval_ids)
    n_min = int(eval_groups.sizes.min())
    if config.bon is None:
        bon_ns = [1 << k for k in range(int(np.log2(n_min)) + 1)]
    else:
        bon_ns = sorted(set(int(n) for n in config.bon))
        if max(bon_ns) > n_min:
            raise AlignLimitsError(f"best-of-{max(bon_ns)} needs {max(bon_ns)} samples per prompt but a prompt has {n_min}; use --bon with N ≤ {n_min}")
    notes = list(table.notes)

    # ---------------------------------------------------------------- proxies
    preds: dict[str, np.ndarray] = {}
    info: dict[str, dict] = {}
    sweep_groups: list[dict] = []
    member_sets: dict[str, list[str]] = {}
    members = config.members or max(config.ks)
    if config.proxy_cols:
        for c in config.proxy_cols:
            preds[c] = frame[c].to_numpy(dtype=np.float64)
            info[c] = {"proxy": c, "kind": "given"}
        if max(config.ks) > len(config.proxy_cols):
            raise AlignLimitsError(f"K = {max(config.ks)} is larger than the {len(config.proxy_cols)} proxies given; lower --k")
        member_sets["given"] = list(config.proxy_cols)
        features_note = "proxies given as columns (no training)"
    else:
        if "completion" not in frame.columns:
            raise AlignLimitsError(f"{source} has no 'completion' column to train proxies on; sample with `alignlimits sample` or pass --proxy columns")
        pool = train_rows.size
        for lab in [*config.labels, config.ensemble_labels]:
            resolve_labels(lab, pool)  # validates early
        say(f"features: {config.features} on {len(frame)} completions")
        t0 = time.perf_counter()
        prompts = frame["prompt"].astype(str).tolist() if "prompt" in frame.columns else None
        options = {"n_features": config.n_features} if config.features == "ngram" else {}
        X = text_features(config.features, frame["completion"].fillna("").astype(str).tolist(), prompts, **options)
        features_note = f"{config.features}: {X.shape[1]} features in {time.perf_counter() - t0:.1f} s"
        base = config.seed * 100_000

        def train(name, kind, labels, noise, random_state, label_state=None, **extra):
            model = GoldLabelledProxy(labels=labels, noise=noise, random_state=random_state, label_state=label_state, name=name)
            model.fit(X, gold, pool=train_rows)
            preds[name] = model.predict(X)
            info[name] = {"proxy": name, "kind": kind, "labels": _label_name(labels), "n_labels": model.n_labels_,
                          "noise": float(noise), "noise_sd": model.noise_sd_, "alpha": model.alpha_,
                          "random_state": random_state, "label_state": label_state, **extra}

        c = 0
        for lab in config.labels:
            for nz in config.noise:
                names = []
                for s in range(config.seeds):
                    name = f"{config.features}_l{lab:g}_n{nz:g}_s{s}"
                    train(name, "sweep", lab, nz, base + 100 * c + s)
                    names.append(name)
                sweep_groups.append({"labels": _label_name(lab), "noise": float(nz), "proxies": names})
                c += 1
        for kind, tag in (("independent", "ind"), ("correlated", "cor")):
            names = []
            for m in range(members):
                name = f"{config.features}_{tag}{m}"
                if kind == "independent":
                    train(name, kind, config.ensemble_labels, config.ensemble_noise, base + 50_000 + m)
                else:
                    train(name, kind, config.ensemble_labels, config.ensemble_noise, base + 60_000 + m, label_state=base + 70_000)
                names.append(name)
            member_sets[kind] = names
        say(f"trained {len(preds)} proxies")

    # per-proxy error on the evaluation samples
    for name, p in preds.items():
        err = proxy_error(gold[eval_rows], p[eval_rows], eval_ids)
        info[name].update({f"heldout_{k}": v for k, v in err.items()})
        if "train_rmse" not in info[name] and train_rows.size:
            info[name]["train_rmse"] = float(np.sqrt(np.mean((gold[train_rows] - p[train_rows]) ** 2)))
    eg, eorder, _ = Groups.from_labels(eval_ids)
    gold_eval_sorted = gold[eval_rows][eorder]
    for name, p in preds.items():
        pe = p[eval_rows][eorder]
        _check_signal(name, pe, eg)
        resid = (pe - eg.expand(eg.mean(pe))) - (gold_eval_sorted - eg.expand(eg.mean(gold_eval_sorted)))
        info[name]["heldout_within_prompt_rmse"] = float(np.sqrt(np.mean(resid ** 2)))

    # ---------------------------------------------------------------- curves
    say(f"curves on {np.unique(eval_ids).size} evaluation prompts, {config.n_bootstrap} bootstrap replicates")
    ev = CurveEvaluator(gold[eval_rows], eval_ids, betas, bon_ns, config.n_bootstrap, config.seed)
    tilt_of: dict[str, dict] = {}
    bon_of: dict[str, dict] = {}
    for name, p in preds.items():
        tilt_of[name] = ev.tilt_curves(p[eval_rows])
        bon_of[name] = ev.bon_curves(p[eval_rows])
    conf = config.confidence
    kl_grid = ev.kl_grid
    per_proxy = [{**info[n], "curve": summarise(tilt_of[n], TILT_KEYS, conf), "at_kl": summarise_at_kl(tilt_of[n], kl_grid, conf),
                  "bon": summarise(bon_of[n], BON_KEYS, conf)} for n in preds]

    error_sweep = []
    sweep_tilts, sweep_bons = [], []
    for grp in sweep_groups:
        t_avg = average_curves([tilt_of[n] for n in grp["proxies"]])
        b_avg = average_curves([bon_of[n] for n in grp["proxies"]])
        sweep_tilts.append(t_avg)
        sweep_bons.append(b_avg)
        err = {k: float(np.mean([info[n][f"heldout_{k}"] for n in grp["proxies"]]))
               for k in ("correlation", "rmse", "within_prompt_correlation", "within_prompt_rmse")}
        err["index"] = 1.0 - err["within_prompt_correlation"]  # the error axis: what a tilt or best-of-N sees
        error_sweep.append({**grp, "n_labels": info[grp["proxies"][0]]["n_labels"], "error": err,
                            "curve": summarise(t_avg, TILT_KEYS, conf), "at_kl": summarise_at_kl(t_avg, kl_grid, conf),
                            "bon": summarise(b_avg, BON_KEYS, conf)})

    ensembles = []
    ens_tilt: dict[tuple, dict] = {}
    ens_bon: dict[tuple, dict] = {}
    for kind, names in member_sets.items():
        for k in sorted(set(int(k) for k in config.ks)):
            if k > len(names):
                raise AlignLimitsError(f"K = {k} is larger than the {len(names)} {kind} proxies available; lower --k or raise --members")
            subsets = [names[i * k:(i + 1) * k] for i in range(len(names) // k)]
            for how in config.aggregates:
                t_list, b_list, errs = [], [], []
                for sub in subsets:
                    stacked = np.stack([preds[n][eval_rows] for n in sub])
                    if k == 1 or (how == "uwo" and k <= config.ddof):
                        agg = stacked[0]
                    else:
                        agg = aggregate_proxies(stacked, how, lam=lam, ddof=config.ddof)
                    _check_signal(f"{how} of {sub}", agg[eorder], eg)
                    t_list.append(ev.tilt_curves(agg))
                    b_list.append(ev.bon_curves(agg))
                    errs.append(proxy_error(gold[eval_rows], agg, eval_ids))
                t_avg, b_avg = average_curves(t_list), average_curves(b_list)
                ens_tilt[(kind, how, k)], ens_bon[(kind, how, k)] = t_avg, b_avg
                ensembles.append({
                    "aggregate": how, "k": k, "members": kind, "n_groups": len(subsets), "groups": subsets,
                    "error": {key: float(np.mean([e[key] for e in errs])) for key in errs[0]},
                    "curve": summarise(t_avg, TILT_KEYS, conf), "at_kl": summarise_at_kl(t_avg, kl_grid, conf),
                    "bon": summarise(b_avg, BON_KEYS, conf),
                })

    # ---------------------------------------------------------------- checks
    checks = []
    if sweep_groups:
        errors = np.array([e["error"]["index"] for e in error_sweep])
        lo_i, hi_i = int(np.argmin(errors)), int(np.argmax(errors))
        if lo_i != hi_i:
            checks.append(compare(
                "gap grows with proxy error",
                f"gap of the largest-error proxies (labels {error_sweep[hi_i]['labels']}, noise {error_sweep[hi_i]['noise']:g}) minus "
                f"that of the smallest-error ones (labels {error_sweep[lo_i]['labels']}, noise {error_sweep[lo_i]['noise']:g})",
                sweep_tilts[hi_i]["gap"] - sweep_tilts[lo_i]["gap"], betas, "beta", conf))
            gaps = np.array([t["gap"][0] for t in sweep_tilts])  # (C, B)
            from scipy.stats import spearmanr

            checks.append(compare(
                "at equal KL: gap grows with proxy error",
                "gold gain of the smallest-error proxies minus that of the largest-error ones, read at the same KL",
                sweep_tilts[lo_i]["gold_gain_at_kl"] - sweep_tilts[hi_i]["gold_gain_at_kl"], kl_grid, "kl", conf))
            if errors[hi_i] < 1.25 * errors[lo_i]:
                for chk in checks[-2:]:
                    if chk["verdict"] == "shown":
                        chk["verdict"] = "inconclusive"
                    chk["detail"] += (f" (but the configurations' errors hardly differ: 1 − within-prompt correlation "
                                      f"{errors[lo_i]:.3g} to {errors[hi_i]:.3g}, so the ranking is itself noise)")
            rho = [float(spearmanr(errors, gaps[:, j]).statistic) if np.ptp(gaps[:, j]) > 0 else float("nan") for j in range(betas.size)]
            checks[-2]["spearman_error_vs_gap"] = [{"beta": float(b), "rho": r} for b, r in zip(betas, rho)]
        every = average_curves(sweep_tilts)
        order = np.argsort(betas)[::-1]  # large β first
        steps = every["gap"][:, order[1:]] - every["gap"][:, order[:-1]]
        checks.append(compare("gap grows as β falls",
                              "gap (averaged over all sweep proxies) at each β minus the gap at the next larger β",
                              steps, betas[order[1:]], "beta", conf))
    for kind in member_sets:
        if (kind, "mean", 4) in ens_tilt and (kind, "mean", 1) in ens_tilt:
            expected = kind != "correlated"  # averaging members that share their labels and noise removes little
            checks.append({**compare(
                f"mean of 4 {kind} proxies has a smaller gap than the average single proxy",
                "average single proxy's gap minus the 4-member mean ensemble's gap",
                ens_tilt[(kind, "mean", 1)]["gap"] - ens_tilt[(kind, "mean", 4)]["gap"], betas, "beta", conf), "expected": expected})
            checks.append({**compare(
                f"at equal KL: mean of 4 {kind} proxies has a smaller gap than the average single proxy",
                "the 4-member mean ensemble's gold gain minus the average single proxy's, read at the same KL (where both reach it)",
                ens_tilt[(kind, "mean", 4)]["gold_gain_at_kl"] - ens_tilt[(kind, "mean", 1)]["gold_gain_at_kl"], kl_grid, "kl", conf),
                "expected": expected})
            checks.append({**compare(
                f"best-of-N: mean of 4 {kind} proxies has a smaller gap than the average single proxy",
                "average single proxy's best-of-N gap minus the 4-member mean ensemble's",
                ens_bon[(kind, "mean", 1)]["gap"][:, 1:] - ens_bon[(kind, "mean", 4)]["gap"][:, 1:],
                bon_ns[1:], "n", conf), "expected": expected})
    if ("independent", "mean", 4) in ens_tilt and ("correlated", "mean", 4) in ens_tilt:
        checks.append(compare(
            "independent members beat correlated ones (mean of 4)",
            "gap of the mean of 4 correlated proxies minus that of 4 independent ones",
            ens_tilt[("correlated", "mean", 4)]["gap"] - ens_tilt[("independent", "mean", 4)]["gap"], betas, "beta", conf))
        checks.append(compare(
            "at equal KL: independent members beat correlated ones (mean of 4)",
            "gold gain of the mean of 4 independent proxies minus that of 4 correlated ones, read at the same KL",
            ens_tilt[("independent", "mean", 4)]["gold_gain_at_kl"] - ens_tilt[("correlated", "mean", 4)]["gold_gain_at_kl"],
            kl_grid, "kl", conf))
    for chk in checks:
        chk.setdefault("expected", True)
    diagnostics = {}
    for kind, names in member_sets.items():
        diagnostics[f"{kind}_error_correlation"] = _pairwise_error_correlation(
            gold_eval_sorted, [preds[n][eval_rows][eorder] for n in names], eg)
    failed = [c for c in checks if c["expected"] and c["verdict"] != "shown"]
    for chk in failed:
        notes.append(f"NOT SHOWN ({chk['verdict']}): {chk['claim']}. {chk['detail']}")
    verdict = {c["claim"]: c["verdict"] for c in checks}
    for at_beta, at_kl in (("gap grows with proxy error", "at equal KL: gap grows with proxy error"),
                           ("mean of 4 independent proxies has a smaller gap than the average single proxy",
                            "at equal KL: mean of 4 independent proxies has a smaller gap than the average single proxy"),
                           ("independent members beat correlated ones (mean of 4)",
                            "at equal KL: independent members beat correlated ones (mean of 4)")):
        if verdict.get(at_beta, "shown") != "shown" and verdict.get(at_kl) == "shown":
            notes.append(
                f"'{at_beta}' holds at equal KL but not at equal β: the proxies differ in scale (ridge shrinks a proxy fitted "
                "to fewer or noisier labels, and averaging shrinks an ensemble), so at one β a flatter proxy moves the policy "
                "less and its gap at that β is smaller; at the same KL it is worse, as the theory says"
            )
    if failed:
        notes += _explanations(result_parts := {
            "n_eval_prompts": int(np.unique(eval_ids).size),
            "sweep_errors": [e["error"]["index"] for e in error_sweep],
            "error_correlation": diagnostics.get("independent_error_correlation", float("nan")),
            "member_correlation": float(np.mean([info[n]["heldout_within_prompt_correlation"] for n in member_sets.get("independent", [])]))
            if member_sets.get("independent") else float("nan"),
            "gold": gold_eval_sorted, "groups": eg,
        })
        diagnostics["explained_by"] = result_parts.get("explained_by", [])

    result = {
        "gold": config.gold,
        "source": str(source),
        "features": config.features if not config.proxy_cols else None,
        "features_detail": features_note,
        "proxy_model": "ridge regression (closed form, penalty by leave-one-out CV) on gold labels of training-prompt samples, "
                       "labels resampled with replacement; label noise sd = noise × std of the labelled gold",
        "n_prompts": int(np.unique(ids).size),
        "n_samples": int(len(frame)),
        "n_train_prompts": int(np.unique(ids[train_rows]).size),
        "n_eval_prompts": int(np.unique(eval_ids).size),
        "n_eval_samples": int(eval_rows.size),
        "split": split_note,
        "gold_within_prompt_sd": gold_sd,
        "betas": [float(b) for b in betas],
        "bon_n": [int(n) for n in bon_ns],
        "confidence": conf,
        "n_bootstrap": config.n_bootstrap,
        "ci_method": (
            f"{100 * conf:g}% percentile bootstrap, {config.n_bootstrap} replicates resampling evaluation prompts with "
            "replacement; every curve uses the same replicates (differences are paired); each replicate re-evaluates the "
            "gold frontier at its own KL (linear interpolation on a 256-point β grid)"
        ),
        "gap_definition": "gap = gold frontier at the tilt's KL (or best-of-N's exact empirical KL) minus the gold gain; "
                          "objective_loss = β·KL(π̂_β‖π_β); at_kl: the proxy's tilt curve read at fixed KL (linear in KL between "
                          "its β points; null where it never reaches that KL), so that proxies that move the policy by different "
                          "amounts at the same β are compared at the same distance from the base model",
        "kl_grid": [float(k) for k in kl_grid],
        "error_index": "1 − held-out within-prompt correlation of proxy and gold (both centred per prompt): the error a tilt or "
                       "best-of-N sees, free of the proxy's scale; 'largest/smallest-error' configurations are ranked by it",
        "uwo": {"lambda": lam, "lambda_default": "1 / gold_within_prompt_sd" if config.lam is None else None,
                "variance": "population (ddof=0)" if config.ddof == 0 else "unbiased (ddof=1)",
                "k1": "K = 1: every aggregate is the member itself"},
        "ensemble_members": {"labels": _label_name(config.ensemble_labels), "noise": config.ensemble_noise, "members": members,
                             "independent": "own labelled rows, own noise, own bootstrap resample",
                             "correlated": "same labelled rows and same noise, own bootstrap resample",
                             "grouping": "members split into disjoint groups of K; curves averaged over the groups"}
        if not config.proxy_cols else {"members": len(config.proxy_cols), "grouping": "disjoint groups of K of the given proxies"},
        "proxies": [info[n] for n in preds],
        "per_proxy": per_proxy,
        "error_sweep": error_sweep,
        "ensembles": ensembles,
        "checks": checks,
        "diagnostics": diagnostics,
        "gold_frontier": [{"kl": float(k), "gain": float(d)} for k, d in zip(ev._K[0][::8], ev._D[0][::8])],
        "config": {k: (list(v) if isinstance(v, (tuple, list)) else v) for k, v in asdict(config).items()},
        "notes": notes,
    }
    result["wall_time_s"] = time.perf_counter() - started

    run_dir = source if source.is_dir() else None
    proxies_path = proxies_path or (run_dir / PROXIES_FILE if run_dir else None)
    if proxies_path is not None and not config.proxy_cols:
        out = pd.DataFrame({"prompt_id": frame["prompt_id"], "sample_idx": frame["sample_idx"],
                            "hack_split": np.where(is_train, "train", "eval"), config.gold: gold})
        for n, p in preds.items():
            out[n] = p
        write_parquet_atomic(out, Path(proxies_path))
        result["proxies_file"] = str(proxies_path)
    json_path = json_path or (run_dir / "hacking.json" if run_dir else None)
    if json_path is not None and write_json:
        write_json_atomic(result, Path(json_path))
        result["json"] = str(json_path)
    return result


def _join_proxies(frame: pd.DataFrame, columns: list[str], source: Path, proxies_file) -> pd.DataFrame:
    """Bring proxy columns from a separate table keyed by (prompt_id, sample_idx); it must cover the same samples."""
    path = Path(proxies_file) if proxies_file else (source / PROXIES_FILE if source.is_dir() else None)
    if path is None or not path.exists():
        raise AlignLimitsError(
            f"proxy column(s) {', '.join(map(repr, columns))} are not in {source}"
            + (f" and {path} does not exist" if path else "") + "; name existing columns or give --proxies-file"
        )
    other = read_table(path)
    keys = ["prompt_id", "sample_idx"]
    absent = [c for c in [*keys, *columns] if c not in other.columns]
    if absent:
        raise AlignLimitsError(f"{path} has no column {', '.join(map(repr, absent))}; its columns are: {', '.join(map(str, other.columns))}")
    left = frame[keys].astype({"prompt_id": str}).assign(sample_idx=lambda d: d["sample_idx"].astype(np.int64))
    extra = ["hack_split"] if "hack_split" in other.columns and "hack_split" not in frame.columns else []
    right = other[[*keys, *columns, *extra]].astype({"prompt_id": str}).assign(sample_idx=lambda d: d["sample_idx"].astype(np.int64))
    if right.duplicated(keys).any():
        raise AlignLimitsError(f"{path} repeats (prompt_id, sample_idx) keys; it must hold one row per sample")
    merged = left.merge(right, on=keys, how="left", indicator=True)
    unmatched = int((merged["_merge"] != "both").sum())
    if len(other) != len(frame) or unmatched:
        raise AlignLimitsError(
            f"gold ({len(frame)} samples in {source}) and proxies ({len(other)} rows in {path}) are not the same samples: "
            f"{unmatched} gold samples have no proxy row; score the same (prompt_id, sample_idx) rows"
        )
    out = frame.copy()
    for c in [*columns, *extra]:
        out[c] = merged[c].to_numpy()
    return out

