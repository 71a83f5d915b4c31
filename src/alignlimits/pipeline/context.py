"""The study context: a run's task, base model and reward models, resolved once at the edge.

The CLI (or a config file) names things with strings; :meth:`StudyContext.resolve` turns them into
objects once, and everything below (sampling, trainers, evaluation, the hacking study, the report
data) receives those objects. The model and the reward models load on first use, so a finished
run that is resumed never loads them, and a run loads each of them once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from alignlimits.errors import AlignLimitsError
from alignlimits.lm.engines import DEFAULT_ENGINE

TABLE_COLUMNS = ("prompt_id", "sample_idx", "prompt", "completion", "completion_ids", "logp_base", "n_tokens",
                 "truncated", "seed", "split")


@dataclass
class StudyContext:
    """Task and prompts, the base model and tokenizer (``lm``), the reward models (``rewards``)."""

    task: object
    model_spec: str
    reward_specs: list[str]
    device: str | None = None
    dtype: str | None = None
    engine: str = DEFAULT_ENGINE
    """Sampling engine of the base samples, resolved: hf or vllm (:func:`alignlimits.lm.engines.choose_engine` ran once, in
    :meth:`resolve`)."""
    engine_options: dict = field(default_factory=dict)
    """Passed to ``vllm.LLM``: tensor_parallel_size, data_parallel_size, distributed_executor_backend."""
    _sampler: object = field(default=None, init=False, repr=False)

    @classmethod
    def resolve(cls, task: str, *, model: str | None = None, rewards: list[str] | None = None,
                prompts: str | None = None, dataset: str | None = None, device: str | None = None,
                dtype: str | None = None, engine: str = DEFAULT_ENGINE, engine_options: dict | None = None) -> "StudyContext":
        from alignlimits.lm.engines import choose_engine
        from alignlimits.lm.tasks import get_task

        resolved = get_task(task, prompts_file=prompts, dataset=dataset)
        chars = sum(len(p["text"]) for p in resolved.prompts) / max(len(resolved.prompts), 1)
        chosen = choose_engine(engine, mean_prompt_chars=chars)
        options = {k: v for k, v in (engine_options or {}).items() if v is not None}
        if options and chosen != "vllm":
            flag = "--" + next(iter(options)).replace("_", "-").replace("executor-", "")
            raise AlignLimitsError(f"{flag} is a vLLM option but the engine is {chosen!r}; add --engine vllm or drop it")
        return cls(task=resolved, model_spec=model or resolved.default_model,
                   reward_specs=list(rewards) if rewards else list(resolved.default_rewards), device=device, dtype=dtype,
                   engine=chosen, engine_options=options)

    @cached_property
    def lm(self):
        """The base model π0 with its tokenizer (:class:`alignlimits.lm.models.LoadedModel`)."""
        from alignlimits.lm.models import load_model

        return load_model(self.model_spec, device=self.device, dtype=self.dtype, chat=self.task.chat)

    def sampler(self, seed: int = 0):
        """The sampling engine on the base model, started once (each request carries its own seed)."""
        from alignlimits.lm.engines import make_engine

        if self._sampler is None:
            self._sampler = make_engine(self.engine, self.lm, seed=seed, options=self.engine_options)
        return self._sampler

    def close_sampler(self) -> None:
        """Free the base engine (vLLM holds its processes and KV cache until closed; training does not need it)."""
        if self._sampler is not None:
            self._sampler.close()
        self._sampler = None

    @cached_property
    def rewards(self) -> list:
        """The reward models, in the order given; the first is the one aligned to."""
        from alignlimits.lm.rewards import load_rewards

        loaded = load_rewards(self.reward_specs, device=self.device)
        clash = [r.name for r in loaded if r.name in TABLE_COLUMNS]
        if clash:
            raise AlignLimitsError(f"reward column {clash[0]!r} would overwrite a sample-table column; rename the reward")
        return loaded

    @property
    def reward_col(self) -> str:
        return self.rewards[0].name

    def prompts(self, split: str = "all", limit: int | None = None):
        """The task restricted to a split and the first ``limit`` prompts."""
        return self.task.split(split).limit(limit)

    def model_texts(self, prompts: list[dict]) -> list[str]:
        """The exact texts given to the model (chat template applied): every reward call sees these too."""
        return [self.lm.format_prompt(p["text"]) for p in prompts]
