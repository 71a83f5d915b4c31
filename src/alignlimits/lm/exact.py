"""The exactly solvable task: a tiny causal LM whose every completion can be enumerated.

**Model** (``exact-tiny``, built from a seed in well under a second): a 2-layer Llama (hidden size 32) over
the vocabulary ``<eos> a b c`` (ids 0..3; EOS doubles as the pad token, there is no BOS). Weights are
drawn from ``torch.manual_seed(seed)`` with a wide initialisation (``initializer_range`` 0.35), so that the
next-token distributions depend on the context and are far from uniform.

**Prompts**: the 12 strings of one or two tokens over ``a b c`` (``"a"``, ..., ``"c c"``), prompt ids
``x-a``, ``x-a-b``, ....

**Completions**: sampled with ``max_new_tokens = MAX_NEW_TOKENS`` (3). The outcome space of a prompt is
the 40 sequences: ``w <eos>`` for every word w over ``a b c`` of length 0, 1 or 2 (1 + 3 + 9), plus the 27
words of length 3 (truncated, no EOS). Its probabilities sum to 1 exactly (a prefix tree), and each is
computed by teacher forcing with the same scorer the real models use. A completion's text is its tokens
joined by spaces, EOS dropped (``""`` is the immediate EOS); the length-3 texts are exactly the truncated ones.

**Reward table** (prompt-independent, integer multiples of 1/4, with ties on purpose)::

    r(y) = #a(y) - 0.5 * #c(y) + 0.25 * [y ended with EOS]

e.g. r("") = 0.25, r("a a") = 2.25, r("a a a") = 3, r("c c c") = -1.5.

``exact_distribution`` gives π0 over all outcomes for every prompt; ``exact_kl`` / ``exact_gain`` give
the exact KL(π‖π0) and E_π r − E_π0 r of any policy of the same architecture (e.g. after training).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from alignlimits.errors import AlignLimitsError

EXACT_VERSION = 1
VOCAB = ("<eos>", "a", "b", "c")
EOS_ID = 0
WORD_TOKENS = ("a", "b", "c")
MAX_NEW_TOKENS = 3
TOKEN_REWARD = {"a": 1.0, "b": 0.0, "c": -0.5}
EOS_BONUS = 0.25


def exact_prompts() -> list[dict]:
    """The 12 prompts of the exact task: ``[{"id": "x-a", "prompt": "a"}, ...]``."""
    out = []
    for length in (1, 2):
        for word in itertools.product(WORD_TOKENS, repeat=length):
            out.append({"id": "x-" + "-".join(word), "prompt": " ".join(word)})
    return out


def build_exact_tokenizer():
    """A word-level fast tokenizer over ``<eos> a b c`` (whitespace-split, no special tokens added)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(VOCAB)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<eos>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with single spaces
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token="<eos>", pad_token="<eos>", unk_token="<eos>", padding_side="left",
        model_max_length=32, clean_up_tokenization_spaces=False,
    )
    return tok


def build_exact_model(seed: int = 0):
    """The tiny Llama of the exact task, deterministic from ``seed``; returns ``(model, tokenizer)``."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(VOCAB), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, max_position_embeddings=32, initializer_range=0.35, rms_norm_eps=1e-6,
        tie_word_embeddings=False, bos_token_id=None, eos_token_id=EOS_ID, pad_token_id=EOS_ID,
        attention_bias=False, mlp_bias=False,
    )
    saved_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(int(seed))
        model = LlamaForCausalLM(config).to(torch.float32)
    finally:
        torch.random.set_rng_state(saved_state)
    model.generation_config = GenerationConfig(eos_token_id=EOS_ID, pad_token_id=EOS_ID)
    model.eval()
    return model, build_exact_tokenizer()


def save_exact_model(path: str | Path, seed: int = 0) -> None:
    model, tok = build_exact_model(seed)
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    (Path(path) / "alignlimits_source.json").write_text(
        f'{{"source": "alignlimits.lm.exact.build_exact_model", "seed": {int(seed)}, "version": {EXACT_VERSION}}}\n'
    )


# --------------------------------------------------------------------------- outcomes and rewards


def enumerate_completions(max_new_tokens: int = MAX_NEW_TOKENS) -> list[tuple[int, ...]]:
    """Every completion as token ids: words of length < L followed by EOS, then the length-L words."""
    word_ids = [VOCAB.index(t) for t in WORD_TOKENS]
    out: list[tuple[int, ...]] = []
    for length in range(max_new_tokens):
        for w in itertools.product(word_ids, repeat=length):
            out.append(tuple(w) + (EOS_ID,))
    for w in itertools.product(word_ids, repeat=max_new_tokens):
        out.append(tuple(w))
    return out


def completion_text(token_ids: Sequence[int]) -> str:
    return " ".join(VOCAB[t] for t in token_ids if t != EOS_ID)


def _parse(text: str, row: int) -> tuple[list[str], bool]:
    words = str(text).split()
    if words and words[-1] == "<eos>":
        words = words[:-1]
        ended = True
    else:
        ended = len(words) < MAX_NEW_TOKENS
    bad = [w for w in words if w not in TOKEN_REWARD]
    if bad or len(words) > MAX_NEW_TOKENS:
        raise AlignLimitsError(
            f"exact reward: row {row} has completion {text!r}, which is not an exact-task completion "
            f"(up to {MAX_NEW_TOKENS} of the words a b c); use --reward exact only with --task exact"
        )
    return words, ended


def reward_of_text(text: str, row: int = 0) -> float:
    words, ended = _parse(text, row)
    return float(sum(TOKEN_REWARD[w] for w in words) + (EOS_BONUS if ended else 0.0))


def reward_of_ids(token_ids: Sequence[int]) -> float:
    """The reward table on token ids: EOS bonus when the last token is EOS."""
    ids = list(token_ids)
    ended = bool(ids) and ids[-1] == EOS_ID
    return float(sum(TOKEN_REWARD[VOCAB[t]] for t in ids if t != EOS_ID) + (EOS_BONUS if ended else 0.0))


def exact_reward(prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
    """The fixed reward table of the exact task on completion texts (prompts are accepted and ignored)."""
    if len(prompts) != len(completions):
        raise AlignLimitsError(f"exact reward: {len(prompts)} prompts but {len(completions)} completions")
    return np.asarray([reward_of_text(c, i) for i, c in enumerate(completions)], dtype=np.float64)


# --------------------------------------------------------------------------- exact distributions


@dataclass
class ExactDistribution:
    """π over the whole outcome space, for each prompt.

    ``logp[i, j]`` = log π(completion j | prompt i); ``probs`` its exponential (rows sum to 1);
    ``rewards[j]`` the reward table (the same for every prompt); ``completions`` the texts.
    """

    prompt_ids: list[str]
    prompts: list[str]
    completions: list[str]
    token_ids: list[tuple[int, ...]]
    logp: np.ndarray
    rewards: np.ndarray

    @property
    def probs(self) -> np.ndarray:
        return np.exp(self.logp)

    def mean_reward(self) -> np.ndarray:
        return self.probs @ self.rewards


def exact_distribution(model, tokenizer=None, prompts: Sequence[dict] | Sequence[str] | None = None,
                       max_new_tokens: int = MAX_NEW_TOKENS, *, precise: bool = True) -> ExactDistribution:
    """Enumerate every completion of every prompt with its exact probability under ``model`` (teacher forcing).

    ``precise``: score with a float64 copy of the model (default); False scores the model as it is.
    """
    import copy

    import torch

    from alignlimits.lm.sampling import score_logprobs

    tokenizer = tokenizer or build_exact_tokenizer()
    if precise:  # float64 copy: probabilities sum to 1 within 1e-12
        model = copy.deepcopy(model).to(device="cpu", dtype=torch.float64)
    items = exact_prompts() if prompts is None else [
        p if isinstance(p, dict) else {"id": str(p), "prompt": str(p)} for p in prompts
    ]
    comps = enumerate_completions(max_new_tokens)
    texts = [p["prompt"] for p in items]
    flat_prompts = [t for t in texts for _ in comps]
    flat_comps = [c for _ in texts for c in comps]
    lp = score_logprobs(model, tokenizer, flat_prompts, flat_comps, batch_size=512)
    logp = np.asarray(lp, dtype=np.float64).reshape(len(texts), len(comps))
    rewards = np.asarray([reward_of_ids(c) for c in comps], dtype=np.float64)
    return ExactDistribution(
        prompt_ids=[p["id"] for p in items], prompts=texts, completions=[completion_text(c) for c in comps],
        token_ids=comps, logp=logp, rewards=rewards,
    )


def exact_kl(policy_model, base_model, prompts=None, tokenizer=None) -> np.ndarray:
    """Exact KL(π‖π0) per prompt, summing over every completion: Σ_y π(y|x) (log π(y|x) − log π0(y|x))."""
    pol = exact_distribution(policy_model, tokenizer, prompts)
    base = exact_distribution(base_model, tokenizer, prompts)
    p = pol.probs
    return np.sum(p * (pol.logp - base.logp), axis=1)


def exact_gain(policy_model, base_model, prompts=None, tokenizer=None) -> np.ndarray:
    """Exact reward gain per prompt: E_π[r] − E_π0[r]."""
    pol = exact_distribution(policy_model, tokenizer, prompts)
    base = exact_distribution(base_model, tokenizer, prompts)
    return pol.mean_reward() - base.mean_reward()
