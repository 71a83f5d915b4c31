"""The main job, `alignlimits run TASK`: from base model to a finished study, resumable at every stage.

Stages (each recorded in ``RUN_DIR/state.json`` when finished, so a rerun skips it):

1. ``base``: base-model samples of the held-out prompts (``RUN_DIR/base``, itself resumable per part);
2. ``frontier``: the frontier with its CI band, best-of-N and soft best-of-N, planning answers;
3. ``train-base``: a few base samples of every training prompt (``RUN_DIR/train-base``): each prompt's base level
   b(x), the reference of the trainers' per-step objective and PPO's per-prompt baseline;
   ``train-<method>-beta<β>``: each trained method (PPO, GRPO, RLOO, DPO: the registry of
   :mod:`alignlimits.pipeline.trainers`) on the training prompts (``RUN_DIR/train/...``; a killed trainer resumes
   from its last checkpoint; ``stop.json`` says why it stopped: steps, time budget, converged);
4. ``eval-<method>-beta<β>``: each policy sampled on the held-out prompts, scored, and its KL measured per
   sequence against the base model (``RUN_DIR/eval/NAME.parquet`` beside its ``NAME.json`` record);
5. ``hacking`` (a default method of safety and summarization): proxies of controlled error and proxies trained on gold labels, and the hacking view;

then every number goes to ``RUN_DIR/results.json`` (:mod:`alignlimits.pipeline.results`; the report layer
draws ``plane.png`` and ``report.html`` from it).

A :class:`~alignlimits.pipeline.context.StudyContext` (task, base model, reward models) is resolved once
from the config and handed to every stage as objects; the frontier is fitted once per process. The
resolved config is saved as ``RUN_DIR/run_config.json``; a rerun with another config is refused unless
``force``.

Under a multi-process launch (``torchrun --nproc_per_node N -m alignlimits run ...``) every process runs this same
sequence of stages: the training stages on all of them (each trains on its share of the global batches, see
:mod:`alignlimits.methods.distributed`), every other stage on rank 0 alone while the others wait at a barrier; rank 0
writes the run directory, and ``launch.json`` refuses to resume training under another number of processes.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict
from functools import cached_property
from pathlib import Path

from alignlimits.errors import AlignLimitsError
from alignlimits.methods import distributed
from alignlimits.pipeline.config import StudyConfig, auto_betas
from alignlimits.pipeline.context import StudyContext
from alignlimits.pipeline.files import write_json_atomic, write_parquet_atomic
from alignlimits.pipeline.overoptimisation import aligned_reward, base_means, reward_values
from alignlimits.pipeline.records import (
    FORMAT_VERSION, RECORD_FILE, PolicyRecord, RunState, check_launch, trained_world_size,
)
from alignlimits.pipeline.trainers import TRAINERS, TrainJob
from alignlimits.seeding import derive_seed


class Study:
    """One `alignlimits run`: ``Study(config, run_dir).run()``."""

    def __init__(self, config: StudyConfig, run_dir, force: bool = False, console=None, allow_overlap: bool = False,
                 ctx: StudyContext | None = None):
        from rich.console import Console

        self.config = config
        self.allow_overlap = allow_overlap
        self.dir = Path(run_dir)
        self.console = console or Console(stderr=True)
        if any(m in TRAINERS for m in config.methods):  # before any process waits for another
            distributed.check_split(config.batch_size, "batch_size")
        distributed.pin_gpu()  # before the context puts any model on "cuda"
        self._check_dir(force)
        self.state = RunState(self.dir)
        self.ctx = ctx or StudyContext.resolve(config.task, model=config.model, rewards=config.rewards,
                                               prompts=config.prompts, dataset=config.dataset, device=config.device,
                                               engine=config.engine, engine_options=config.engine_options)
        self._table = None

    def _check_dir(self, force: bool) -> None:
        cfg_path = self.dir / "run_config.json"
        if self.dir.exists() and not self.dir.is_dir():
            raise AlignLimitsError(f"--out {self.dir} is a file; give a directory")
        wanted, changed = asdict(self.config), []
        if cfg_path.exists():
            old = json.loads(cfg_path.read_text())
            state = self.dir / "state.json"
            if state.exists() and json.loads(state.read_text()).get("format") != FORMAT_VERSION:
                RunState(self.dir)  # raises the version message
            # methods, β and external policies may grow between commands (train ppo, then grpo, into one run directory)
            changed = sorted(k for k in set(old) | set(wanted)
                             if k not in ("device", "engine", "engine_options", "methods", "betas", "policies", "policy_betas",
                                           "train_minutes", "stop_when_converged")
                             and old.get(k) != wanted.get(k))
            if changed and not force:
                raise AlignLimitsError(
                    f"{self.dir} holds a run with a different config ({', '.join(changed)} differ); "
                    "use another --out, or --force to start it over"
                )
        distributed.barrier()  # every process has read the old config before rank 0 replaces it
        if distributed.is_main():
            if changed:
                shutil.rmtree(self.dir)
            self.dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(wanted, cfg_path)
        distributed.barrier()

    def stage(self, name: str, work, everywhere: bool = False) -> None:
        """Run ``work`` unless ``name`` is done: on rank 0 alone, or on every process when ``everywhere`` (training)."""
        if distributed.from_main(self.state.done(name)):
            self.console.print(f"[dim]✓ {name} (done earlier)[/]")
            return
        self.console.rule(f"[bold]{name}")
        t0 = time.time()
        if everywhere or distributed.is_main():
            work()
        self.state.finish(name, time.time() - t0)
        distributed.barrier()  # the stage's files are written before any process reads them
        pause = os.environ.get("ALIGNLIMITS_TEST_PAUSE_AFTER")  # test hook: a known point to interrupt at
        if pause == name:
            time.sleep(600)

    # ---------------------------------------------------------------- the run
    @cached_property
    def betas(self) -> list[float]:
        """The trained methods' β: the config's, or those of the frontier's π_β at ``beta_reach`` of its reliable KL."""
        if self.config.betas is not None:
            return list(self.config.betas)
        if not self.state.done("frontier"):
            raise AlignLimitsError("β is chosen from the run's frontier, which is not fitted yet; give --betas")
        return auto_betas(self.frontier, self.config.beta_reach)

    def trained_records(self) -> list[PolicyRecord]:
        """The policies this config trains, one per method and β."""
        c = self.config
        return [PolicyRecord.trained(m, b, self.dir, c.seed, self._trainer_config(m))
                for m in c.methods if m in TRAINERS for b in self.betas]

    def records_on_disk(self) -> list[PolicyRecord]:
        """Policies trained into this run directory, whichever command trained them."""
        records = [PolicyRecord.load(p) for p in sorted((self.dir / "train").glob(f"*/{RECORD_FILE}"))]
        return [r for r in records if Path(r.path).is_dir()]

    def run(self, train: bool = True, evaluate: bool = True) -> dict | None:
        """All stages (``alignlimits run``), or training only, or evaluation only."""
        self.ctx.rewards  # a reward spec that cannot load fails here, before any stage starts
        if train:
            self._refuse_other_launch()
        # β from the frontier needs the frontier first; a proxy's error size and the path, the base samples
        if evaluate or (train and (self.config.betas is None or self.config.align_to or self.config.measure_every)):
            self.stage("base", self.sample_base)
            self.stage("frontier", self.fit_frontier)
        if train and any(m in TRAINERS for m in self.config.methods):
            self.stage("train-base", self.sample_train_base)
        for record in self.trained_records() if train else self.records_on_disk():
            if train:
                self.stage(f"train-{record.name}", lambda r=record: self.train(r), everywhere=True)
            if evaluate:
                self.stage(f"eval-{record.name}", lambda r=record: self.evaluate(r))
        if not evaluate:
            return None
        self._evaluate_external(self.config.policies)
        if "hacking" in self.config.methods:
            self.stage("hacking", self.hacking)
        return self.write_results()

    def _refuse_other_launch(self) -> None:
        """Before any stage: training left to do in this run must run under the number of processes its training
        started with (:func:`~alignlimits.pipeline.records.check_launch`, which the training stage applies too)."""
        started = trained_world_size(self.dir)
        if started in (None, distributed.world_size()) or self.config.betas is None and not self.state.done("frontier"):
            return
        if any(not self.state.done(f"train-{r.name}") for r in self.trained_records()):
            check_launch(self.dir)

    def evaluate_external(self, policies: dict[str, Path], betas: dict[str, float] | None = None) -> dict:
        """Evaluate policies trained elsewhere (same base model and tokenizer) against this run's frontier; ``betas``:
        the β some of them were trained at (name → β), for their objective's ceiling."""
        self.stage("base", self.sample_base)
        self.stage("frontier", self.fit_frontier)
        self._evaluate_external(policies, betas)
        return self.write_results()

    def _evaluate_external(self, policies: dict, betas: dict | None = None) -> None:
        betas = {**self.config.policy_betas, **(betas or {})}
        for name, path in policies.items():
            record = PolicyRecord.external(Path(path), name, betas.get(name))
            self.stage(f"eval-{record.name}", lambda r=record: self.evaluate(r))

    def write_results(self) -> dict | None:
        """``results.json`` (rank 0's: the others return None)."""
        from alignlimits.pipeline.analysis import json_safe
        from alignlimits.pipeline.results import collect

        if not distributed.is_main():
            return None
        results = json_safe(collect(self))
        write_json_atomic(results, self.dir / "results.json")
        return results

    # ---------------------------------------------------------------- base samples and the frontier
    def sample_base(self) -> None:
        from alignlimits.pipeline.sampling_run import SamplingPlan, run_sampling

        c = self.config
        plan = SamplingPlan(n=c.n, max_new_tokens=c.max_new_tokens, seed=c.seed, limit_prompts=c.eval_prompts,
                            split="heldout")
        try:
            run_sampling(self.ctx, plan, self.dir / "base", console=self.console)
        finally:
            self.ctx.close_sampler()

    def base_table(self):
        from alignlimits.samples import read_samples

        if self._table is None:
            self._table = read_samples(self.dir / "base", [r.name for r in self.ctx.rewards])
        return self._table

    @cached_property
    def frontier(self):
        """The frontier of the held-out prompts' base samples, fitted once."""
        from alignlimits.pipeline.analysis import fit_frontier

        return fit_frontier(self.base_table(), self.ctx.reward_col, min_ess=self.config.min_ess, n_bootstrap=200,
                            random_state=derive_seed(self.config.seed, "frontier"))

    def fit_frontier(self) -> None:
        from alignlimits.pipeline.analysis import json_safe
        from alignlimits.pipeline.results import frontier_stage

        with self.console.status("fitting the frontier, its band and the best-of-N laws…"):
            write_json_atomic(json_safe(frontier_stage(self)), self.dir / "frontier.json")

    # ---------------------------------------------------------------- training
    def sample_train_base(self) -> None:
        from alignlimits.pipeline.sampling_run import SamplingPlan, run_sampling

        c = self.config
        plan = SamplingPlan(n=c.baseline_n, max_new_tokens=c.max_new_tokens, seed=derive_seed(c.seed, "train-base"),
                            limit_prompts=c.train_prompts, split="train")
        try:
            run_sampling(self.ctx, plan, self.dir / "train-base", console=self.console)
        finally:
            self.ctx.close_sampler()

    @cached_property
    def train_base(self):
        """The training prompts' base samples (their rewards grouped by prompt), or None before the train-base stage."""
        from alignlimits.samples import read_samples

        if not self.state.done("train-base"):
            return None
        return read_samples(self.dir / "train-base", [r.name for r in self.ctx.rewards]).frame

    @cached_property
    def train_rewards(self):
        """The aligned reward on each of ``train_base``'s rows (scored once), or None before the train-base stage."""
        return None if self.train_base is None else reward_values(self.aligned_reward, self.train_base)

    @cached_property
    def train_levels(self) -> dict[str, float]:
        """Each training prompt's base level b(x): the mean reward of its base samples, keyed by the text given to the model."""
        values = self.train_base.assign(_r=self.train_rewards)
        return {str(k): float(v) for k, v in values.groupby("prompt")["_r"].mean().items()}

    @cached_property
    def aligned_reward(self):
        """The reward the trainers maximise: gold, or the proxy of ``align_to``."""
        c = self.config
        frame = self.base_table().frame if c.align_to else None
        return aligned_reward(c.align_to, self.ctx.rewards, frame, derive_seed(c.seed, "proxy"))

    @cached_property
    def proxy_base_means(self) -> dict[str, float]:
        """The aligned reward's base mean on each held-out prompt (scored once), the reference of its gain."""
        return base_means(self.aligned_reward, self.base_table().frame)

    def train_ceiling(self, beta: float) -> tuple[float, tuple[float, float]] | None:
        """J*(β) of the training prompts (what the trainers' per-step objective can reach) with its interval over
        prompts, from their base samples; None before the train-base stage."""
        from alignlimits.theory.ceiling import prompts_ceiling
        from alignlimits.theory.groups import Groups

        frame = self.train_base
        if frame is None:
            return None
        groups, order, _ = Groups.from_labels(frame["prompt"].astype(str).to_numpy())
        return prompts_ceiling(self.train_rewards[order], beta, groups)

    def _trainer_config(self, method: str) -> dict:
        """The config a policy of ``method`` was trained with, recorded beside it."""
        c = self.config
        keys = ("steps", "batch_size", "max_new_tokens", "use_lora", "train_prompts", *TRAINERS[method].keys)
        aligned = {"align_to": c.align_to} if c.align_to else {}
        return {**{k: getattr(c, k) for k in keys}, "learning_rate": c.learning_rates[method], **aligned,
                "world_size": distributed.world_size()}

    def train_job(self, record: PolicyRecord) -> TrainJob:
        """What the trainer of ``record`` gets: the training prompts, their base levels and, when training stops once
        converged, the ceiling J*(β) of the training prompts."""
        c = self.config
        task = self.ctx.prompts("train", c.train_prompts)
        ceiling = self.train_ceiling(record.beta)[0] if c.stop_when_converged else None
        return TrainJob(self.ctx, c, self.ctx.model_texts(task.prompts), [p["prompt_id"] for p in task.prompts],
                        self.train_levels, ceiling if ceiling and ceiling > 0 else None, self.aligned_reward,
                        self.path_yardstick(record))

    def path_yardstick(self, record: PolicyRecord):
        """With ``measure_every``: the policy measured on the held-out prompts as it trains, against the gold frontier,
        with the aligned proxy's gain on the same samples; else None."""
        from alignlimits.methods.measure import Yardstick, frontier_prompts

        c = self.config
        if c.measure_every is None:  # built on every process: the trainer lets rank 0 measure and share its decisions
            return None
        prompts, ids = frontier_prompts(self.frontier, self.base_table())
        proxy = self.aligned_reward
        others = {} if c.align_to is None else {proxy.name: (proxy, self.proxy_base_means)}
        return Yardstick(self.frontier, self.ctx.rewards[0], prompts, ids, record.beta, n=c.measure_n,
                         every=c.measure_every, seed=derive_seed(c.seed, "path", record.name),
                         max_new_tokens=c.max_new_tokens, method=record.method, others=others)

    def train(self, record: PolicyRecord) -> None:
        """Train one policy from a copy of the base model on the training prompts; resumes from its last checkpoint."""
        out = record.train_dir
        check_launch(self.dir)
        job = self.train_job(record)
        out.mkdir(parents=True, exist_ok=True)
        if distributed.is_main():
            write_json_atomic(job.prompt_ids, out / "train_prompts.json")
        if self.config.task == "exact":
            import torch

            torch.set_num_threads(1)  # a 30k-parameter model: thread hand-offs cost more than they save
        resume = distributed.from_main(True if any(out.glob("checkpoint-*")) else None)
        record = TRAINERS[record.method].train(job, record, out, resume)
        if not distributed.is_main():
            return
        record.save(out / RECORD_FILE)
        if not self.config.keep_checkpoints:  # the policy is saved: resume no longer needs its checkpoints
            for checkpoint in out.glob("checkpoint-*"):
                shutil.rmtree(checkpoint)

    # ---------------------------------------------------------------- evaluation
    def check_no_overlap(self, train_dir: Path, allow: bool = False) -> None:
        """Evaluation prompts must not be training prompts, compared by text (the split, on the text, guarantees it;
        files edited between commands may not)."""
        from alignlimits.lm.tasks import overlapping_texts

        listed = train_dir / "train_prompts.json"
        if not listed.exists():
            return
        heldout = list(dict.fromkeys(self.base_table().frame["prompt_id"].astype(str)))
        overlap = overlapping_texts(self.ctx.task.prompts, json.loads(listed.read_text()), heldout)
        if overlap and not allow:
            raise AlignLimitsError(
                f"{len(overlap)} evaluation prompts (e.g. {overlap[0]!r}) were used to train {train_dir.name}; "
                "evaluate on held-out prompts, or pass --allow-overlap to do it anyway"
            )

    def load_policy(self, path: Path):
        from alignlimits.methods.evaluation import check_same_tokenizer
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if not path.is_dir():
            raise AlignLimitsError(f"no trained policy at {path}; train it first")
        lm = self.ctx.lm
        if (path / "adapter_config.json").exists():
            import copy

            from peft import PeftModel

            model = PeftModel.from_pretrained(copy.deepcopy(lm.model), str(path)).merge_and_unload()
        else:
            model = AutoModelForCausalLM.from_pretrained(str(path), dtype=lm.dtype, local_files_only=True)
        if (path / "tokenizer_config.json").exists():
            check_same_tokenizer(AutoTokenizer.from_pretrained(str(path), local_files_only=True), lm.tokenizer)
        return model.to(lm.device).eval()

    def evaluate(self, record: PolicyRecord) -> None:
        """Sample the policy on the held-out prompts with the run's engine, score it (both log-probs teacher-forced
        by transformers, so the KL does not depend on the engine), and store its table beside its record."""
        import pandas as pd

        from alignlimits.methods.evaluation import policy_sampler, sample_and_score

        if record.beta is not None:
            self.check_no_overlap(record.train_dir, self.allow_overlap)
        policy = self.load_policy(Path(record.path))
        c, lm = self.config, self.ctx.lm
        base = self.base_table().frame.drop_duplicates("prompt_id")
        out = self.dir / "eval"
        out.mkdir(exist_ok=True)
        seed = derive_seed(c.seed, "eval", record.name)
        with policy_sampler(self.ctx.engine, policy, lm, Path(record.path), seed=seed,
                            options=self.ctx.engine_options, scratch=out) as sampler:
            rows = sample_and_score(policy, lm.model, lm.tokenizer, list(base["prompt"]), list(base["prompt_id"]),
                                    self.ctx.rewards, c.eval_n, c.max_new_tokens, seed=seed, sampler=sampler)
        frame = pd.DataFrame(rows)
        frame["method"] = record.method
        write_parquet_atomic(frame, out / f"{record.name}.parquet")
        record.save(out / f"{record.name}.json")

    def evaluated(self) -> list[tuple[PolicyRecord, object]]:
        """Every evaluated policy's record and sample table."""
        import pandas as pd

        return [(PolicyRecord.load(p), pd.read_parquet(p.with_suffix(".parquet")))
                for p in sorted((self.dir / "eval").glob("*.json"))]

    def hacking(self) -> None:
        from alignlimits.pipeline.hacking_study import HackConfig, run_hacking_study

        run_hacking_study(self.dir / "base", HackConfig(gold=self.ctx.reward_col, seed=self.config.seed),
                          json_path=self.dir / "hacking.json", proxies_path=self.dir / "proxies.parquet",
                          log=self.console.print)
