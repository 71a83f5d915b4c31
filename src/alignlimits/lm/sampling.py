"""Sampling at the base distribution with exact sequence log-probabilities, and teacher-forced scoring.

**Base distribution.** :func:`generate_batch` samples with temperature 1, top_p 1, top_k 0, no repetition
penalty and no other logits processor, whatever the model's ``generation_config`` says (it is swapped for a
neutral one during the call): otherwise the samples would not come from π0 and every KL would be wrong.

**Log-probabilities.** For each completion y of prompt x the sampler returns log π(y|x) = Σ_t log softmax(z_t)[y_t]
over exactly the completion tokens the model chose: EOS included when generated, left padding and the pad
tokens generate appends after EOS excluded, prompt/chat-template tokens excluded. The log-softmax is taken
on the raw logits (a recorder placed as the only logits processor sees them before sampling), so it is the
probability the token was actually drawn with. :func:`score_logprobs` recomputes the same quantity under any
model by teacher forcing (same left padding, same position ids); in float32 the two agree within 1e-3 nats.

**Shared prompts.** Samples of one prompt in a generate call share one prefill (:func:`_shared_prompt_cache`):
the prompt is encoded once and its KV cache copied to its rows, 6.4x faster on documents (benchmarks/RESULTS.md).
Another engine (vLLM) is chosen in :mod:`alignlimits.lm.engines`.

**Prompts** are tokenised by :func:`encode_prompt` (the tokenizer's special tokens added, a doubled BOS
removed) in both the sampler and the scorer, so the same text always means the same token ids.

**Batch size**: :func:`auto_batch_size` picks the number of sequences per ``generate`` call from the free
memory (KV cache + logits + activations per sequence) and, on CPU, a throughput cap; override it with
``batch_size=``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from alignlimits.errors import AlignLimitsError
from alignlimits.seeding import derive_seed

#: The sampling settings of the base distribution; recorded in every run's config.
BASE_SAMPLING = {
    "do_sample": True,
    "temperature": 1.0,
    "top_p": 1.0,
    "top_k": 0,
    "repetition_penalty": 1.0,
    "num_beams": 1,
    "logits_processors": "none (raw logits)",
}

CPU_MAX_BATCH = 64  # ~135M parameters on CPU: tokens/s still grow up to about here (benchmarks/bench_sampling.py)
GPU_MAX_BATCH = 512


# --------------------------------------------------------------------------- prompts


def encode_prompt(tokenizer, text: str) -> list[int]:
    """Token ids of a prompt text: special tokens added as the tokenizer does, a doubled BOS removed."""
    ids = list(tokenizer(text, add_special_tokens=True, verbose=False)["input_ids"])
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is not None and len(ids) >= 2 and ids[0] == bos and ids[1] == bos:
        ids = ids[1:]
    if not ids:
        raise AlignLimitsError("an empty prompt has no tokens to condition on; remove empty prompts from the input")
    return ids


def eos_token_ids(model, tokenizer) -> list[int]:
    """End-of-sequence ids: the model's generation_config (may list several), else the tokenizer's."""
    ids = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if ids is None:
        ids = tokenizer.eos_token_id
    if ids is None:
        return []
    return [int(i) for i in (ids if isinstance(ids, (list, tuple)) else [ids])]


def _pad_left(seqs: Sequence[Sequence[int]], pad_id: int, device):
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if len(s):
            ids[i, width - len(s):] = torch.tensor(list(s), dtype=torch.long)
            mask[i, width - len(s):] = 1
    return ids.to(device), mask.to(device)


# --------------------------------------------------------------------------- generation


def _shared_prompt_cache(model, prompt_ids: Sequence[Sequence[int]], pad_id: int, device):
    """The KV cache of every row's prompt but its last token, computed once per distinct prompt.

    A batch holding k samples of a prompt would otherwise encode that prompt k times. The distinct prompts
    are left-padded to the batch's width and run once (same positions as generate: cumsum(mask) - 1), then
    the cache rows are copied to the rows that share them; generate feeds only the last prompt token.
    Returns None when nothing repeats or prompts are one token wide (nothing to cache).
    """
    import torch

    distinct: dict[tuple, int] = {}
    rows = [distinct.setdefault(tuple(p), len(distinct)) for p in prompt_ids]
    if len(distinct) == len(rows) or max(len(p) for p in prompt_ids) < 2:
        return None
    ids, mask = _pad_left([list(p) for p in distinct], pad_id, device)  # the batch's width: its longest is here
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.inference_mode():
        out = model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=pos[:, :-1], use_cache=True,
                    logits_to_keep=1)
    cache = getattr(out, "past_key_values", None)
    if cache is None or not hasattr(cache, "reorder_cache"):
        return None
    cache.reorder_cache(torch.tensor(rows, dtype=torch.long, device=device))
    return cache


@dataclass
class GeneratedBatch:
    """Completions of one generate call, in the order of its input prompts."""

    token_ids: list[list[int]]
    texts: list[str]
    logp: np.ndarray  # float64, log π(y|x) per completion
    n_tokens: np.ndarray  # int, tokens in the completion (EOS included when generated)
    truncated: np.ndarray  # bool, hit max_new_tokens without EOS
    prompt_tokens: int = 0  # total prompt tokens (for throughput)
    step_logp: list[np.ndarray] = field(default_factory=list, repr=False)  # per-token log-probs


class _LogprobRecorder:
    """The only logits processor: records log softmax of the raw logits and leaves them unchanged.

    At call t the last column of ``input_ids`` is the token chosen at step t-1; the log-prob of that
    choice is gathered from the previous call's log-softmax (one step's worth of memory only).
    """

    def __init__(self) -> None:
        self.prev = None
        self.steps: list = []

    def __call__(self, input_ids, scores):
        import torch

        if self.prev is not None:
            self.steps.append(self.prev.gather(1, input_ids[:, -1:]).squeeze(1))
        self.prev = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def finish(self, sequences, prompt_width: int):
        import torch

        if self.prev is not None:
            self.steps.append(self.prev.gather(1, sequences[:, -1:]).squeeze(1))
            self.prev = None
        n_gen = sequences.shape[1] - prompt_width
        if len(self.steps) != n_gen:
            raise RuntimeError(f"log-prob recorder saw {len(self.steps)} steps for {n_gen} generated tokens")
        if not self.steps:
            return torch.zeros((sequences.shape[0], 0))
        return torch.stack(self.steps, dim=1)


def generate_batch(
    model,
    tokenizer,
    prompts: Sequence[str] | Sequence[Sequence[int]],
    max_new_tokens: int,
    *,
    seed: int | None = None,
    keep_step_logp: bool = False,
) -> GeneratedBatch:
    """Sample one completion for each entry of ``prompts`` (texts or token-id lists) at the base distribution.

    Repeat a prompt k times in ``prompts`` to draw k samples of it. ``seed`` seeds torch's generator for
    this call (None: leave the global RNG as it is).
    """
    import torch
    from transformers import GenerationConfig, LogitsProcessorList

    if max_new_tokens < 1:
        raise AlignLimitsError(f"max_new_tokens must be at least 1 (got {max_new_tokens})")
    if len(prompts) == 0:
        return GeneratedBatch([], [], np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool))
    prompt_ids = [encode_prompt(tokenizer, p) if isinstance(p, str) else list(p) for p in prompts]
    eos = eos_token_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos[0] if eos else 0)
    device = next(model.parameters()).device
    input_ids, attention_mask = _pad_left(prompt_ids, pad, device)
    width = input_ids.shape[1]
    cache = _shared_prompt_cache(model, prompt_ids, pad, device)

    gen_config = GenerationConfig(
        do_sample=True, temperature=1.0, top_k=0, top_p=1.0, min_p=None, typical_p=1.0, repetition_penalty=1.0,
        no_repeat_ngram_size=0, num_beams=1, max_new_tokens=int(max_new_tokens), min_new_tokens=None,
        min_length=0, eos_token_id=eos or None, pad_token_id=pad, use_cache=True,
        return_dict_in_generate=False, output_scores=False, output_logits=False,
    )
    recorder = _LogprobRecorder()
    # Nothing may be inherited from the checkpoint's sampling defaults: swap in a neutral generation_config
    # on the model and on any wrapped model (PEFT's generate calls the base model's).
    owners = [model]
    if hasattr(model, "get_base_model"):
        try:
            owners.append(model.get_base_model())
        except Exception:  # noqa: BLE001
            pass
    saved = [(m, m.__dict__.get("generation_config", getattr(m, "generation_config", None))) for m in owners]
    for m, _ in saved:
        m.generation_config = GenerationConfig()
    try:
        if seed is not None:
            torch.manual_seed(int(seed))
        with torch.inference_mode():
            sequences = model.generate(
                input_ids=input_ids, attention_mask=attention_mask, generation_config=gen_config,
                logits_processor=LogitsProcessorList([recorder]), **({"past_key_values": cache} if cache is not None else {}),
            )
            steps = recorder.finish(sequences, width).double().cpu().numpy()
    finally:
        for m, cfg in saved:
            m.generation_config = cfg
    gen = sequences[:, width:].cpu().numpy()
    eos_set = set(eos)
    token_ids, logps, n_tok, trunc, step_list = [], [], [], [], []
    for i in range(gen.shape[0]):
        row = gen[i].tolist()
        end = next((j for j, t in enumerate(row) if t in eos_set), None)
        if end is None:
            ids = row
            truncated = True  # generate only stops a row early at EOS
        else:
            ids = row[: end + 1]
            truncated = False
        token_ids.append([int(t) for t in ids])
        lp = steps[i, : len(ids)]
        logps.append(float(lp.sum()))
        n_tok.append(len(ids))
        trunc.append(truncated)
        if keep_step_logp:
            step_list.append(lp.copy())
    texts = tokenizer.batch_decode(token_ids, skip_special_tokens=True)
    return GeneratedBatch(
        token_ids=token_ids, texts=texts, logp=np.asarray(logps, dtype=np.float64),
        n_tokens=np.asarray(n_tok, dtype=np.int64), truncated=np.asarray(trunc, dtype=bool),
        prompt_tokens=int(sum(len(p) for p in prompt_ids)), step_logp=step_list,
    )


@dataclass
class PromptSamples:
    """The n completions of one prompt."""

    prompt_index: int
    token_ids: list[list[int]]
    texts: list[str]
    logp: np.ndarray
    n_tokens: np.ndarray
    truncated: np.ndarray


def sample_completions(
    model,
    tokenizer,
    prompts: Sequence[str],
    n: int,
    max_new_tokens: int,
    *,
    seed: int = 0,
    batch_size: int | None = None,
    on_batch: Callable[[int, int, int], None] | None = None,
) -> list[PromptSamples]:
    """Draw ``n`` completions for every prompt, batched across prompts.

    Sequences (prompt, sample) are laid out prompt-major and cut into generate calls of ``batch_size``
    (auto when None); call j is seeded with ``derive_seed(seed, j)``, so the result is deterministic for
    a given (seed, batch_size, prompt list). ``on_batch(prompts_completed, samples, tokens)`` is called after
    each generate call.
    """
    if n < 1:
        raise AlignLimitsError(f"--n must be at least 1 (got {n})")
    prompt_ids = [encode_prompt(tokenizer, p) for p in prompts]
    if batch_size is None:
        longest = max((len(p) for p in prompt_ids), default=1)
        batch_size = auto_batch_size(model, prompt_len=longest, max_new_tokens=max_new_tokens)
    if batch_size < 1:
        raise AlignLimitsError(f"--batch-size must be at least 1 (got {batch_size})")
    flat = [(pi, k) for pi in range(len(prompts)) for k in range(n)]
    results = [
        PromptSamples(pi, [None] * n, [None] * n, np.zeros(n), np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool))
        for pi in range(len(prompts))
    ]
    for j, start in enumerate(range(0, len(flat), batch_size)):
        chunk = flat[start : start + batch_size]
        out = generate_batch(
            model, tokenizer, [prompt_ids[pi] for pi, _ in chunk], max_new_tokens, seed=derive_seed(seed, j)
        )
        for (pi, k), ids, text, lp, nt, tr in zip(chunk, out.token_ids, out.texts, out.logp, out.n_tokens, out.truncated):
            r = results[pi]
            r.token_ids[k], r.texts[k], r.logp[k], r.n_tokens[k], r.truncated[k] = ids, text, lp, nt, tr
        if on_batch is not None:
            done = (chunk[-1][0] + 1) if chunk[-1][1] == n - 1 else chunk[-1][0]
            on_batch(done, len(chunk), int(out.n_tokens.sum()))
    return results


# --------------------------------------------------------------------------- teacher-forced scoring


def score_logprobs(
    model,
    tokenizer,
    prompts: Sequence[str] | Sequence[Sequence[int]],
    completions_token_ids: Sequence[Sequence[int]],
    *,
    batch_size: int | None = None,
    per_token: bool = False,
):
    """log π(y|x) of given completions under ``model`` by teacher forcing.

    ``prompts`` are the exact texts given to the model (chat template applied) or token-id lists;
    ``completions_token_ids`` the completion tokens (EOS included when it was generated). Returns a float64
    array of sequence log-probs, or with ``per_token=True`` a list of per-token arrays. Positions, padding
    and the shared prompt cache are those of :func:`generate_batch`, so the result matches the sampler's;
    a prompt's samples are scored after one pass over the prompt (2.1x faster on safety's 27 × 16).
    """
    import torch

    if len(prompts) != len(completions_token_ids):
        raise AlignLimitsError(
            f"score_logprobs got {len(prompts)} prompts but {len(completions_token_ids)} completions; pass one of each per row"
        )
    prompt_ids = [encode_prompt(tokenizer, p) if isinstance(p, str) else list(p) for p in prompts]
    comps = [[int(t) for t in c] for c in completions_token_ids]
    n = len(comps)
    out_seq = np.zeros(n, dtype=np.float64)
    out_tok: list = [None] * n
    if n == 0:
        return [] if per_token else out_seq
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    if batch_size is None:
        longest = max(len(p) + len(c) for p, c in zip(prompt_ids, comps))
        batch_size = auto_batch_size(model, prompt_len=longest, max_new_tokens=0, scoring=True)
    # A prompt's samples side by side (its KV cache is then computed once per batch), prompts by length so
    # batches pad little; results go back to input order.
    order = sorted(range(n), key=lambda i: (len(prompt_ids[i]), prompt_ids[i], len(comps[i])))
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        if max(len(comps[i]) for i in idx) == 0:
            continue
        rows = _score_batch(model, [prompt_ids[i] for i in idx], [comps[i] for i in idx], pad, device)
        for i, lp in zip(idx, rows):
            out_seq[i] = float(lp.sum())
            if per_token:
                out_tok[i] = lp
    return out_tok if per_token else out_seq


def _score_batch(model, prompts: list[list[int]], comps: list[list[int]], pad: int, device) -> list[np.ndarray]:
    """Per-token log-probs of one batch's completions. Rows that share a prompt share its KV cache
    (:func:`_shared_prompt_cache`, as in generation): each row then feeds its last prompt token and its
    completion, right-padded. Without a shared cache, whole sequences are left-padded as in generate_batch."""
    import torch

    cmax = max(len(c) for c in comps)
    cache = _shared_prompt_cache(model, prompts, pad, device)
    with torch.inference_mode():
        if cache is not None:
            _, prefix_mask = _pad_left(prompts, pad, device)
            tail = torch.tensor([[p[-1]] + c + [pad] * (cmax - len(c)) for p, c in zip(prompts, comps)], device=device)
            tail_mask = torch.tensor([[1] * (1 + len(c)) + [0] * (cmax - len(c)) for c in comps], device=device)
            pos = torch.tensor([len(p) - 1 for p in prompts], device=device)[:, None] + torch.arange(cmax + 1, device=device)
            logits = model(input_ids=tail, attention_mask=torch.cat([prefix_mask[:, :-1], tail_mask], 1), position_ids=pos,
                           past_key_values=cache, use_cache=True).logits[:, :-1, :]
            targets, first = tail[:, 1:], [0] * len(comps)
        else:
            ids, mask = _pad_left([p + c for p, c in zip(prompts, comps)], pad, device)
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
            try:
                logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False,
                               logits_to_keep=cmax + 1).logits
            except TypeError:
                logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).logits
            logits, targets, first = logits[:, -(cmax + 1) : -1, :], ids[:, -cmax:], [cmax - len(c) for c in comps]
        logp = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)
        tok_lp = logp.gather(2, targets.unsqueeze(-1)).squeeze(-1).double().cpu().numpy()
    return [tok_lp[row, f : f + len(c)].copy() for row, (f, c) in enumerate(zip(first, comps))]


# --------------------------------------------------------------------------- batch size


def available_memory_bytes(device) -> int:
    """Free memory on ``device``: CUDA free memory, or the host's available RAM."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        return int(free)
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001
        try:
            return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            return 4 << 30


def bytes_per_sequence(model, seq_len: int, *, scoring: bool = False) -> int:
    """Rough peak memory of one sequence of ``seq_len`` tokens in a forward pass (KV cache + activations + logits)."""
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    layers = int(getattr(cfg, "num_hidden_layers", 12) or 12)
    hidden = int(getattr(cfg, "hidden_size", 768) or 768)
    heads = int(getattr(cfg, "num_attention_heads", 12) or 12)
    kv_heads = int(getattr(cfg, "num_key_value_heads", heads) or heads)
    head_dim = int(getattr(cfg, "head_dim", None) or hidden // max(heads, 1))
    inter = int(getattr(cfg, "intermediate_size", 4 * hidden) or 4 * hidden)
    vocab = int(getattr(cfg, "vocab_size", 32000) or 32000)
    elem = next(model.parameters()).element_size()
    kv = 2 * layers * kv_heads * head_dim * seq_len * elem
    act = seq_len * (4 * hidden + 2 * inter) * elem + heads * seq_len * seq_len * 4  # one layer live at a time
    logits = vocab * 4 * (3 if not scoring else seq_len + 2)  # float32 logits, log-softmax, recorder
    return int(kv + act + logits)


def auto_batch_size(model, *, prompt_len: int, max_new_tokens: int, scoring: bool = False, fraction: float = 0.5) -> int:
    """Sequences per forward/generate call: what fits in ``fraction`` of free memory, capped for throughput.

    On CPU the cap is :data:`CPU_MAX_BATCH` for a ~135M-parameter model, scaled by sqrt(135M / parameters)
    (between 8 and 1024; x4 for scoring): beyond it tokens/s stop growing while padding waste (sequences that
    ended early still computed) grows. On GPU the cap is :data:`GPU_MAX_BATCH`. The environment variable
    ``ALIGNLIMITS_BATCH_SIZE`` overrides the choice.
    """
    env = os.environ.get("ALIGNLIMITS_BATCH_SIZE")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise AlignLimitsError(f"ALIGNLIMITS_BATCH_SIZE={env!r} is not an integer; unset it or give a number") from None
    device = next(model.parameters()).device
    free = available_memory_bytes(device) * fraction
    per = bytes_per_sequence(model, prompt_len + max_new_tokens, scoring=scoring)
    fit = max(1, int(free // max(per, 1)))
    if device.type == "cuda":
        cap = GPU_MAX_BATCH
    else:  # smaller models keep gaining from bigger batches on CPU, larger ones saturate sooner
        n_params = sum(p.numel() for p in model.parameters())
        cap = int(min(1024, max(8, CPU_MAX_BATCH * math.sqrt(135e6 / max(n_params, 1)))))
        cap *= 4 if scoring else 1
    return int(max(1, min(fit, cap)))


def check_prompt_lengths(tokenizer, prompts: Sequence[str], ids: Sequence[str], max_new_tokens: int, max_context: int | None) -> list[int]:
    """Token lengths of the prompts; refuse (AlignLimitsError naming the prompt) any that cannot fit the context.

    Documented choice: prompts are never truncated silently (a truncated prompt is a different prompt);
    a prompt whose tokens plus ``max_new_tokens`` exceed the model's context is refused.
    """
    lengths = [len(encode_prompt(tokenizer, p)) for p in prompts]
    if max_context:
        for pid, n_tok in zip(ids, lengths):
            if n_tok + max_new_tokens > max_context:
                raise AlignLimitsError(
                    f"prompt {pid!r} has {n_tok} tokens; with --max-new-tokens {max_new_tokens} it exceeds the model's "
                    f"context of {max_context} tokens; shorten or remove it, or lower --max-new-tokens"
                )
    return lengths



__all__ = [
    "BASE_SAMPLING", "GeneratedBatch", "PromptSamples", "auto_batch_size", "check_prompt_lengths",
    "encode_prompt", "eos_token_ids", "generate_batch", "sample_completions", "score_logprobs",
]
