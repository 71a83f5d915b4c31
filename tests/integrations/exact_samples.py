"""The yardstick tests' data: the exact task's prompts and base samples (a module of its own name: the tests import it,
and ``conftest`` is a name every test folder has)."""

import pandas as pd

from alignlimits.lm.exact import build_exact_model, exact_prompts, exact_reward
from alignlimits.lm.identity import TABLE_KEY, tokenizer_identity
from alignlimits.samples.tables import validate

PROMPTS = [p["prompt"] for p in exact_prompts()]
IDS = [p["id"] for p in exact_prompts()]


def base_samples(n: int = 64, seed: int = 1):
    """A sample table of the exact task's base model: ``n`` samples of each of its 12 prompts, reward ``exact``,
    with its tokenizer recorded as ``alignlimits sample`` records it."""
    from alignlimits.lm.sampling import sample_completions

    model, tok = build_exact_model(0)
    drawn = sample_completions(model, tok, PROMPTS, n, 3, seed=seed)
    rows = [(IDS[ps.prompt_index], PROMPTS[ps.prompt_index], text) for ps in drawn for text in ps.texts]
    frame = pd.DataFrame(rows, columns=["prompt_id", "prompt", "completion"])
    frame["exact"] = exact_reward(list(frame["prompt"]), list(frame["completion"]))
    frame.attrs[TABLE_KEY] = tokenizer_identity(tok)
    return validate(frame, ["exact"], "exact base samples")
