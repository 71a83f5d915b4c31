"""The main job, `alignlimits run TASK`: from base model to a finished study, resumable at every stage.

Stages (each recorded in ``RUN_DIR/state.json`` when finished, so a rerun skips it):

1. ``base``: base-model samples of the held-out prompts (``RUN_DIR/base``, itself resumable per part);
2. ``frontier``: the frontier with its CI band, best-of-N and soft best-of-N, planning answers;
3. ``train-<method>-beta<β>``: PPO and GRPO on the training prompts (``RUN_DIR/train/...``; a killed
   trainer resumes from its last checkpoint);
4. ``eval-<method>-beta<β>``: each trained policy sampled on the held-out prompts, scored, and its
   KL measured per sequence against the base model (``RUN_DIR/eval/*.parquet``);
5. ``hacking`` (when asked for): proxies trained on gold labels and the hacking view;

then every number goes to ``RUN_DIR/results.json`` (the report layer draws ``plane.png`` and
``report.html`` from it).

The resolved config is saved as ``RUN_DIR/run_config.json``; a rerun with another config is
refused unless ``force``.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from functools import cached_property
from pathlib import Path

import numpy as np

from alignlimits.errors import AlignLimitsError
from alignlimits.pipeline.files import write_json_atomic, write_parquet_atomic

FORMAT_VERSION = 2
METHODS = ("bon", "soft-bon", "ppo", "grpo", "hacking")
TRAINED = ("ppo", "grpo")


@dataclass
class StudyConfig:
    """Every option of `alignlimits run` (each also a key of ``--config FILE.yaml``)."""

    task: str = "safety"
    preset: str = "quick"
    model: str | None = None
    rewards: list[str] | None = None
    prompts: str | None = None
    dataset: str | None = None
    methods: list[str] = field(default_factory=lambda: ["bon", "soft-bon", "ppo", "grpo"])
    betas: list[float] = field(default_factory=lambda: [0.1])
    n: int = 16
    """Base samples per held-out prompt (the frontier's data)."""
    eval_n: int = 8
    """Policy samples per held-out prompt in evaluation."""
    eval_prompts: int | None = 12
    """Held-out prompts used (None: all)."""
    train_prompts: int | None = None
    steps: int = 8
    max_new_tokens: int = 32
    batch_size: int = 8
    """Rollouts per PPO step; completions per GRPO step."""
    num_generations: int = 4
    """GRPO group size."""
    ppo_epochs: int = 4
    """Passes over each PPO rollout batch (lm-human-preferences: 4)."""
    ppo_learning_rate: float = 1e-5
    grpo_learning_rate: float = 1e-5
    use_lora: bool = False
    soft_bon_n: list[int] = field(default_factory=lambda: [2, 4, 8])
    seed: int = 0
    min_ess: float = 5.0
    device: str | None = None

    def validate(self) -> None:
        from alignlimits.lm.tasks import TASKS

        if self.task not in TASKS:
            raise AlignLimitsError(f"unknown task {self.task!r}; use one of {', '.join(TASKS)}")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise AlignLimitsError(f"unknown method {unknown[0]!r}; use some of {', '.join(METHODS)}")
        if any(m in TRAINED for m in self.methods) and not self.betas:
            raise AlignLimitsError("PPO and GRPO need at least one --betas value")
        if any(not b > 0 for b in self.betas):
            raise AlignLimitsError(f"every β must be > 0 (got {self.betas}); the KL penalty is what makes the frontier")
        for name in ("n", "eval_n", "steps", "max_new_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise AlignLimitsError(f"--{name.replace('_', '-')} must be at least 1 (got {getattr(self, name)})")
        if self.n < 2:
            raise AlignLimitsError("--n must be at least 2: the frontier needs several base samples per prompt")
        if self.batch_size % self.num_generations:
            raise AlignLimitsError(
                f"--batch-size {self.batch_size} must be a multiple of the GRPO group size {self.num_generations}"
            )


PRESETS = {
    # the whole study on 2 CPU cores in at most 15 minutes (first-time model conversion included)
    "quick": {},
    # paper scale, meant for a GPU
    "full": dict(n=256, eval_n=64, eval_prompts=None, steps=300, max_new_tokens=64, batch_size=64,
                 num_generations=8, betas=[0.01, 0.03, 0.1], soft_bon_n=[4, 16, 64]),
}
# the exact task is tiny and exactly solvable: many cheap steps, large learning rates (tests/methods);
# summarisation prompts are ~300 tokens, so its quick preset trains fewer, lighter PPO steps
TASK_DEFAULTS = {
    "summarization": dict(steps=6, eval_prompts=8, ppo_epochs=2),
    "exact": dict(n=256, eval_n=256, eval_prompts=None, steps=60, max_new_tokens=3, batch_size=64,
                  num_generations=8, ppo_learning_rate=1e-3, grpo_learning_rate=3e-3, betas=[0.5],
                  soft_bon_n=[2, 4, 16], min_ess=10.0),
}
CONFIG_KEYS = {f.name for f in fields(StudyConfig)}


def resolve_config(task: str, preset: str | None, file_values: dict, flag_values: dict) -> StudyConfig:
    """Defaults, then the preset, then the task's defaults, then the config file, then flags."""
    unknown = sorted(set(file_values) - CONFIG_KEYS)
    if unknown:
        raise AlignLimitsError(f"config file has unknown keys: {', '.join(unknown)} (known: {', '.join(sorted(CONFIG_KEYS))})")
    file_preset = file_values.get("preset")
    if preset and file_preset and preset != file_preset:
        raise AlignLimitsError(f"--preset {preset} conflicts with preset: {file_preset} in the config file; keep one")
    preset = preset or file_preset or "quick"
    if preset not in PRESETS:
        raise AlignLimitsError(f"unknown preset {preset!r}; use one of {', '.join(PRESETS)}")
    file_task = file_values.get("task")
    if file_task and file_task != task:
        raise AlignLimitsError(f"the config file is for task {file_task!r}, not {task!r}")
    values = {**PRESETS[preset], **(TASK_DEFAULTS.get(task, {}) if preset == "quick" else {}), **file_values,
              **{k: v for k, v in flag_values.items() if v is not None}}
    values.update(task=task, preset=preset)
    config = StudyConfig(**values)
    config.validate()
    return config


# ------------------------------------------------------------------ run directory state
class RunState:
    """``RUN_DIR/state.json``: which stages are done and how long each took."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / "state.json"
        if self.path.exists():
            self.data = json.loads(self.path.read_text())
            if self.data.get("format") != FORMAT_VERSION:
                raise AlignLimitsError(
                    f"{run_dir} holds a run of format {self.data.get('format')!r}, this alignlimits writes format "
                    f"{FORMAT_VERSION}; use a new --out (results of different versions are not mixed)"
                )
        else:
            self.data = {"format": FORMAT_VERSION, "stages": {}}

    def done(self, stage: str) -> bool:
        return stage in self.data["stages"]

    def finish(self, stage: str, seconds: float) -> None:
        self.data["stages"][stage] = {"seconds": round(seconds, 2)}
        write_json_atomic(self.data, self.path)

    def timings(self) -> dict:
        return {k: v["seconds"] for k, v in self.data["stages"].items()}


def _overspend(kl: float, needed: float) -> float:
    """A method's KL over the KL the frontier needs for the same gain."""
    return float(kl / needed) if needed > 0 else float("inf")


def _label(name: str) -> str:
    """``ppo-beta0.1`` → ``PPO β=0.1``; external policies keep their name."""
    method, tag = name.split("-", 1)
    return f"{method.upper()} β={tag.removeprefix('beta')}" if method in TRAINED else tag


def _beta_tag(beta: float) -> str:
    return f"beta{beta:g}"


class Study:
    """One `alignlimits run`: ``Study(config, run_dir).run()``."""

    def __init__(self, config: StudyConfig, run_dir, force: bool = False, console=None, allow_overlap: bool = False):
        from rich.console import Console

        self.config = config
        self.allow_overlap = allow_overlap
        self.dir = Path(run_dir)
        self.console = console or Console(stderr=True)
        self._check_dir(force)
        self.state = RunState(self.dir)

    # ---------------------------------------------------------------- setup
    def _check_dir(self, force: bool) -> None:
        cfg_path = self.dir / "run_config.json"
        if self.dir.exists() and not self.dir.is_dir():
            raise AlignLimitsError(f"--out {self.dir} is a file; give a directory")
        wanted = asdict(self.config)
        if cfg_path.exists():
            old = json.loads(cfg_path.read_text())
            state = self.dir / "state.json"
            if state.exists() and json.loads(state.read_text()).get("format") != FORMAT_VERSION:
                RunState(self.dir)  # raises the version message
            # methods and β may grow between commands (train ppo, then grpo, into one run directory)
            changed = sorted(k for k in set(old) | set(wanted)
                             if k not in ("device", "methods", "betas") and old.get(k) != wanted.get(k))
            if changed and not force:
                raise AlignLimitsError(
                    f"{self.dir} holds a run with a different config ({', '.join(changed)} differ); "
                    "use another --out, or --force to start it over"
                )
            if changed:
                shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(wanted, cfg_path)

    @cached_property
    def task(self):
        from alignlimits.lm.tasks import get_task

        return get_task(self.config.task, prompts_file=self.config.prompts, dataset=self.config.dataset)

    @property
    def reward_col(self) -> str:
        return self.rewards[0].name

    @cached_property
    def rewards(self):
        from alignlimits.lm.rewards import load_rewards

        return load_rewards(self.config.rewards or self.task.default_rewards, device=self.config.device)

    @property
    def model_spec(self) -> str:
        return self.config.model or self.task.default_model

    @cached_property
    def base_lm(self):
        from alignlimits.lm.models import load_model

        return load_model(self.model_spec, device=self.config.device, chat=self.task.chat)

    def stage(self, name: str, work) -> None:
        if self.state.done(name):
            self.console.print(f"[dim]✓ {name} (done earlier)[/]")
            return
        self.console.rule(f"[bold]{name}")
        t0 = time.time()
        work()
        self.state.finish(name, time.time() - t0)

    # ---------------------------------------------------------------- stages
    def trained_names(self) -> list[tuple[str, float]]:
        c = self.config
        return [(m, b) for m in c.methods if m in TRAINED for b in c.betas]

    def trained_on_disk(self) -> list[tuple[str, float]]:
        """Policies in ``RUN_DIR/train/METHOD-betaB/policy``, whichever command trained them."""
        found = []
        for d in sorted((self.dir / "train").glob("*-beta*")):
            method, tag = d.name.split("-", 1)
            if method in TRAINED and (d / "policy").is_dir():
                found.append((method, float(tag.removeprefix("beta"))))
        return found

    def run(self, train: bool = True, evaluate: bool = True) -> dict | None:
        """All stages (``alignlimits run``), or training only, or evaluation only."""
        t0 = time.time()
        self.rewards  # a reward spec that cannot load fails here, before any stage starts
        if evaluate:
            self.stage("base", self.sample_base)
            self.stage("frontier", self.fit_frontier)
        for method, beta in self.trained_names() if train else self.trained_on_disk():
            name = f"{method}-{_beta_tag(beta)}"
            if train:
                self.stage(f"train-{name}", lambda m=method, b=beta: self.train(m, b))
            if evaluate:
                self.stage(f"eval-{name}", lambda m=method, b=beta: self.evaluate_trained(m, b))
        if not evaluate:
            return None
        if "hacking" in self.config.methods:
            self.stage("hacking", self.hacking)
        results = self.collect(time.time() - t0)
        write_json_atomic(results, self.dir / "results.json")
        return results

    def evaluate_external(self, policy_path: Path) -> dict:
        """Evaluate a policy trained elsewhere (same base model and tokenizer) against this run's frontier."""
        self.stage("base", self.sample_base)
        self.stage("frontier", self.fit_frontier)
        name = "external-" + "".join(ch if ch.isalnum() or ch in "._" else "_" for ch in Path(policy_path).name)
        self.stage(f"eval-{name}", lambda: self.evaluate_policy(self.load_policy(Path(policy_path)), name))
        results = self.collect(0.0)
        write_json_atomic(results, self.dir / "results.json")
        return results

    def sample_base(self) -> None:
        from alignlimits.pipeline.sampling_run import SampleRequest, run_sampling

        c = self.config
        req = SampleRequest(task=c.task, model=c.model, rewards=c.rewards, prompts_file=c.prompts, dataset=c.dataset,
                            n=c.n, max_new_tokens=c.max_new_tokens, seed=c.seed, limit_prompts=c.eval_prompts,
                            split="heldout", device=c.device)
        run_sampling(req, self.dir / "base", console=self.console)

    def base_table(self):
        from alignlimits.data import read_samples

        return read_samples(self.dir / "base", [r.name for r in self.rewards])

    def fit_frontier(self) -> None:
        from alignlimits.pipeline.analysis import frontier_result
        from alignlimits.theory.best_of_n import soft_bon
        from alignlimits.theory.planning import plan_for_gain, plan_for_kl

        c = self.config
        table = self.base_table()
        frontier = self._frontier(table)
        result = frontier_result(table, self.reward_col, kls=[], frontier=frontier)
        reliable = max(frontier.max_reliable_kl_, 1e-3)
        band_kls = np.linspace(reliable / 12, reliable, 12)
        band = frontier.evaluate(band_kls, extrapolate=True)
        result["budgets"] = [p.to_dict() for p in band]
        betas = frontier.beta_for_kl(band_kls[[3, 7, 11]], extrapolate=True)
        ns = [n for n in c.soft_bon_n if n <= frontier.groups_.sizes.min()]
        soft = []
        for beta in betas:
            values, ci, se = frontier.bootstrap_statistic(lambda r, g, b=float(beta): np.concatenate(soft_bon(r, ns, b, g)),
                                                          fixed_prompts=True)
            k = len(ns)
            soft += [{"n": int(n), "beta": float(beta), "gain": float(values[i]), "gain_ci": ci[i].tolist(),
                      "kl": float(values[k + i]), "kl_se": float(se[k + i])} for i, n in enumerate(ns)]
        top_gain = result["curve"][-1]["gain"]
        plans = {
            "for_gains": [plan_for_gain(frontier, g).to_dict() for g in np.array([0.25, 0.5, 0.75]) * top_gain],
            "for_kls": [plan_for_kl(frontier, k, extrapolate=True).to_dict() for k in (reliable / 4, reliable / 2, reliable)],
        }
        for p in plans["for_gains"] + plans["for_kls"]:
            p["reliable"] = bool(np.isfinite(p["kl"]) and p["kl"] <= frontier.max_reliable_kl_)
        write_json_atomic({"frontier": result, "frontier_band": [{"kl": p.kl, "lo": p.gain_ci[0], "hi": p.gain_ci[1]} for p in band],
                           "soft_bon": soft, "plan": plans}, self.dir / "frontier.json")

    def _frontier(self, table=None):
        from alignlimits.pipeline.analysis import fit_frontier

        if table is None:
            table = self.base_table()
        return fit_frontier(table, self.reward_col, min_ess=self.config.min_ess, n_bootstrap=200,
                            random_state=self.config.seed)

    def _train_prompts(self):
        task = self.task.split("train").limit(self.config.train_prompts)
        raw = [p["text"] for p in task.prompts]
        return [self.base_lm.format_prompt(t) for t in raw], raw, [p["prompt_id"] for p in task.prompts]

    def check_no_overlap(self, train_dir: Path, allow: bool = False) -> None:
        """Evaluation prompts must not be training prompts (the split guarantees it; files may not)."""
        listed = train_dir / "train_prompts.json"
        if not listed.exists():
            return
        trained = set(json.loads(listed.read_text()))
        heldout = set(self.base_table().frame["prompt_id"].astype(str))
        overlap = sorted(trained & heldout)
        if overlap and not allow:
            raise AlignLimitsError(
                f"{len(overlap)} evaluation prompts (e.g. {overlap[0]!r}) were used to train {train_dir.name}; "
                "evaluate on held-out prompts, or pass --allow-overlap to do it anyway"
            )

    def train(self, method: str, beta: float) -> None:
        import copy

        c = self.config
        out = self.dir / "train" / f"{method}-{_beta_tag(beta)}"
        prompts, raw, ids = self._train_prompts()
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(ids, out / "train_prompts.json")
        reward = self.rewards[0]
        policy = copy.deepcopy(self.base_lm.model)
        resume = out.is_dir() and any(out.glob("checkpoint-*"))
        if c.task == "exact":
            import torch

            torch.set_num_threads(1)  # a 30k-parameter model: thread hand-offs cost more than they save
        if method == "ppo":
            from alignlimits.methods.ppo import PPOTrainer
            from alignlimits.methods.ppo_config import PPOConfig

            cfg = PPOConfig(beta=beta, steps=c.steps, batch_size=c.batch_size, max_new_tokens=c.max_new_tokens,
                            ppo_epochs=c.ppo_epochs,
                            learning_rate=c.ppo_learning_rate, use_lora=c.use_lora, output_dir=str(out),
                            save_steps=max(1, c.steps // 4), seed=c.seed,
                            num_minibatches=max(1, c.batch_size // 32) if c.batch_size % 32 == 0 else 1)
            trainer = PPOTrainer(cfg, policy, None, self.base_lm.tokenizer, reward, prompts,
                                 reward_prompts=raw)
            trainer.train(resume_from_checkpoint=True if resume else None)  # saves out/policy
        else:
            from alignlimits.methods.grpo import GRPOOptions, train_grpo

            opts = GRPOOptions(beta=beta, steps=c.steps, batch_size=c.batch_size, num_generations=c.num_generations,
                               learning_rate=c.grpo_learning_rate, max_new_tokens=c.max_new_tokens, use_lora=c.use_lora,
                               output_dir=str(out), save_steps=max(1, c.steps // 4), seed=c.seed)
            train_grpo(opts, policy, self.base_lm.tokenizer, reward, prompts, resume_from_checkpoint=True if resume else None,
                       reward_prompts=raw)

    def load_policy(self, path: Path):
        from alignlimits.methods.evaluation import check_same_tokenizer
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if not path.is_dir():
            raise AlignLimitsError(f"no trained policy at {path}; train it first")
        if (path / "adapter_config.json").exists():
            from peft import PeftModel

            import copy

            model = PeftModel.from_pretrained(copy.deepcopy(self.base_lm.model), str(path)).merge_and_unload()
        else:
            model = AutoModelForCausalLM.from_pretrained(str(path), dtype=self.base_lm.dtype, local_files_only=True)
        if (path / "tokenizer_config.json").exists():
            check_same_tokenizer(AutoTokenizer.from_pretrained(str(path), local_files_only=True), self.base_lm.tokenizer)
        return model.to(self.base_lm.device).eval()

    def evaluate_trained(self, method: str, beta: float) -> None:
        name = f"{method}-{_beta_tag(beta)}"
        self.check_no_overlap(self.dir / "train" / name, self.allow_overlap)
        policy = self.load_policy(self.dir / "train" / name / "policy")
        self.evaluate_policy(policy, name)

    def evaluate_policy(self, policy, name: str) -> None:
        import pandas as pd

        from alignlimits.methods.evaluation import sample_and_score

        c = self.config
        base = self.base_table().frame.drop_duplicates("prompt_id")
        rows = sample_and_score(policy, self.base_lm.model, self.base_lm.tokenizer, list(base["prompt"]),
                                list(base["prompt_id"]), self.rewards, c.eval_n, c.max_new_tokens,
                                seed=c.seed + 1)
        out = self.dir / "eval"
        out.mkdir(exist_ok=True)
        frame = pd.DataFrame(rows)
        frame["method"] = name
        write_parquet_atomic(frame, out / f"{name}.parquet")

    def hacking(self) -> None:
        from alignlimits.pipeline.hacking_study import HackConfig, run_hacking_study

        run_hacking_study(self.dir / "base", HackConfig(gold=self.reward_col, seed=self.config.seed),
                          json_path=self.dir / "hacking.json", proxies_path=self.dir / "proxies.parquet",
                          log=self.console.print)

    # ---------------------------------------------------------------- results
    def collect(self, wall_time: float) -> dict:
        import pandas as pd

        from alignlimits.methods.evaluation import place_policy
        from alignlimits.pipeline.sampling_run import package_versions
        from alignlimits.theory.hacking import frontier_gain_at

        c = self.config
        saved = json.loads((self.dir / "frontier.json").read_text())
        frontier = self._frontier()
        evaluate = []

        def law_point(method, label, n, beta, kl, kl_se, gain, gain_ci, estimator):
            optimal = float(frontier_gain_at(frontier, np.array([kl]))[0])
            return {
                "method": method, "label": label, "n": n, "beta": beta,
                "kl": kl, "kl_se": kl_se, "kl_k3": None, "kl_k3_se": None,
                "gain": gain, "gain_ci": gain_ci, "optimal_gain_at_kl": optimal,
                "efficiency": gain / optimal if optimal > 0 else float("nan"),
                "kl_overspend": _overspend(kl, float(frontier.kl_for_gain(gain)[0])),
                "reliable": kl <= frontier.max_reliable_kl_,
                "n_prompts": frontier.n_prompts_, "n_samples": frontier.n_samples_, "estimator": estimator,
            }

        if "bon" in c.methods:
            # best-of-N drawn from the empirical distribution: its law, KL and gain are exact there,
            # the same footing as the frontier (the KL bound log N - (N-1)/N overstates KL when rewards tie)
            evaluate += [law_point("bon", f"best-of-{row['n']}", row["n"], None, row["kl_empirical"],
                                   row["kl_empirical_se"], row["gain_empirical"], row["gain_empirical_ci"],
                                   "exact best-of-N law on the empirical distribution of the base samples")
                         for row in saved["frontier"]["bon"] if row["n"] > 1]
        if "soft-bon" in c.methods:
            evaluate += [law_point("soft-bon", f"soft best-of-{row['n']} β={row['beta']:.3g}", row["n"], row["beta"],
                                   row["kl"], row["kl_se"], row["gain"], row["gain_ci"],
                                   "exact law of sampling-importance-resampling on the empirical distribution")
                         for row in saved["soft_bon"]]
        eval_frames = {}
        for path in sorted((self.dir / "eval").glob("*.parquet")):
            name = path.stem
            frame = pd.read_parquet(path)
            eval_frames[name] = frame
            method, tag = name.split("-", 1)
            beta = float(tag.removeprefix("beta")) if method in TRAINED else None
            label = _label(name)
            point = place_policy(method, frame[self.reward_col], frame["prompt_id"], frame["logp_policy"],
                                 frame["logp_base"], frontier, beta=beta)
            evaluate.append({**point.to_dict(), "label": label, "n": None,
                             "estimator": "policy samples on held-out prompts; KL per sequence (k1, k3)"})
        hacking_path = self.dir / "hacking.json"
        return {
            "version": FORMAT_VERSION, "task": c.task, "model": self.model_spec, "reward": self.reward_col,
            "reward_description": getattr(self.rewards[0], "description", ""), "preset": c.preset,
            "config": asdict(c), "versions": package_versions(), "seeds": {"seed": c.seed},
            "timings": self.state.timings(), "wall_time_s": round(wall_time, 1),
            "frontier": saved["frontier"], "frontier_band": saved["frontier_band"], "soft_bon": saved["soft_bon"],
            "evaluate": evaluate, "plan": saved["plan"],
            "hacking": json.loads(hacking_path.read_text()) if hacking_path.exists() else None,
            "examples": self._examples(eval_frames),
            "exact_frontier": self._exact_frontier() if c.task == "exact" else None,
            "notes": saved["frontier"].get("notes", []),
        }

    def _exact_frontier(self) -> list[dict]:
        """The true frontier of the exact task's held-out prompts, by enumerating every completion."""
        from alignlimits.lm.exact import exact_distribution
        from alignlimits.theory.frontier import Frontier

        ids = list(dict.fromkeys(self.base_table().frame["prompt_id"]))
        texts = {p["prompt_id"]: p["text"] for p in self.task.prompts}
        dist = exact_distribution(self.base_lm.model, self.base_lm.tokenizer,
                                  [{"id": i, "prompt": texts[i]} for i in ids])
        k = dist.logp.shape[1]
        exact = Frontier(n_bootstrap=0).fit(np.tile(dist.rewards, len(ids)), np.repeat(ids, k), base_probs=dist.probs.ravel())
        return [{"kl": float(a), "gain": float(b)} for a, b in zip(exact.curve_["kl"], exact.curve_["gain"])]

    def _examples(self, eval_frames: dict, k: int = 3) -> list[dict]:
        base = self.base_table().frame
        out = []
        for pid in list(dict.fromkeys(base["prompt_id"]))[:k]:
            rows = base[base["prompt_id"] == pid]
            first = rows.iloc[0]
            prompt_text = first.get("prompt", "")
            completions = [{"method": "base", "label": "base model", "text": str(first["completion"]),
                            "reward": float(first[self.reward_col])}]
            for name, frame in eval_frames.items():
                sub = frame[frame["prompt_id"] == pid]
                if len(sub):
                    completions.append({"method": name.split("-")[0], "label": _label(name), "text": str(sub.iloc[0]["completion"]),
                                        "reward": float(sub.iloc[0][self.reward_col])})
            out.append({"prompt_id": str(pid), "prompt": str(prompt_text), "completions": completions})
        return out
