"""Prompt sets: the built-in ones, the user's prompt files, and Hugging Face datasets.

Every loader returns a list of dicts ``{"prompt_id": str, "prompt": str, ...}`` in a stable order; the
summarisation loaders add ``"document"`` (the text to summarise) and, when the data has one, ``"reference"``
(a reference summary). ``prompt`` is the user-turn text; chat templates are applied later, by the model.

- :func:`builtin_prompts` (``safety``: 64+ provocative requests, ``summarization``: 48+ everyday passages),
  written for this project and shipped in ``alignlimits/lm/data``.
- :func:`load_prompt_file`: ``.txt`` (one prompt per line) or ``.jsonl``/``.json`` (objects with ``prompt``,
  or ``document`` for summarisation, and optional ``id``/``prompt_id``).
- :func:`load_hf_prompts`: BeaverTails / PKU-SafeRLHF-style (``prompt`` column) safety prompts and Reddit
  TL;DR-style (``prompt``/``completion``, ``prompt``/``label`` or ``post``/``summary``) summarisation data,
  from a local file or folder (json, jsonl, parquet, csv, tsv, arrow, or a ``save_to_disk`` folder) or a hub id.

Default ids: the ``id``/``prompt_id`` field when present, else ``h-`` + the first 12 hex digits of the
SHA-1 of the prompt text (stable across runs, machines and reordering of the file); a repeated prompt gets
``#2``, ``#3``, ... appended in order of appearance.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

from alignlimits.errors import AlignLimitsError
from alignlimits.lm.hub import hub_reachable as _hub_reachable

#: The instruction the summarisation task puts before each document.
SUMMARY_INSTRUCTION = "Summarise the following text in one or two sentences:"
TASKS = ("safety", "summarization")
_BUILTIN_FILES = {"safety": "safety_prompts.jsonl", "summarization": "summarization_docs.jsonl"}
_DATA_EXT = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv", ".tsv": "csv", ".arrow": "arrow"}


def summarization_prompt(document: str) -> str:
    """The summarisation task's prompt for one document (``extract_document`` in rewards inverts it)."""
    return f"{SUMMARY_INSTRUCTION}\n\n{document.strip()}"


def prompt_hash_id(text: str) -> str:
    return "h-" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]


def _check_task(task: str) -> str:
    t = (task or "").strip().lower()
    if t in ("summarisation", "summary", "summarize", "summarise"):
        t = "summarization"
    if t not in TASKS:
        raise AlignLimitsError(f"unknown task {task!r} for a prompt set; use one of: {', '.join(TASKS)}")
    return t


def _assign_ids(rows: list[dict], source: str) -> list[dict]:
    """Fill missing ids with content hashes (duplicates numbered); refuse duplicate explicit ids."""
    seen: dict[str, int] = {}
    explicit: dict[str, int] = {}
    for i, row in enumerate(rows):
        pid = row.get("prompt_id")
        if pid is not None and str(pid).strip() != "":
            pid = str(pid)
            if pid in explicit:
                raise AlignLimitsError(
                    f"{source}: prompt id {pid!r} appears twice (entries {explicit[pid] + 1} and {i + 1}); give each prompt its own id"
                )
            explicit[pid] = i
            row["prompt_id"] = pid
    for row in rows:
        if row.get("prompt_id") in (None, ""):
            base = prompt_hash_id(row["prompt"])
            k = seen.get(base, 0) + 1
            seen[base] = k
            pid = base if k == 1 else f"{base}#{k}"
            if pid in explicit:
                raise AlignLimitsError(f"{source}: prompt id {pid!r} given explicitly clashes with a generated one; rename it")
            row["prompt_id"] = pid
    return rows


# --------------------------------------------------------------------------- built-in sets


def _read_builtin(name: str) -> list[dict]:
    text = resources.files("alignlimits.lm").joinpath("data", name).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def builtin_prompts(task: str) -> list[dict]:
    """The built-in prompt set of ``task`` (``safety`` or ``summarization``), written for the project.

    safety: ``{"prompt_id", "prompt"}``; summarization: ``{"prompt_id", "prompt", "document"}`` with
    ``prompt = summarization_prompt(document)``.
    """
    task = _check_task(task)
    rows = _read_builtin(_BUILTIN_FILES[task])
    if task == "safety":
        return [{"prompt_id": r["id"], "prompt": r["prompt"]} for r in rows]
    return [{"prompt_id": r["id"], "prompt": summarization_prompt(r["document"]), "document": r["document"]} for r in rows]


# --------------------------------------------------------------------------- prompt files


def load_prompt_file(path: str | os.PathLike) -> list[dict]:
    """Read the user's prompts: ``.txt`` = one prompt per non-blank line (no ids: content hashes);
    ``.jsonl`` (one JSON object per line) or ``.json`` (a list of objects) with ``prompt`` (or ``document``,
    which makes a summarisation prompt and is kept) and optional ``id``/``prompt_id``; other fields
    (e.g. ``reference``) are kept. Any other extension is read as JSONL if its first non-blank line starts
    with ``{``, else as text.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise AlignLimitsError(f"prompt file {str(path)!r} does not exist; give a .txt (one prompt per line) or .jsonl file")
    if p.is_dir():
        raise AlignLimitsError(f"prompt file {str(path)!r} is a folder; give a .txt or .jsonl file")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise AlignLimitsError(f"prompt file {str(path)!r} is not UTF-8 text; save it as UTF-8") from None
    if not text.strip():
        raise AlignLimitsError(f"prompt file {str(path)!r} is empty; put one prompt per line (or JSONL with a 'prompt' field)")
    ext = p.suffix.lower()
    first = next(line for line in text.splitlines() if line.strip()).lstrip()
    if ext == ".json" and first.startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as err:
            raise AlignLimitsError(f"prompt file {str(path)!r} is not valid JSON ({err.msg} at line {err.lineno})") from None
        if not isinstance(items, list):
            raise AlignLimitsError(f"prompt file {str(path)!r}: expected a JSON list of objects")
        rows = [_row_from_obj(obj, str(path), i + 1, "item") for i, obj in enumerate(items)]
    elif ext in (".jsonl", ".json", ".ndjson") or (ext != ".txt" and first.startswith("{")):
        rows = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise AlignLimitsError(
                    f"prompt file {str(path)!r} line {lineno} is not valid JSON ({err.msg}); write one JSON object per line"
                ) from None
            rows.append(_row_from_obj(obj, str(path), lineno, "line"))
    else:
        rows = [{"prompt": line.strip()} for line in text.splitlines() if line.strip()]
    if not rows:
        raise AlignLimitsError(f"prompt file {str(path)!r} holds no prompts")
    return _assign_ids(rows, f"prompt file {str(path)!r}")


def _row_from_obj(obj: Any, source: str, where: int, unit: str) -> dict:
    if isinstance(obj, str):
        obj = {"prompt": obj}
    if not isinstance(obj, dict):
        raise AlignLimitsError(f"prompt file {source!r} {unit} {where}: expected a JSON object with a 'prompt' field")
    row = dict(obj)
    pid = row.pop("prompt_id", None)
    if pid is None:
        pid = row.pop("id", None)
    prompt = row.get("prompt")
    if prompt is None and isinstance(row.get("document"), str) and row["document"].strip():
        prompt = summarization_prompt(row["document"])
    if not isinstance(prompt, str) or not prompt.strip():
        raise AlignLimitsError(
            f"prompt file {source!r} {unit} {where}: no non-empty 'prompt' (or 'document') field; add one"
        )
    row["prompt"] = prompt
    row["prompt_id"] = None if pid is None else str(pid)
    return row


# --------------------------------------------------------------------------- Hugging Face datasets

_SAFETY_COLUMNS = ("prompt", "question", "instruction", "query")
_DOC_COLUMNS = ("post", "document", "content", "article", "text")
_REF_COLUMNS = ("summary", "completion", "label", "reference", "highlights", "tldr")
_POST_RE = re.compile(r"(?:^|\n)\s*POST:\s*", re.IGNORECASE)
_TLDR_RE = re.compile(r"\s*TL;?DR:?\s*$", re.IGNORECASE)


def _open_dataset(name_or_path: str, split: str):
    """Return a ``datasets.Dataset`` for one split of a local file/folder or a hub id."""
    import datasets

    p = Path(name_or_path).expanduser()
    label = repr(name_or_path)
    try:
        if p.is_file():
            ext = p.suffix.lower()
            builder = _DATA_EXT.get(ext)
            if builder is None:
                raise AlignLimitsError(
                    f"dataset {label}: unsupported file type {ext or '(none)'}; use .json, .jsonl, .parquet, .csv, .tsv or .arrow"
                )
            kwargs = {"sep": "\t"} if ext == ".tsv" else {}
            # A single local file is one split, whatever its name: ``split`` applies to folders and hub ids.
            return datasets.load_dataset(builder, data_files=str(p), split="train", **kwargs)
        if p.is_dir():
            if (p / "state.json").is_file() or (p / "dataset_dict.json").is_file():
                ds = datasets.load_from_disk(str(p))
            else:
                files = [f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in _DATA_EXT]
                if not files:
                    raise AlignLimitsError(
                        f"dataset {label}: the folder holds no data files (.json, .jsonl, .parquet, .csv, .arrow)"
                    )
                ds = datasets.load_dataset(str(p))
        else:
            if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
                raise AlignLimitsError(f"dataset {label}: no such file or folder")
            if not _hub_reachable():
                raise AlignLimitsError(
                    f"dataset {label} is not a local file or folder and the Hugging Face hub is unreachable "
                    "(or HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is set); download it where the hub is reachable and pass "
                    "the local file or folder"
                )
            ds = datasets.load_dataset(name_or_path, split=split)
            return ds
    except AlignLimitsError:
        raise
    except Exception as err:  # noqa: BLE001
        msg = " ".join(str(err).split())[:200]
        raise AlignLimitsError(f"dataset {label} failed to load ({type(err).__name__}: {msg})") from None
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            if len(ds) == 1:
                return next(iter(ds.values()))
            raise AlignLimitsError(f"dataset {label} has no split {split!r}; its splits are: {', '.join(ds)}")
        return ds[split]
    return ds


def _pick(columns: Iterable[str], wanted: tuple[str, ...]) -> str | None:
    cols = list(columns)
    lower = {c.lower(): c for c in cols}
    for w in wanted:
        if w in lower:
            return lower[w]
    return None


def _document_from_prompt(text: str) -> str:
    """A TL;DR-style prompt (``SUBREDDIT: ... TITLE: ... POST: ... TL;DR:``) → the post; else the prompt."""
    m = _POST_RE.search(text)
    doc = text[m.end():] if m else text
    return _TLDR_RE.sub("", doc).strip()


def load_hf_prompts(name_or_path: str, task: str, split: str = "train", limit: int | None = None) -> list[dict]:
    """Prompts from a dataset through the ``datasets`` library (local file/folder, or hub id when reachable).

    - ``safety`` (BeaverTails, PKU-SafeRLHF): the ``prompt`` column (else ``question``/``instruction``/
      ``query``); repeated prompts (BeaverTails has several responses per prompt) are kept once, first
      occurrence first. Returns ``{"prompt_id", "prompt"}``.
    - ``summarization`` (Reddit TL;DR): the document is the ``post`` column (else ``document``/``content``/
      ``article``/``text``), or else, when a reference column is present, the ``prompt`` column with its
      TL;DR wrapper removed (the text after ``POST:``, without the trailing ``TL;DR:``); the reference is ``summary``/``completion``/``label``
      when present. Returns ``{"prompt_id", "prompt", "document", "reference"?}`` with
      ``prompt = summarization_prompt(document)``; repeated documents are kept once.

    Ids: an ``id``/``prompt_id`` column when present, else content hashes (module docstring). ``limit`` keeps
    the first ``limit`` unique prompts. A single local file is one split (``split`` is then ignored).
    """
    task = _check_task(task)
    if limit is not None and int(limit) < 1:
        raise AlignLimitsError(f"dataset limit must be at least 1 (got {limit})")
    ds = _open_dataset(str(name_or_path), split)
    cols = list(ds.column_names)
    label = repr(str(name_or_path))
    id_col = _pick(cols, ("prompt_id", "id"))
    rows: list[dict] = []
    seen: set[str] = set()
    if task == "safety":
        col = _pick(cols, _SAFETY_COLUMNS)
        if col is None:
            raise AlignLimitsError(
                f"dataset {label} has no prompt column (columns: {', '.join(cols)}); safety data needs a 'prompt' "
                "column (BeaverTails / PKU-SafeRLHF schema)"
            )
        for rec in ds:
            text = rec.get(col)
            if not isinstance(text, str) or not text.strip() or text in seen:
                continue
            seen.add(text)
            row = {"prompt": text.strip()}
            if id_col is not None and rec.get(id_col) not in (None, ""):
                row["prompt_id"] = str(rec[id_col])
            rows.append(row)
            if limit is not None and len(rows) >= limit:
                break
    else:
        doc_col = _pick(cols, _DOC_COLUMNS)
        prompt_col = _pick(cols, ("prompt",))
        ref_col = _pick([c for c in cols if c not in (doc_col, prompt_col)], _REF_COLUMNS)
        if doc_col is None and (prompt_col is None or ref_col is None):
            raise AlignLimitsError(
                f"dataset {label} has no document column (columns: {', '.join(cols)}); summarisation data needs "
                "'post'/'summary' or 'prompt'/'completion' (or 'prompt'/'label') columns (Reddit TL;DR schema)"
            )
        for rec in ds:
            raw = rec.get(doc_col) if doc_col is not None else rec.get(prompt_col)
            if not isinstance(raw, str) or not raw.strip():
                continue
            doc = raw.strip() if doc_col is not None else _document_from_prompt(raw)
            if not doc or doc in seen:
                continue
            seen.add(doc)
            row = {"prompt": summarization_prompt(doc), "document": doc}
            ref = rec.get(ref_col) if ref_col is not None else None
            if isinstance(ref, str) and ref.strip():
                row["reference"] = ref.strip()
            if id_col is not None and rec.get(id_col) not in (None, ""):
                row["prompt_id"] = str(rec[id_col])
            rows.append(row)
            if limit is not None and len(rows) >= limit:
                break
    if not rows:
        raise AlignLimitsError(f"dataset {label} (split {split!r}) holds no usable prompts for task {task!r}")
    # Explicit ids in a dataset with repeated prompts may repeat; fall back to hashes then.
    ids = [r.get("prompt_id") for r in rows]
    if any(i is not None for i in ids) and len(set(ids)) != len(ids):
        for r in rows:
            r.pop("prompt_id", None)
    for r in rows:
        r.setdefault("prompt_id", None)
    return _assign_ids(rows, f"dataset {label}")
