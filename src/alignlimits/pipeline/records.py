"""What a run directory records: which stages are done (``RunState``), each policy it holds (``PolicyRecord``) and the
launch its policies are trained under (``launch.json``, :func:`check_launch`).

A policy's method and β travel in its record, exactly; folder and stage names are for people and
nothing is parsed back from them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from alignlimits.errors import AlignLimitsError
from alignlimits.methods import distributed
from alignlimits.pipeline.files import write_json_atomic

FORMAT_VERSION = 3
RECORD_FILE = "policy_record.json"
LAUNCH_FILE = "launch.json"


def check_launch(run_dir: Path) -> dict:
    """This launch (``world_size``: its processes), recorded in ``RUN_DIR/launch.json`` by the run's first training;
    any later training in the run, a resumed one above all, is refused under another number of processes (global
    batches, checkpoints and seeds per rank all assume the one they started with)."""
    path = Path(run_dir) / LAUNCH_FILE
    launch = {"world_size": distributed.world_size()}
    if path.exists():
        started = json.loads(path.read_text())["world_size"]
        if started != launch["world_size"]:
            raise AlignLimitsError(
                f"{run_dir} was trained under {started} process(es) and this launch has {launch['world_size']}; train "
                f"into it with the same number (e.g. torchrun --nproc_per_node {started}), or into another --out")
    elif distributed.is_main():
        write_json_atomic(launch, path)
    return launch


def trained_world_size(run_dir: Path) -> int | None:
    """The number of processes the run's policies were trained under (None before any training)."""
    path = Path(run_dir) / LAUNCH_FILE
    return json.loads(path.read_text())["world_size"] if path.exists() else None


@dataclass(frozen=True)
class PolicyRecord:
    """A policy on the plane: trained here (``method`` ppo/grpo, its ``beta``) or brought in (``external``)."""

    method: str
    name: str
    path: str
    beta: float | None = None
    seed: int | None = None
    config: dict = field(default_factory=dict)

    @classmethod
    def trained(cls, method: str, beta: float, run_dir: Path, seed: int, config: dict) -> "PolicyRecord":
        name = f"{method}-beta{beta!r}"
        return cls(method, name, str(Path(run_dir) / "train" / name / "policy"), float(beta), seed, config)

    @classmethod
    def external(cls, path: Path, name: str | None = None, beta: float | None = None) -> "PolicyRecord":
        """A policy trained elsewhere (TRL, OpenRLHF, verl, ...): any Hugging Face folder or LoRA adapter; ``beta``: the
        KL coefficient it was trained at, when stated (``config["stated_beta"]``)."""
        stem = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in (name or Path(path).name))
        config = {"label": name or Path(path).name, **({"stated_beta": float(beta)} if beta is not None else {})}
        return cls("external", f"external-{stem}", str(Path(path).expanduser().resolve()), config=config)

    @property
    def objective_beta(self) -> float | None:
        """The β whose objective the policy maximised: its training β, or the one stated for an external policy."""
        return self.beta if self.beta is not None else self.config.get("stated_beta")

    @property
    def label(self) -> str:
        """``PPO β=0.1`` for a trained policy (``PPO β=0.1 (aligned to error:2)`` when trained on a proxy); an external
        one keeps its given name."""
        if self.beta is None:
            return str(self.config.get("label") or self.name.removeprefix("external-"))
        aligned = f" (aligned to {self.config['align_to']})" if self.config.get("align_to") else ""
        return f"{self.method.upper()} β={self.beta:.4g}{aligned}"

    @property
    def train_dir(self) -> Path:
        return Path(self.path).parent

    def save(self, path: Path) -> None:
        write_json_atomic(asdict(self), path)

    @classmethod
    def load(cls, path: Path) -> "PolicyRecord":
        return cls(**json.loads(Path(path).read_text()))


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
        """Mark ``stage`` done (every process knows it; rank 0 writes it)."""
        self.data["stages"][stage] = {"seconds": round(seconds, 2)}
        if distributed.is_main():
            write_json_atomic(self.data, self.path)

    def timings(self) -> dict:
        return {k: v["seconds"] for k, v in self.data["stages"].items()}
