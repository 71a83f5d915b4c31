"""The options every trainer shares (PPO's :class:`~alignlimits.methods.ppo_config.PPOConfig` and the TRL-based
trainers' :class:`~alignlimits.methods.trl_common.TRLOptions`), declared and checked once.

β, the learning rate, the step count, the batch size and the output folder have no default here: each method
gives its own (with the source it follows) where it derives from :class:`TrainerOptions`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, NoReturn

from alignlimits.errors import AlignLimitsError, check_beta
from alignlimits.methods.distributed import check_split

REPORT_TO = ("tensorboard", "wandb")


@dataclass(kw_only=True)
class TrainerOptions:
    """The fields and checks every trainer shares (keyword-only)."""

    METHOD: ClassVar[str]
    """The method's name in messages, the progress bar and the options file."""
    COUNTS: ClassVar[tuple[str, ...]] = ("steps", "batch_size")
    """Fields that must be ≥ 1."""

    beta: float
    """KL coefficient β of E[r] − β·KL(π‖π0); must be > 0 (the KL penalty defines the target policy π_β)."""
    learning_rate: float
    steps: int
    batch_size: int
    output_dir: str
    """Checkpoints (``checkpoint-STEP/``), ``metrics.jsonl``, ``stop.json`` and the final ``policy/``."""
    seed: int = 0
    use_lora: bool = False
    """Train LoRA adapters (peft) instead of all weights; the reference is then the base model with adapters
    disabled, so no second copy is kept in memory."""
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    """Dropout is 0 so that log π is deterministic (the per-token KL needs it)."""
    lora_target_modules: list[str] | str | None = "all-linear"
    """peft ``target_modules``; ``"all-linear"`` adapts every linear layer but the LM head."""
    save_steps: int = 50
    """Checkpoint every this many steps (and always at the end); 0: only at the end."""
    keep_checkpoints: bool = False
    """Keep every checkpoint; by default only the newest is kept (what resuming needs: a full-weight
    checkpoint holds the weights and twice as much Adam state)."""
    report_to: list[str] = field(default_factory=list)
    """Extra loggers: ``"tensorboard"`` and/or ``"wandb"`` (metrics.jsonl is always written)."""
    progress: bool = True
    """Show a rich progress bar."""
    baselines: dict[str, float] | None = None
    """Base level b(x) of each training prompt (text → mean reward of a few base samples): each log row then
    carries ``objective_rel`` and its standard error (:mod:`alignlimits.methods.stopping`). PPO also subtracts it
    from the returns, a per-prompt baseline that removes the prompts' difficulty from the advantages (a shift that
    depends on x only leaves π_β unchanged)."""
    max_minutes: float | None = None
    """Stop at this training time (summed over resumed runs); ``stop.json`` says why training stopped."""
    stop_at_ceiling: float | None = None
    """Stop once the ``objective_rel`` curve has converged against this ceiling J*(β) (the rule of
    :mod:`alignlimits.methods.convergence`; needs ``baselines``)."""

    def __post_init__(self) -> None:
        if isinstance(self.report_to, str):
            self.report_to = [] if self.report_to in ("", "none") else [self.report_to]
        self.validate()

    def invalid(self, msg: str) -> NoReturn:
        raise AlignLimitsError(f"{self.METHOD} options: {msg}")

    def validate(self) -> None:
        """Raise :class:`AlignLimitsError` with a one-line message for any impossible value."""
        check_beta(self.beta, f"{self.METHOD} options: beta")
        for name in self.COUNTS:
            if int(getattr(self, name)) < 1:
                self.invalid(f"{name} must be >= 1 (got {getattr(self, name)})")
        check_split(int(self.batch_size), f"{self.METHOD} batch_size")  # sizes are global: each process takes its share
        if not self.learning_rate > 0:
            self.invalid(f"learning_rate must be > 0 (got {self.learning_rate})")
        if self.save_steps < 0:
            self.invalid(f"save_steps must be >= 0 (got {self.save_steps})")
        unknown = set(self.report_to) - set(REPORT_TO)
        if unknown:
            self.invalid(f"unknown report_to {sorted(unknown)}; use 'tensorboard' and/or 'wandb'")
        if self.stop_at_ceiling is not None and not self.baselines:
            self.invalid("stop_at_ceiling reads the objective relative to each prompt's base level: give baselines")
        try:
            self.stop_rule()
        except AlignLimitsError as e:
            self.invalid(str(e))

    def stop_rule(self):
        from alignlimits.methods.stopping import StopRule

        return StopRule(self.max_minutes, self.stop_at_ceiling)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
