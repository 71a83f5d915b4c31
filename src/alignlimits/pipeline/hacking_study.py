r"""The reward-hacking study: proxies trained on gold labels, tilted and best-of-N against gold.

On top of a run directory's base samples (the task's reward column is the gold), in named steps:

1. **Table** (:func:`_prepare`): read it once, split the prompts at random (seeded) into a training
   half, whose samples may be labelled, and an evaluation half, on which every curve is computed
   (so proxy errors are out-of-sample); fix the β grid, the best-of-N sizes and λ.
2. **Proxies** (:func:`_train_proxies`, :mod:`alignlimits.methods.proxies`): for every (labels,
   noise) pair of the error sweep, ``seeds`` ridge proxies with their own labelled rows, noise and
   bootstrap resample; for the ensembles, ``members`` *independent* proxies (own labels, noise,
   resample) and ``members`` *correlated* ones (the same labelled rows and noise, their own
   resample). A label budget that gives fewer labelled samples than a proxy needs is left out of
   the sweep with a note.
3. **Curves** (:func:`_curves`) on the evaluation prompts, per shared β: KL of the proxy-optimal
   tilt, its proxy and gold gains, the gold frontier at the same KL, the gap, and the objective loss
   β·KL(π̂_β‖π_β); per N: best-of-N selected by the proxy and scored by gold. Its gold gain is shown
   as the unbiased order-statistics estimate; its gap is on one footing, the empirical distribution
   of the n samples: the gold gain of the exact best-of-N-by-proxy law on it (with replacement,
   ``gold_gain_empirical``), its exact KL, and the empirical gold frontier at that KL, so that an
   oracle proxy's gap is never negative.
4. **Ensembles** of K members, aggregated by mean, min and mean − λ·Var: members are split into
   disjoint groups of K and the curves averaged over the groups (K = 1 is the average single proxy).
5. **Intervals**: expanded percentile bootstrap (Hesterberg 2015) over evaluation prompts
   (resampled with replacement), calibrated for few prompts; every curve uses the same replicates,
   so differences between curves are paired. Each replicate re-evaluates the gold frontier at that
   replicate's KL (interpolated on a dense β grid).
6. **Checks** (:func:`_checks`): the expected orderings (gap grows with error and as β falls; mean
   of 4 independent proxies beats the average single proxy; independent members beat correlated
   ones) are tested and reported plainly, whichever way they come out.

Writes ``hacking.json`` and ``proxies.parquet`` (``prompt_id``, ``sample_idx``,
``hack_split``, the gold column and one column per proxy) into the run directory.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from alignlimits.data import default_reward_column, read_table, validate
from alignlimits.errors import AlignLimitsError
from alignlimits.methods.proxies import MIN_LABELS, FEATURES, GoldLabelledProxy, proxy_error, resolve_labels, text_features
from alignlimits.pipeline.files import write_json_atomic, write_parquet_atomic
from alignlimits.seeding import derive_seed
from alignlimits.theory.best_of_n import bon_empirical_reward, bon_expected_reward, bon_kl_bound, bon_kl_empirical
from alignlimits.theory.groups import Groups
from alignlimits.theory.hacking import AGGREGATES, aggregate_proxies, expanded_tail, proxy_tilt
from alignlimits.theory.tilt import tilt

TILT_KEYS = ("beta", "kl", "proxy_gain", "gold_gain", "optimal_gold_gain", "gap", "objective_loss")
BON_KEYS = ("n", "kl_bound", "kl_empirical", "proxy_gain", "gold_gain", "gold_gain_empirical", "gold_gain_by_gold",
            "optimal_gold_gain", "gap")
PROXIES_FILE = "proxies.parquet"
DEFAULT_KL_GRID = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6)
VERDICT_HEADINGS = {"not shown": "NOT SHOWN", "inconclusive": "INCONCLUSIVE"}


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
@dataclass(frozen=True)
class Intervals:
    """Expanded percentile intervals (:func:`alignlimits.theory.hacking.expanded_tail`) from replicates over ``n_units`` prompts."""

    confidence: float
    n_units: int

    @property
    def tail(self) -> float:
        return expanded_tail(self.n_units, self.confidence)

    def bounds(self, replicates: np.ndarray) -> np.ndarray:
        """Lower and upper ends over axis 0 (NaN replicates left out), shape ``(2, ...)``."""
        return np.nanquantile(replicates, [self.tail, 1 - self.tail], axis=0)


class CurveEvaluator:
    """Curves of proxy signals against gold on a fixed set of prompts, with paired bootstrap replicates.

    Row 0 of every returned array is the point estimate (all prompts weighted equally); rows
    1..R are bootstrap replicates (prompts resampled with replacement, the same for every signal).
    ``intervals`` turns a column of replicates into the ``confidence`` interval.
    """

    def __init__(self, gold, prompt_ids, betas, bon_ns, n_bootstrap: int = 200, seed: int = 0, n_grid: int = 256,
                 kl_grid=DEFAULT_KL_GRID, confidence: float = 0.95):
        gold = np.asarray(gold, dtype=np.float64)
        self.kl_grid = np.asarray(kl_grid, dtype=np.float64)
        self.groups, self.order, self.prompts = Groups.from_labels(np.asarray(prompt_ids))
        g = self.groups
        self.gold = gold[self.order]
        self.n = gold.size
        self.betas = np.asarray(betas, dtype=np.float64)
        self.bon_ns = np.asarray(bon_ns, dtype=np.int64)
        P = g.n_groups
        self.intervals = Intervals(confidence, P)
        rng = np.random.default_rng(derive_seed(seed, "hack", "bootstrap"))
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

    def frontier_points(self, step: int = 8) -> list[dict]:
        """Every ``step``-th point of the point estimate's gold frontier (the JSON's ``gold_frontier``)."""
        return [{"kl": float(k), "gain": float(d)} for k, d in zip(self._K[0][::step], self._D[0][::step])]

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
        out["gold_gain_at_kl"] = self._at_kl(p)
        out["gap_at_kl"] = self.frontier(np.broadcast_to(self.kl_grid, out["gold_gain_at_kl"].shape).copy()) - out["gold_gain_at_kl"]
        return out

    def _at_kl(self, p: np.ndarray) -> np.ndarray:
        """The tilt's gold gain read at the fixed KLs of ``kl_grid`` (NaN where it never gets there).

        On a β grid of its own, scaled to the proxy's spread, so that every proxy reaches the same
        KLs: comparisons free of how far each proxy moves the policy at a given β.
        """
        g, W = self.groups, self.weights
        spread = float(np.sqrt(g.mean((p - g.expand(g.mean(p))) ** 2).mean())) or 1.0
        dense = proxy_tilt(self.gold, p, spread * np.logspace(1.5, -3, 40), g)
        kl_d, gold_d = W @ dense.kl.T, W @ dense.gold_gain.T
        at = np.full((W.shape[0], self.kl_grid.size), np.nan)
        for r in range(W.shape[0]):
            k = np.concatenate([[0.0], kl_d[r]])
            d = np.concatenate([[0.0], gold_d[r]])
            o = np.argsort(k, kind="stable")
            at[r] = np.interp(self.kl_grid, k[o], d[o], right=np.nan)
        return at

    def bon_curves(self, proxy) -> dict[str, np.ndarray]:
        r"""Best-of-N selected by ``proxy``, scored by gold.

        ``gold_gain`` (and ``proxy_gain``): the unbiased order-statistics estimate (sampling
        without replacement). ``gap`` stands on the empirical distribution alone: the empirical
        frontier at the exact KL of the best-of-N-by-proxy law
        :math:`p_a = F_a^N - F_{a-1}^N` (proxy atoms, ties merged) minus that law's gold gain
        ``gold_gain_empirical``; no law on the n samples beats the empirical frontier at its KL.
        """
        p = self._sorted(proxy)
        g, W = self.groups, self.weights
        per_prompt = {
            "gold_gain": bon_expected_reward(self.gold, self.bon_ns, g, sort_by=p) - self.base_gold,
            "gold_gain_empirical": bon_empirical_reward(self.gold, self.bon_ns, g, sort_by=p) - self.base_gold,
            "proxy_gain": bon_expected_reward(p, self.bon_ns, g) - g.mean(p),
            "kl_empirical": bon_kl_empirical(p, self.bon_ns, g),
        }
        out = {k: W @ v.T for k, v in per_prompt.items()}
        out["gold_gain_by_gold"] = self._bon_by_gold
        out["optimal_gold_gain"] = self.frontier(out["kl_empirical"])
        out["gap"] = out["optimal_gold_gain"] - out["gold_gain_empirical"]
        shape = out["gold_gain"].shape
        out["n"] = np.broadcast_to(self.bon_ns.astype(float), shape)
        out["kl_bound"] = np.broadcast_to(bon_kl_bound(self.bon_ns), shape)
        return out


def average_curves(curves: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Element-wise mean of several curves' replicate arrays (the average over proxies, paired by replicate)."""
    return {k: np.mean([c[k] for c in curves], axis=0) for k in curves[0]}


def summarise(curve: dict[str, np.ndarray], keys, intervals: Intervals) -> list[dict]:
    """Rows of point estimates with ``<key>_ci`` intervals from the replicates."""
    rows = []
    for i in range(curve[keys[0]].shape[1]):
        row = {}
        for k in keys:
            col = curve[k][:, i]
            row[k] = int(col[0]) if k == "n" else float(col[0])
            if k not in ("beta", "n", "kl_bound"):
                row[k + "_ci"] = [float(x) for x in intervals.bounds(col[1:])]
        rows.append(row)
    return rows


def summarise_at_kl(curve: dict[str, np.ndarray], kl_grid, intervals: Intervals) -> list[dict]:
    """Gold gain and gap at fixed KL; ``None`` where the proxy's tilts never reach that KL."""
    rows = []
    for i, kl in enumerate(kl_grid):
        row = {"kl": float(kl)}
        for k, name in (("gold_gain_at_kl", "gold_gain"), ("gap_at_kl", "gap")):
            col = curve[k][:, i]
            reps = col[1:][np.isfinite(col[1:])]
            if not np.isfinite(col[0]) or reps.size < 0.5 * (col.size - 1):
                row[name], row[name + "_ci"] = None, None
            else:
                row[name], row[name + "_ci"] = float(col[0]), [float(x) for x in intervals.bounds(reps)]
        rows.append(row)
    return rows


def compare(name: str, expected: str, diff: np.ndarray, xs, x_name: str, intervals: Intervals) -> dict:
    """Verdict on ``diff`` (R+1, B) expected to be > 0 at every x: shown, inconclusive or not shown.

    Points whose estimate is undefined (NaN: a KL some curve never reaches) are left out."""
    finite = np.isfinite(diff[0]) & (np.isfinite(diff[1:]).mean(axis=0) >= 0.5)
    diff, xs = diff[:, finite], np.asarray(list(xs), dtype=float)[finite]
    if diff.shape[1] == 0:
        return {"claim": name, "verdict": "inconclusive", "detail": f"{expected}: no {x_name} value where both curves are defined",
                "per_point": []}
    lo, hi = intervals.bounds(diff[1:])
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
        f"{expected}: right direction at {right}/{B} {x_name} values, {100 * intervals.confidence:g}% interval above 0 at "
        f"{sig}/{B}" + (f", below 0 (significantly the wrong way) at {wrong_sig}/{B}" if wrong_sig else "")
    )
    return {
        "claim": name, "verdict": verdict, "detail": detail,
        "per_point": [
            {x_name: float(x), "difference": float(d), "difference_ci": [float(a), float(b)]}
            for x, d, a, b in zip(xs, point, lo, hi)
        ],
    }


# --------------------------------------------------------------------------- study state
@dataclass
class _Table:
    """The sample table, read and split once, with the grids every curve uses."""

    source: Path
    frame: pd.DataFrame
    gold: np.ndarray
    is_train: np.ndarray
    split_note: str
    notes: list[str]
    gold_sd: float
    lam: float
    betas: np.ndarray
    bon_ns: list[int]

    def __post_init__(self):
        self.ids = self.frame["prompt_id"].to_numpy()
        self.train_rows, self.eval_rows = np.nonzero(self.is_train)[0], np.nonzero(~self.is_train)[0]
        self.eval_ids = self.ids[self.eval_rows]
        self.eval_groups, self.eval_order, _ = Groups.from_labels(self.eval_ids)

    @property
    def gold_eval_sorted(self) -> np.ndarray:
        return self.gold[self.eval_rows][self.eval_order]


@dataclass
class _Proxies:
    """Every proxy's predictions on all samples and its record, with the sweep's and the ensembles' groupings."""

    features_note: str
    preds: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict[str, dict] = field(default_factory=dict)
    sweep_groups: list[dict] = field(default_factory=list)
    member_sets: dict[str, list[str]] = field(default_factory=dict)
    members: int = 0


@dataclass
class _Curves:
    """Replicate arrays of every curve, and their summaries for the JSON."""

    evaluator: CurveEvaluator
    per_proxy: list[dict]
    error_sweep: list[dict]
    sweep_tilts: list[dict]
    ensembles: list[dict]
    ens_tilt: dict[tuple, dict]
    ens_bon: dict[tuple, dict]


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
    table = _prepare(Path(source), config)
    proxies = _given_proxies(table, config) if config.proxy_cols else _train_proxies(table, config, say)
    _heldout_errors(table, proxies)
    say(f"curves on {np.unique(table.eval_ids).size} evaluation prompts, {config.n_bootstrap} bootstrap replicates")
    curves = _curves(table, proxies, config)
    checks = _sweep_checks(table, curves) + _ensemble_checks(table, proxies, curves)
    diagnostics = {f"{kind}_error_correlation": _pairwise_error_correlation(
        table.gold_eval_sorted, [proxies.preds[n][table.eval_rows][table.eval_order] for n in names], table.eval_groups)
        for kind, names in proxies.member_sets.items()}
    notes = table.notes + _closing_notes(checks, table, proxies, curves, diagnostics)
    result = _result(config, table, proxies, curves, checks, diagnostics, notes)
    result["wall_time_s"] = time.perf_counter() - started
    _write_outputs(result, table, proxies, config, json_path, proxies_path, write_json)
    return result


# --------------------------------------------------------------------------- 1. the table
def _prepare(source: Path, config: HackConfig) -> _Table:
    """Read the table, split its prompts, and fix λ, the β grid and the best-of-N sizes."""
    frame, notes = _read(source, config)
    ids = frame["prompt_id"].to_numpy()
    gold = frame[config.gold].to_numpy(dtype=np.float64)
    is_train, split_note = _split(frame, ids, config)
    g, order, _ = Groups.from_labels(ids)
    gs = gold[order]
    gold_sd = float(np.sqrt(g.mean((gs - g.expand(g.mean(gs))) ** 2).mean()))
    if gold_sd <= 0:
        raise AlignLimitsError(f"gold column {config.gold!r} is the same for every sample of every prompt: there is nothing to align toward")
    eval_groups, _, _ = Groups.from_labels(ids[~is_train])
    if eval_groups.n_groups < 2:
        raise AlignLimitsError("the study needs at least 2 evaluation prompts for its intervals; sample more prompts")
    return _Table(
        source=source, frame=frame, gold=gold, is_train=is_train, split_note=split_note, notes=notes, gold_sd=gold_sd,
        lam=float(config.lam) if config.lam is not None else 1.0 / gold_sd,
        betas=np.asarray(config.betas, dtype=np.float64) if config.betas is not None else default_betas(gold_sd),
        bon_ns=_bon_sizes(config.bon, int(eval_groups.sizes.min())),
    )


def _read(source: Path, config: HackConfig) -> tuple[pd.DataFrame, list[str]]:
    """The validated table with a ``sample_idx`` and any proxy columns joined; sets ``config.gold`` when unset."""
    frame = read_table(source)
    if config.gold is None:
        config.gold = default_reward_column(frame, str(source))
    if "sample_idx" not in frame.columns:
        frame = frame.copy()
        frame["sample_idx"] = frame.groupby(frame["prompt_id"].astype(str)).cumcount()
    missing = [c for c in config.proxy_cols if c not in frame.columns]
    if missing:
        frame = _join_proxies(frame, missing, source, config.proxies_file)
    table = validate(frame, [config.gold, *config.proxy_cols], str(source))
    return table.frame.reset_index(drop=True), list(table.notes)


def _split(frame: pd.DataFrame, ids: np.ndarray, config: HackConfig) -> tuple[np.ndarray, str]:
    """Which rows may train proxies, and how that was decided."""
    if not config.proxy_cols:
        return _split_prompts(ids, config.train_fraction, config.seed), (
            f"prompts split at random (seed {config.seed}): {config.train_fraction:g} train (labels drawn from their "
            "samples), the rest evaluation (every curve and error below is on evaluation prompts only)")
    if "hack_split" in frame.columns and (frame["hack_split"] == "eval").any():
        return (frame["hack_split"] != "eval").to_numpy(), \
            "evaluation rows of the proxies file's hack_split column (the proxies were trained on the others)"
    return np.zeros(len(frame), bool), "proxies given: every prompt is evaluated"


def _split_prompts(ids: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    unique = np.unique(ids)
    if unique.size < 4:
        raise AlignLimitsError(f"the study needs at least 4 prompts (2 to train proxies, 2 to evaluate); the table has {unique.size}")
    perm = np.random.default_rng(derive_seed(seed, "hack", "split")).permutation(unique)
    n_train = int(np.clip(round(fraction * unique.size), 2, unique.size - 2))
    return np.isin(ids, perm[:n_train])


def _bon_sizes(bon, n_min: int) -> list[int]:
    """The asked best-of-N sizes, or powers of 2 up to the smallest prompt's sample count."""
    if bon is None:
        return [1 << k for k in range(int(np.log2(n_min)) + 1)]
    ns = sorted(set(int(n) for n in bon))
    if max(ns) > n_min:
        raise AlignLimitsError(f"best-of-{max(ns)} needs {max(ns)} samples per prompt but a prompt has {n_min}; use --bon with N ≤ {n_min}")
    return ns


# --------------------------------------------------------------------------- 2. proxies
def _given_proxies(table: _Table, config: HackConfig) -> _Proxies:
    if max(config.ks) > len(config.proxy_cols):
        raise AlignLimitsError(f"K = {max(config.ks)} is larger than the {len(config.proxy_cols)} proxies given; lower --k")
    out = _Proxies(features_note="proxies given as columns (no training)")
    for c in config.proxy_cols:
        out.preds[c] = table.frame[c].to_numpy(dtype=np.float64)
        out.info[c] = {"proxy": c, "kind": "given"}
    out.member_sets["given"] = list(config.proxy_cols)
    return out


def _train_proxies(table: _Table, config: HackConfig, say) -> _Proxies:
    """The error sweep's proxies and the independent and correlated ensemble members, each seeded by name."""
    if "completion" not in table.frame.columns:
        raise AlignLimitsError(f"{table.source} has no 'completion' column to train proxies on; sample with `alignlimits sample` or pass --proxy columns")
    labels = _usable_labels(config, table.train_rows.size, table.notes)
    say(f"features: {config.features} on {len(table.frame)} completions")
    t0 = time.perf_counter()
    prompts = table.frame["prompt"].astype(str).tolist() if "prompt" in table.frame.columns else None
    options = {"n_features": config.n_features} if config.features == "ngram" else {}
    X = text_features(config.features, table.frame["completion"].fillna("").astype(str).tolist(), prompts, **options)
    out = _Proxies(features_note=f"{config.features}: {X.shape[1]} features in {time.perf_counter() - t0:.1f} s",
                   members=config.members or max(config.ks))

    def fit(name, kind, labels, noise, random_state, label_state=None) -> str:
        model = GoldLabelledProxy(labels=labels, noise=noise, random_state=random_state, label_state=label_state, name=name)
        out.preds[name] = model.fit(X, table.gold, pool=table.train_rows).predict(X)
        out.info[name] = {"proxy": name, "kind": kind, "labels": _label_name(labels), "n_labels": model.n_labels_,
                          "noise": float(noise), "noise_sd": model.noise_sd_, "alpha": model.alpha_,
                          "random_state": random_state, "label_state": label_state}
        return name

    for lab in labels:
        for nz in config.noise:
            names = [fit(f"{config.features}_l{lab:g}_n{nz:g}_s{s}", "sweep", lab, nz,
                         derive_seed(config.seed, "hack", "sweep", _label_name(lab), float(nz), s)) for s in range(config.seeds)]
            out.sweep_groups.append({"labels": _label_name(lab), "noise": float(nz), "proxies": names})
    shared = derive_seed(config.seed, "hack", "correlated", "labels")
    for kind, tag in (("independent", "ind"), ("correlated", "cor")):
        out.member_sets[kind] = [
            fit(f"{config.features}_{tag}{m}", kind, config.ensemble_labels, config.ensemble_noise,
                derive_seed(config.seed, "hack", kind, m), shared if kind == "correlated" else None)
            for m in range(out.members)]
    say(f"trained {len(out.preds)} proxies")
    return out


def _usable_labels(config: HackConfig, pool: int, notes: list[str]) -> list[float]:
    """The sweep's label budgets that give a proxy enough labelled samples; the others are left out with a note."""
    for lab in [*config.labels, config.ensemble_labels]:
        resolve_labels(lab, pool)  # validates early
    counts = {lab: resolve_labels(lab, pool) for lab in config.labels}
    too_few = [lab for lab, c in counts.items() if c < MIN_LABELS]
    said = ", ".join(f"{_label_name(lab)} ({counts[lab]} labels)" for lab in too_few)
    if len(too_few) == len(counts):
        raise AlignLimitsError(f"a proxy needs at least {MIN_LABELS} labelled samples, but of the {pool} training samples "
                               f"--labels gives {said}; use a larger --labels or sample more prompts")
    if too_few:
        notes.append(f"label budget {said} of the {pool} training samples left out of the error sweep: a proxy needs at least "
                     f"{MIN_LABELS} labelled samples (sample more prompts, or pass larger --labels)")
    return [lab for lab in counts if lab not in too_few]


def _heldout_errors(table: _Table, proxies: _Proxies) -> None:
    """Each proxy's error on the evaluation samples (and on its training rows), into its record."""
    eg, gold_eval = table.eval_groups, table.gold_eval_sorted
    gold_c = gold_eval - eg.expand(eg.mean(gold_eval))
    for name, p in proxies.preds.items():
        info = proxies.info[name]
        info.update({f"heldout_{k}": v for k, v in proxy_error(table.gold[table.eval_rows], p[table.eval_rows], table.eval_ids).items()})
        if "train_rmse" not in info and table.train_rows.size:
            info["train_rmse"] = float(np.sqrt(np.mean((table.gold[table.train_rows] - p[table.train_rows]) ** 2)))
        pe = p[table.eval_rows][table.eval_order]
        _check_signal(name, pe, eg)
        info["heldout_within_prompt_rmse"] = float(np.sqrt(np.mean(((pe - eg.expand(eg.mean(pe))) - gold_c) ** 2)))


# --------------------------------------------------------------------------- 3-4. curves
def _curves(table: _Table, proxies: _Proxies, config: HackConfig) -> _Curves:
    ev = CurveEvaluator(table.gold[table.eval_rows], table.eval_ids, table.betas, table.bon_ns, config.n_bootstrap,
                        config.seed, confidence=config.confidence)
    tilt_of = {n: ev.tilt_curves(p[table.eval_rows]) for n, p in proxies.preds.items()}
    bon_of = {n: ev.bon_curves(p[table.eval_rows]) for n, p in proxies.preds.items()}
    per_proxy = [{**proxies.info[n], **_summary(ev, tilt_of[n], bon_of[n])} for n in proxies.preds]
    error_sweep, sweep_tilts = [], []
    for grp in proxies.sweep_groups:
        t_avg = average_curves([tilt_of[n] for n in grp["proxies"]])
        sweep_tilts.append(t_avg)
        err = {k: float(np.mean([proxies.info[n][f"heldout_{k}"] for n in grp["proxies"]]))
               for k in ("correlation", "rmse", "within_prompt_correlation", "within_prompt_rmse")}
        err["index"] = 1.0 - err["within_prompt_correlation"]  # the error axis: what a tilt or best-of-N sees
        error_sweep.append({**grp, "n_labels": proxies.info[grp["proxies"][0]]["n_labels"], "error": err,
                            **_summary(ev, t_avg, average_curves([bon_of[n] for n in grp["proxies"]]))})
    ensembles, ens_tilt, ens_bon = _ensemble_curves(table, proxies, config, ev)
    return _Curves(ev, per_proxy, error_sweep, sweep_tilts, ensembles, ens_tilt, ens_bon)


def _summary(ev: CurveEvaluator, tilt_curve: dict, bon_curve: dict) -> dict:
    ci = ev.intervals
    return {"curve": summarise(tilt_curve, TILT_KEYS, ci), "at_kl": summarise_at_kl(tilt_curve, ev.kl_grid, ci),
            "bon": summarise(bon_curve, BON_KEYS, ci)}


def _ensemble_curves(table: _Table, proxies: _Proxies, config: HackConfig, ev: CurveEvaluator):
    """Per (members, aggregate, K): curves averaged over disjoint groups of K members."""
    ensembles, ens_tilt, ens_bon = [], {}, {}
    for kind, names in proxies.member_sets.items():
        for k in sorted(set(int(k) for k in config.ks)):
            if k > len(names):
                raise AlignLimitsError(f"K = {k} is larger than the {len(names)} {kind} proxies available; lower --k or raise --members")
            subsets = [names[i * k:(i + 1) * k] for i in range(len(names) // k)]
            for how in config.aggregates:
                t_list, b_list, errs = [], [], []
                for sub in subsets:
                    stacked = np.stack([proxies.preds[n][table.eval_rows] for n in sub])
                    single = k == 1 or (how == "uwo" and k <= config.ddof)
                    agg = stacked[0] if single else aggregate_proxies(stacked, how, lam=table.lam, ddof=config.ddof)
                    _check_signal(f"{how} of {sub}", agg[table.eval_order], table.eval_groups)
                    t_list.append(ev.tilt_curves(agg))
                    b_list.append(ev.bon_curves(agg))
                    errs.append(proxy_error(table.gold[table.eval_rows], agg, table.eval_ids))
                t_avg, b_avg = average_curves(t_list), average_curves(b_list)
                ens_tilt[(kind, how, k)], ens_bon[(kind, how, k)] = t_avg, b_avg
                ensembles.append({"aggregate": how, "k": k, "members": kind, "n_groups": len(subsets), "groups": subsets,
                                  "error": {key: float(np.mean([e[key] for e in errs])) for key in errs[0]},
                                  **_summary(ev, t_avg, b_avg)})
    return ensembles, ens_tilt, ens_bon


# --------------------------------------------------------------------------- 6. checks and notes
def _sweep_checks(table: _Table, curves: _Curves) -> list[dict]:
    """Gap grows with proxy error (at equal β and at equal KL) and as β falls, over the error sweep."""
    sweep, tilts, ci, betas = curves.error_sweep, curves.sweep_tilts, curves.evaluator.intervals, table.betas
    if not sweep:
        return []
    checks = []
    errors = np.array([e["error"]["index"] for e in sweep])
    lo_i, hi_i = int(np.argmin(errors)), int(np.argmax(errors))
    if lo_i != hi_i:
        checks.append(compare(
            "gap grows with proxy error",
            f"gap of the largest-error proxies (labels {sweep[hi_i]['labels']}, noise {sweep[hi_i]['noise']:g}) minus "
            f"that of the smallest-error ones (labels {sweep[lo_i]['labels']}, noise {sweep[lo_i]['noise']:g})",
            tilts[hi_i]["gap"] - tilts[lo_i]["gap"], betas, "beta", ci))
        checks.append(compare(
            "at equal KL: gap grows with proxy error",
            "gold gain of the smallest-error proxies minus that of the largest-error ones, read at the same KL",
            tilts[lo_i]["gold_gain_at_kl"] - tilts[hi_i]["gold_gain_at_kl"], curves.evaluator.kl_grid, "kl", ci))
        if errors[hi_i] < 1.25 * errors[lo_i]:
            why = (f"the configurations' held-out errors hardly differ (1 − within-prompt correlation {errors[lo_i]:.3g} to "
                   f"{errors[hi_i]:.3g}), so which of them has the larger error is itself noise")
            for chk in checks:
                shown = chk["verdict"] == "shown"
                chk["verdict"] = "inconclusive" if shown else chk["verdict"]
                chk["detail"] += f"; inconclusive all the same: {why}" if shown else f"; besides, {why}"
        from scipy.stats import spearmanr

        gaps = np.array([t["gap"][0] for t in tilts])  # (C, B)
        rho = [float(spearmanr(errors, gaps[:, j]).statistic) if np.ptp(gaps[:, j]) > 0 else float("nan") for j in range(betas.size)]
        checks[0]["spearman_error_vs_gap"] = [{"beta": float(b), "rho": r} for b, r in zip(betas, rho)]
    every = average_curves(tilts)
    order = np.argsort(betas)[::-1]  # large β first
    checks.append(compare("gap grows as β falls",
                          "gap (averaged over all sweep proxies) at each β minus the gap at the next larger β",
                          every["gap"][:, order[1:]] - every["gap"][:, order[:-1]], betas[order[1:]], "beta", ci))
    return [{**c, "expected": True} for c in checks]


def _ensemble_checks(table: _Table, proxies: _Proxies, curves: _Curves) -> list[dict]:
    """Mean of 4 members beats the average single proxy (tilt at equal β and KL, best-of-N); independent beat correlated."""
    tilt, bon, ci, kl_grid = curves.ens_tilt, curves.ens_bon, curves.evaluator.intervals, curves.evaluator.kl_grid
    betas, ns = table.betas, table.bon_ns
    checks = []
    for kind in proxies.member_sets:
        if (kind, "mean", 4) not in tilt or (kind, "mean", 1) not in tilt:
            continue
        one, four = (kind, "mean", 1), (kind, "mean", 4)
        expected = kind != "correlated"  # averaging members that share their labels and noise removes little
        checks += [{**c, "expected": expected} for c in (
            compare(f"mean of 4 {kind} proxies has a smaller gap than the average single proxy",
                    "average single proxy's gap minus the 4-member mean ensemble's gap",
                    tilt[one]["gap"] - tilt[four]["gap"], betas, "beta", ci),
            compare(f"at equal KL: mean of 4 {kind} proxies has a smaller gap than the average single proxy",
                    "the 4-member mean ensemble's gold gain minus the average single proxy's, read at the same KL (where both reach it)",
                    tilt[four]["gold_gain_at_kl"] - tilt[one]["gold_gain_at_kl"], kl_grid, "kl", ci),
            compare(f"best-of-N: mean of 4 {kind} proxies has a smaller gap than the average single proxy",
                    "average single proxy's best-of-N gap minus the 4-member mean ensemble's",
                    bon[one]["gap"][:, 1:] - bon[four]["gap"][:, 1:], ns[1:], "n", ci))]
    ind, cor = ("independent", "mean", 4), ("correlated", "mean", 4)
    if ind in tilt and cor in tilt:
        checks += [{**c, "expected": True} for c in (
            compare("independent members beat correlated ones (mean of 4)",
                    "gap of the mean of 4 correlated proxies minus that of 4 independent ones",
                    tilt[cor]["gap"] - tilt[ind]["gap"], betas, "beta", ci),
            compare("at equal KL: independent members beat correlated ones (mean of 4)",
                    "gold gain of the mean of 4 independent proxies minus that of 4 correlated ones, read at the same KL",
                    tilt[ind]["gold_gain_at_kl"] - tilt[cor]["gold_gain_at_kl"], kl_grid, "kl", ci))]
    return checks


AT_BETA_AND_AT_KL = (
    ("gap grows with proxy error", "at equal KL: gap grows with proxy error"),
    ("mean of 4 independent proxies has a smaller gap than the average single proxy",
     "at equal KL: mean of 4 independent proxies has a smaller gap than the average single proxy"),
    ("independent members beat correlated ones (mean of 4)", "at equal KL: independent members beat correlated ones (mean of 4)"),
)


def _closing_notes(checks: list[dict], table: _Table, proxies: _Proxies, curves: _Curves, diagnostics: dict) -> list[str]:
    """One note per expected ordering the data do not show (headed by its verdict), and the likely reasons."""
    failed = [c for c in checks if c["expected"] and c["verdict"] != "shown"]
    notes = [f"{VERDICT_HEADINGS[c['verdict']]}: {c['claim']}. {c['detail']}" for c in failed]
    verdict = {c["claim"]: c["verdict"] for c in checks}
    for at_beta, at_kl in AT_BETA_AND_AT_KL:
        if verdict.get(at_beta, "shown") != "shown" and verdict.get(at_kl) == "shown":
            notes.append(
                f"'{at_beta}' holds at equal KL but not at equal β: the proxies differ in scale (ridge shrinks a proxy fitted "
                "to fewer or noisier labels, and averaging shrinks an ensemble), so at one β a flatter proxy moves the policy "
                "less and its gap at that β is smaller; at the same KL it is worse, as the theory says"
            )
    if failed:
        independent = proxies.member_sets.get("independent") or []
        parts = {
            "n_eval_prompts": table.eval_groups.n_groups,
            "sweep_errors": [e["error"]["index"] for e in curves.error_sweep],
            "error_correlation": diagnostics.get("independent_error_correlation", float("nan")),
            "member_correlation": float(np.mean([proxies.info[n]["heldout_within_prompt_correlation"] for n in independent]))
            if independent else float("nan"),
            "gold": table.gold_eval_sorted, "groups": table.eval_groups,
        }
        notes += _explanations(parts)
        diagnostics["explained_by"] = parts["explained_by"]
    return notes


# --------------------------------------------------------------------------- the JSON
def _result(config: HackConfig, table: _Table, proxies: _Proxies, curves: _Curves, checks, diagnostics, notes) -> dict:
    return {
        "gold": config.gold,
        "source": str(table.source),
        "features": config.features if not config.proxy_cols else None,
        "features_detail": proxies.features_note,
        "proxy_model": "ridge regression (closed form, penalty by leave-one-out CV) on gold labels of training-prompt samples, "
                       "labels resampled with replacement; label noise sd = noise × std of the labelled gold",
        "n_prompts": int(np.unique(table.ids).size),
        "n_samples": int(len(table.frame)),
        "n_train_prompts": int(np.unique(table.ids[table.train_rows]).size),
        "n_eval_prompts": table.eval_groups.n_groups,
        "n_eval_samples": int(table.eval_rows.size),
        "split": table.split_note,
        "gold_within_prompt_sd": table.gold_sd,
        "betas": [float(b) for b in table.betas],
        "bon_n": [int(n) for n in table.bon_ns],
        "confidence": config.confidence,
        "n_bootstrap": config.n_bootstrap,
        **_descriptions(config, table, curves.evaluator.intervals),
        "kl_grid": [float(k) for k in curves.evaluator.kl_grid],
        "proxies": [proxies.info[n] for n in proxies.preds],
        "per_proxy": curves.per_proxy,
        "error_sweep": curves.error_sweep,
        "ensembles": curves.ensembles,
        "checks": checks,
        "diagnostics": diagnostics,
        "gold_frontier": curves.evaluator.frontier_points(),
        "config": {k: (list(v) if isinstance(v, (tuple, list)) else v) for k, v in asdict(config).items()},
        "notes": notes,
    }


def _descriptions(config: HackConfig, table: _Table, ci: Intervals) -> dict:
    """What the intervals, the gap, the error index, mean − λ·Var and the ensemble members are, in words."""
    return {
        "ci_method": (
            f"{100 * ci.confidence:g}% expanded percentile bootstrap (Hesterberg 2015: each end read at tail {ci.tail:.3g} "
            f"instead of {(1 - ci.confidence) / 2:g}, calibrated for {ci.n_units} evaluation prompts), {config.n_bootstrap} "
            "replicates resampling evaluation prompts with replacement; every curve uses the same replicates (differences "
            "are paired); each replicate re-evaluates the gold frontier at its own KL (linear interpolation on a 256-point β grid)"
        ),
        "gap_definition": "tilts: gap = gold frontier at the tilt's KL minus the tilt's gold gain. Best-of-N: both sides on the "
                          "empirical distribution of the evaluation samples, gap = empirical gold frontier at the exact KL of "
                          "best-of-N by proxy drawn with replacement (kl_empirical) minus that law's gold gain "
                          "(gold_gain_empirical), so that no selection rule, an oracle included, has a negative gap; best-of-N's "
                          "gold_gain and proxy_gain are the unbiased order-statistics estimates (drawn without replacement). "
                          "objective_loss = β·KL(π̂_β‖π_β); at_kl: the proxy's tilt curve read at fixed KL (linear in KL "
                          "between its β points; null where it never reaches that KL), so that proxies that move the policy by "
                          "different amounts at the same β are compared at the same distance from the base model",
        "error_index": "1 − held-out within-prompt correlation of proxy and gold (both centred per prompt): the error a tilt or "
                       "best-of-N sees, free of the proxy's scale; 'largest/smallest-error' configurations are ranked by it",
        "uwo": {"lambda": table.lam, "lambda_default": "1 / gold_within_prompt_sd" if config.lam is None else None,
                "variance": "population (ddof=0)" if config.ddof == 0 else "unbiased (ddof=1)",
                "k1": "K = 1: every aggregate is the member itself"},
        "ensemble_members": {"labels": _label_name(config.ensemble_labels), "noise": config.ensemble_noise,
                             "members": config.members or max(config.ks),
                             "independent": "own labelled rows, own noise, own bootstrap resample",
                             "correlated": "same labelled rows and same noise, own bootstrap resample",
                             "grouping": "members split into disjoint groups of K; curves averaged over the groups"}
        if not config.proxy_cols else {"members": len(config.proxy_cols), "grouping": "disjoint groups of K of the given proxies"},
    }


def _write_outputs(result: dict, table: _Table, proxies: _Proxies, config: HackConfig, json_path, proxies_path, write_json) -> None:
    """``proxies.parquet`` (trained proxies only) and the JSON, into the run directory unless paths are given."""
    run_dir = table.source if table.source.is_dir() else None
    proxies_path = proxies_path or (run_dir / PROXIES_FILE if run_dir else None)
    if proxies_path is not None and not config.proxy_cols:
        frame = table.frame
        out = pd.DataFrame({"prompt_id": frame["prompt_id"], "sample_idx": frame["sample_idx"],
                            "hack_split": np.where(table.is_train, "train", "eval"), config.gold: table.gold})
        for n, p in proxies.preds.items():
            out[n] = p
        write_parquet_atomic(out, Path(proxies_path))
        result["proxies_file"] = str(proxies_path)
    json_path = json_path or (run_dir / "hacking.json" if run_dir else None)
    if json_path is not None and write_json:
        write_json_atomic(result, Path(json_path))
        result["json"] = str(json_path)


# --------------------------------------------------------------------------- helpers
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

