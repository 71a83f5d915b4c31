r"""What the TRL-based trainers (:mod:`~alignlimits.methods.grpo`, :mod:`~alignlimits.methods.rloo`,
:mod:`~alignlimits.methods.dpo`) share: their common options, the ``*Config`` fields they set alike,
the model set-up, the callbacks and the training run.

* Options → config: ``steps`` → ``max_steps``, ``batch_size`` (global) → ``per_device_train_batch_size`` (its
  share per process under a launcher, where accelerate runs the trainer data-parallel or under DeepSpeed), LoRA
  via ``peft_config``, ``keep_checkpoints`` → ``save_total_limit`` (1, or None to keep all); on CPU
  ``use_cpu=True``, on a bf16-capable GPU ``bf16=True`` (autocast over float32 master weights), dropout
  off, gradient checkpointing off by default (TRL turns it on); the online methods sample at the base
  distribution (temperature 1, top_p 1, top_k 0, never vLLM).  Any other field goes through ``extra``.
* The model: trainable parameters as float32 master weights; the reference is the base model as loaded
  (a model built in memory is saved once under ``output_dir/reference-model``, see
  :func:`ensure_loadable`), or, with LoRA, the passed model with adapters disabled.
* The output directory: TRL's ``checkpoint-STEP/`` folders (the newest kept unless ``keep_checkpoints``),
  ``metrics.jsonl`` (one row per logged step; with a reward, also ``reward_mean``, ``kl_k1_mean`` and
  ``objective_absolute`` = reward_mean − β·kl_k1_mean, the columns PPO's rows have), ``<method>_options.json``
  and the final ``policy/``, written by rank 0.  ``resume_from_checkpoint=True`` continues from the last checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from alignlimits.errors import AlignLimitsError
from alignlimits.methods import distributed
from alignlimits.methods.checkpoints import resume_point, truncate_metrics
from alignlimits.methods.lora import (
    autocast_dtype,
    float32_master_weights,
    is_peft,
    lora_config,
    refuse_stacked_adapters,
)
from alignlimits.methods.progress import RunningKL, step_description, training_progress
from alignlimits.methods.stopping import StepRecorder, StopRule, read_rows, write_stop
from alignlimits.methods.trainer_options import TrainerOptions

__all__ = [
    "TRLOptions",
    "TRLReward",
    "build_trl_trainer",
    "check_group_size",
    "ensure_loadable",
    "log_sequence_kl",
    "metrics_callback",
    "progress_callback",
    "prompt_fields",
    "run_trl_training",
    "sampling_fields",
    "trl_config",
]


@dataclass(kw_only=True)
class TRLOptions(TrainerOptions):
    """The options every TRL-based trainer takes alike, beyond those every trainer shares."""

    lr_scheduler_type: str = "linear"
    logging_steps: int = 1
    gradient_checkpointing: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    """Any other field of TRL's config, passed as is (wins over the mapping of the options)."""


def check_group_size(options: Any, why: str) -> None:
    """``num_generations`` ≥ 2 completions per prompt (``why``: what needs two), dividing ``batch_size``."""
    if options.num_generations < 2:
        options.invalid(f"num_generations must be >= 2 (got {options.num_generations}); {why}")
    if options.batch_size % options.num_generations:
        options.invalid(
            f"batch_size {options.batch_size} must be a multiple of num_generations {options.num_generations}"
        )


class TRLReward:
    """Adapts our reward callables ``f(prompts, completions) -> array`` to TRL's signature
    ``f(prompts=..., completions=..., **kwargs) -> list[float]`` (TRL names it ``__name__``);
    ``method`` names the trainer in its error messages."""

    def __init__(self, fn: Callable[[Sequence[str], Sequence[str]], Any], name: str | None = None, *, method: str):
        if not callable(fn):
            raise AlignLimitsError(f"{method}: reward must be callable, got {type(fn).__name__}")
        self.fn, self.method, self.recorder = fn, method, None
        self.__name__ = name or getattr(fn, "name", None) or getattr(fn, "__name__", type(fn).__name__)

    def __call__(self, prompts, completions, **kwargs) -> list[float]:
        try:
            out = np.asarray(self.fn(list(prompts), list(completions)), dtype=np.float64).reshape(-1)
        except AlignLimitsError:
            raise
        except Exception as e:  # noqa: BLE001 - re-raised with the reward's name
            raise AlignLimitsError(f"{self.method}: reward {self.__name__!r} failed: {type(e).__name__}: {e}") from e
        bad = np.flatnonzero(~np.isfinite(out))
        if bad.size:
            i = int(bad[0])
            raise AlignLimitsError(
                f"{self.method}: reward {self.__name__!r} returned {out[i]} for row {i} (completion {completions[i]!r})"
            )
        if self.recorder is not None:
            self.recorder.rewards(list(prompts), out.tolist())
        return out.tolist()


def prompt_fields(
    method: str, reward_fn: Callable[[Sequence[str], Sequence[str]], Any], prompts: Sequence[str]
) -> dict[str, Any]:
    """The trainer arguments of the online methods (GRPO, RLOO): ``reward_fn`` as a :class:`TRLReward` and
    the training ``prompts`` (text given verbatim to the model, which the reward sees too) as a dataset."""
    from datasets import Dataset

    prompts = list(prompts)
    if not prompts:
        raise AlignLimitsError(f"{method}: no training prompts")
    return dict(
        reward_funcs=[TRLReward(reward_fn, method=method)],
        train_dataset=Dataset.from_dict({"prompt": prompts}),
    )


def sampling_fields(options: Any) -> dict[str, Any]:
    """The config fields of the online methods (GRPO, RLOO): groups of completions sampled at the base
    distribution, and nothing else inherited from the checkpoint's generation_config (TRL fills unset
    fields from it)."""
    return dict(
        num_generations=options.num_generations,
        num_iterations=options.num_iterations,
        epsilon=options.epsilon,
        max_completion_length=options.max_new_tokens,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        min_p=None,
        repetition_penalty=1.0,
        generation_kwargs={"typical_p": 1.0, "no_repeat_ngram_size": 0, "num_beams": 1, "min_length": 0},
        use_vllm=False,
        log_completions=False,
    )


def trl_config(config_cls: type, options: TRLOptions, **fields: Any):
    """``config_cls(...)`` (a TRL ``*Config``) from the fields every method sets alike, then the method's
    ``fields``, then ``options.extra`` (checked against TRL 1.16's field names)."""
    import torch

    options.validate()
    gpu = torch.cuda.is_available()
    kw: dict[str, Any] = dict(
        output_dir=options.output_dir,
        beta=options.beta,
        max_steps=options.steps,
        per_device_train_batch_size=distributed.check_split(options.batch_size, f"{options.METHOD} batch_size"),
        gradient_accumulation_steps=1,
        learning_rate=options.learning_rate,
        lr_scheduler_type=options.lr_scheduler_type,
        disable_dropout=True,
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
        disable_tqdm=True,  # run_trl_training shows our rich bar instead
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,  # every trainable weight takes part in the loss; the search is a pass per step
    )
    # transformers 5.x renamed gradient_checkpointing (TRL defaults it to True) to activation_checkpointing
    names = {f.name for f in dataclasses.fields(config_cls)}
    kw["activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"] = (
        options.gradient_checkpointing
    )
    kw.update(fields)
    kw.update(options.extra)
    return config_cls(**kw)


def ensure_loadable(model, options: TRLOptions) -> None:
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
    if distributed.is_main() and not (dest / "config.json").is_file():
        dest.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(dest)
    distributed.barrier()  # saved before any process loads it
    model.config._name_or_path = str(dest)


def metrics_callback(output_dir: Path, beta: float, recorder: StepRecorder | None = None, rule: StopRule | None = None):
    import time

    from transformers import TrainerCallback

    class MetricsJSONL(TrainerCallback):
        """Appends each log row to ``metrics.jsonl``: TRL's metric names, plus the columns PPO's rows
        share (``reward_mean``, ``kl_k1_mean``, ``objective_absolute`` = reward_mean − β·kl_k1_mean, ``objective_rel``
        and its se with baselines, ``seconds`` since the last row); applies the stop rule and writes
        ``stop.json``."""

        def on_train_begin(self, args, state, control, **kwargs):
            self.rows, self.clock, self.reason = read_rows(output_dir), time.perf_counter(), None

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or "loss" not in logs and "reward" not in logs:
                return
            now = time.perf_counter()
            row = {"step": state.global_step, **{k: v for k, v in logs.items() if isinstance(v, (int, float))},
                   "seconds": now - self.clock}
            self.clock = now
            if "reward" in row and "kl_k1_mean" in row:
                row["reward_mean"] = row["reward"]
                row["objective_absolute"] = row["reward"] - beta * row["kl_k1_mean"]
            if recorder is not None:
                row.update(recorder.flush())
            if state.is_world_process_zero:
                with open(output_dir / "metrics.jsonl", "a") as f:
                    f.write(json.dumps(row) + "\n")
            self.rows.append(row)
            # rank 0's clock decides for every process, which must stop at the same step
            self.reason = distributed.from_main(rule.reason(self.rows) if rule is not None else None)
            if self.reason:
                control.should_training_stop = True

        def on_train_end(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                write_stop(output_dir, self.reason or "steps", state.global_step)

    return MetricsJSONL()


def _step_text(method: str, beta: float, logs: Mapping[str, Any], kl: RunningKL) -> str | None:
    """The bar's text after a log row: its reward and sequence KL, or DPO's reward margin (DPO logs no
    reward); None for a row with neither."""
    if "reward" in logs:
        return step_description(method, beta, logs["reward"], kl)
    if "rewards/margins" in logs:
        return f"{step_description(method, beta)} margin {logs['rewards/margins']:.3f}"
    return None


def progress_callback(bar, method: str, beta: float):
    from transformers import TrainerCallback

    class RichProgress(TrainerCallback):
        """Drives the rich bar from the trainer's steps and log rows."""

        def on_train_begin(self, args, state, control, **kwargs):
            self.task = bar.add_task(step_description(method, beta), total=state.max_steps, completed=state.global_step)
            self.kl = RunningKL()

        def on_log(self, args, state, control, logs=None, **kwargs):
            self.kl.add((logs or {}).get("kl_k1_mean"))
            text = _step_text(method, beta, logs or {}, self.kl)
            if text is not None:
                bar.update(self.task, description=text)

        def on_step_end(self, args, state, control, **kwargs):
            bar.update(self.task, completed=state.global_step)

    return RichProgress()


def log_sequence_kl(trainer, logps, ref_logps, completion_mask) -> None:
    """Log ``kl_k1_mean``: the batch mean of the sequence KL estimate Σ_t (log π − log π0)(y_t) over the
    completion tokens, from per-token log-probs the trainer already computed (no extra pass)."""
    import torch

    with torch.no_grad():
        k1 = ((logps.detach() - ref_logps) * completion_mask.to(logps.dtype)).sum(-1)
        k1 = trainer.accelerator.gather(k1).float()
    recorder = getattr(trainer, "_al_recorder", None)
    if recorder is not None:
        recorder.sequence_kl(k1.tolist())
    k1 = k1.mean().item()
    trainer._metrics["train" if trainer.model.training else "eval"]["kl_k1_mean"].append(k1)


def build_trl_trainer(trainer_cls: type, options: TRLOptions, model, tokenizer, *, metrics: bool = True, **kwargs):
    """``trainer_cls(model=..., processing_class=tokenizer, peft_config=..., **kwargs)`` on ``model`` set
    up as the module docstring says, writing ``metrics.jsonl`` unless not ``metrics``.

    ``model``: a transformers causal LM (instance; its trainable parameters are cast to float32) or a
    path/id (TRL loads it in float32)."""
    from transformers.trainer_callback import PrinterCallback

    refuse_stacked_adapters(model, options, options.METHOD)
    if not isinstance(model, str) and not options.use_lora:  # with use_lora TRL adds float32 adapters
        float32_master_weights(model)
        if not is_peft(model):
            ensure_loadable(model, options)
    out = Path(options.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    recorder = StepRecorder(options.baselines, options.beta) if options.baselines and metrics else None
    for reward in kwargs.get("reward_funcs") or []:
        if isinstance(reward, TRLReward):
            reward.recorder = recorder
    trainer = trainer_cls(
        model=model,
        processing_class=tokenizer,
        peft_config=lora_config(options) if options.use_lora else None,
        callbacks=[metrics_callback(out, options.beta, recorder, options.stop_rule())] if metrics else None,
        **kwargs,
    )
    trainer._al_recorder = recorder
    trainer.remove_callback(PrinterCallback)  # it prints every log dict when tqdm is off
    return trainer


def run_trl_training(
    options: TRLOptions,
    build: Callable[[], Any],
    tokenizer,
    resume_from_checkpoint: bool | str | None,
    files: Mapping[str, str] | None = None,
    callbacks: Sequence = (),
):
    """Train the trainer ``build()`` returns and return its model, saved with ``tokenizer`` in ``policy/``.

    ``resume_from_checkpoint``: True continues from the last ``checkpoint-STEP`` in ``output_dir`` (a
    fresh start when there is none), a path from that checkpoint; checked before ``build`` runs.
    ``files``: more files to write into ``output_dir`` (name → text) before training. ``callbacks``: callbacks
    put first in line by their ``attach(trainer)`` (a :class:`~alignlimits.methods.yardstick_callback.YardstickCallback`)."""
    out = Path(options.output_dir)
    ckpt = resume_point(out, resume_from_checkpoint, options.METHOD)
    trainer = build()
    for callback in reversed(callbacks):
        callback.attach(trainer)
    done = json.loads((ckpt / "trainer_state.json").read_text())["global_step"] if ckpt else 0
    distributed.barrier()  # every process has read the run's files before rank 0 changes them
    if distributed.is_main():
        truncate_metrics(out / "metrics.jsonl", done)
        (out / f"{options.METHOD.lower()}_options.json").write_text(json.dumps(options.to_dict(), indent=2))
        for name, text in (files or {}).items():
            (out / name).write_text(text)
    with training_progress(options.progress and distributed.is_main()) as bar, warnings.catch_warnings():
        # TRL 1.16 calls transformers' deprecated is_gradient_checkpointing every step
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        trainer.add_callback(progress_callback(bar, options.METHOD, options.beta))
        trainer.train(resume_from_checkpoint=str(ckpt) if ckpt else None)
    final = out / "policy"
    trainer.save_model(str(final))  # on every process: accelerate gathers the weights, rank 0 writes them
    if hasattr(tokenizer, "save_pretrained") and distributed.is_main():
        tokenizer.save_pretrained(str(final))
    distributed.barrier()
    return trainer.model
