"""Any Hugging Face sequence classifier as a reward (``hf:ID_OR_PATH[:LABEL]``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alignlimits.errors import AlignLimitsError
from alignlimits.lm.hub import hub_reachable as _hub_reachable
from alignlimits.lm.reward_model import RewardModel, column_name, reward_device, short_error


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
                f"reward {spec!r} failed to load as a sequence classifier ({short_error(err)}); "
                "give a model saved with AutoModelForSequenceClassification"
            ) from None
        self.device = reward_device(device)
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
        self.name = "hf_" + column_name(base) + ("" if self.label is None else "_" + column_name(self.label))
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
