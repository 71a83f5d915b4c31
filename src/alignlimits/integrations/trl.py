r"""``FrontierCallback``: a training run measured against its limit while it runs, inside any ``transformers.Trainer``
(TRL's ``GRPOTrainer``, ``RLOOTrainer``, ``DPOTrainer``, ...).

Built once from the base model's samples (a sample table or a run directory: the frontier is fitted at
construction), it measures the policy before training, every ``every`` optimizer steps, and after the last, with
:func:`alignlimits.methods.measure.measure_policy`: ``n`` samples of each held-out prompt of the table (its
``heldout`` rows when it has a ``split`` column), log π and log π0 teacher-forced, the reward scored, the point
placed against the frontier (KL, gain, efficiency, verdict) and against its objective's ceiling at β
(``objective``, ``objective_share``, ``kl_to_target``). It is ``alignlimits evaluate``'s measurement: the last
point equals the evaluation of the saved policy with the same seed.

Where the numbers go:

- ``OUTPUT_DIR/alignlimits.jsonl``, beside the checkpoints: one row per measurement (the ``evaluate`` JSON's keys,
  the ceiling's, ``step``, ``seconds``, ``step_seconds``, ``cost_share``, ``training_state``, and ``stop`` on
  the row that ended training), and ``OUTPUT_DIR/alignlimits_frontier.json``, the frontier JSON, which
  ``alignlimits plot-training`` draws the run's path over;
- the trainer's own loggers (``report_to``: tensorboard, wandb, trackio, ...) and ``state.log_history``, under
  ``alignlimits/…`` (``alignlimits/verdict``: −1 below, 0 on, 1 above the frontier). The loggers are callbacks
  that run in order, so :meth:`FrontierCallback.attach` puts this one first; given only as ``callbacks=[...]``
  it still measures, writes the JSONL and ``log_history``, but the loggers before it do not see its numbers.

**Cost.** A measurement samples ``P·n`` completions (P held-out prompts) and scores them twice by teacher
forcing (policy and π0) plus the reward: about the cost of one rollout of ``P·n`` completions, without the
backward pass. Over a run it adds ``cost_share`` ≈ (measurement seconds) / (``every`` × step seconds), logged
with each row. The noise of a point falls as 1/√(P·n) (its ``kl_se`` and ``gain_ci`` say how much), so
doubling ``n`` halves the variance at twice the cost per measurement, and doubling ``every`` halves the cost
at half the points on the path. Every measurement uses the same seed, so the path's steps differ by what the
policy learned, not by which samples were drawn; the random state of training is restored, so the run trains
as it would without the callback. Under a multi-process launch rank 0 measures and writes, and its stop decides
for every process.

**Stopping.** With ``stop_when_converged=True`` training stops once the measured objective has converged by the
rule of :mod:`alignlimits.methods.convergence` (at least 4 measurements): ``control.should_training_stop`` is
set and the reason is logged and written in the row's ``stop``.

**π0**: ``base_model`` when given; else the trainer's reference model (``attach``); else, for a LoRA policy,
the policy with its adapters disabled; else the model the run directory's samples were drawn from. It must hold
weights at the policy's precision. **β**: ``beta`` when given, else the trainer's own ``args.beta`` (TRL's
GRPO/RLOO/DPO); the wrapper :func:`alignlimits.methods.grpo.train_grpo` gives TRL β·(G−1)/G, so pass its β.
**Tokenizer**: the table records the tokenizer its samples were drawn with; another tokenizer is refused
(one line); a table written before that was recorded is accepted with a warning that it cannot be checked.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from alignlimits.errors import AlignLimitsError
from alignlimits.lm.identity import TABLE_KEY, check_tokenizer
from alignlimits.methods import distributed
from alignlimits.methods.measure import FRONTIER_JSON, Yardstick, as_reward, frontier_prompts
from alignlimits.methods.yardstick_callback import YardstickCallback

__all__ = ["FrontierCallback", "base_samples"]

log = logging.getLogger("alignlimits")


def base_samples(samples, reward_col: str, prompts=None):
    """The held-out base samples of a table or run directory (its ``base/`` folder for a study), with the
    ``config.json`` of the run that drew them ({} for a table file): ``(table, config)``."""
    from alignlimits.samples import read_samples
    from alignlimits.samples.tables import validate

    path = Path(samples)
    if path.is_dir() and not (path / "samples").is_dir() and (path / "base").is_dir():
        path = path / "base"
    table = read_samples(path, [reward_col])
    config = json.loads((path / "config.json").read_text()) if (path / "config.json").is_file() else {}
    frame = table.frame
    if "split" in frame and (frame["split"] == "heldout").any():
        frame = frame[frame["split"] == "heldout"]
    if prompts is not None:
        keep = list(dict.fromkeys(frame["prompt_id"].astype(str)))[:prompts] if isinstance(prompts, int) else \
            [str(p) for p in prompts]
        frame = frame[frame["prompt_id"].astype(str).isin(keep)]
    if frame.empty:
        raise AlignLimitsError(f"{samples}: no base samples of the chosen held-out prompts")
    attrs = dict(table.frame.attrs)
    table = validate(frame.reset_index(drop=True), [reward_col], str(samples))
    table.frame.attrs.update(attrs)
    return table, config


class FrontierCallback(YardstickCallback):
    """Measure the policy on the KL–reward plane every ``every`` steps (module docstring: outputs, cost, π0, β).

    Args:
        samples: the base model's sample table (Parquet/JSONL/CSV) or run directory (``alignlimits sample`` or
            ``alignlimits run``), scored by ``reward``.
        reward: a reward spec (``"profanity"``, ``"exact"``, ...), a reward model, or a callable
            ``f(prompts, completions) -> floats``; the table's column of the same name (or ``reward_col``).
        n: samples per held-out prompt at each measurement.
        every: optimizer steps between measurements (the last step is always measured).
        beta: the KL coefficient the objective's ceiling is read at (default: the trainer's ``args.beta``).
        prompts: how many held-out prompts (the first k), or their ids; default all of them.
        base_model: π0 (default: see the module docstring).
        max_new_tokens: default the run directory's, else 64.
        seed: the sampling seed of every measurement.
        stop_when_converged: stop training once the measured objective has converged.
        output_dir: where the JSONL goes (default the trainer's ``output_dir``).
    """

    def __init__(self, samples, reward, *, n: int = 4, every: int = 10, beta: float | None = None, prompts=None,
                 base_model=None, max_new_tokens: int | None = None, seed: int = 0, stop_when_converged: bool = False,
                 output_dir: str | Path | None = None, reward_col: str | None = None, batch_size: int | None = None):
        from alignlimits.pipeline.analysis import fit_frontier, frontier_result

        self.reward = as_reward(reward, reward_col)
        col = reward_col or self.reward.name
        self.table, self.config = base_samples(samples, col, prompts)
        self.frontier = fit_frontier(self.table, col)
        self.frontier_json = frontier_result(self.table, col, frontier=self.frontier)
        self.options = dict(n=n, every=every, seed=seed, batch_size=batch_size, stop_when_converged=stop_when_converged,
                            max_new_tokens=max_new_tokens or self.config.get("sampling", {}).get("max_new_tokens") or 64)
        super().__init__(None, base_model=base_model, output_dir=output_dir)
        self.beta = beta

    def on_train_begin(self, args, state, control, model=None, processing_class=None, **kwargs):
        note = check_tokenizer(self.table.frame.attrs.get(TABLE_KEY), processing_class, self.table.source)
        if note:
            log.warning("alignlimits: %s", note)
        beta = self.beta if self.beta is not None else getattr(args, "beta", None)
        if not (isinstance(beta, (int, float)) and beta > 0):
            raise AlignLimitsError(f"the trainer has no β > 0 (got {beta!r}); give FrontierCallback(beta=...), the KL "
                                   "coefficient whose objective ceiling the points are read against")
        prompts, ids = frontier_prompts(self.frontier, self.table)
        self.yardstick = Yardstick(self.frontier, self.reward, prompts, ids, beta=float(beta), **self.options)
        if distributed.is_main():
            (self._out(args) / FRONTIER_JSON).write_text(json.dumps(self.frontier_json))
        if self.trainer is None and [r for r in (args.report_to or []) if r != "none"]:
            log.warning("alignlimits: FrontierCallback given as callbacks=[...]; call .attach(trainer) so that the "
                        "report_to loggers see its numbers (the JSONL has them either way)")
        super().on_train_begin(args, state, control, model=model, processing_class=processing_class, **kwargs)

    def _load_base(self, model):
        from alignlimits.lm.models import load_model

        spec = self.config.get("identity", {}).get("model")
        if not spec:
            raise AlignLimitsError("no π0 for the measurement: give FrontierCallback(base_model=...), attach it to a "
                                   "trainer with a reference model, or build it from a run directory")
        weights = next(model.parameters())
        return load_model(spec, device=str(weights.device), dtype=weights.dtype).model
