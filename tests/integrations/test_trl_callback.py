"""FrontierCallback inside TRL's trainers on the exact task: the same point as the evaluator, logged everywhere."""

import json
import logging

import pytest
from exact_samples import PROMPTS, base_samples

from alignlimits.errors import AlignLimitsError
from alignlimits.integrations.trl import FrontierCallback
from alignlimits.lm.exact import build_exact_model, exact_reward
from alignlimits.methods.grpo import GRPOOptions, build_grpo_trainer
from alignlimits.methods.measure import FRONTIER_JSON, JSONL

pytestmark = pytest.mark.usefixtures("one_thread")
FIELDS = {"step", "kl", "kl_se", "gain", "gain_ci", "efficiency", "verdict", "objective", "objective_share",
          "kl_to_target", "seconds", "training_state"}


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    path = tmp_path_factory.mktemp("base") / "base.parquet"
    table = base_samples()
    table.frame.to_parquet(path)
    return path


def rows(out):
    return [json.loads(x) for x in (out / JSONL).read_text().splitlines()]


def test_grpo_last_point_is_the_evaluation_of_the_saved_policy(samples, tmp_path):
    """The last logged point against the evaluator's own steps (sample_and_score, place_policy) on the policy saved
    and loaded back, same seed and engine (hf): KL and gain agree to 1e-6. Not the ``alignlimits evaluate`` CLI: on
    the exact task it judges against the enumerated frontier, whose base mean is exact, where the callback's is the
    base samples' mean (the gain would differ by that, not by the measurement)."""
    from transformers import AutoModelForCausalLM

    from alignlimits.methods.evaluation import place_policy, sample_and_score

    model, tok = build_exact_model(0)
    opts = GRPOOptions(beta=0.5, learning_rate=3e-3, steps=6, batch_size=32, num_generations=8, max_new_tokens=3,
                       output_dir=str(tmp_path), save_steps=0, progress=False)
    trainer = build_grpo_trainer(opts, model, tok, exact_reward, PROMPTS)
    cb = FrontierCallback(samples, "exact", n=16, every=3, beta=0.5, seed=5, max_new_tokens=3).attach(trainer)
    trainer.train()
    trainer.save_model(str(tmp_path / "policy"))
    got = rows(tmp_path)
    assert [r["step"] for r in got] == [0, 3, 6] and FIELDS <= set(got[-1])
    assert got[0]["kl"] == 0  # the path starts at the base model
    assert got[-1]["kl_to_target"] < got[0]["kl_to_target"] and got[-1]["gain"] > got[0]["gain"] + 0.1
    logged = [h for h in trainer.state.log_history if "alignlimits/kl" in h]
    assert [h["step"] for h in logged] == [0, 3, 6] and logged[-1]["alignlimits/kl"] == got[-1]["kl"]
    assert (tmp_path / FRONTIER_JSON).is_file()

    saved = AutoModelForCausalLM.from_pretrained(str(tmp_path / "policy")).eval()
    base, _ = build_exact_model(0)
    prompts, ids = cb.yardstick.prompts, cb.yardstick.prompt_ids
    ev = sample_and_score(saved, base, tok, prompts, ids, [cb.reward], 16, 3, seed=5)
    point = place_policy("grpo", ev["exact"], ev["prompt_id"], ev["logp_policy"], ev["logp_base"], cb.frontier, beta=0.5)
    assert abs(point.kl - got[-1]["kl"]) < 1e-6 and abs(point.gain - got[-1]["gain"]) < 1e-6


def test_rloo_and_dpo_run_with_the_callback(samples, tmp_path):
    from alignlimits.methods.dpo import DPOOptions, build_dpo_trainer, dpo_pairs_from_policy
    from alignlimits.methods.rloo import RLOOOptions, build_rloo_trainer

    model, tok = build_exact_model(0)
    opts = RLOOOptions(beta=0.5, learning_rate=3e-3, steps=2, batch_size=16, num_generations=4, max_new_tokens=3,
                       output_dir=str(tmp_path / "rloo"), save_steps=0, progress=False)
    trainer = build_rloo_trainer(opts, model, tok, exact_reward, PROMPTS)
    FrontierCallback(samples, "exact", n=4, every=1, prompts=4, max_new_tokens=3).attach(trainer)  # β: the trainer's own
    trainer.train()
    assert [r["step"] for r in rows(tmp_path / "rloo")] == [0, 1, 2]

    model, _ = build_exact_model(0)
    pairs = dpo_pairs_from_policy(model, tok, PROMPTS, [str(i) for i in range(12)], exact_reward, n=4, max_new_tokens=3,
                                  seed=0)
    opts = DPOOptions(beta=0.5, learning_rate=1e-3, steps=2, batch_size=8, output_dir=str(tmp_path / "dpo"),
                      save_steps=0, progress=False)
    trainer = build_dpo_trainer(opts, model, tok, pairs)
    base, _ = build_exact_model(0)  # not attached: no reference model from the trainer, so π0 is given
    trainer.add_callback(FrontierCallback(samples, "exact", n=4, every=2, prompts=4, max_new_tokens=3, base_model=base))
    trainer.train()
    got = rows(tmp_path / "dpo")
    assert [r["step"] for r in got] == [0, 2] and FIELDS <= set(got[-1]) and got[-1]["beta"] == 0.5


def test_base_samples_of_another_tokenizer_are_refused_and_unrecorded_ones_warned(samples, tmp_path, caplog):
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from alignlimits.lm.exact import build_exact_tokenizer

    other = build_exact_tokenizer()
    other.add_tokens(["d"])
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[])
    model, tok = build_exact_model(0)
    with pytest.raises(AlignLimitsError, match="was sampled with tokenizer .* not the policy's") as err:
        FrontierCallback(samples, "exact", beta=0.5).on_train_begin(args, TrainerState(), TrainerControl(),
                                                                   model=model, processing_class=other)
    assert "\n" not in str(err.value)
    old = tmp_path / "old.parquet"
    frame = base_samples(n=8).frame
    frame.attrs = {}
    frame.to_parquet(old)
    cb = FrontierCallback(old, "exact", beta=0.5, n=2, max_new_tokens=3, base_model=model)
    with caplog.at_level(logging.WARNING, logger="alignlimits"):
        cb.on_train_begin(args, TrainerState(), TrainerControl(), model=model, processing_class=tok)
    assert "does not record its tokenizer" in caplog.text
