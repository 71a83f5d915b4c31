"""report.html: self-contained, escaped, complete, robust to odd numbers; and opened in a real headless browser.

The browser test needs Debian's chromium (``apt-get install -y chromium``); it is skipped only when no
chromium binary is found (``$ALIGNLIMITS_CHROMIUM``, else ``chromium``, ``chromium-browser``,
``google-chrome`` or ``google-chrome-stable`` on PATH).
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alignlimits.report.html import summary_text, write_report
from alignlimits.report.terminal import fmt_seconds

sys.path.insert(0, str(Path(__file__).parent))
from test_plane import edge_results, load  # noqa: E402

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    env = os.environ.get("ALIGNLIMITS_CHROMIUM")
    if env:
        return env if Path(env).exists() else shutil.which(env)
    return next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)


CHROMIUM = find_chromium()
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium)")


def _tiny_png(path: Path) -> None:
    Image.fromarray(np.full((20, 30, 3), 200, np.uint8)).save(path)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, str]:
    run_dir = tmp_path_factory.mktemp("run")
    _tiny_png(run_dir / "hacking.png")
    _tiny_png(run_dir / "hacking_bon.png")
    path = write_report(run_dir, hostile(load()))
    return path, path.read_text(encoding="utf-8")


def hostile(r: dict) -> dict:
    """The fixture with markup in completions, a note and a planning target the samples cannot reach."""
    first = r["examples"][0]["completions"]
    first[0]["text"] = "<script>alert('x')</script>"
    first[1]["text"] = "& a <b>bold</b>"
    r["notes"] = ["a note <i>with markup</i>"]
    r["plan"]["for_gains"][-1].update(kl=None, kl_null_reason="inf")
    return r


def test_self_contained(report):
    path, text = report
    assert path.name == "report.html" and (path.parent / "plane.png").exists()
    imgs = re.findall(r"<img[^>]*\bsrc=['\"]([^'\"]+)", text)
    assert len(imgs) == 4  # the plane, the training curves and both hacking figures
    assert all(src.startswith("data:image/png;base64,") for src in imgs)
    # nothing is fetched: no src/href to the network or to files, no script, no external CSS
    assert not re.search(r"""(src|href)\s*=\s*['"]?\s*(https?:|//|file:)""", text, re.I)
    assert "<script" not in text.lower().replace("&lt;script", "")
    assert "<link" not in text.lower() and "@import" not in text and "url(" not in text


def test_sections_and_numbers(report):
    _, text = report
    for heading in ("Methods", "Training", "Planning", "Reward hacking", "Sample completions", "Notes", "Run", "Config",
                    "Timings", "Seeds", "Versions"):
        assert f">{heading}<" in text, heading
    assert text.index("data:image/png") < text.index("class='summary'") < text.index(">Methods<")
    r = load()
    for p in r["evaluate"]:
        assert p["label"] in text
    ppo = next(p for p in r["evaluate"] if p["label"] == "PPO β=1.88")
    assert f"{100 * ppo['efficiency']:.0f}%" in text and f"PPO β=1.88 is {ppo['verdict']}" in text
    for title in ("Trained policies", "Best-of-N", "Soft best-of-N"):
        assert f"<h3>{title} " in text
    assert "unreachable" in text  # a planning target the samples cannot reach (kl = inf)
    assert "gap at β=" in text and "corr. with gold" in text  # the hacking tables
    assert "torch" in text and "train-ppo-beta1.88" in text and fmt_seconds(r["wall_time_s"]) in text  # the stages' total


def test_summary_sentence():
    """Each shown method in words, true to its intervals: the verdict, the gain and efficiency with their intervals."""
    r = load()
    s = summary_text(r)
    ev = {p["label"]: p for p in r["evaluate"]}
    largest = max((p for p in r["evaluate"] if p["method"] == "bon"), key=lambda p: p["n"])
    assert f"Best-of-{largest['n']} is {largest['verdict']} at 95%" in s
    assert f"{100 * largest['efficiency']:.0f}% [" in s
    # one sentence for best-of-N and one for soft best-of-N, not one per N and β
    assert len(re.findall(r"Soft best-of-\d+ β=\S+ (is|cannot)", s)) == 1
    assert len(re.findall(r"(?<!Soft )Best-of-\d+ (is|cannot)", s)) == 1
    ppo = ev["PPO β=1.88"]
    ppo.update(verdict="on the frontier", gain_ci=[-0.06, 0.17], efficiency_ci=[-0.2, 1.3])
    said = summary_text(r)
    assert "PPO β=1.88 cannot be told apart from the frontier at 95%" in said
    assert "its gain cannot be told apart from zero either: this point decides nothing" in said
    ppo.update(verdict="below the frontier", gain_ci=[0.01, 0.1])
    assert "PPO β=1.88 is below the frontier at 95%" in summary_text(r)
    ppo.update(verdict="above the frontier (check its KL)", above_frontier=True, kl_overspend=None,
               judged_against="bias-corrected")
    said = summary_text(r)
    assert "lies above the frontier it is judged against" in said and "check that KL first" in said
    assert "biased low" not in said and "KL overspend is undefined" in said  # issue 21, item 8
    assert "against the bias-corrected frontier" in said
    ppo.update(verdict="no verdict (past the frontier's reach)", efficiency=None, efficiency_ci=None,
               null_reason="its KL 14.3 nats is past the frontier's reach", above_frontier=False)
    assert "PPO β=1.88 gets no verdict (gain" in summary_text(r) and "past the frontier's reach" in summary_text(r)
    ppo.update(verdict="on the frontier", efficiency=0.57, null_reason=None, efficiency_ci=None,
               efficiency_ci_note="unbounded: the frontier's gain at this KL is not resolved from 0")
    assert "57% [unbounded] of the optimal gain" in summary_text(r)
    assert "No method was evaluated" in summary_text({"evaluate": []})
    r["exact_frontier"] = [{"kl": c["kl"], "gain": c["gain"] * 1.1} for c in r["frontier"]["curve"]]
    assert "The exact frontier (every sequence enumerated) gains" in summary_text(r)


def test_example_labels_read_well(report):
    _, text = report
    assert "ppo-beta0.1" not in text.split("Sample completions")[1].split(">Notes<")[0]


def test_completions_are_escaped(report):
    _, text = report
    assert "<script>alert" not in text and "<b>bold</b>" not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in text and "&amp; a &lt;b&gt;bold&lt;/b&gt;" in text


def test_hostile_strings_everywhere_are_escaped(tmp_path):
    r = load()
    evil = "<img src=http://evil.example/x.png onerror=alert(1)>"
    r["task"] = r["model"] = evil
    r["evaluate"][-1]["label"] = evil
    r["examples"][0]["prompt"] = evil
    r["config"]["prompts_file"] = evil
    r["notes"].append(evil)
    text = write_report(tmp_path, r).read_text()
    assert "<img src=http" not in text and "evil.example" in text


def test_edge_values_and_missing_parts(tmp_path):
    text = write_report(tmp_path / "a", edge_results()).read_text()
    words = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", text)
    assert "∞" in words and "—" in words and not re.search(r"\b(nan|inf|none|null)\b", words, re.I)
    assert "Reward hacking" not in text and "Sample completions" not in text
    bare = {"version": 1, "task": "exact", "frontier": {}, "frontier_band": [], "soft_bon": [], "evaluate": [],
            "plan": {"for_gains": [], "for_kls": []}, "hacking": None, "examples": [], "notes": [], "config": {},
            "versions": {}, "seeds": {}, "timings": {}, "wall_time_s": None}
    text = write_report(tmp_path / "b", bare).read_text()
    assert "No evaluated methods" in text and "data:image/png;base64," in text


def test_hacking_figures_without_hacking_json(tmp_path):
    _tiny_png(tmp_path / "hacking.png")
    r = load()
    r["hacking"] = None
    text = write_report(tmp_path, r).read_text()
    assert ">Reward hacking<" in text and text.count("data:image/png;base64,") == 3  # plane, training, hacking


# ------------------------------------------------------------------------------------- real browser
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]
CONSOLE = re.compile(r"(:CONSOLE[(:]|Uncaught|Failed to load resource|Not allowed to load|Refused to)", re.I)


def run_chromium(url: str, tmp: Path, *extra: str) -> subprocess.CompletedProcess:
    profile = tmp / f"profile{len(list(tmp.glob('profile*')))}"
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *extra, url],
                          capture_output=True, text=True, timeout=180, cwd=tmp)


def console_messages(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if CONSOLE.search(line)]


@needs_chromium
def test_console_check_catches_errors(tmp_path):
    """The console scan below is live: a page with a script error is caught by it."""
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><p>x</p><script>undefinedFunction();</script></body></html>")
    out = run_chromium(bad.as_uri(), tmp_path, f"--screenshot={tmp_path / 'bad.png'}", "--window-size=400,300")
    assert any("Uncaught" in m for m in console_messages(out.stderr)), out.stderr[-2000:]


@needs_chromium
def test_report_in_headless_chromium(report, tmp_path):
    path, _ = report
    shot = tmp_path / "report.png"
    out = run_chromium(path.as_uri(), tmp_path, f"--screenshot={shot}", "--window-size=1280,2000")
    assert out.returncode == 0, out.stderr[-2000:]
    assert console_messages(out.stderr) == [], console_messages(out.stderr)
    assert shot.exists(), out.stderr[-2000:]

    img = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert img.shape[:2] == (2000, 1280)
    # the headline figure is drawn near the top: the frontier's blue and PPO's orange appear in the first 1000 px
    top = img[:1000]
    for rgb in ((31, 119, 180), (255, 127, 14)):
        assert (np.abs(top - rgb).sum(axis=2) < 40).sum() > 100, f"colour {rgb} of the figure not on screen"
    # and the page is not blank below it (the summary and the methods table)
    assert (img[1000:].min(axis=2) < 128).sum() > 2000

    dom = run_chromium(path.as_uri(), tmp_path, "--dump-dom")
    assert dom.returncode == 0
    assert re.search(r"<img[^>]+src=\"data:image/png;base64,", dom.stdout)
    assert "PPO β=1.88" in dom.stdout and ">Methods<" in dom.stdout
    if os.environ.get("ALIGNLIMITS_KEEP_SCREENSHOT"):
        shutil.copy(shot, os.environ["ALIGNLIMITS_KEEP_SCREENSHOT"])


def test_hacking_figure_drawn_when_missing(tmp_path):
    text = write_report(tmp_path, load()).read_text()
    assert (tmp_path / "hacking.png").exists()
    # the plane, the training curves, and the hacking study's controlled-error and trained-proxy figures
    assert text.count("data:image/png;base64,") == 4


def test_old_style_hacking_json(tmp_path):
    """The `alignlimits hacking` JSON (per proxy: correlation and a curve without intervals) still makes tables."""
    r = load()
    r["hacking"] = {"gold": "reward", "proxies": ["proxy_1"], "n_prompts": 8, "per_proxy": [
        {"proxy": "proxy_1", "correlation": 0.7, "curve": [
            {"beta": b, "kl": 0.1 / b, "proxy_gain": 0.2, "gold_gain": 0.1, "optimal_gold_gain": 0.15, "gap": 0.05 * b,
             "objective_loss": 0.01} for b in (1.0, 0.3, 0.1)]}],
        "ensembles": [{"aggregate": "mean", "k": 4, "correlation": 0.8, "curve": []}], "notes": []}
    text = write_report(tmp_path, r).read_text()
    assert "proxy_1" in text and "0.7" in text and "mean" in text and "gap at β=" in text


def test_empty_completion_is_said(tmp_path):
    r = load()
    r["examples"][0]["completions"][0]["text"] = ""
    assert "(empty completion)" in write_report(tmp_path, r).read_text()
