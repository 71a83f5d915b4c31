"""The proxies of the reward-hacking study (:mod:`alignlimits.pipeline.hacking_study`): the sample table it
reads and splits, and the three families of proxies on it.

- **controlled error** (:func:`controlled_proxies`): gold + Gaussian error of set size and correlation
  (:func:`alignlimits.methods.proxies.controlled_error_proxies`), on every prompt;
- **trained** (:func:`trained_proxies`), the realistic case: ridge proxies on gold labels of the training
  prompts' samples (:class:`alignlimits.methods.proxies.GoldLabelledProxy`), an error sweep over label budgets
  and noise, and *independent* (own labels, noise, resample) and *correlated* (same labels and noise, own
  resample) ensemble members;
- **given** (:func:`given_proxies`): existing proxy columns, from the table or a keyed proxies file.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from alignlimits.samples import read_table
from alignlimits.errors import AlignLimitsError
from alignlimits.methods.proxies import (
    MIN_LABELS, GoldLabelledProxy, controlled_error_proxies, proxy_error, resolve_labels, text_features,
)
from alignlimits.seeding import derive_seed
from alignlimits.theory.groups import Groups

PROXIES_FILE = "proxies.parquet"


@dataclass
class HackTable:
    """The sample table, read and split once: gold, which rows may train proxies, and the notes so far."""

    source: Path
    frame: pd.DataFrame
    gold: np.ndarray
    is_train: np.ndarray
    split_note: str
    notes: list[str]
    gold_sd: float

    def __post_init__(self):
        self.ids = self.frame["prompt_id"].to_numpy()
        self.train_rows, self.eval_rows = np.nonzero(self.is_train)[0], np.nonzero(~self.is_train)[0]
        self.eval_ids = self.ids[self.eval_rows]
        self.eval_groups, self.eval_order, _ = Groups.from_labels(self.eval_ids)

    @property
    def gold_eval_sorted(self) -> np.ndarray:
        return self.gold[self.eval_rows][self.eval_order]


@dataclass
class Proxies:
    """A family's predictions on all samples and their records, with the sweep's and the ensembles' groupings."""

    features_note: str
    preds: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict[str, dict] = field(default_factory=dict)
    sweep_groups: list[dict] = field(default_factory=list)
    member_sets: dict[str, list[str]] = field(default_factory=dict)
    members: int = 0


def within_prompt_sd(values: np.ndarray, ids: np.ndarray) -> float:
    """Root mean over prompts of the within-prompt (population) variance."""
    g, order, _ = Groups.from_labels(ids)
    v = values[order]
    return float(np.sqrt(g.mean((v - g.expand(g.mean(v))) ** 2).mean()))


def controlled_proxies(table: HackTable, config) -> Proxies:
    """The sweep's ``seeds`` independent proxies per error size and ``members`` ensemble members per ρ, each seeded by name."""
    out = Proxies(features_note="gold + Gaussian error (controlled error)", members=config.members or max(config.ks))

    def add(names, values, **info):
        for name, v in zip(names, values):
            out.preds[name], out.info[name] = v, {"proxy": name, "kind": "controlled", **info}
        return names

    for size in config.error_sizes:
        names = [f"controlled_e{size:g}_s{s}" for s in range(config.seeds)]
        values = [controlled_error_proxies(table.gold, size, table.gold_sd, 1, 0.0,
                                           derive_seed(config.seed, "hack", "controlled", float(size), s))[0] for s in range(config.seeds)]
        out.sweep_groups.append({"error_size": float(size), "proxies": add(names, values, error_size=float(size), rho=0.0)})
    for rho in config.rhos:
        names = [f"controlled_rho{rho:g}_m{m}" for m in range(out.members)]
        values = controlled_error_proxies(table.gold, config.ensemble_error, table.gold_sd, out.members, rho,
                                          derive_seed(config.seed, "hack", "controlled-members", float(rho)))
        out.member_sets[member_kind(rho)] = add(names, values, error_size=float(config.ensemble_error), rho=float(rho))
    return out


def member_kind(rho: float) -> str:
    """How the controlled family names its ensemble members of error correlation ρ."""
    return "independent" if rho == 0 else f"correlated (ρ = {rho:g})"


def given_proxies(table: HackTable, config) -> Proxies:
    if max(config.ks) > len(config.proxy_cols):
        raise AlignLimitsError(f"K = {max(config.ks)} is larger than the {len(config.proxy_cols)} proxies given; lower --k")
    out = Proxies(features_note="proxies given as columns (no training)")
    for c in config.proxy_cols:
        out.preds[c] = table.frame[c].to_numpy(dtype=np.float64)
        out.info[c] = {"proxy": c, "kind": "given"}
    out.member_sets["given"] = list(config.proxy_cols)
    return out


def trained_proxies(table: HackTable, config, say) -> Proxies:
    """The error sweep's proxies and the independent and correlated ensemble members, each seeded by name."""
    if "completion" not in table.frame.columns:
        raise AlignLimitsError(f"{table.source} has no 'completion' column to train proxies on; sample with `alignlimits sample`, "
                               "pass --proxy columns, or keep to --families controlled")
    labels = _usable_labels(config, table.train_rows.size, table.notes)
    say(f"features: {config.features} on {len(table.frame)} completions")
    t0 = time.perf_counter()
    prompts = table.frame["prompt"].astype(str).tolist() if "prompt" in table.frame.columns else None
    options = {"n_features": config.n_features} if config.features == "ngram" else {}
    X = text_features(config.features, table.frame["completion"].fillna("").astype(str).tolist(), prompts, **options)
    out = Proxies(features_note=f"{config.features}: {X.shape[1]} features in {time.perf_counter() - t0:.1f} s",
                  members=config.members or max(config.ks))

    def fit(name, kind, labels, noise, random_state, label_state=None) -> str:
        model = GoldLabelledProxy(labels=labels, noise=noise, random_state=random_state, label_state=label_state, name=name)
        out.preds[name] = model.fit(X, table.gold, pool=table.train_rows).predict(X)
        out.info[name] = {"proxy": name, "kind": kind, "labels": label_name(labels), "n_labels": model.n_labels_,
                          "noise": float(noise), "noise_sd": model.noise_sd_, "alpha": model.alpha_,
                          "random_state": random_state, "label_state": label_state}
        return name

    for lab in labels:
        for nz in config.noise:
            names = [fit(f"{config.features}_l{lab:g}_n{nz:g}_s{s}", "sweep", lab, nz,
                         derive_seed(config.seed, "hack", "sweep", label_name(lab), float(nz), s)) for s in range(config.seeds)]
            out.sweep_groups.append({"labels": label_name(lab), "noise": float(nz), "proxies": names})
    shared = derive_seed(config.seed, "hack", "correlated", "labels")
    for kind, tag in (("independent", "ind"), ("correlated", "cor")):
        out.member_sets[kind] = [
            fit(f"{config.features}_{tag}{m}", kind, config.ensemble_labels, config.ensemble_noise,
                derive_seed(config.seed, "hack", kind, m), shared if kind == "correlated" else None)
            for m in range(out.members)]
    say(f"trained {len(out.preds)} proxies")
    return out


def _usable_labels(config, pool: int, notes: list[str]) -> list[float]:
    """The sweep's label budgets that give a proxy enough labelled samples; the others are left out with a note."""
    for lab in [*config.labels, config.ensemble_labels]:
        resolve_labels(lab, pool)  # validates early
    counts = {lab: resolve_labels(lab, pool) for lab in config.labels}
    too_few = [lab for lab, c in counts.items() if c < MIN_LABELS]
    said = ", ".join(f"{label_name(lab)} ({counts[lab]} labels)" for lab in too_few)
    if len(too_few) == len(counts):
        raise AlignLimitsError(f"a proxy needs at least {MIN_LABELS} labelled samples, but of the {pool} training samples "
                               f"--labels gives {said}; use a larger --labels or sample more prompts")
    if too_few:
        notes.append(f"label budget {said} of the {pool} training samples left out of the error sweep: a proxy needs at least "
                     f"{MIN_LABELS} labelled samples (sample more prompts, or pass larger --labels)")
    return [lab for lab in counts if lab not in too_few]


def heldout_errors(table: HackTable, proxies: Proxies, rows: np.ndarray) -> None:
    """Each proxy's error on ``rows`` (the samples its curves use; on its training rows too), into its record."""
    ids = table.ids[rows]
    groups, order, _ = Groups.from_labels(ids)
    gold = table.gold[rows][order]
    gold_c = gold - groups.expand(groups.mean(gold))
    for name, p in proxies.preds.items():
        info = proxies.info[name]
        info.update({f"heldout_{k}": v for k, v in proxy_error(table.gold[rows], p[rows], ids).items()})
        if info["kind"] != "controlled" and "train_rmse" not in info and table.train_rows.size:
            info["train_rmse"] = float(np.sqrt(np.mean((table.gold[table.train_rows] - p[table.train_rows]) ** 2)))
        pe = p[rows][order]
        check_signal(name, pe, groups)
        info["heldout_within_prompt_rmse"] = float(np.sqrt(np.mean(((pe - groups.expand(groups.mean(pe))) - gold_c) ** 2)))


def check_signal(name: str, values: np.ndarray, groups: Groups) -> None:
    spread = groups.max(values) + groups.max(-values)
    scale = max(1.0, float(np.abs(values).max()))
    if np.all(spread <= 1e-12 * scale):
        raise AlignLimitsError(f"proxy {name!r} is constant within every prompt: it carries no ranking information (more labels or less noise?)")


def pairwise_error_correlation(gold: np.ndarray, preds: list[np.ndarray], groups: Groups) -> float:
    """Mean pairwise correlation of members' prompt-centred errors (1 = fully shared errors)."""
    if len(preds) < 2:
        return float("nan")
    E = np.stack([p - gold for p in preds])
    E = E - groups.expand(groups.mean(E))
    C = np.corrcoef(E)
    return float(C[~np.eye(len(preds), dtype=bool)].mean())


def label_name(x: float) -> str:
    if x <= 1:
        inv = 1 / x
        return "all" if x == 1 else (f"1/{int(round(inv))}" if abs(inv - round(inv)) < 1e-9 else f"{x:g}")
    return f"{int(x)}"


def join_proxies(frame: pd.DataFrame, columns: list[str], source: Path, proxies_file) -> pd.DataFrame:
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
