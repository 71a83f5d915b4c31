"""PPO's bookkeeping, apart from the algorithm in :mod:`alignlimits.methods.ppo`: the metrics log
(``metrics.jsonl`` and the ``report_to`` loggers) and the policy and checkpoint files (save, resume).
Under a multi-process launch only rank 0 writes; every process reads the checkpoint it resumes from."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from alignlimits.errors import AlignLimitsError
from alignlimits.methods import distributed
from alignlimits.methods.checkpoints import (
    load_rng_state, load_state, prune_checkpoints, resume_point, save_rng_state, truncate_metrics,
)
from alignlimits.methods.ppo_config import PPOConfig


class MetricsLog:
    """``metrics.jsonl`` (always) and the ``report_to`` loggers (tensorboard, wandb); a context manager."""

    def __init__(self, output_dir: Path, config: PPOConfig):
        self.output_dir, self.config, self.loggers = output_dir, config, []

    def __enter__(self) -> "MetricsLog":
        for name in self.config.report_to if distributed.is_main() else ():
            if name == "tensorboard":
                try:
                    from torch.utils.tensorboard import SummaryWriter
                except ImportError as e:
                    raise AlignLimitsError("PPO: report_to tensorboard needs the tensorboard package (pip install tensorboard)") from e
                self.loggers.append(("tensorboard", SummaryWriter(log_dir=str(self.output_dir / "tensorboard"))))
            else:
                try:
                    import wandb
                except ImportError as e:
                    raise AlignLimitsError("PPO: report_to wandb needs the wandb package (pip install wandb)") from e
                run = wandb.init(project="alignlimits", dir=str(self.output_dir), config=self.config.to_dict(), resume="allow")
                self.loggers.append(("wandb", run))
        return self

    def __exit__(self, *exc) -> None:
        for name, obj in self.loggers:
            if name == "tensorboard":
                obj.close()
            else:
                obj.finish()
        self.loggers = []

    def write(self, row: dict[str, float]) -> None:
        if not distributed.is_main():
            return
        with open(self.output_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        self.send({f"ppo/{k}": v for k, v in row.items() if k != "step"}, row["step"])

    def send(self, scalars: dict[str, float], step: int) -> None:
        """``scalars`` to the ``report_to`` loggers at ``step``."""
        for name, obj in self.loggers:
            if name == "tensorboard":
                for k, v in scalars.items():
                    obj.add_scalar(k, v, step)
            else:
                obj.log(scalars, step=step)


class Measuring:
    """The yardstick's points on a :class:`~alignlimits.methods.ppo.PPOTrainer`'s run (a mixin: it uses the
    trainer's ``yardstick``, policy, reference, tokenizer, step and output folder): PPO's curve on the plane is
    measured by :func:`alignlimits.methods.measure.measure_policy`, as every other trainer's."""

    def measure(self, log: MetricsLog, last: bool, step_seconds: float) -> str | None:
        """Measure when due (every ``yardstick.every`` steps, and at the last); the stop reason when the measured
        objective has converged and the yardstick stops on that, else None."""
        from alignlimits.methods.measure import adapters_off, scalars

        ys = self.yardstick
        if ys is None or not ys.due(self.step, last) or not distributed.is_main():
            return None
        base = adapters_off(self.policy) if self.ref_policy is None else self.ref_policy
        point = ys.record(self.policy, self.tokenizer, base, self.step, self.output_dir, step_seconds)
        log.send(scalars(point), self.step)
        return "converged" if "stop" in point else None


class Checkpointing:
    """The files of a :class:`~alignlimits.methods.ppo.PPOTrainer` (a mixin: it uses the trainer's policy, value head,
    optimizer, tokenizer, step, score pool, LoRA flag, config and output folder)."""

    def start(self, resume_from_checkpoint: bool | str | Path | None) -> None:
        """Load the checkpoint to resume from (none: a fresh start), drop the metrics rows after it, write the options."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        ckpt = resume_point(self.output_dir, resume_from_checkpoint, "PPO")
        if ckpt is not None:
            self._load_checkpoint(ckpt)
        distributed.barrier()  # every process has read the run's files before rank 0 changes them
        if not distributed.is_main():
            return
        truncate_metrics(self.output_dir / "metrics.jsonl", self.step)
        if self.yardstick is not None:
            self.yardstick.start(self.output_dir, self.step)
        (self.output_dir / "ppo_config.json").write_text(json.dumps(self.config.to_dict(), indent=2))

    def save_policy(self, path: str | Path) -> None:
        """save_pretrained of the policy (full weights, or the adapter with LoRA), the
        tokenizer and the value head (rank 0's: every process holds the same)."""
        from safetensors.torch import save_file

        if not distributed.is_main():
            return
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.policy.save_pretrained(path)
        if hasattr(self.tokenizer, "save_pretrained"):
            self.tokenizer.save_pretrained(path)
        save_file({k: v.detach().contiguous() for k, v in self.value_head.state_dict().items()}, str(path / "value_head.safetensors"))

    def save_checkpoint(self) -> Path | None:
        """Write ``checkpoint-STEP`` (trainer_state.json last, so a torn one is ignored); unless
        ``keep_checkpoints``, delete the older ones; rank 0 only."""
        if not distributed.is_main():
            return None
        ckpt = self.output_dir / f"checkpoint-{self.step}"
        if ckpt.exists():
            shutil.rmtree(ckpt)
        self.save_policy(ckpt / "policy")
        torch.save(self.optimizer.state_dict(), ckpt / "optimizer.pt")
        save_rng_state(ckpt / "rng.pt")
        state = {"step": self.step, "lora": self.lora, "score_pool": self.score_pool, "config": self.config.to_dict()}
        (ckpt / "trainer_state.json").write_text(json.dumps(state, indent=2))
        if not self.config.keep_checkpoints:
            prune_checkpoints(self.output_dir)
        return ckpt

    def _load_checkpoint(self, ckpt: Path) -> None:
        from safetensors.torch import load_file

        state = json.loads((ckpt / "trainer_state.json").read_text())
        if bool(state.get("lora")) != self.lora:
            raise AlignLimitsError(f"PPO: checkpoint {ckpt} was {'LoRA' if state.get('lora') else 'full'} training; this run is not")
        self._load_policy_weights(ckpt / "policy")
        self.value_head.load_state_dict(load_file(str(ckpt / "policy" / "value_head.safetensors")))
        self.optimizer.load_state_dict(load_state(ckpt / "optimizer.pt", map_location=self.device))
        load_rng_state(ckpt / "rng.pt")
        self.step = int(state["step"])
        self.score_pool = [float(x) for x in state.get("score_pool", [])]

    def _load_policy_weights(self, pol: Path) -> None:
        """The adapter (LoRA) or the full weights saved by :meth:`save_policy`, checked against the policy."""
        from safetensors.torch import load_file

        if self.lora:
            from peft import set_peft_model_state_dict

            set_peft_model_state_dict(self.policy, load_file(str(pol / "adapter_model.safetensors")))
            return
        sd: dict[str, torch.Tensor] = {}
        for f in sorted(pol.glob("*.safetensors")):
            if f.name != "value_head.safetensors":
                sd.update(load_file(str(f)))
        missing, unexpected = self.policy.load_state_dict(sd, strict=False)
        loaded = {p.data_ptr() for n, p in self.policy.named_parameters() if n in sd}
        untied = [m for m in missing if self.policy.get_parameter(m).data_ptr() not in loaded]
        if unexpected or untied:
            raise AlignLimitsError(
                f"PPO: {pol.parent} does not match the policy (missing {untied[:3]}, unexpected {unexpected[:3]})"
            )
