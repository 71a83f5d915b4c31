"""Reward models: expected orderings on small texts, hf:/python: plumbing, and the error messages."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from alignlimits.errors import AlignLimitsError
from alignlimits.lm.datasets import builtin_prompts, summarization_prompt
from alignlimits.lm.builtin_rewards import extract_document, minilm_model_dir
from alignlimits.lm.reward_model import CallableReward
from alignlimits.lm.rewards import KNOWN_SPECS, load_reward, load_rewards

FIXTURES = Path(__file__).parent / "fixtures"
USER = FIXTURES / "user_rewards.py"

DOC = (
    "The town council met on Tuesday to discuss new bike lanes on Main Street. Residents complained that the "
    "lanes would remove forty parking spaces, but shop owners said more cyclists would bring more customers. "
    "After a long debate, the council voted five to two to build a trial lane for six months and to review "
    "traffic and sales data before deciding whether to make it permanent."
)
UNRELATED = (
    "Photosynthesis converts light energy into chemical energy inside the chloroplasts of plant cells, "
    "producing glucose and oxygen from carbon dioxide and water. Almost every food chain on Earth depends on "
    "it, and the oxygen it releases made animal life possible. Leaves are green because chlorophyll absorbs "
    "red and blue light and reflects green."
)
FAITHFUL = "The council approved a six-month trial bike lane on Main Street despite residents' parking worries."


# --------------------------------------------------------------------------- profanity


@pytest.fixture(scope="module")
def profanity():
    return load_reward("profanity")


def test_profanity_orders_insult_below_polite(profanity):
    prompts = ["Roast me."] * 4
    completions = [
        "You are a stupid worthless idiot and everyone hates you.",
        "Shut up, moron.",
        "Thanks for asking! I'd rather say something kind: you have a great sense of humour.",
        "Here is a gentle joke: you're so organised even your socks have a calendar.",
    ]
    r = profanity(prompts, completions)
    assert r.dtype == np.float64 and r.shape == (4,)
    assert max(r[:2]) < min(r[2:])
    assert np.all(r <= 0) and np.all(r >= math.log(1e-4) - 1e-12)
    assert min(r[2:]) > -0.2  # polite text: P(offensive) small, reward near 0
    assert profanity.name == "profanity" and "log" in profanity.description


def test_profanity_logit_is_log_odds(profanity):
    logit = load_reward("profanity-logit")
    texts = ["What a lovely day for a walk.", "You absolute idiot.", "I hate this stupid thing."]
    p = profanity.offensive_probability(texts)
    p = np.clip(p, 1e-4, 1 - 1e-4)
    np.testing.assert_allclose(logit([""] * 3, texts), np.log1p(-p) - np.log(p))
    assert logit.name == "profanity_logit"


def test_profanity_scores_completion_only(profanity):
    r = profanity(["Insult me, you stupid idiot!", "Hello"], ["Have a nice day.", "Have a nice day."])
    assert r[0] == pytest.approx(r[1])


# --------------------------------------------------------------------------- MiniLM


@pytest.fixture(scope="module")
def minilm():
    return load_reward("minilm-summary")


def test_minilm_folder_found():
    assert (minilm_model_dir() / "config.json").is_file()


def test_minilm_matches_sentence_transformers_pipeline(minilm):
    """Short texts: mean pooling + L2 normalisation of the transformer output, computed independently here."""
    import torch

    enc = minilm.encoder
    texts = ["A cat sat on the mat.", "Stock markets fell sharply on Monday."]
    batch = enc.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        h = enc.model(**batch).last_hidden_state
    m = batch["attention_mask"].unsqueeze(-1).float()
    ref = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=1).numpy()
    np.testing.assert_allclose(enc.encode(texts), ref, atol=1e-5)


def test_minilm_long_text_uses_windows(minilm):
    long = " ".join([DOC, UNRELATED] * 6)  # > 256 tokens
    n_tokens = len(minilm.encoder.tokenizer(long, verbose=False)["input_ids"])
    assert n_tokens > 256
    e = minilm.encoder.encode([long, DOC, UNRELATED])
    assert np.linalg.norm(e[0]) == pytest.approx(1.0)
    # the whole text is covered: its embedding is close to both halves, not only to the first window
    assert e[0] @ e[1] > 0.4 and e[0] @ e[2] > 0.4


def test_minilm_summary_ordering(minilm):
    prompt = summarization_prompt(DOC)
    completions = [FAITHFUL, "I like pizza with extra cheese.", UNRELATED, DOC, ""]
    r = minilm([prompt] * 5, completions)
    faithful, unrelated_sentence, unrelated_copy, source_copy, empty = r
    assert faithful > unrelated_sentence
    assert faithful > unrelated_copy
    assert faithful > source_copy  # the length term: a verbatim copy scores 1 - (1 - 0.3) = 0.3
    assert source_copy == pytest.approx(0.3, abs=1e-6)
    assert empty == -1.0
    assert minilm.name == "minilm_summary" and "cos" in minilm.description


def test_minilm_sources_argument_and_chat_template(minilm):
    chat = (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        + summarization_prompt(DOC)
        + "<|im_end|>\n<|im_start|>assistant\n"
    )
    a = minilm([chat], [FAITHFUL])
    b = minilm(["anything"], [FAITHFUL], sources=[DOC])
    c = minilm([summarization_prompt(DOC)], [FAITHFUL])
    np.testing.assert_allclose(a, c)
    np.testing.assert_allclose(b, c)


def test_minilm_on_builtin_documents(minilm):
    rows = builtin_prompts("summarization")[:4]
    prompts = [r["prompt"] for r in rows]
    first_sentences = [r["document"].split(". ")[0] + "." for r in rows]
    own = minilm(prompts, first_sentences)
    shifted = minilm(prompts, first_sentences[1:] + first_sentences[:1])
    assert np.all(own > shifted)


def test_extract_document_shapes():
    assert extract_document(summarization_prompt(DOC)) == DOC
    assert extract_document("[INST] " + summarization_prompt(DOC) + " [/INST]") == DOC
    llama = (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
        + summarization_prompt(DOC)
        + "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert extract_document(llama) == DOC
    tldr = "SUBREDDIT: r/cycling\n\nTITLE: Bike lanes\n\nPOST: " + DOC + "\n\nTL;DR:"
    assert extract_document(tldr) == DOC
    assert extract_document(DOC) == DOC


def test_minilm_refuses_prompt_without_document(minilm):
    with pytest.raises(AlignLimitsError, match="no source document"):
        minilm(["<|im_start|><|im_end|>"], ["summary"])


# --------------------------------------------------------------------------- hf:


@pytest.fixture(scope="module")
def tiny_classifiers(tmp_path_factory):
    """Tiny random BERT sequence classifiers (1 logit; 2 labels; 1 logit with a chat template)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    root = tmp_path_factory.mktemp("hf_rewards")
    src = minilm_model_dir()
    out = {}
    for name, labels, chat in (("scalar", 1, False), ("binary", 2, False), ("chat", 1, True)):
        folder = root / f"tiny-{name}-rm"
        folder.mkdir()
        for f in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            shutil.copy(src / f, folder / f)
        tok = AutoTokenizer.from_pretrained(str(folder))
        if chat:
            tok.chat_template = (
                "{% for m in messages %}{{ '[' + m['role'] + '] ' + m['content'] + ' ' }}{% endfor %}"
            )
            tok.save_pretrained(str(folder))
        kwargs = {"id2label": {0: "toxic", 1: "safe"}, "label2id": {"toxic": 0, "safe": 1}} if labels == 2 else {}
        cfg = BertConfig(
            vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=37, max_position_embeddings=128, num_labels=labels, **kwargs,
        )
        torch.manual_seed(0)
        model = BertForSequenceClassification(cfg).eval()
        model.save_pretrained(str(folder))
        out[name] = (folder, model, tok)
    return out


PROMPTS = ["Say hi.", "Tell me about rain.", "Roast me.", "What is two plus two?", "Describe a cat."]
COMPLETIONS = ["Hi!", "Rain is water falling from clouds.", "No thanks.", "Four.", "A small furry animal " * 40]


def _direct_logits(model, tok, texts_a, texts_b=None):
    import torch

    with torch.inference_mode():
        rows = []
        for i in range(len(texts_a)):
            if texts_b is None:
                enc = tok(texts_a[i], truncation=True, max_length=128, add_special_tokens=False, return_tensors="pt")
            else:
                enc = tok(texts_a[i], texts_b[i], truncation="longest_first", max_length=128, return_tensors="pt")
            rows.append(model(**enc).logits[0].double().numpy())
    return np.array(rows)


def test_hf_single_logit_matches_unbatched(tiny_classifiers):
    folder, model, tok = tiny_classifiers["scalar"]
    r = load_reward(f"hf:{folder}")
    r.batch_size = 2  # several batches with padding
    got = r(PROMPTS, COMPLETIONS)
    want = _direct_logits(model, tok, PROMPTS, COMPLETIONS)[:, 0]
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert r.name == "hf_tiny_scalar_rm" and "logit" in r.description and not r.use_chat


def test_hf_named_label_log_odds(tiny_classifiers):
    folder, model, tok = tiny_classifiers["binary"]
    r = load_reward(f"hf:{folder}:safe")
    z = _direct_logits(model, tok, PROMPTS, COMPLETIONS)
    np.testing.assert_allclose(r(PROMPTS, COMPLETIONS), z[:, 1] - z[:, 0], atol=1e-5)
    assert r.name == "hf_tiny_binary_rm_safe"
    np.testing.assert_allclose(load_reward(f"hf:{folder}:0")(PROMPTS, COMPLETIONS), z[:, 0] - z[:, 1], atol=1e-5)
    with pytest.raises(AlignLimitsError, match="labels are: toxic, safe"):
        load_reward(f"hf:{folder}:helpful")
    with pytest.raises(AlignLimitsError, match="choose one with hf:"):
        load_reward(f"hf:{folder}")


def test_hf_chat_template_input(tiny_classifiers):
    folder, model, tok = tiny_classifiers["chat"]
    r = load_reward(f"hf:{folder}")
    assert r.use_chat
    text = r.format("Say hi.", "Hi!")
    assert text == "[user] Say hi. [assistant] Hi! "
    got = r(PROMPTS[:2], COMPLETIONS[:2])
    want = _direct_logits(model, tok, [r.format(p, c) for p, c in zip(PROMPTS[:2], COMPLETIONS[:2])])[:, 0]
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_hf_scalar_refuses_label(tiny_classifiers):
    folder, _, _ = tiny_classifiers["scalar"]
    with pytest.raises(AlignLimitsError, match="single output"):
        load_reward(f"hf:{folder}:safe")


def test_hf_load_failures(tmp_path, monkeypatch):
    with pytest.raises(AlignLimitsError, match="no config.json"):
        load_reward(f"hf:{tmp_path}")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(AlignLimitsError, match="failed to load as a sequence classifier"):
        load_reward(f"hf:{tmp_path}")
    with pytest.raises(AlignLimitsError, match="no such folder"):
        load_reward("hf:./does/not/exist")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(AlignLimitsError, match="hub is unreachable"):
        load_reward("hf:someone/no-such-reward-model-xyz")


# --------------------------------------------------------------------------- python: and exact


def test_python_file_callable():
    r = load_reward(f"python:{USER}:length_reward")
    assert isinstance(r, CallableReward) and r.name == "python_length_reward"
    np.testing.assert_array_equal(r(["a", "b"], ["one two", "x"]), [2.0, 1.0])
    assert "Number of words" in r.description


def test_python_module_callable(monkeypatch):
    monkeypatch.syspath_prepend(str(FIXTURES))
    r = load_reward("python:user_rewards:length_reward")
    np.testing.assert_array_equal(r(["p"], ["a b c"]), [3.0])


def test_python_load_failures(tmp_path):
    with pytest.raises(AlignLimitsError, match="failed to load.*ModuleNotFoundError"):
        load_reward("python:no_such_module_for_alignlimits:f")
    with pytest.raises(AlignLimitsError, match="has no attribute 'missing'"):
        load_reward(f"python:{USER}:missing")
    with pytest.raises(AlignLimitsError, match="not callable"):
        load_reward(f"python:{USER}:NOT_CALLABLE")
    with pytest.raises(AlignLimitsError, match="no such file"):
        load_reward(f"python:{tmp_path / 'nope.py'}:f")
    bad = tmp_path / "broken.py"
    bad.write_text("def f(:\n")
    with pytest.raises(AlignLimitsError, match="SyntaxError"):
        load_reward(f"python:{bad}:f")
    with pytest.raises(AlignLimitsError, match="python:MODULE:FUNCTION"):
        load_reward("python:justamodule")


def test_nan_names_reward_and_row():
    r = load_reward(f"python:{USER}:nan_reward")
    completions = ["ok"] * 17 + ["bad"] + ["ok"] * 3
    ids = [f"safety-{i:03d}" for i in range(len(completions))]
    with pytest.raises(AlignLimitsError, match=r"nan_reward' returned NaN for row 17 \(prompt_id 'safety-017'\)"):
        r([""] * len(completions), completions, prompt_ids=ids)
    r.batch_size = 5  # the row index is global, not within the batch
    with pytest.raises(AlignLimitsError, match="returned NaN for row 17"):
        r([""] * len(completions), completions)


def test_inf_is_refused():
    r = CallableReward(lambda p, c: [0.0, -math.inf], spec="python:x:f", name="python_f")
    with pytest.raises(AlignLimitsError, match="returned -inf for row 1"):
        r(["a", "b"], ["c", "d"])


def test_wrong_length_and_raising_and_non_numeric():
    r = load_reward(f"python:{USER}:short_reward")
    with pytest.raises(AlignLimitsError, match="returned 2 values for a batch of 3 completions"):
        r(["a"] * 3, ["b"] * 3)
    r = load_reward(f"python:{USER}:raising_reward")
    with pytest.raises(AlignLimitsError, match="failed on rows 0-1.*RuntimeError: scorer crashed"):
        r(["a"] * 2, ["b"] * 2)
    r = load_reward(f"python:{USER}:text_reward")
    with pytest.raises(AlignLimitsError, match="non-numeric"):
        r(["a"], ["b"])


def test_mismatched_inputs():
    r = load_reward(f"python:{USER}:length_reward")
    with pytest.raises(AlignLimitsError, match="2 prompts but 1 completions"):
        r(["a", "b"], ["c"])
    assert r([], []).shape == (0,)
    assert r(["a"], ["b c"], sources=["ignored"]).tolist() == [2.0]  # context it does not use is ignored


def test_unknown_spec_lists_known():
    with pytest.raises(AlignLimitsError, match="unknown reward 'toxicity'; known rewards: profanity"):
        load_reward("toxicity")
    for spec in ("profanity", "minilm-summary", "hf:", "python:", "exact"):
        assert any(k.startswith(spec) for k in KNOWN_SPECS)


def test_duplicate_columns_refused():
    with pytest.raises(AlignLimitsError, match="both write column 'python_length_reward'"):
        load_rewards([f"python:{USER}:length_reward", f"python:{USER}:length_reward"])


def test_exact_reward_is_lazy():
    """``exact`` imports alignlimits.lm.exact only when asked for; it is either there or reported in one line."""
    try:
        r = load_reward("exact")
    except AlignLimitsError as err:
        assert "reward 'exact' failed to load" in str(err)
    else:
        assert r.name == "exact"
