"""The trainable model, set up the same way for every trainer: LoRA adapters and float32 master weights.

Precision: the trainable parameters are always float32 (master weights), whatever dtype the model was
loaded in.  Updating bf16 weights directly loses most small steps: bf16 keeps 8 significant bits, so an
AdamW step of about lr (1e-5) rounds away on every weight larger than about lr·2⁹ ≈ 5e-3 in magnitude,
i.e. on most of them.  The forward passes run under ``torch.autocast(bfloat16)`` on a CUDA device that
supports it (:func:`autocast_dtype`; TRL's ``bf16=True`` does the same for GRPO), and in float32
otherwise.  The policy and its reference run under the same autocast, so their log-probs, and the KL
between them, have the same precision.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from alignlimits.errors import AlignLimitsError
from alignlimits.seeding import derive_seed

__all__ = [
    "add_lora",
    "autocast_context",
    "autocast_dtype",
    "float32_master_weights",
    "is_peft",
    "lora_config",
    "refuse_stacked_adapters",
]


def is_peft(model: nn.Module) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def lora_config(options: Any):
    """peft ``LoraConfig`` from the trainer options' ``lora_r``, ``lora_alpha``, ``lora_dropout``,
    ``lora_target_modules`` (dropout 0 by default, so that log π is deterministic)."""
    from peft import LoraConfig

    return LoraConfig(
        r=options.lora_r,
        lora_alpha=options.lora_alpha,
        lora_dropout=options.lora_dropout,
        target_modules=options.lora_target_modules,
        task_type="CAUSAL_LM",
    )


def add_lora(model: nn.Module, options: Any, method: str) -> nn.Module:
    """``model`` wrapped with fresh LoRA adapters (``options.use_lora``), or as given.

    The adapters' random A matrices are drawn from ``derive_seed(options.seed, method.lower(), "lora")`` (the
    global torch RNG is restored afterwards)."""
    if not options.use_lora:
        return model
    refuse_stacked_adapters(model, options, method)
    from peft import get_peft_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(options.seed, method.lower(), "lora"))
        return get_peft_model(model, lora_config(options))


def refuse_stacked_adapters(model: Any, options: Any, method: str) -> None:
    """``use_lora`` on a model that already carries adapters is refused: its frozen base would not be π0."""
    if options.use_lora and not isinstance(model, str) and is_peft(model):
        raise AlignLimitsError(f"{method}: the model already has adapters; pass the base model with use_lora")


def float32_master_weights(model: nn.Module) -> nn.Module:
    """Cast every trainable parameter of ``model`` to float32, in place; frozen ones keep their dtype."""
    for p in model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
    return model


def autocast_dtype(device: torch.device | str) -> torch.dtype | None:
    """bfloat16 on a CUDA device that supports it (forward passes under autocast), else None (float32)."""
    device = torch.device(device)
    return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None


def autocast_context(device: torch.device | str):
    """``torch.autocast`` at :func:`autocast_dtype` on ``device``, or a no-op context."""
    dtype = autocast_dtype(device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)
