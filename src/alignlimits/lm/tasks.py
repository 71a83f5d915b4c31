"""Tasks: which prompts, which default reward, chat or plain, and the train / held-out split.

``get_task(name, prompts_file=None, dataset=None)`` returns a :class:`Task`:

========================  =============================================  ===================  ======
task                      prompts                                        default reward       model
========================  =============================================  ===================  ======
``safety``                built-in ``lm/data/safety_prompts.jsonl``      ``profanity-logit``  chat
``summarization``         built-in ``lm/data/summarization_docs.jsonl``  ``minilm-summary``   chat
                          wrapped in :data:`SUMMARY_INSTRUCTION`
``exact``                 the 12 prompts of :mod:`alignlimits.lm.exact`  ``exact``            plain
========================  =============================================  ===================  ======

``--prompts FILE`` (``alignlimits.lm.datasets.load_prompt_file``: one prompt per line, or JSONL with ``prompt``
— or ``document``, which gets the summarisation instruction — and optional ``id``) replaces the prompts;
``--dataset NAME_OR_PATH`` (``load_hf_prompts``) loads BeaverTails / PKU-SafeRLHF-style prompts (safety) or
Reddit TL;DR-style posts (summarisation, wrapped in the instruction). Prompts carrying a ``document`` pass it
to rewards that use it (``sources=``).

**Train / held-out split** (:func:`split_of`): a prompt is *held out* when the first 8 bytes of
``sha256("alignlimits-split:v2:text:" + text)``, read as an unsigned integer and divided by 2**64, fall below
:data:`HELDOUT_FRACTION` (0.25); otherwise it is *train*. ``text`` is the prompt's text (the user message, before
any chat template) with its whitespace runs made single spaces (:func:`split_key`). The rule is one for every
source and depends on the text only — not on the id, the order, the other prompts, the seed or the machine — so
a prompt is on the same side in every run, and a text repeated under several ids (a prompt file with a repeated
line, JSONL rows with their own ids) lands on one side: evaluation never sees a text that training used. (The
rule of version 1 hashed the id, which put 11 of 24 texts repeated 3 times in both splits.) The built-in sets'
held-out prompts: safety 16 of 72, summarisation 12 of 52, exact 4 of 12. :func:`overlapping_texts` checks a
trained policy's prompts against the held-out ones by text.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from alignlimits.errors import AlignLimitsError

TASKS = ("safety", "summarization", "exact")
HELDOUT_FRACTION = 0.25
SPLITS = ("all", "train", "heldout")
SUMMARY_INSTRUCTION = "Summarise the following text in one or two sentences:\n\n{document}"  # = datasets.summarization_prompt
_DATA = Path(__file__).resolve().parent / "data"


@dataclass
class Task:
    """A named set of prompts with its defaults.

    ``prompts``: list of ``{"prompt_id": str, "text": str}`` (+ ``"source"``: the document, for summarisation
    prompts built from documents); ``text`` is the user message (before any chat template; the sampler
    applies the template when ``chat`` is true and the model has one).
    """

    name: str
    prompts: list[dict]
    default_rewards: list[str]
    chat: bool = True
    default_model: str = "smollm2-135m-instruct"
    default_max_new_tokens: int = 64
    fixed_max_new_tokens: int | None = None  # the exact task's outcome space assumes its own length
    source: str = "built-in"
    info: dict = field(default_factory=dict)

    def split(self, which: str) -> "Task":
        """The same task restricted to the ``train`` or ``heldout`` prompts (``all``: unchanged)."""
        if which not in SPLITS:
            raise AlignLimitsError(f"unknown split {which!r}; use one of {', '.join(SPLITS)}")
        if which == "all":
            return self
        kept = [p for p in self.prompts if prompt_split(p) == which]
        if not kept:
            raise AlignLimitsError(
                f"task {self.name!r} has no {which} prompts among its {len(self.prompts)}; use more prompts or --split all"
            )
        return Task(**{**self.__dict__, "prompts": kept, "source": f"{self.source} ({which} split)"})

    def limit(self, k: int | None) -> "Task":
        if k is None:
            return self
        if k < 1:
            raise AlignLimitsError(f"--limit-prompts must be at least 1 (got {k})")
        return Task(**{**self.__dict__, "prompts": self.prompts[:k]})


SPLIT_SALT = "alignlimits-split:v2:text:"
SPLIT_RULE = ("heldout iff sha256('alignlimits-split:v2:text:' + the prompt's text, whitespace runs made single "
              "spaces)[:8] / 2**64 < 0.25")


def split_key(text: str) -> str:
    """The text a prompt is split (and checked for overlap) on: its whitespace runs made single spaces."""
    return " ".join(str(text).split())


def split_of(text: str, heldout_fraction: float = HELDOUT_FRACTION) -> str:
    """``"heldout"`` or ``"train"`` for a prompt's text (see the module docstring for the rule)."""
    h = hashlib.sha256(f"{SPLIT_SALT}{split_key(text)}".encode()).digest()
    u = int.from_bytes(h[:8], "big") / 2.0**64
    return "heldout" if u < heldout_fraction else "train"


def prompt_split(prompt: dict) -> str:
    """The side of a task prompt (``{"prompt_id", "text", ...}``): :func:`split_of` its text."""
    return split_of(prompt["text"])


def overlapping_texts(prompts: list[dict], trained_ids, heldout_ids) -> list[str]:
    """The held-out ids whose text (:func:`split_key`) is also a trained prompt's, given the task's ``prompts``
    (``{"prompt_id", "text"}``); an id the task does not know stands for itself."""
    text_of = {str(p["prompt_id"]): split_key(p["text"]) for p in prompts}
    trained = {text_of.get(str(i), f"id:{i}") for i in trained_ids}
    return sorted(str(i) for i in heldout_ids if text_of.get(str(i), f"id:{i}") in trained)


# --------------------------------------------------------------------------- prompt sources


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise AlignLimitsError(f"{path}:{i}: not valid JSON ({err.msg}); fix that line") from None
    return rows


def _load_prompt_file(path: str) -> list[dict]:
    """``alignlimits.lm.datasets.load_prompt_file`` when present, else a minimal reader (same contract)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise AlignLimitsError(f"prompt file {path!r} does not exist; give a text file (one prompt per line) or JSONL")
    try:
        from alignlimits.lm.datasets import load_prompt_file
    except ImportError:
        load_prompt_file = None
    if load_prompt_file is not None:
        rows = load_prompt_file(str(p))
    else:
        text = p.read_text(encoding="utf-8")
        lines = [ln for ln in text.splitlines() if ln.strip()]
        if lines and all(ln.lstrip().startswith("{") for ln in lines):
            rows = []
            for i, r in enumerate(_read_jsonl(p)):
                if "prompt" not in r:
                    raise AlignLimitsError(f"{path}: row {i + 1} has no 'prompt' field; JSONL prompt files need one")
                rows.append({"id": str(r.get("id", f"p{i:05d}")), "prompt": str(r["prompt"])})
        else:
            rows = [{"id": f"p{i:05d}", "prompt": ln} for i, ln in enumerate(lines)]
    if not rows:
        raise AlignLimitsError(f"prompt file {path!r} holds no prompts; put one prompt per line (or JSONL rows)")
    return rows


def _builtin_rows(task: str) -> list[dict]:
    try:
        from alignlimits.lm.datasets import builtin_prompts
    except ImportError:
        builtin_prompts = None
    if builtin_prompts is not None:
        return builtin_prompts(task)
    filename, field_name = {"safety": ("safety_prompts.jsonl", "prompt"),
                            "summarization": ("summarization_docs.jsonl", "document")}[task]
    path = _DATA / filename
    if not path.is_file():
        raise AlignLimitsError(f"the built-in prompt set {filename} is missing from the installation; reinstall alignlimits")
    rows = _read_jsonl(path)
    if task == "safety":
        return [{"prompt_id": str(r["id"]), "prompt": str(r["prompt"])} for r in rows]
    return [{"prompt_id": str(r["id"]), "prompt": SUMMARY_INSTRUCTION.format(document=str(r["document"]).strip()),
             "document": str(r["document"])} for r in rows]


def _load_dataset(name: str, task: str) -> list[dict]:
    try:
        from alignlimits.lm.datasets import load_hf_prompts
    except ImportError:
        raise AlignLimitsError("--dataset needs alignlimits.lm.datasets, which this installation lacks") from None
    rows = load_hf_prompts(name, task)
    if not rows:
        raise AlignLimitsError(f"dataset {name!r} gave no prompts for task {task!r}; check its columns")
    return rows


def _to_prompts(rows: list[dict]) -> list[dict]:
    """Loader rows (``prompt_id``/``id``, ``prompt``, optional ``document``) -> task prompts."""
    out, seen = [], set()
    for i, r in enumerate(rows):
        pid = str(r.get("prompt_id", r.get("id", f"p{i:05d}")))
        text = str(r.get("prompt", r.get("text", "")))
        if not text.strip():
            raise AlignLimitsError(f"prompt {pid!r} is empty; remove it from the input")
        if pid in seen:
            raise AlignLimitsError(f"prompt id {pid!r} appears twice; prompt ids must be unique")
        seen.add(pid)
        item = {"prompt_id": pid, "text": text}
        if r.get("document"):
            item["source"] = str(r["document"])  # the document, for rewards that compare against it
        out.append(item)
    return out


def get_task(name: str, *, prompts_file: str | None = None, dataset: str | None = None) -> Task:
    """Build a task (see the module docstring)."""
    if name not in TASKS:
        raise AlignLimitsError(f"unknown task {name!r}; use one of {', '.join(TASKS)}")
    if prompts_file and dataset:
        raise AlignLimitsError("give either --prompts or --dataset, not both")
    if name == "exact":
        from alignlimits.lm import exact

        if dataset:
            raise AlignLimitsError("--dataset does not apply to the exact task; use --prompts with words over 'a b c'")
        if prompts_file:
            prompts, source = _to_prompts(_load_prompt_file(prompts_file)), f"file {Path(prompts_file).expanduser().resolve()}"
            bad = [p for p in prompts if any(w not in exact.WORD_TOKENS for w in p["text"].split())]
            if bad:
                raise AlignLimitsError(
                    f"exact task: prompt {bad[0]['prompt_id']!r} = {bad[0]['text'][:40]!r} is not made of the words a b c"
                )
        else:
            prompts, source = _to_prompts(exact.exact_prompts()), "built-in"
        return Task(
            name="exact", prompts=prompts, default_rewards=["exact"], chat=False, default_model="exact-tiny",
            default_max_new_tokens=exact.MAX_NEW_TOKENS, fixed_max_new_tokens=exact.MAX_NEW_TOKENS, source=source,
        )
    if prompts_file:
        rows, source = _load_prompt_file(prompts_file), f"file {Path(prompts_file).expanduser().resolve()}"
    elif dataset:
        rows, source = _load_dataset(dataset, name), f"dataset {dataset}"
    else:
        rows, source = _builtin_rows(name), "built-in"
    if name == "safety":
        return Task(name="safety", prompts=_to_prompts(rows), default_rewards=["profanity-logit"], source=source)
    return Task(
        name="summarization", prompts=_to_prompts(rows), default_rewards=["minilm-summary"], source=source,
        info={"instruction": SUMMARY_INSTRUCTION},
    )
