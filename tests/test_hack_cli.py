"""`alignlimits hack RUN_DIR` end to end, and its bad inputs as one-line errors with exit code 2."""

import json
import sys

import numpy as np
import pandas as pd
import pytest

from cli_helpers import CLI

run = CLI.run
assert_clean_error = CLI.assert_clean_error


def write_samples(path, n_samples, seed=1):
    rng = np.random.default_rng(seed)
    weights = rng.normal(size=30)
    rows = []
    for p in range(12):
        for s in range(n_samples):
            idx = rng.choice(30, size=rng.integers(3, 8), replace=False)
            rows.append({"prompt_id": f"p{p}", "sample_idx": s, "prompt": "Tell me something.",
                         "completion": " ".join(f"v{i}" for i in idx), "profanity": float(weights[idx].sum())})
    (path / "samples").mkdir()
    pd.DataFrame(rows).to_parquet(path / "samples" / "part-00000.parquet")
    return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return write_samples(tmp_path_factory.mktemp("hackrun"), 8)


def test_hack_writes_json_plot_and_proxies(run_dir):
    proc = run("hack", run_dir, "--labels", "all,1/2", "--noise", "0,1", "--seeds", "1", "--k", "1,2",
               "--n-bootstrap", "30", "--bon", "1,2,8")
    assert proc.returncode == 0, proc.stderr
    result = json.loads((run_dir / "hacking.json").read_text())
    assert result["gold"] == "profanity" and result["bon_n"] == [1, 2, 8]
    # the controlled-error figure leads, the trained proxies' (the realistic case) stands beside it
    assert (run_dir / "hacking.png").stat().st_size > 10_000 and (run_dir / "hacking_trained.png").stat().st_size > 10_000
    section = (run_dir / "hacking.md").read_text()
    assert section.startswith("## Reward hacking") and section.index("controlled error") < section.index("Trained proxies")
    assert "hack_split" in pd.read_parquet(run_dir / "proxies.parquet").columns
    assert "expected orderings" in proc.stdout and "ensembles" in proc.stdout and "controlled-error proxies" in proc.stdout
    assert result["controlled"]["checks"] and "ci_method" in result and result["controlled"]["notes"] is not None


def test_hack_controlled_family_alone_needs_no_text(run_dir, tmp_path):
    frame = pd.read_parquet(next((run_dir / "samples").glob("*.parquet"))).drop(columns=["completion"])
    frame.to_parquet(tmp_path / "scores.parquet")
    proc = run("hack", tmp_path / "scores.parquet", "--families", "controlled", "--n-bootstrap", "20", "--json", tmp_path / "h.json",
               "--error-sizes", "0.5,2", "--rho", "0,0.9", "--k", "1,4")
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "h.json").read_text())
    assert result["error_sweep"] == [] and [s["error_size"] for s in result["controlled"]["error_sweep"]] == [0.5, 2.0]


def run_inprocess(monkeypatch, capsys, *args):
    """The same entry point in this process (no interpreter start-up): returns (exit code, stdout, stderr)."""
    from alignlimits.cli import main

    monkeypatch.setattr(sys, "argv", ["alignlimits", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err


@pytest.mark.parametrize("args, needles", [
    (["--labels", "all", "--members", "4", "--k", "1,8"], ["larger than the 4", "--k"]),
    (["--labels", "4", "--noise", "0"], ["at least 8"]),
    (["--labels", "1/0"], ["--labels"]),
    (["--features", "tfidf"], ["unknown --features"]),
    (["--gold", "nope"], ["no column 'nope'"]),
    (["--proxy", "missing_col"], ["missing_col"]),
    (["--betas", "1,-1"], ["β must be positive"]),
    (["--proxy", "profanity", "--proxy", "profanity", "--k", "1,4"], ["larger than the 2"]),
    (["--families", "controlled,learned"], ["unknown proxy family 'learned'"]),
    (["--rho", "0,1"], ["--rho", "[0, 1)"]),
    (["--error-sizes", "0.5,-1"], ["error sizes must be ≥ 0"]),
])
def test_hack_bad_inputs(run_dir, args, needles, monkeypatch, capsys):
    code, out, err = run_inprocess(monkeypatch, capsys, "hack", run_dir, "--n-bootstrap", "10", "--seeds", "1", *args)
    lines = [l for l in err.strip().splitlines() if l.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle.lower() in lines[0].lower(), lines[0]


def test_hack_defaults_on_the_quick_preset_size(tmp_path, monkeypatch, capsys):
    """12 prompts × 16 samples, as `run`'s quick preset samples: every default works; a label budget too small
    for that size is left out with a note, and no closing note doubles its verdict."""
    path = write_samples(tmp_path, 16)
    from alignlimits.cli import main

    monkeypatch.setattr(sys, "argv", ["alignlimits", "hack", str(path)])
    try:
        main()
    except SystemExit as done:
        assert done.code in (0, None)
    out = capsys.readouterr().out
    result = json.loads((path / "hacking.json").read_text())
    assert [s["labels"] for s in result["error_sweep"]][::3] == ["all", "1/4"]
    text = " ".join(out.split())
    assert "1/16 (6 labels)" in text and "left out" in text
    assert "NOT SHOWN (" not in text and "not shown (not shown)" not in text.lower()


def test_hack_bad_run_dir(tmp_path, monkeypatch, capsys):
    code, out, err = run_inprocess(monkeypatch, capsys, "hack", tmp_path / "nowhere")
    assert code == 2 and "does not exist" in err and out == ""
