"""`alignlimits plot-training`: the run's path over the frontier, as a PNG; bad logs refused in one line."""

import json

import numpy as np
from exact_samples import base_samples
from PIL import Image

from alignlimits.methods.measure import FRONTIER_JSON
from alignlimits.pipeline.analysis import frontier_result


def test_plot_training_writes_the_path_over_the_frontier(cli, tmp_path):
    table = base_samples(n=32)
    (tmp_path / FRONTIER_JSON).write_text(json.dumps(frontier_result(table, "exact")))
    rows = [{"step": s, "kl": kl, "kl_se": 0.02, "gain": g, "gain_ci": [g - 0.05, g + 0.05], "verdict": "below the frontier"}
            for s, kl, g in [(0, 0.0, 0.0), (3, 0.2, 0.3), (6, 0.5, 0.6), (9, 0.8, 0.75)]]
    log = tmp_path / "alignlimits.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    proc = cli.run("plot-training", log, "--out", tmp_path / "path.png")
    assert proc.returncode == 0, proc.stderr
    image = np.asarray(Image.open(tmp_path / "path.png").convert("RGB"))
    assert image.shape[0] > 300 and image.shape[1] > 500
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 50  # lines, points, colour bar: not a blank canvas
    table.frame.to_parquet(tmp_path / "base.parquet")  # the frontier fitted from base samples instead
    proc = cli.run("plot-training", log, "--frontier", tmp_path / "base.parquet", "--out", tmp_path / "fitted.png")
    assert proc.returncode == 0 and (tmp_path / "fitted.png").stat().st_size > 10_000, proc.stderr


def test_plot_training_refuses_a_broken_log(cli, tmp_path):
    log = tmp_path / "alignlimits.jsonl"
    log.write_text('{"step": 1, "kl": 0.1, "gain": 0.2}\n{"step": 2, "kl"')
    cli.assert_clean_error(cli.run("plot-training", log, "--out", tmp_path / "x.png"), "not json")
    cli.assert_clean_error(cli.run("plot-training", tmp_path / "none.jsonl"), "not a file")
