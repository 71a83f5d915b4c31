"""The headline figure and the terminal table, from the realistic fixture and from broken-edged results."""

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image
from rich.console import Console

from alignlimits.report.plane import plot_plane
from alignlimits.report.terminal import fmt, fmt_ci, fmt_pct, fmt_pct_ci, fmt_seconds, fmt_times, headline_rows, print_headline

FIXTURE = Path(__file__).parent / "fixtures" / "results.json"


def load() -> dict:
    return json.loads(FIXTURE.read_text())


def edge_results() -> dict:
    """The fixture with NaN/inf/None in every kind of place and most lists emptied."""
    r = load()
    r["frontier"]["curve"][3]["gain"] = float("nan")
    r["frontier"]["curve"][5]["kl"] = float("inf")
    r["frontier"]["budgets"][0]["gain_ci"] = [None, float("nan")]
    r["frontier"]["bon"] = []
    r["frontier"]["max_reliable_kl"] = float("nan")
    r["frontier_band"] = [{"kl": float("nan"), "lo": 0.0, "hi": 1.0}]
    r["soft_bon"] = []
    ev = {p["label"]: p for p in r["evaluate"]}
    r["evaluate"].append({**ev["GRPO β=1.88"], "method": "dpo", "label": None, "beta": None, "n": None})
    ev["best-of-4"].update(kl=float("nan"))
    ev["best-of-16"].update(kl_overspend=float("inf"), efficiency=float("nan"), optimal_gain_at_kl=None)
    ev[next(k for k in ev if k.startswith("soft best-of-8"))].update(kl_se=None, gain_ci=[float("-inf"), float("inf")])
    ev["PPO β=1.88"].update(gain=-0.05, gain_ci=[-0.08, -0.02], kl=40.0, kl_se=3.0)  # lost reward, far beyond the frontier
    ev["GRPO β=1.88"].update(label=None, method="grpo", beta=0.01)
    r["plan"] = {"for_gains": [], "for_kls": []}
    r["hacking"] = None
    r["examples"] = []
    return r


def _png_ok(path: Path) -> np.ndarray:
    assert path.exists() and path.stat().st_size > 10_000
    img = np.asarray(Image.open(path).convert("RGB"))
    assert img.shape[0] > 400 and img.shape[1] > 700
    return img


def test_plane_from_fixture(tmp_path):
    img = _png_ok(plot_plane(load(), tmp_path / "plane.png"))
    # the frontier's colour (matplotlib C0) and PPO's (C1) are drawn
    for rgb in ((31, 119, 180), (255, 127, 14)):
        assert (np.abs(img.astype(int) - rgb).sum(axis=2) < 30).sum() > 50, rgb


def test_plane_covers_every_method_point(tmp_path):
    import matplotlib.pyplot as plt

    r = load()
    ppo = next(p for p in r["evaluate"] if p["label"] == "PPO β=1.88")
    ppo["kl"] = 12.0  # overspending KL far past the frontier's end
    seen = {}
    orig = plt.Figure.savefig

    def spy(self, *a, **k):
        seen["xlim"] = self.axes[0].get_xlim()
        seen["ylim"] = self.axes[0].get_ylim()
        return orig(self, *a, **k)

    plt.Figure.savefig = spy
    try:
        plot_plane(r, tmp_path / "p.png")
    finally:
        plt.Figure.savefig = orig
    assert seen["xlim"][1] >= 12.0 + 1.96 * ppo["kl_se"]
    assert seen["ylim"][0] <= min(p["gain_ci"][0] for p in r["evaluate"])


def test_plane_with_nan_inf_and_empty_lists(tmp_path):
    _png_ok(plot_plane(edge_results(), tmp_path / "edge.png"))


def test_plane_with_almost_nothing(tmp_path):
    r = {"task": "safety", "frontier": {}, "frontier_band": [], "soft_bon": [], "evaluate": [], "hacking": None}
    assert plot_plane(r, tmp_path / "empty.png").exists()
    r["frontier"] = {"curve": [], "bon": [], "budgets": []}
    assert plot_plane(r, tmp_path / "empty2.png").exists()


def test_formatting_never_crashes():
    assert fmt(float("nan")) == "—" and fmt(None) == "—" and fmt("junk") == "—"
    assert fmt(float("inf")) == "∞" and fmt(float("-inf")) == "−∞"
    assert fmt(-0.0512) == "−0.0512" and fmt(1e-17) == "0"
    assert fmt_pct(0.613) == "61%" and fmt_pct(None) == "—"
    assert fmt_pct_ci(0.2283, [0.039, 0.4176]) == "23% [4%, 42%]"
    assert fmt_pct_ci(0.99911, [0.99894, 0.99927]) == "99.91% [99.89%, 99.93%]"  # below the frontier: not "100%"
    assert fmt_pct_ci(1.0, [1.0, 1.0]) == "100%"
    row = headline_rows({"evaluate": [{"method": "soft-bon", "efficiency": 0.99911, "efficiency_ci": [0.99894, 0.99927]}]})
    assert row[0]["efficiency"] == "99.91%"  # the tables' point column, beside "below"
    assert fmt_times(3.21) == "3.2×" and fmt_times(float("inf")) == "∞"
    assert fmt_ci(0.1, [0.05, 0.15]) == "0.1 [0.05, 0.15]" and fmt_ci(0.1, None) == "0.1"
    assert fmt_seconds(61.2) == "1 min 01 s" and fmt_seconds(5) == "5.0 s"


def test_headline_table(tmp_path):
    out = io.StringIO()
    print_headline(load(), Console(file=out, width=140, color_system=None))
    text = out.getvalue()
    for label in ("best-of-16", "PPO β=1.88", "GRPO β=1.88", "efficiency", "overspend"):
        assert label in text
    best = next(p for p in load()["evaluate"] if p["label"] == "best-of-16")
    assert f"{100 * best['efficiency']:.0f}%" in text

    out = io.StringIO()  # a narrow terminal wraps names but never cuts a number
    print_headline(load(), Console(file=out, width=80, color_system=None))
    ppo = next(p for p in load()["evaluate"] if p["label"] == "PPO β=1.88")
    assert headline_rows({"evaluate": [ppo]})[0]["gain"] in out.getvalue() and "…" not in out.getvalue()

    out = io.StringIO()
    print_headline(edge_results(), Console(file=out, width=100, color_system=None))
    assert "∞" in out.getvalue() and "—" in out.getvalue()

    out = io.StringIO()
    print_headline({"evaluate": []}, Console(file=out, width=100, color_system=None))
    assert "no evaluated methods" in out.getvalue()


def test_headline_rows_fallback_labels():
    rows = {r["point"].get("label") or r["method"]: r for r in headline_rows(edge_results())}
    assert "GRPO β=0.01" in rows and "DPO" in rows
    assert rows["best-of-16"]["overspend"] == "∞" and rows["best-of-16"]["efficiency"] == "—"
    assert rows["best-of-4"]["kl"] == "—"
    assert all(isinstance(v, str) and v for r in rows.values() for k, v in r.items() if k != "point")


def test_plane_draws_the_exact_frontier(tmp_path):
    """`alignlimits run exact` adds the enumerated frontier: it is drawn (and an empty or broken one is not fatal)."""
    import matplotlib.pyplot as plt

    r = load()
    r["exact_frontier"] = [{"kl": c["kl"], "gain": c["gain"] * 1.05} for c in r["frontier"]["curve"]]
    labels = {}
    orig = plt.Figure.savefig

    def spy(self, *a, **k):
        labels["all"] = self.axes[0].get_legend_handles_labels()[1]
        return orig(self, *a, **k)

    plt.Figure.savefig = spy
    try:
        plot_plane(r, tmp_path / "exact.png")
        assert any("exact frontier" in s for s in labels["all"])
        # issue 21, item 9: the legend says which frontier judged the trained points
        for p in r["evaluate"]:
            p["judged_against"] = "exact" if p["method"] not in ("bon", "soft-bon") else "plain"
        plot_plane(r, tmp_path / "exact.png")
        assert any(s.startswith("exact frontier") and "judged against it" in s for s in labels["all"])
        assert not any(s.startswith("bias-corrected") and "judged against it" in s for s in labels["all"])
        r["exact_frontier"] = [{"kl": None, "gain": float("nan")}]
        plot_plane(r, tmp_path / "exact2.png")
        assert not any("exact frontier" in s for s in labels["all"])
    finally:
        plt.Figure.savefig = orig


def test_plane_draws_no_law_above_the_line_it_is_judged_against(tmp_path):
    """Issue 21, item 1: `make demo`'s figure drew best-of-8 and best-of-16 above the frontier line they were judged
    against (the plain one). Each point is now drawn on the footing of its verdict: a law's drawn gain never exceeds
    the drawn plain curve at its KL unless its verdict says "above"; the corrected frontier and its band stop at the
    reliable range, and the legend says why."""
    import matplotlib.pyplot as plt

    from alignlimits.theory.comparison import ABOVE, compare_best_of_n, compare_soft_best_of_n
    from alignlimits.theory.frontier import Frontier

    rng = np.random.default_rng(0)
    frontier = Frontier(min_ess=5).fit(rng.standard_normal((27, 16)).ravel(), np.repeat(np.arange(27), 16))
    c = frontier.curve_
    front = {"curve": [{"beta": float(b), "kl": float(k), "gain": float(g), "reliable": bool(ok)}
                       for b, k, g, ok in zip(c["beta"], c["kl"], c["gain"], c["reliable"])],
             "max_reliable_kl": frontier.max_reliable_kl_, "reward_variance": frontier.reward_variance_}
    points = [p.to_dict() for p in compare_best_of_n(frontier, [2, 4, 8, 16])]
    points += [p.to_dict() for p in compare_soft_best_of_n(frontier, [4, 16], float(frontier.beta_for_kl([0.2])[0]))]
    budgets = [p.to_dict() for p in frontier.evaluate(np.linspace(0.05, 0.5, 10), extrapolate=True)]
    band = [{"kl": b["kl"], "gain": b["gain_debiased"], "lo": b["gain_debiased_ci"][0], "hi": b["gain_debiased_ci"][1]}
            for b in budgets]
    results = {"task": "gaussian", "frontier": front, "evaluate": points, "frontier_band_debiased": band,
               "frontier_band": [{"kl": b["kl"], "gain": b["gain"], "lo": b["gain_ci"][0], "hi": b["gain_ci"][1]}
                                 for b in budgets]}
    drawn = {}
    orig = plt.Figure.savefig

    def spy(self, *a, **k):
        ax = self.axes[0]
        drawn["labels"] = ax.get_legend_handles_labels()[1]
        drawn["corrected_x"] = [line.get_xdata() for line in ax.get_lines() if line.get_linestyle() == "-."]
        drawn["plain"] = [line.get_xydata() for line in ax.get_lines()
                          if line.get_label().startswith("frontier") and line.get_color() == "C0"]
        return orig(self, *a, **k)

    plt.Figure.savefig = spy
    try:
        plot_plane(results, tmp_path / "plane.png")
    finally:
        plt.Figure.savefig = orig
    line = np.vstack(drawn["plain"])
    line = line[np.argsort(line[:, 0])]
    for p in points:
        assert p["gain"] <= np.interp(p["kl"], line[:, 0], line[:, 1]) + 1e-9 or p["verdict"] == ABOVE, p
    assert any("reliable range only" in s for s in drawn["labels"])
    assert all(max(x) <= frontier.max_reliable_kl_ + 1e-9 for x in drawn["corrected_x"])
