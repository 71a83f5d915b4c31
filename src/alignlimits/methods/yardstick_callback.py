"""``YardstickCallback``: a :class:`~alignlimits.methods.measure.Yardstick` inside any ``transformers.Trainer``
(TRL's GRPO and RLOO in the study; :class:`alignlimits.integrations.trl.FrontierCallback` builds on it for a
user's own run). PPO, which is not a ``Trainer``, calls the yardstick itself. Under a multi-process launch rank 0
measures and writes, and its decisions (measure now, stop) go to every process."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from transformers import TrainerCallback

from alignlimits.errors import AlignLimitsError
from alignlimits.methods import distributed
from alignlimits.methods.measure import Yardstick, adapters_off, scalars

__all__ = ["YardstickCallback"]

log = logging.getLogger("alignlimits")


class YardstickCallback(TrainerCallback):
    """``yardstick`` inside a ``transformers.Trainer``: measure the policy as given (a fresh run), every
    ``yardstick.every`` optimizer steps and after the last, each row into ``OUTPUT_DIR/alignlimits.jsonl`` and
    its scalars into the trainer's next log; stop training when the yardstick says so. π0: ``base_model``, else
    the trainer's reference model (:meth:`attach`), else a LoRA policy with its adapters off."""

    def __init__(self, yardstick: Yardstick | None, base_model=None, output_dir=None):
        self.yardstick, self.base_model, self.output_dir = yardstick, base_model, output_dir
        self.trainer, self._pending, self._step_start, self._step_seconds = None, None, None, []

    def attach(self, trainer):
        """Put the callback first in ``trainer``'s line, so every logger sees its numbers; returns it."""
        callbacks = trainer.callback_handler.callbacks
        if self in callbacks:
            callbacks.remove(self)
        callbacks.insert(0, self)
        self.trainer = trainer
        return self

    def on_train_begin(self, args, state, control, model=None, processing_class=None, **kwargs):
        if distributed.is_main():
            self.yardstick.start(self._out(args), state.global_step)
        if state.global_step == 0:  # the path starts at the policy as given
            self._measure(args, state, control, model, processing_class)
            state.log_history.append({**(self._pending or {}), "step": 0})
            self._pending = None

    def on_step_begin(self, args, state, control, **kwargs):
        self._step_start = time.perf_counter()

    def on_step_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        if self._step_start is not None:
            self._step_seconds.append(time.perf_counter() - self._step_start)
        if distributed.from_main(self.yardstick.due(state.global_step, last=state.global_step >= state.max_steps)):
            self._measure(args, state, control, model, processing_class)
            control.should_log = True

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self._pending and logs is not None:
            logs.update(self._pending)
            if state.log_history:
                state.log_history[-1].update(self._pending)
            self._pending = None

    def on_train_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        """A run stopped early (time budget, another callback) gets its last point too."""
        if distributed.from_main(self.yardstick.due(state.global_step, last=True)):
            self._measure(args, state, control, model, processing_class)
            state.log_history.append({**(self._pending or {}), "step": state.global_step})
            self._pending = None

    def _out(self, args) -> Path:
        out = Path(self.output_dir or args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        return out

    def _measure(self, args, state, control, model, tokenizer) -> None:
        step_seconds = sum(self._step_seconds) / len(self._step_seconds) if self._step_seconds else None
        self._step_seconds = []
        row = self.yardstick.record(model, tokenizer, self._base(model), state.global_step, self._out(args),
                                    step_seconds=step_seconds) if distributed.is_main() else None
        self._pending = scalars(row) if row else None
        stop = distributed.from_main(row.get("stop") if row else None)
        if stop:
            control.should_training_stop = True
            log.warning("alignlimits: stopping training: %s", stop)

    def _base(self, model):
        from alignlimits.methods.lora import is_peft

        if self.base_model is not None:
            return self.base_model
        ref = getattr(self.trainer, "ref_model", None)
        if ref is not None:
            return ref
        if is_peft(model):
            return adapters_off(model)
        self.base_model = self._load_base(model)
        return self.base_model

    def _load_base(self, model):
        raise AlignLimitsError("no π0 for the measurement: give base_model=..., or attach the callback to a "
                               "trainer with a reference model")
