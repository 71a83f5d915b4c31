"""Aligning the trainers to a proxy and judging them on gold: Gao et al. (2022)'s over-optimisation experiment.

With ``align_to`` the trainers maximise a proxy (another reward of the run, or ``error:SIZE``: gold plus a fixed
error of each word, :class:`~alignlimits.lm.proxy_reward.ControlledErrorReward`) while gold, the first reward, still
judges every point on the plane. With ``measure_every``, each online trainer's policy is measured on the held-out
prompts as it trains (:class:`~alignlimits.methods.measure.Yardstick`), gold and the proxy on the same samples: the
path shows
where gold's gain turns down while the proxy's keeps rising. :func:`overoptimisation` reads that path.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from alignlimits.errors import AlignLimitsError


def error_size(spec: str) -> float | None:
    """SIZE of ``error:SIZE`` (a number ≥ 0), or None for another spec."""
    head, sep, size = str(spec).partition(":")
    if head != "error" or not sep:
        return None
    try:
        value = float(size)
    except ValueError:
        value = float("nan")
    if not (np.isfinite(value) and value >= 0):
        raise AlignLimitsError(f"--align-to {spec}: the error size must be a number ≥ 0, e.g. error:1")
    return value


def aligned_reward(spec: str | None, rewards: list, base_frame, seed: int):
    """The reward the trainers maximise: gold (``spec`` None), the run's reward with that spec, or gold plus an error
    whose within-prompt std on the held-out base samples ``base_frame`` is ``error:SIZE`` × gold's."""
    from alignlimits.lm.proxy_reward import ControlledErrorReward, word_error
    from alignlimits.pipeline.hacking_proxies import within_prompt_sd

    gold = rewards[0]
    if spec is None:
        return gold
    size = error_size(spec)
    if size is not None:
        ids = base_frame["prompt_id"].astype(str).to_numpy()
        gold_sd = within_prompt_sd(base_frame[gold.name].to_numpy(float), ids)
        error_sd = within_prompt_sd(word_error(seed, list(base_frame["completion"].astype(str))), ids)
        return ControlledErrorReward(gold, size, gold_sd / error_sd, seed)
    return next(r for r in rewards if r.spec == spec)


def reward_values(reward, frame) -> np.ndarray:
    """``reward`` on a sample table's rows: its column when the table has one, else scored on the texts."""
    if reward.name in frame:
        return frame[reward.name].to_numpy(float)
    return reward(list(frame["prompt"].astype(str)), list(frame["completion"].astype(str)))


def base_means(reward, frame) -> dict[str, float]:
    """The base mean of ``reward`` on each prompt id of a sample table."""
    values = reward_values(reward, frame)
    means = frame.assign(_v=values).groupby(frame["prompt_id"].astype(str))["_v"].mean()
    return {str(k): float(v) for k, v in means.items()}


def read_path(train_dir: Path) -> list[dict]:
    """The measured path of a trainer (``alignlimits.jsonl``), in step order; empty when it was not measured."""
    from alignlimits.methods.measure import JSONL

    path = Path(train_dir) / JSONL
    if not path.exists():
        return []
    return sorted((json.loads(x) for x in path.read_text().splitlines() if x.strip()), key=lambda r: r["step"])


def overoptimisation(path: list[dict], proxy: str | None) -> dict | None:
    """Where gold's gain peaked along the path and where it ended, with the proxy's gain beside it: ``turned_down``
    when the last gold gain lies below the peak by more than 1.96 standard errors of their difference (the two
    measurements' errors, taken as independent: they share the seed, so this is conservative) while the proxy's gain
    ended above its value at gold's peak. None without a measured path."""
    rows = [r for r in path if r.get("gain") is not None and r.get("kl") is not None]
    if len(rows) < 2:
        return None
    from alignlimits.methods.measure import se_of_ci

    se = [se_of_ci(r.get("gain_ci")) for r in rows]
    gold = np.array([r["gain"] for r in rows], float)
    peak = int(np.nanargmax(gold))
    drop, drop_se = gold[peak] - gold[-1], float(np.hypot(se[peak], se[-1]))
    key = f"gain_{proxy}" if proxy else None
    proxy_gain = [r.get(key) for r in rows] if key else [None] * len(rows)
    rising = key is not None and None not in (proxy_gain[peak], proxy_gain[-1]) and proxy_gain[-1] > proxy_gain[peak]
    return {"proxy": proxy, "path": [{"step": r["step"], "kl": r["kl"], "gain": r["gain"], "gain_se": s,
                                      "proxy_gain": p, "proxy_gain_se": r.get(f"{key}_se") if key else None}
                                     for r, s, p in zip(rows, se, proxy_gain)],
            "peak_step": rows[peak]["step"], "peak_kl": rows[peak]["kl"], "peak_gain": float(gold[peak]),
            "last_gain": float(gold[-1]), "drop": float(drop), "drop_se": drop_se,
            "turned_down": bool(peak < len(rows) - 1 and drop > 1.96 * drop_se and rising)}


def alignment_summary(study, record, frame) -> dict:
    """A trained point's proxy (when aligned to one): its held-out gain on the proxy beside gold's, and its measured
    path (:func:`overoptimisation`) when it was measured as it trained."""
    from alignlimits.methods.measure import paired_gain

    out, proxy = {}, None
    spec = record.config.get("align_to")
    if spec:
        proxy = study.aligned_reward
        gain, se = paired_gain(reward_values(proxy, frame), frame["prompt_id"], study.proxy_base_means)
        out.update(aligned_to=spec, proxy=proxy.name, proxy_gain=gain, proxy_gain_se=se)
    path = overoptimisation(read_path(record.train_dir), proxy.name if proxy else None)
    return {**out, **({"path": path} if path else {})}
