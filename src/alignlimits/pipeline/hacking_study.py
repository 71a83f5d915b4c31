r"""The reward-hacking study on a run's base samples (the task's reward column is the gold): orchestration and I/O.

1. **Table** (:func:`_prepare`): read it once; split the prompts at random (seeded) into a training half, whose
   samples may be labelled, and an evaluation half (trained proxies' curves are out of sample).
2. **Proxies** (:mod:`alignlimits.pipeline.hacking_proxies`), by family: *controlled* error (gold + Gaussian
   error of set sizes and correlations ρ, the theorems' setting on the task's real rewards, on every prompt) and
   *trained* ridge proxies on gold labels (the realistic case, on the evaluation prompts) or *given* columns.
3. **Curves** per family (:class:`alignlimits.theory.hacking.CurveEvaluator`, paired bootstrap over prompts,
   against :class:`~alignlimits.theory.frontier.Frontier`): per shared β the proxy tilt's KL, proxy and gold
   gains, the gold frontier at that KL, the gap and the objective loss; per N best-of-N by proxy scored by gold;
   the error sweep (averaged over seeds) and the ensembles (disjoint groups of K members, mean, min and
   mean − λ·Var, averaged over the groups).
4. **Checks** (:func:`~alignlimits.theory.hacking.error_checks`, :func:`~alignlimits.theory.hacking.ensemble_checks`):
   the orderings the theory expects, reported whichever way they come out.

Writes ``hacking.json`` (numbers; the report layer, :mod:`alignlimits.report.hacking_text`, says them in words)
and ``proxies.parquet`` (the trained proxies: ``prompt_id``, ``sample_idx``, ``hack_split``, gold, one column each).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from alignlimits.samples import default_reward_column, read_table, validate
from alignlimits.errors import AlignLimitsError
from alignlimits.methods.proxies import FEATURES, proxy_error
from alignlimits.pipeline.analysis import default_bon_grid
from alignlimits.pipeline.files import write_json_atomic, write_parquet_atomic
from alignlimits.pipeline.hacking_proxies import (
    PROXIES_FILE, HackTable, Proxies, check_signal, controlled_proxies, given_proxies, heldout_errors, join_proxies,
    label_name, member_kind, pairwise_error_correlation, trained_proxies, within_prompt_sd,
)
from alignlimits.seeding import derive_seed
from alignlimits.theory.groups import Groups
from alignlimits.theory.hacking import (
    AGGREGATES, BON_KEYS, TILT_KEYS, CurveEvaluator, aggregate_proxies, average_curves, ensemble_checks, error_checks,
    summarise, summarise_at_kl,
)

FAMILIES = ("controlled", "trained")


@dataclass
class HackConfig:
    """Settings of the study (all recorded in the JSON)."""

    gold: str | None = None
    families: Sequence[str] = FAMILIES
    error_sizes: Sequence[float] = (0.25, 0.5, 1.0, 2.0)
    rhos: Sequence[float] = (0.0, 0.5)
    ensemble_error: float = 1.0
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
        unknown = [f for f in self.families if f not in FAMILIES]
        if unknown or not self.families:
            raise AlignLimitsError(f"unknown proxy family {unknown[0] if unknown else ''!r}; use some of {', '.join(FAMILIES)}")
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
        if any(not n >= 0 for n in [*self.noise, self.ensemble_noise, *self.error_sizes, self.ensemble_error]):
            raise AlignLimitsError("label noise and error sizes must be ≥ 0 (multiples of the gold std)")
        if any(not 0 <= r < 1 for r in self.rhos):
            raise AlignLimitsError(f"--rho values are error correlations in [0, 1), got {list(self.rhos)}")
        if self.ddof not in (0, 1):
            raise AlignLimitsError("the variance of mean − λ·Var uses ddof 0 (population) or 1 (unbiased)")


def run_hacking_study(source, config: HackConfig | None = None, json_path=None, proxies_path=None,
                      log: Callable[[str], None] | None = None, write_json: bool = True) -> dict:
    """Run the study on a run directory (or sample file); returns the ``hacking`` JSON dict.

    ``json_path``/``proxies_path`` default to ``hacking.json`` and ``proxies.parquet`` inside a run
    directory; for a sample file nothing is written unless given (``write_json=False``: no JSON). Figures and
    words are the report layer's (:mod:`alignlimits.report.hacking_plots`, :mod:`alignlimits.report.hacking_text`).

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
    lam = float(config.lam) if config.lam is not None else 1.0 / table.gold_sd
    betas, controlled, trained = config.betas, None, None
    if "controlled" in config.families:
        rows = np.arange(len(table.frame))
        say(f"controlled-error proxies on {np.unique(table.ids).size} prompts, {config.n_bootstrap} bootstrap replicates")
        proxies = controlled_proxies(table, config)
        controlled = _family(table, proxies, rows, config, lam, betas)
        betas = controlled["betas"]
    if config.proxy_cols or "trained" in config.families:
        proxies = given_proxies(table, config) if config.proxy_cols else trained_proxies(table, config, say)
        say(f"curves on {table.eval_groups.n_groups} evaluation prompts, {config.n_bootstrap} bootstrap replicates")
        trained = _family(table, proxies, table.eval_rows, config, lam, betas)
        trained["proxies"] = [proxies.info[n] for n in proxies.preds]
        trained["features_detail"] = proxies.features_note
    result = _result(config, table, controlled, trained, lam)
    result["wall_time_s"] = time.perf_counter() - started
    _write_outputs(result, table, trained and proxies, config, json_path, proxies_path, write_json)
    return result


# --------------------------------------------------------------------------- 1. the table
def _prepare(source: Path, config: HackConfig) -> HackTable:
    """Read the table and split its prompts."""
    frame, notes = _read(source, config)
    ids = frame["prompt_id"].to_numpy()
    gold = frame[config.gold].to_numpy(dtype=np.float64)
    is_train, split_note = _split(frame, ids, config)
    gold_sd = within_prompt_sd(gold, ids)
    if gold_sd <= 0:
        raise AlignLimitsError(f"gold column {config.gold!r} is the same for every sample of every prompt: there is nothing to align toward")
    if Groups.from_labels(ids[~is_train])[0].n_groups < 2:
        raise AlignLimitsError("the study needs at least 2 evaluation prompts for its intervals; sample more prompts")
    return HackTable(source=source, frame=frame, gold=gold, is_train=is_train, split_note=split_note, notes=notes, gold_sd=gold_sd)


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
        frame = join_proxies(frame, missing, source, config.proxies_file)
    table = validate(frame, [config.gold, *config.proxy_cols], str(source))
    return table.frame.reset_index(drop=True), list(table.notes)


def _split(frame: pd.DataFrame, ids: np.ndarray, config: HackConfig) -> tuple[np.ndarray, str]:
    """Which rows may train proxies, and how that was decided."""
    if not config.proxy_cols:
        return _split_prompts(ids, config.train_fraction, config.seed), (
            f"prompts split at random (seed {config.seed}): {config.train_fraction:g} train (labels drawn from their "
            "samples), the rest evaluation (every trained proxy's curve and error is on evaluation prompts only)")
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
    """The asked best-of-N sizes, or :func:`~alignlimits.pipeline.analysis.default_bon_grid`."""
    if bon is None:
        return default_bon_grid(n_min)
    ns = sorted(set(int(n) for n in bon))
    if max(ns) > n_min:
        raise AlignLimitsError(f"best-of-{max(ns)} needs {max(ns)} samples per prompt but a prompt has {n_min}; use --bon with N ≤ {n_min}")
    return ns


# --------------------------------------------------------------------------- 2-4. one family's curves and checks
def _family(table: HackTable, proxies: Proxies, rows: np.ndarray, config: HackConfig, lam: float, betas) -> dict:
    """One family's curves on ``rows`` (their prompts): per proxy, the error sweep, the ensembles, the checks."""
    heldout_errors(table, proxies, rows)
    ids = table.ids[rows]
    ev = CurveEvaluator(table.gold[rows], ids, betas, _bon_sizes(config.bon, int(Groups.from_labels(ids)[0].sizes.min())),
                        config.n_bootstrap, derive_seed(config.seed, "hack", "bootstrap"), confidence=config.confidence)
    tilt_of = {n: ev.tilt_curves(p[rows]) for n, p in proxies.preds.items()}
    bon_of = {n: ev.bon_curves(p[rows]) for n, p in proxies.preds.items()}
    controlled = proxies.info[next(iter(proxies.info))]["kind"] == "controlled"
    sweep, sweep_tilts = [], []
    for grp in proxies.sweep_groups:
        sweep_tilts.append(average_curves([tilt_of[n] for n in grp["proxies"]]))
        err = {k: float(np.mean([proxies.info[n][f"heldout_{k}"] for n in grp["proxies"]]))
               for k in ("correlation", "rmse", "within_prompt_correlation", "within_prompt_rmse")}
        # the error axis: the set size, or what a tilt or best-of-N sees of a trained proxy's error
        err["index"] = grp["error_size"] if controlled else 1.0 - err["within_prompt_correlation"]
        extra = {} if controlled else {"n_labels": proxies.info[grp["proxies"][0]]["n_labels"]}
        sweep.append({**grp, **extra, "error": err, **_summary(ev, sweep_tilts[-1], average_curves([bon_of[n] for n in grp["proxies"]]))})
    ensembles, ens_tilt, ens_bon = _ensembles(table, proxies, rows, config, lam, ev, tilt_of, bon_of)
    names = [f"error {s['error_size']:g} × gold sd" if controlled else f"labels {s['labels']}, noise {s['noise']:g}" for s in sweep]
    kinds = list(proxies.member_sets)
    correlated = [k for k in kinds if k != "independent"]
    pair = ("independent", correlated[-1]) if "independent" in kinds and correlated else None
    expected = {k: controlled or k != "correlated" for k in kinds}  # trained members sharing labels and noise gain little
    checks = error_checks(sweep_tilts, [s["error"]["index"] for s in sweep], names, ev) + \
        ensemble_checks(ens_tilt, ens_bon, expected, pair, ev)
    return {"betas": [float(b) for b in ev.betas], "bon_n": [int(n) for n in ev.bon_ns], "kl_grid": [float(k) for k in ev.kl_grid],
            "n_prompts": ev.groups.n_groups, "n_samples": int(rows.size), "ci_tail": ev.intervals.tail,
            "per_proxy": [] if controlled else [{**proxies.info[n], **_summary(ev, tilt_of[n], bon_of[n])} for n in proxies.preds],
            "error_sweep": sweep, "ensembles": ensembles, "checks": checks,
            "diagnostics": _diagnostics(table, proxies, rows, sweep), "gold_frontier": ev.frontier_points()}


def _summary(ev: CurveEvaluator, tilt_curve: dict, bon_curve: dict) -> dict:
    ci = ev.intervals
    return {"curve": summarise(tilt_curve, TILT_KEYS, ci), "at_kl": summarise_at_kl(tilt_curve, ev.kl_grid, ci),
            "bon": summarise(bon_curve, BON_KEYS, ci)}


def _ensembles(table: HackTable, proxies: Proxies, rows, config: HackConfig, lam: float, ev: CurveEvaluator, tilt_of, bon_of):
    """Per (members, aggregate, K): curves averaged over disjoint groups of K members."""
    ensembles, ens_tilt, ens_bon = [], {}, {}
    ids = table.ids[rows]
    for kind, names in proxies.member_sets.items():
        for k in sorted(set(int(k) for k in config.ks)):
            if k > len(names):
                raise AlignLimitsError(f"K = {k} is larger than the {len(names)} {kind} proxies available; lower --k or raise --members")
            subsets = [names[i * k:(i + 1) * k] for i in range(len(names) // k)]
            for how in config.aggregates:
                t_list, b_list, errs = [], [], []
                for sub in subsets:
                    if k == 1 or (how == "uwo" and k <= config.ddof):
                        t_list.append(tilt_of[sub[0]])
                        b_list.append(bon_of[sub[0]])
                        agg = proxies.preds[sub[0]][rows]
                    else:
                        agg = aggregate_proxies(np.stack([proxies.preds[n][rows] for n in sub]), how, lam=lam, ddof=config.ddof)
                        check_signal(f"{how} of {sub}", agg[ev.order], ev.groups)
                        t_list.append(ev.tilt_curves(agg))
                        b_list.append(ev.bon_curves(agg))
                    errs.append(proxy_error(table.gold[rows], agg, ids))
                t_avg, b_avg = average_curves(t_list), average_curves(b_list)
                ens_tilt[(kind, how, k)], ens_bon[(kind, how, k)] = t_avg, b_avg
                ensembles.append({"aggregate": how, "k": k, "members": kind, "n_groups": len(subsets), "groups": subsets,
                                  "error": {key: float(np.mean([e[key] for e in errs])) for key in errs[0]},
                                  **_summary(ev, t_avg, b_avg)})
    return ensembles, ens_tilt, ens_bon


def _diagnostics(table: HackTable, proxies: Proxies, rows: np.ndarray, sweep: list[dict]) -> dict:
    """Numbers the report's closing notes explain a failed check with (:mod:`alignlimits.report.hacking_text`)."""
    groups, order, _ = Groups.from_labels(table.ids[rows])
    gold = table.gold[rows][order]
    out = {f"{kind}_error_correlation": pairwise_error_correlation(gold, [proxies.preds[n][rows][order] for n in names], groups)
           for kind, names in proxies.member_sets.items()}
    independent = proxies.member_sets.get("independent") or []
    out["member_within_prompt_correlation"] = float(np.mean([proxies.info[n]["heldout_within_prompt_correlation"]
                                                             for n in independent])) if independent else float("nan")
    out["sweep_errors"] = [s["error"]["index"] for s in sweep]
    dev = np.abs(gold - groups.expand(groups.mean(gold)))
    top = dev >= np.quantile(dev, 0.95)
    out["gold_top5_variance_share"] = float((dev[top] ** 2).sum() / max((dev ** 2).sum(), 1e-300))
    return out


# --------------------------------------------------------------------------- the JSON
def _result(config: HackConfig, table: HackTable, controlled: dict | None, trained: dict | None, lam: float) -> dict:
    """Top level: the set-up and the trained (or given) proxies, the realistic case; ``controlled``: that family."""
    empty = {"per_proxy": [], "error_sweep": [], "ensembles": [], "checks": [], "diagnostics": {}, "proxies": [],
             "features_detail": None}
    main = {k: v for k, v in (trained or {**controlled, **empty}).items() if k not in ("n_prompts", "n_samples")}
    if controlled:
        controlled.update(error_sizes=[float(s) for s in config.error_sizes], rhos=[float(r) for r in config.rhos],
                          ensemble_error=float(config.ensemble_error), seeds=config.seeds,
                          members=config.members or max(config.ks),
                          kinds=[member_kind(r) for r in config.rhos])
    return {
        "gold": config.gold, "source": str(table.source), "families": list(config.families) if not config.proxy_cols
        else [f for f in config.families if f == "controlled"] + ["given"],
        "features": config.features if not config.proxy_cols else None,
        "n_prompts": int(np.unique(table.ids).size), "n_samples": int(len(table.frame)),
        "n_train_prompts": int(np.unique(table.ids[table.train_rows]).size), "n_eval_prompts": table.eval_groups.n_groups,
        "n_eval_samples": int(table.eval_rows.size), "split": table.split_note, "gold_within_prompt_sd": table.gold_sd,
        "confidence": config.confidence, "n_bootstrap": config.n_bootstrap,
        "uwo": {"lambda": lam, "lambda_default": "1 / gold_within_prompt_sd" if config.lam is None else None,
                "variance": "population (ddof=0)" if config.ddof == 0 else "unbiased (ddof=1)",
                "k1": "K = 1: every aggregate is the member itself"},
        "ensemble_members": {"labels": label_name(config.ensemble_labels), "noise": config.ensemble_noise,
                             "members": config.members or max(config.ks)} if not config.proxy_cols else {"members": len(config.proxy_cols)},
        **main, "controlled": controlled,
        "config": {k: (list(v) if isinstance(v, (tuple, list)) else v) for k, v in asdict(config).items()},
        "notes": list(table.notes),
    }


def _write_outputs(result: dict, table: HackTable, proxies: Proxies | None, config: HackConfig, json_path, proxies_path,
                   write_json) -> None:
    """``proxies.parquet`` (trained proxies only) and the JSON, into the run directory unless paths are given."""
    run_dir = table.source if table.source.is_dir() else None
    proxies_path = proxies_path or (run_dir / PROXIES_FILE if run_dir else None)
    if proxies_path is not None and proxies is not None and not config.proxy_cols:
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
