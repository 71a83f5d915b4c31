"""`alignlimits plot-training LOG.jsonl`: a training run's path on the KL–reward plane over the frontier."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from alignlimits.cli.app import app, console
from alignlimits.errors import AlignLimitsError


def read_log(path: Path) -> list[dict]:
    """The measurements of a yardstick's JSONL (``alignlimits.jsonl``), checked: each line a JSON object with a KL
    and a gain."""
    if not path.is_file():
        raise AlignLimitsError(f"{path} is not a file; give the alignlimits.jsonl a FrontierCallback wrote")
    rows = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise AlignLimitsError(f"{path}:{i} is not JSON; is the file truncated?") from None
        if not isinstance(row, dict) or "kl" not in row or "gain" not in row:
            raise AlignLimitsError(f"{path}:{i} has no kl and gain; give the alignlimits.jsonl a FrontierCallback wrote")
        rows.append(row)
    if not rows:
        raise AlignLimitsError(f"{path} holds no measurements yet")
    return rows


def load_frontier(source: Path | None, log: Path, reward_col: str | None) -> dict | None:
    """The frontier JSON to draw under the path: ``source`` (a run directory's ``frontier.json``/``results.json``,
    a frontier JSON, or base samples to fit), else the one the callback wrote beside the log, else none."""
    from alignlimits.methods.measure import FRONTIER_JSON

    if source is None:
        beside = log.parent / FRONTIER_JSON
        return json.loads(beside.read_text()) if beside.is_file() else None
    for candidate in (source / "frontier.json", source / "results.json", source) if source.is_dir() else (source,):
        if candidate.is_file() and candidate.suffix == ".json":
            data = json.loads(candidate.read_text())
            return data["frontier"] if isinstance(data, dict) and isinstance(data.get("frontier"), dict) else data
    from alignlimits.integrations.trl import base_samples
    from alignlimits.pipeline.analysis import frontier_result
    from alignlimits.samples.tables import default_reward_column, read_table

    col = reward_col or default_reward_column(read_table(source / "base" if (source / "base").is_dir() else source))
    table, _ = base_samples(source, col)
    return frontier_result(table, col)


@app.command("plot-training")
def plot_training(
    log: Path = typer.Argument(..., help="The alignlimits.jsonl a FrontierCallback (or PPO's yardstick) wrote beside the checkpoints."),
    frontier: Optional[Path] = typer.Option(None, "--frontier", help="Run directory or base samples whose frontier to draw. Default: the alignlimits_frontier.json beside LOG."),
    reward_col: Optional[str] = typer.Option(None, "--reward-col", help="With --frontier base samples: their reward column. Default: the table's only one."),
    out: Path = typer.Option(Path("training-path.png"), "--out", help="The PNG to write."),
):
    """A run's path on the KL–reward plane over the frontier: each measurement a point, joined in step order."""
    from alignlimits.report.trajectory import plot_trajectory

    rows = read_log(log)
    path = plot_trajectory(rows, load_frontier(frontier, log, reward_col), out, title=log.parent.name or "training run")
    console.print(f"wrote {path} ({len(rows)} measurements, steps {rows[0].get('step')}–{rows[-1].get('step')})")
