"""A trained point's sentence separates where its training ended (its training prompts' ceiling) from the held-out
prompts the plane shows, and never calls a point converged or a budget's fault against its numbers."""

from alignlimits.report.terminal import training_words

HELD = dict(objective=0.13, objective_ci=[0.09, 0.17], objective_optimal=0.335, objective_share=0.38,
            objective_share_ci=[0.23, 0.55], kl_to_target=0.41, stopped={"reason": "steps"})


def test_converged_on_its_training_prompts_and_short_on_held_out_ones():
    p = dict(HELD, training_state="converged", training_share={"share": 0.96, "share_ci": [0.88, 1.04]})
    s = training_words(p)
    assert s.startswith("converged at 96% [88%, 104%] of its training prompts' ceiling; on held-out prompts 38% [23%, 55%]")
    assert "0.41 nats from π_β" in s


def test_learning_and_undetermined_say_so():
    p = dict(HELD, training_state="learning", training_share={"share": 0.2, "share_ci": [0.05, 0.35]})
    assert training_words(p).startswith("learning, not converged: 20% [5%, 35%] of its training prompts' ceiling so far")
    p.update(training_state="undetermined", stopped={"reason": "time budget"})
    s = training_words(p)
    assert "too noisy to tell whether it converged at its time budget" in s and not s.startswith("converged")


def test_worse_than_the_base_model_names_the_budget_or_the_generalisation():
    worse = dict(HELD, objective=-0.3, objective_ci=[-0.5, -0.1], training_state="undetermined")
    s = training_words(dict(worse, training_share={"share": -0.1, "share_ci": [-0.6, 0.4]}))
    assert "worse than the base model on held-out prompts" in s and "measures this training budget, not the method" in s
    s = training_words(dict(worse, training_share={"share": 0.9, "share_ci": [0.7, 1.1]}))
    assert "learned the prompts it trained on and did not carry that to new ones" in s and "budget" not in s


def test_a_policy_without_a_training_curve_keeps_the_held_out_words():
    s = training_words(dict(HELD, training_state=None))
    assert s == "38% [23%, 55%] of its ceiling (J*(β) = 0.335), 0.41 nats from π_β"


def test_a_measured_path_says_whether_gold_turned_down():
    from alignlimits.report.terminal import path_words

    path = {"proxy": "exact_error4", "peak_step": 20, "peak_kl": 1.49, "peak_gain": 0.253, "last_gain": 0.032,
            "drop": 0.221, "drop_se": 0.048, "turned_down": True,
            "path": [{"step": 20, "proxy_gain": 1.66}, {"step": 200, "proxy_gain": 3.71}]}
    s = path_words({"path": path})
    assert "gold gain peaked at 0.253 (step 20, KL 1.49) and ended at 0.032" in s and "from 1.66 to 3.71" in s
    assert "over-optimisation" in s
    assert "did not turn down at 95%" in path_words({"path": {**path, "turned_down": False}})
    assert path_words({}) == ""
