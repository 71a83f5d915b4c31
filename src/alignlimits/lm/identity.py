"""Which tokenizer made a sample table: recorded with the base samples, checked before a policy is measured
against them (KL over token sequences of two vocabularies is meaningless).

The identity is ``name_or_path``, ``vocab_size`` (``len(tokenizer)``: added tokens included) and
``vocab_sha256``, a hash of the token → id map; two tokenizers agree when size and hash agree (the name may
differ: a hub id, a local copy, a fine-tuned policy's folder).
"""

from __future__ import annotations

import hashlib
import json

from alignlimits.errors import AlignLimitsError

TABLE_KEY = "tokenizer"
"""The key of the identity in a sample table's metadata (``DataFrame.attrs``, stored in its Parquet schema)."""


def tokenizer_identity(tokenizer) -> dict:
    """``{"name_or_path", "vocab_size", "vocab_sha256"}`` of a transformers tokenizer."""
    vocab = sorted(tokenizer.get_vocab().items())
    digest = hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode()).hexdigest()
    return {"name_or_path": str(getattr(tokenizer, "name_or_path", "") or ""), "vocab_size": len(tokenizer),
            "vocab_sha256": digest}


def check_tokenizer(recorded: dict | None, tokenizer, source: str) -> str | None:
    """Refuse (one line) a tokenizer other than the one ``source``'s samples recorded; a note when the table
    records none (tables written before the identity was recorded: they load, unverified)."""
    if not recorded:
        return f"{source} does not record its tokenizer, so it cannot be checked against the policy's"
    mine = tokenizer_identity(tokenizer)
    if (recorded.get("vocab_size"), recorded.get("vocab_sha256")) != (mine["vocab_size"], mine["vocab_sha256"]):
        raise AlignLimitsError(
            f"{source} was sampled with tokenizer {recorded.get('name_or_path') or '?'} ({recorded.get('vocab_size')} "
            f"tokens), not the policy's {mine['name_or_path'] or '?'} ({mine['vocab_size']} tokens): KL over two "
            "vocabularies is meaningless; sample the policy's own base model")
    return None
