r"""GRPO through TRL's ``GRPOTrainer``: a thin wrapper that builds its config from our options.

What TRL 1.16's GRPO optimises (so that its point on the KL–reward plane can be read right):

* per prompt, ``num_generations`` completions sampled from the current policy (here at
  temperature 1, top_p 1, top_k 0: the same sampling as everywhere else in alignlimits);
* advantages A_i = r_i − mean of the group, divided by the group's standard deviation
  (``scale_rewards="group"``, TRL's default), the batch's (``"batch"``) or not at all
  (``"none"``, Dr. GRPO).  Dividing by the std rescales the reward against β, so the effective
  KL coefficient is β·std, not β;
* loss per token −min(ρA, clip(ρ, 1±ε)A) + β·k3, with k3 = π0/π − log(π0/π) − 1 **in the loss**
  (not in the reward).  Its gradient is that of the per-token *reverse* KL(π0‖π) at the visited
  states, so the fixed point is not π_β (the optimum of E[r] − β·KL(π‖π0)); it is close to it for
  small KL.  Token losses are aggregated per ``loss_type`` (TRL's default ``"dapo"``: mean over
  all completion tokens of the batch).

So GRPO's β and PPO's β are not the same knob; compare methods only through the KL measured
afresh by the evaluator.  The wrapper additionally logs ``kl_k1_mean``: the mean over the step's
rollouts of Σ_t (log π − log π0), computed from the log-probs TRL already has (no extra pass).

The reward is called with the prompt text exactly as given to the model (the chat-formatted prompt),
the form the base table, the frontier and evaluation score too.  Precision
(:mod:`alignlimits.methods.lora`): the trainable parameters are float32 master weights whatever
dtype the model came in (TRL then builds the reference in float32 too), and on a bf16-capable GPU
TRL's ``bf16=True`` runs the forward passes under autocast.

Options → ``GRPOConfig``: ``beta`` (must be > 0), ``steps`` → ``max_steps``, ``batch_size`` →
``per_device_train_batch_size`` (completions per step, a multiple of ``num_generations``),
``max_new_tokens`` → ``max_completion_length``, LoRA via ``peft_config``, ``keep_checkpoints`` →
``save_total_limit`` (1, or None to keep all); on CPU ``use_cpu=True``, no bf16, never vLLM;
gradient checkpointing off by default (TRL turns it on).  Any other ``GRPOConfig`` field goes
through ``extra``.

Output directory: TRL's ``checkpoint-STEP/`` folders (``save_steps``; only the newest kept unless
``keep_checkpoints``), ``metrics.jsonl`` (one row per logged step: TRL's names plus ``reward_mean``
(= TRL's ``reward``), ``kl_k1_mean`` and ``objective`` = reward_mean − β·kl_k1_mean, the same three
columns as PPO's), ``grpo_options.json`` and the final ``policy/``.  ``resume_from_checkpoint=True``
continues from the last checkpoint (a fresh start when none).
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from alignlimits.errors import AlignLimitsError
from alignlimits.methods.checkpoints import resume_point, truncate_metrics
from alignlimits.methods.lora import autocast_dtype, float32_master_weights, is_peft, lora_config, refuse_stacked_adapters
from alignlimits.methods.progress import step_description, training_progress
from alignlimits.methods.trainer_checks import check_common_options

__all__ = ["GRPOOptions", "TRLReward", "build_grpo_trainer", "grpo_config", "train_grpo"]

SCALE_REWARDS = ("group", "batch", "none")
LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo")


@dataclass
class GRPOOptions:
    """Our options for GRPO; :func:`grpo_config` maps them onto TRL's ``GRPOConfig``."""

    beta: float = 0.04
    """KL coefficient of the k3 term in the loss; must be > 0.  Default: DeepSeekMath's GRPO
    (TRL's own default is 0, i.e. no KL and no reference model, which we refuse)."""
    steps: int = 100
    """Optimizer steps (``max_steps``)."""
    batch_size: int = 16
    """Completions per step (``per_device_train_batch_size``); a multiple of num_generations.
    The number of distinct prompts per step is batch_size / num_generations."""
    num_generations: int = 8
    """Group size G (TRL's default)."""
    num_iterations: int = 1
    """μ: passes over each generation batch (TRL's default 1: on-policy)."""
    learning_rate: float = 1e-6
    """TRL's GRPO default.  Tiny models (the exact task) need far larger values, e.g. 3e-3."""
    lr_scheduler_type: str = "linear"
    epsilon: float = 0.2
    """Clip range of the surrogate."""
    scale_rewards: str = "group"
    """"group" (TRL default: divide by the group std), "batch" or "none" (Dr. GRPO)."""
    loss_type: str = "dapo"
    """TRL's token aggregation: "dapo" (default), "grpo", "dr_grpo", "bnpo", "cispo", "sapo"."""
    max_new_tokens: int = 64
    """``max_completion_length``."""
    use_lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_target_modules: list[str] | str | None = "all-linear"
    output_dir: str = "grpo-run"
    save_steps: int = 50
    """Checkpoint every this many steps (TRL also saves at the end); 0: only at the end."""
    keep_checkpoints: bool = False
    """Keep every checkpoint; by default only the newest (what resuming needs)."""
    seed: int = 0
    report_to: list[str] = field(default_factory=list)
    """"tensorboard" and/or "wandb" (metrics.jsonl is always written)."""
    logging_steps: int = 1
    gradient_checkpointing: bool = False
    progress: bool = True
    """A rich progress bar (steps, last reward and sequence KL)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Any other ``GRPOConfig`` field, passed as is (wins over the mapping above)."""

    def __post_init__(self) -> None:
        if isinstance(self.report_to, str):
            self.report_to = [] if self.report_to in ("", "none") else [self.report_to]
        self.validate()

    def validate(self) -> None:
        def bad(msg: str) -> None:
            raise AlignLimitsError(f"GRPO options: {msg}")

        check_common_options(self, bad, ("steps", "batch_size", "max_new_tokens", "num_iterations"))
        if self.num_generations < 2:
            bad(f"num_generations must be >= 2 (got {self.num_generations}); advantages are group-relative")
        if self.batch_size % self.num_generations:
            bad(f"batch_size {self.batch_size} must be a multiple of num_generations {self.num_generations}")
        if self.scale_rewards not in SCALE_REWARDS:
            bad(f"scale_rewards must be one of {', '.join(SCALE_REWARDS)} (got {self.scale_rewards!r})")
        if self.loss_type not in LOSS_TYPES:
            bad(f"loss_type must be one of {', '.join(LOSS_TYPES)} (got {self.loss_type!r})")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class TRLReward:
    """Adapts our reward callables ``f(prompts, completions) -> array`` to TRL's signature
    ``f(prompts=..., completions=..., **kwargs) -> list[float]`` (TRL names it ``__name__``)."""

    def __init__(self, fn: Callable[[Sequence[str], Sequence[str]], Any], name: str | None = None):
        if not callable(fn):
            raise AlignLimitsError(f"GRPO: reward must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.__name__ = name or getattr(fn, "name", None) or getattr(fn, "__name__", type(fn).__name__)

    def __call__(self, prompts, completions, **kwargs) -> list[float]:
        try:
            out = np.asarray(self.fn(list(prompts), list(completions)), dtype=np.float64).reshape(-1)
        except AlignLimitsError:
            raise
        except Exception as e:  # noqa: BLE001 - re-raised with the reward's name
            raise AlignLimitsError(f"GRPO: reward {self.__name__!r} failed: {type(e).__name__}: {e}") from e
        bad = np.flatnonzero(~np.isfinite(out))
        if bad.size:
            i = int(bad[0])
            raise AlignLimitsError(f"GRPO: reward {self.__name__!r} returned {out[i]} for row {i} (completion {completions[i]!r})")
        return out.tolist()


def grpo_config(options: GRPOOptions):
    """The ``trl.GRPOConfig`` our options stand for (checked against TRL 1.16's field names)."""
    import torch
    from trl import GRPOConfig

    options.validate()
    gpu = torch.cuda.is_available()
    kw: dict[str, Any] = dict(
        output_dir=options.output_dir,
        beta=options.beta,
        max_steps=options.steps,
        per_device_train_batch_size=options.batch_size,
        gradient_accumulation_steps=1,
        num_generations=options.num_generations,
        num_iterations=options.num_iterations,
        learning_rate=options.learning_rate,
        lr_scheduler_type=options.lr_scheduler_type,
        epsilon=options.epsilon,
        scale_rewards=options.scale_rewards,
        loss_type=options.loss_type,
        max_completion_length=options.max_new_tokens,
        # the base distribution: temperature 1, no truncation of the vocabulary
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        min_p=None,
        repetition_penalty=1.0,
        # and nothing inherited from the checkpoint's generation_config (TRL fills unset fields from it)
        generation_kwargs={"typical_p": 1.0, "no_repeat_ngram_size": 0, "num_beams": 1, "min_length": 0},
        disable_dropout=True,
        use_vllm=False,
        use_cpu=not gpu,
        bf16=gpu and autocast_dtype("cuda") is not None,  # autocast over float32 master weights
        fp16=False,
        seed=options.seed,
        data_seed=options.seed,
        logging_steps=options.logging_steps,
        save_strategy="steps" if options.save_steps else "no",
        save_steps=options.save_steps or options.steps,
        save_total_limit=None if options.keep_checkpoints else 1,
        save_only_model=False,  # optimizer, scheduler and RNG too, for resumption
        report_to=list(options.report_to) or "none",
        disable_tqdm=True,  # train_grpo shows our rich bar instead
        log_completions=False,
        dataloader_num_workers=0,
    )
    # transformers 5.x renamed gradient_checkpointing (TRL defaults it to True) to activation_checkpointing
    names = {f.name for f in dataclasses.fields(GRPOConfig)}
    ckpt_name = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    kw[ckpt_name] = options.gradient_checkpointing
    kw.update(options.extra)
    return GRPOConfig(**kw)


def _ensure_loadable(model, options: GRPOOptions) -> None:
    """TRL builds the reference model (full fine-tuning) by loading ``model.config._name_or_path``
    again, so the reference is the model *as saved there*, not the instance passed in; a model
    built in memory (the exact task) has no path, so save it once under the run and point there.
    (With LoRA the reference is the passed model with adapters disabled.)"""
    name = getattr(model.config, "_name_or_path", "") or ""
    if name and Path(name).is_dir():
        return
    if name and not Path(name).exists():
        return  # a hub id: TRL loads it from there
    dest = Path(options.output_dir) / "reference-model"
    if not (dest / "config.json").is_file():
        dest.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(dest)
    model.config._name_or_path = str(dest)


def _metrics_callback(output_dir: Path, beta: float):
    from transformers import TrainerCallback

    class MetricsJSONL(TrainerCallback):
        """Appends each log row to ``metrics.jsonl``: TRL's metric names, plus the columns PPO's rows
        share (``reward_mean``, ``kl_k1_mean``, ``objective`` = reward_mean − β·kl_k1_mean)."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or "loss" not in logs and "reward" not in logs:
                return
            row = {"step": state.global_step, **{k: v for k, v in logs.items() if isinstance(v, (int, float))}}
            if "reward" in row and "kl_k1_mean" in row:
                row["reward_mean"] = row["reward"]
                row["objective"] = row["reward"] - beta * row["kl_k1_mean"]
            with open(output_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")

    return MetricsJSONL()


def _progress_callback(bar, beta: float):
    from transformers import TrainerCallback

    class RichProgress(TrainerCallback):
        """Drives the rich bar from the trainer's steps and log rows."""

        def on_train_begin(self, args, state, control, **kwargs):
            self.task = bar.add_task(step_description("GRPO", beta), total=state.max_steps, completed=state.global_step)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "reward" in logs:
                bar.update(self.task, description=step_description("GRPO", beta, logs["reward"], logs.get("kl_k1_mean")))

        def on_step_end(self, args, state, control, **kwargs):
            bar.update(self.task, completed=state.global_step)

    return RichProgress()


def _trainer_class():
    from trl import GRPOTrainer

    class AlignLimitsGRPOTrainer(GRPOTrainer):
        """TRL's GRPOTrainer plus one logged metric, ``kl_k1_mean``: the rollouts' mean sequence
        log π − log π0, from the log-probs of the loss pass (on-policy when num_iterations = 1)."""

        def _get_per_token_logps_and_entropies(self, *args, **kwargs):
            out = super()._get_per_token_logps_and_entropies(*args, **kwargs)
            self._al_last_logps = out[0]
            return out

        def _compute_loss(self, model, inputs):
            self._al_last_logps = None
            loss = super()._compute_loss(model, inputs)
            lp, ref = self._al_last_logps, inputs.get("ref_per_token_logps")
            if lp is not None and ref is not None and lp.shape == ref.shape:
                import torch

                with torch.no_grad():
                    mask = inputs["completion_mask"].to(lp.dtype)
                    k1 = ((lp.detach() - ref) * mask).sum(-1)
                    k1 = self.accelerator.gather(k1).float().mean().item()
                mode = "train" if self.model.training else "eval"
                self._metrics[mode]["kl_k1_mean"].append(k1)
            return loss

    return AlignLimitsGRPOTrainer


def build_grpo_trainer(
    options: GRPOOptions,
    model,
    tokenizer,
    reward_fn: Callable[[Sequence[str], Sequence[str]], Any],
    prompts: Sequence[str],
    *,
    plain: bool = False,
):
    """A ready ``GRPOTrainer`` (ours, or TRL's own class when ``plain``, for the benchmark).

    ``model``: a transformers causal LM (instance; its trainable parameters are cast to float32) or a
    path/id (TRL loads it in float32); ``tokenizer`` its tokenizer; ``prompts``: the training prompts
    as text given verbatim to the model (chat template applied), which the reward sees too."""
    from datasets import Dataset

    prompts = list(prompts)
    if not prompts:
        raise AlignLimitsError("GRPO: no training prompts")
    refuse_stacked_adapters(model, options, "GRPO")
    if not isinstance(model, str) and not options.use_lora:  # with use_lora TRL adds float32 adapters
        float32_master_weights(model)
        if not is_peft(model):
            _ensure_loadable(model, options)
    out = Path(options.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if plain:
        from trl import GRPOTrainer as cls
    else:
        cls = _trainer_class()
    trainer = cls(
        model=model,
        reward_funcs=[TRLReward(reward_fn)],
        args=grpo_config(options),
        train_dataset=Dataset.from_dict({"prompt": prompts}),
        processing_class=tokenizer,
        peft_config=lora_config(options) if options.use_lora else None,
        callbacks=None if plain else [_metrics_callback(out, options.beta)],
    )
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # it prints every log dict when tqdm is off
    return trainer


def train_grpo(
    options: GRPOOptions,
    model,
    tokenizer,
    reward_fn: Callable[[Sequence[str], Sequence[str]], Any],
    prompts: Sequence[str],
    resume_from_checkpoint: bool | str | None = None,
):
    """Train with GRPO and return the trained model (a ``PeftModel`` with LoRA).

    ``resume_from_checkpoint``: True continues from the last ``checkpoint-STEP`` in
    ``output_dir`` (a fresh start when there is none), a path from that checkpoint."""
    out = Path(options.output_dir)
    ckpt = resume_point(out, resume_from_checkpoint, "GRPO")
    trainer = build_grpo_trainer(options, model, tokenizer, reward_fn, prompts)
    done = json.loads((ckpt / "trainer_state.json").read_text())["global_step"] if ckpt else 0
    truncate_metrics(out / "metrics.jsonl", done)
    (out / "grpo_options.json").write_text(json.dumps(options.to_dict(), indent=2))
    with training_progress(options.progress) as bar, warnings.catch_warnings():
        # TRL 1.16 calls transformers' deprecated is_gradient_checkpointing every step
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        trainer.add_callback(_progress_callback(bar, options.beta))
        trainer.train(resume_from_checkpoint=str(ckpt) if ckpt else None)
    final = out / "policy"
    trainer.save_model(str(final))
    if hasattr(tokenizer, "save_pretrained"):
        tokenizer.save_pretrained(str(final))
    return trainer.model
