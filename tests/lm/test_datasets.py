"""Built-in prompt sets, prompt files and dataset loaders (local fixtures in the BeaverTails / PKU-SafeRLHF /
Reddit TL;DR schemas; no hub)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from alignlimits.errors import AlignLimitsError
from alignlimits.lm.datasets import (
    SUMMARY_INSTRUCTION,
    builtin_prompts,
    load_hf_prompts,
    load_prompt_file,
    prompt_hash_id,
    summarization_prompt,
)

FIXTURES = Path(__file__).parent / "fixtures"
DATA = Path(__file__).parents[2] / "src" / "alignlimits" / "lm" / "data"


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


# --------------------------------------------------------------------------- built-in sets


def _jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_safety_prompt_set():
    raw = _jsonl(DATA / "safety_prompts.jsonl")
    assert len(raw) >= 64
    assert [r["id"] for r in raw] == [f"safety-{i:03d}" for i in range(len(raw))]
    assert len({r["prompt"] for r in raw}) == len(raw)
    assert all(set(r) == {"id", "prompt"} and 20 <= len(r["prompt"]) <= 300 for r in raw)
    rows = builtin_prompts("safety")
    assert rows[0] == {"prompt_id": "safety-000", "prompt": raw[0]["prompt"]}
    # no real-world-harm topics in the requests themselves
    banned = re.compile(r"\b(bomb|weapon|gun|drug|hack|poison|kill|suicide|self-harm)", re.IGNORECASE)
    assert not [r["prompt"] for r in raw if banned.search(r["prompt"])]


def test_summarization_document_set():
    raw = _jsonl(DATA / "summarization_docs.jsonl")
    assert len(raw) >= 48
    assert [r["id"] for r in raw] == [f"summ-{i:03d}" for i in range(len(raw))]
    counts = [len(r["document"].split()) for r in raw]
    assert min(counts) >= 80 and max(counts) <= 250, (min(counts), max(counts))
    assert len({r["document"] for r in raw}) == len(raw)
    rows = builtin_prompts("summarization")
    assert rows[3]["prompt"] == f"{SUMMARY_INSTRUCTION}\n\n{raw[3]['document']}"
    assert rows[3]["document"] == raw[3]["document"] and rows[3]["prompt_id"] == "summ-003"
    assert builtin_prompts("summarisation") == rows


def test_unknown_task():
    with pytest.raises(AlignLimitsError, match="unknown task 'poetry'"):
        builtin_prompts("poetry")


# --------------------------------------------------------------------------- prompt files


def test_txt_prompt_file():
    rows = load_prompt_file(FIXTURES / "prompts.txt")
    assert [r["prompt"] for r in rows] == [
        "Tell me a joke about cats.", "Describe your ideal weekend.", "Tell me a joke about cats."
    ]
    h = prompt_hash_id("Tell me a joke about cats.")
    assert [r["prompt_id"] for r in rows] == [h, prompt_hash_id("Describe your ideal weekend."), h + "#2"]
    assert load_prompt_file(FIXTURES / "prompts.txt") == rows  # stable


def test_jsonl_prompt_file():
    rows = load_prompt_file(FIXTURES / "prompts.jsonl")
    assert [r["prompt_id"] for r in rows[:2]] == ["p1", "p2"]
    assert rows[1]["note"] == "kept"
    assert rows[2]["prompt_id"] == prompt_hash_id("Explain tides to a child.")
    assert rows[3]["prompt_id"] == "d1"
    assert rows[3]["prompt"] == summarization_prompt("A short document about the weather turning cold.")
    assert rows[3]["document"].startswith("A short document")


def test_prompt_file_errors(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(AlignLimitsError, match="is empty"):
        load_prompt_file(empty)
    with pytest.raises(AlignLimitsError, match="does not exist"):
        load_prompt_file(tmp_path / "missing.txt")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"prompt": oops}\n')
    with pytest.raises(AlignLimitsError, match="line 2 is not valid JSON"):
        load_prompt_file(bad)
    noprompt = tmp_path / "noprompt.jsonl"
    noprompt.write_text('{"text": "hello"}\n')
    with pytest.raises(AlignLimitsError, match="line 1: no non-empty 'prompt'"):
        load_prompt_file(noprompt)
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"id": "a", "prompt": "x"}\n{"id": "a", "prompt": "y"}\n')
    with pytest.raises(AlignLimitsError, match="prompt id 'a' appears twice"):
        load_prompt_file(dup)
    with pytest.raises(AlignLimitsError, match="is a folder"):
        load_prompt_file(tmp_path)


def test_json_list_prompt_file(tmp_path):
    f = tmp_path / "prompts.json"
    f.write_text(json.dumps([{"prompt": "a"}, "b"]))
    assert [r["prompt"] for r in load_prompt_file(f)] == ["a", "b"]


# --------------------------------------------------------------------------- datasets


def test_beavertails_jsonl():
    rows = load_hf_prompts(str(FIXTURES / "beavertails.jsonl"), "safety")
    assert [r["prompt"] for r in rows] == [
        "How do I tell my roommate to stop leaving dishes in the sink?",
        "Why are people who drive slowly in the fast lane so annoying?",
        "Write a rude message to my noisy upstairs neighbour.",
        "What do you think of people who never tip?",
    ]  # repeated prompts kept once, in order
    assert rows[0]["prompt_id"] == prompt_hash_id(rows[0]["prompt"])
    assert len(load_hf_prompts(str(FIXTURES / "beavertails.jsonl"), "safety", limit=2)) == 2


def test_pku_csv_and_parquet(tmp_path):
    rows = load_hf_prompts(str(FIXTURES / "pku_saferlhf.csv"), "safety")
    assert len(rows) == 3 and rows[0]["prompt"].startswith("Can you make fun")
    import pandas as pd

    pq = tmp_path / "pku.parquet"
    pd.read_csv(FIXTURES / "pku_saferlhf.csv").to_parquet(pq)
    assert load_hf_prompts(str(pq), "safety") == rows


def test_tldr_prompt_completion():
    rows = load_hf_prompts(str(FIXTURES / "tldr_prompt_completion.jsonl"), "summarization")
    assert len(rows) == 3
    r = rows[0]
    assert r["document"].startswith("I have tried baking") and r["document"].endswith("What am I doing wrong?")
    assert "TL;DR" not in r["document"] and "SUBREDDIT" not in r["document"]
    assert r["reference"] == "My bread won't rise; I use old yeast and very hot water."
    assert r["prompt"] == summarization_prompt(r["document"])


def test_tldr_post_summary_and_folder_splits():
    rows = load_hf_prompts(str(FIXTURES / "tldr_post_summary.jsonl"), "summarization")
    assert [r["prompt_id"] for r in rows] == ["t3_0000", "t3_0001", "t3_0002"]
    same = load_hf_prompts(str(FIXTURES / "tldr_prompt_completion.jsonl"), "summarization")
    assert [r["document"] for r in rows] == [r["document"] for r in same]
    assert rows[1]["reference"].startswith("Switched to cycling")
    train = load_hf_prompts(str(FIXTURES / "tldr_folder"), "summarization", split="train")
    test = load_hf_prompts(str(FIXTURES / "tldr_folder"), "summarization", split="test")
    assert [r["prompt_id"] for r in train] == ["train-0", "train-1"]
    assert [r["prompt_id"] for r in test] == ["test-0"]
    with pytest.raises(AlignLimitsError, match="has no split 'validation'; its splits are"):
        load_hf_prompts(str(FIXTURES / "tldr_folder"), "summarization", split="validation")


def test_save_to_disk_folder(tmp_path):
    import datasets

    ds = datasets.Dataset.from_dict({"prompt": ["one", "two"], "response": ["a", "b"]})
    ds.save_to_disk(str(tmp_path / "saved"))
    assert [r["prompt"] for r in load_hf_prompts(str(tmp_path / "saved"), "safety")] == ["one", "two"]


def test_dataset_errors(tmp_path):
    with pytest.raises(AlignLimitsError, match="hub is unreachable"):
        load_hf_prompts("PKU-Alignment/PKU-SafeRLHF", "safety")
    with pytest.raises(AlignLimitsError, match="no prompt column"):
        load_hf_prompts(str(FIXTURES / "tldr_post_summary.jsonl"), "safety")
    with pytest.raises(AlignLimitsError, match="no document column"):
        load_hf_prompts(str(FIXTURES / "pku_saferlhf.csv"), "summarization")
    odd = tmp_path / "data.xml"
    odd.write_text("<a/>")
    with pytest.raises(AlignLimitsError, match="unsupported file type .xml"):
        load_hf_prompts(str(odd), "safety")
    with pytest.raises(AlignLimitsError, match="no such file or folder"):
        load_hf_prompts("./missing/data.jsonl", "safety")
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(AlignLimitsError, match="holds no data files"):
        load_hf_prompts(str(tmp_path / "emptydir"), "safety")
    with pytest.raises(AlignLimitsError, match="limit must be at least 1"):
        load_hf_prompts(str(FIXTURES / "beavertails.jsonl"), "safety", limit=0)
