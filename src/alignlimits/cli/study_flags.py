"""The options of `run` and `train`, derived from their one declaration: the :class:`StudyConfig` fields made with
:func:`alignlimits.pipeline.config.option` (name, type, default per preset and task, help)."""

from __future__ import annotations

import inspect
from dataclasses import Field, fields
from typing import Callable, Optional

import typer

from alignlimits.cli.options import parse_numbers, parse_policies, parse_policy_betas
from alignlimits.pipeline.config import PRESETS, TASK_DEFAULTS, StudyConfig

# how each declared form reads its command-line value (the values already read, for a form that needs another's)
FORMS: dict[str | None, Callable] = {
    None: lambda value, flag, given: value,
    "list": lambda value, flag, given: [m.strip() for m in value.split(",") if m.strip()],
    "numbers": lambda value, flag, given: parse_numbers(value, flag),
    "repeat": lambda value, flag, given: list(value) or None,
    "policies": lambda value, flag, given: parse_policies(value),
    "policy_betas": lambda value, flag, given: parse_policy_betas(value, given.get("policies")),
}
SCALARS = {"int": int, "float": float, "str": str, "bool": bool}


def declared(command: str) -> list[Field]:
    """The config fields that are options of ``command`` (`run`: all of them; `train`: those marked for it)."""
    return [f for f in fields(StudyConfig) if f.metadata.get("flags") and (command == "run" or f.metadata["train"])]


def _shown(value) -> str:
    if value is None:
        return "all"
    if isinstance(value, list):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def default_text(key: str) -> str:
    """The default of an option as the help states it: the quick preset's, then where a task or preset differs."""
    quick = getattr(StudyConfig(), key)
    other = [f"{task} task {_shown(v[key])}" for task, v in TASK_DEFAULTS.items() if key in v and v[key] != quick]
    other += [f"{name} preset {_shown(v[key])}" for name, v in PRESETS.items() if key in v and v[key] != quick]
    return f"Default {_shown(quick)}" + (f" ({'; '.join(other)})." if other else ".")


def typer_option(key: str):
    """The typer option of config key ``key`` as declared (also for a command that is not derived, as `evaluate`)."""
    f = next(f for f in fields(StudyConfig) if f.name == key)
    help_text = f.metadata["help"]
    if "Default" not in help_text:
        help_text = f"{help_text} {default_text(f.name)}"
    return typer.Option(None, *f.metadata["flags"], help=help_text, show_default=False)


def _parameter(f: Field) -> inspect.Parameter:
    form, scalar = f.metadata["form"], SCALARS.get(f.type.removesuffix(" | None"), str)
    kind = Optional[list[str]] if form in ("repeat", "policies", "policy_betas") else Optional[str if form else scalar]
    return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=typer_option(f.name), annotation=kind)


def study_flags(command: str):
    """Decorate a command: every option declared for ``command`` joins its signature, and the command receives the
    ones given as ``flags`` (config key → value, read per the declared form)."""

    def wrap(fn):
        options = declared(command)
        own = [p for p in inspect.signature(fn, eval_str=True).parameters.values() if p.name != "flags"]
        params = own + [_parameter(f) for f in options]

        def run_command(**kwargs):
            given: dict = {}
            for f in options:
                value = kwargs.pop(f.name)
                if value is not None:
                    given[f.name] = FORMS[f.metadata["form"]](value, f.metadata["flags"][0], given)
            return fn(**kwargs, flags={k: v for k, v in given.items() if v is not None})

        run_command.__name__, run_command.__doc__ = fn.__name__, fn.__doc__
        run_command.__signature__ = inspect.Signature(params)
        run_command.__annotations__ = {p.name: p.annotation for p in params}
        return run_command

    return wrap
