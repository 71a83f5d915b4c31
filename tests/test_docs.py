"""The README and docs/ show only commands and options that exist, and the cheap ones work as shown.

Every `alignlimits ...` line of a shell block in README.md and docs/*.md is parsed against the CLI itself
(its click command, `make_context`: the subcommand must exist, every option must be one of its options,
required arguments must be there, values must convert), without running the command's work. Commands
that need no model (`frontier`, `plan`, `hacking`, `example-samples`, `--help`) are then run in a
scratch directory, in the order the pages show them: first the `example-samples` commands, so that the
tables they write are there; an input path the pages take from elsewhere (a run directory, a table of
one's own) gets a small table the test writes. Inline mentions (`alignlimits hack RUN_DIR`, `--budget`)
must name an existing command and options. The pages' Python blocks run, their relative links resolve,
and the config file shown is made of known keys.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import re
import shlex
import signal
import sys
from dataclasses import dataclass, fields
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL = {"", "sh", "bash", "shell", "console"}
# commands that read or write small tables only: run as shown (others load models or need a finished run)
CHEAP = {"frontier", "plan", "hacking", "example-samples"}
# options shown in the pages that belong to other programs
FOREIGN_OPTIONS = {"--baseline": "benchmarks/bench_frontier_stream.py"}
# the figure comes from a real `make demo` run, placed by hand (README: "from a real run")
PLACED_BY_HAND = {ROOT / "docs" / "img" / "plane.png"}


@dataclass(frozen=True)
class Shown:
    page: Path
    line: int
    text: str

    def __str__(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}: {self.text}"


# ---------------------------------------------------------------- reading the pages

def fenced_blocks(page: Path) -> list[tuple[str, int, list[str]]]:
    """(language, line of the first body line, body lines) of each ``` block."""
    blocks, lang, start, body = [], None, 0, []
    for i, line in enumerate(page.read_text().splitlines(), 1):
        if line.startswith("```"):
            if lang is None:
                lang, start, body = line[3:].strip().lower(), i + 1, []
            else:
                blocks.append((lang, start, body))
                lang = None
        elif lang is not None:
            body.append(line)
    assert lang is None, f"{page}: a ``` block is never closed"
    return blocks


def shell_commands(page: Path) -> list[Shown]:
    """Each `alignlimits ...` command of the page's shell blocks (continuations joined, comments, pipes and
    `&&` cut off)."""
    out = []
    for lang, start, body in fenced_blocks(page):
        if lang not in SHELL:
            continue
        joined, first = "", None
        for i, line in enumerate(body, start):
            first = i if not joined else first
            if line.rstrip().endswith("\\"):
                joined += line.rstrip()[:-1] + " "
                continue
            text, joined = joined + line, ""
            for part in re.split(r"\s(?:\||&&|;)\s", text.strip().removeprefix("$ ")):
                words = part.split()
                if words and Path(words[0]).name == "alignlimits":
                    out.append(Shown(page, first, part.split(" #")[0].strip()))
    return out


def inline_spans(page: Path) -> list[Shown]:
    """Code spans outside the ``` blocks."""
    out, in_block = [], False
    for i, line in enumerate(page.read_text().splitlines(), 1):
        if line.startswith("```"):
            in_block = not in_block
            continue
        if not in_block:
            out += [Shown(page, i, m) for m in re.findall(r"`([^`]+)`", line)]
    return out


def all_commands() -> list[Shown]:
    return [c for page in PAGES for c in shell_commands(page)]


def argv(shown: Shown) -> list[str]:
    words = shlex.split(shown.text)
    assert Path(words[0]).name == "alignlimits", shown
    return words[1:]


# ---------------------------------------------------------------- the CLI itself

def cli_group():
    """The click group `alignlimits` runs, with every command module registered (as `cli._run_app` does)."""
    import typer.main

    import alignlimits.cli as package
    from alignlimits.cli.app import app

    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")
    return typer.main.get_command(app)


GROUP = cli_group()


def options_of(command) -> set[str]:
    return {o for p in command.params for o in (*p.opts, *p.secondary_opts) if o.startswith("-")} | {"--help"}


def subcommands() -> dict:
    ctx = GROUP.context_class(GROUP, info_name="alignlimits")
    return {name: GROUP.get_command(ctx, name) for name in GROUP.list_commands(ctx)}


def parse(args: list[str]):
    """Parse a command line as `alignlimits` would, without running it: (subcommand name, its params), with
    ``None`` params when `--help` or `--version` ends the parse. A usage mistake raises AssertionError."""
    root = GROUP.context_class(GROUP, info_name="alignlimits")
    try:
        if not args or args[0].startswith("-"):
            GROUP.make_context("alignlimits", list(args))
            return None, None
        name, rest = args[0], args[1:]
        command = GROUP.get_command(root, name)
        assert command is not None, f"no command {name!r} (commands: {', '.join(subcommands())})"
        ctx = command.make_context(name, list(rest), parent=root)
        return name, ctx.params
    except AssertionError:
        raise
    except Exception as err:  # click's own (typer may vendor click: match by name, not by class)
        kind = type(err).__name__
        if kind == "Exit":  # --help / --version: the eager option ended the parse, as it would the command
            return args[0] if args and not args[0].startswith("-") else None, None
        message = err.format_message() if hasattr(err, "format_message") else str(err)
        raise AssertionError(f"{kind}: {message}") from None


def check_values(name: str | None, params: dict | None) -> None:
    """Values the parser takes as free text but the command checks later: methods and tasks (placeholders
    such as TASK are left alone)."""
    from alignlimits.lm.tasks import TASKS
    from alignlimits.pipeline.config import known_methods
    from alignlimits.pipeline.trainers import TRAINERS

    if not params:
        return
    task = params.get("task")
    if task and not task.isupper():
        assert task in TASKS, f"unknown task {task!r}; tasks: {', '.join(TASKS)}"
    if name == "run" and params.get("methods"):
        methods = [m.strip() for m in params["methods"].split(",") if m.strip() and m.strip() != "..."]
        unknown = [m for m in methods if m not in known_methods()]
        assert not unknown, f"unknown method(s) {unknown}; methods: {', '.join(known_methods())}"
    if name == "train":
        assert params["method"] in TRAINERS, f"train --method {params['method']!r}; trained methods: {', '.join(TRAINERS)}"


# ---------------------------------------------------------------- every command shown parses

COMMANDS = all_commands()


def test_the_pages_show_commands():
    assert (ROOT / "docs").is_dir()
    shown_in = {c.page.name for c in COMMANDS}
    assert "README.md" in shown_in and len(shown_in) >= 6, shown_in
    assert len(COMMANDS) >= 30


@pytest.mark.parametrize("shown", COMMANDS, ids=str)
def test_shown_command_parses(shown):
    name, params = parse(argv(shown))
    check_values(name, params)


def test_readme_opens_with_the_two_commands():
    head = (ROOT / "README.md").read_text().splitlines()[:8]
    assert any(line.startswith("make demo ") for line in head), head
    assert any(line.startswith("make test ") for line in head), head
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200


def test_every_topic_page_has_a_runnable_example():
    without = [page.name for page in PAGES if page.parent.name == "docs" and page.name != "README.md"
               and not any(lang in SHELL | {"python"} and body for lang, _, body in fenced_blocks(page))]
    assert not without, without


def test_the_readme_links_every_page():
    readme = (ROOT / "README.md").read_text()
    unlinked = [page.name for page in PAGES if page.parent.name == "docs" and page.name != "README.md"
                and f"(docs/{page.name}" not in readme]
    assert not unlinked, unlinked


def test_the_readme_shows_five_everyday_commands():
    readme = [c for c in COMMANDS if c.page.name == "README.md"]
    names = {argv(c)[0] for c in readme}
    assert len(names) >= 5, names


def test_inline_mentions_name_existing_commands_and_options():
    commands = subcommands()
    every_option = set().union(*(options_of(c) for c in commands.values())) | options_of(GROUP)
    wrong = []
    for page in PAGES:
        for span in inline_spans(page):
            text = span.text
            if text.startswith("alignlimits ") or text == "alignlimits":
                words = text.split()
                if len(words) > 1 and not words[1].startswith("-") and words[1] not in ("…", "..."):
                    command = commands.get(words[1])
                    if command is None:
                        wrong.append(f"{span}: no command {words[1]!r}")
                        continue
                    known = options_of(command)
                else:
                    known = options_of(GROUP)
                opts = [w.split("=")[0] for w in words if w.startswith("--")]
                wrong += [f"{span}: {o} is not an option of `{' '.join(words[:2])}`" for o in opts if o not in known]
            elif text.startswith("--"):
                for opt in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", text):
                    if opt not in every_option and opt not in FOREIGN_OPTIONS:
                        wrong.append(f"{span}: no command has an option {opt}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("text", [
    "alignlimits frontiers data/gaussian.parquet",            # no such command
    "alignlimits frontier data/gaussian.parquet --kls 0.5",   # no such option
    "alignlimits plan data/gaussian.parquet --kl half",       # a value that is not a number
    "alignlimits hacking data/gaussian.parquet --proxy p",    # a required option missing
    "alignlimits run safety --methods bon,ppo2",              # a method that does not exist
])
def test_a_wrong_command_fails(text):
    with pytest.raises(AssertionError):
        shown = Shown(ROOT / "README.md", 0, text)
        check_values(*parse(argv(shown)))


# ---------------------------------------------------------------- the cheap ones run as shown

def write_table(path: Path) -> None:
    """A small table for a command whose input the pages take from elsewhere (a run, one's own file):
    8 prompts × 64 samples, a Gaussian `reward`, a second reward column and two noisy proxies."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    ids = np.repeat([f"p{i}" for i in range(8)], 64)
    reward = rng.normal(size=ids.size) + np.repeat(rng.normal(size=8), 64)
    frame = pd.DataFrame({"prompt_id": ids, "reward": reward, "helpful": reward + rng.normal(0, 0.3, ids.size),
                          "proxy_1": reward + rng.normal(size=ids.size), "proxy_2": reward + rng.normal(size=ids.size)})
    if not path.suffix:  # a directory of `alignlimits sample` / `run`
        path.mkdir(parents=True, exist_ok=True)
        path = path / "samples.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_parquet(path, index=False)


def run_cli(args: list[str]) -> int:
    """`alignlimits ARGS` in this process (as the console script: its errors, its exit code), leaving the
    environment, the signal handler and the shared console as they were."""
    import alignlimits.cli as cli
    from alignlimits.cli.app import console

    saved_env, saved_argv = dict(os.environ), sys.argv
    saved_term, saved_stderr = signal.getsignal(signal.SIGTERM), console.stderr
    sys.argv = ["alignlimits", *args]
    try:
        cli.main()
        return 0
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except Exception as err:  # a crash: reported with the others, not in place of them
        print(f"crashed: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    finally:
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_env)
        signal.signal(signal.SIGTERM, saved_term)
        console.stderr = saved_stderr


def is_cheap(args: list[str]) -> bool:
    return not args or args[0] in CHEAP or "--help" in args or "--version" in args


def test_cheap_commands_run_as_shown(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cheap = [c for c in COMMANDS if is_cheap(argv(c))]
    assert any(argv(c)[:1] == ["frontier"] for c in cheap) and any(argv(c)[:1] == ["plan"] for c in cheap)
    once = {tuple(argv(c)): c for c in reversed(cheap)}  # a command shown on several pages runs once
    ordered = sorted(once.values(), key=lambda c: (argv(c)[:1] != ["example-samples"], COMMANDS.index(c)))
    failed = []
    for shown in ordered:
        args = argv(shown)
        if args and args[0] in ("frontier", "plan", "hacking") and "--help" not in args:
            source = next(a for a in args[1:] if not a.startswith("-"))
            if not Path(source).exists():
                write_table(Path(source))
        code = run_cli(args)
        out = capsys.readouterr()
        if code != 0:
            failed.append(f"{shown}\n    exit {code}: {out.err.strip()[-400:]}")
    assert not failed, "\n".join(failed)


# ---------------------------------------------------------------- the rest of what the pages show

def python_blocks() -> list[tuple[Shown, str]]:
    return [(Shown(page, start, "```python"), "\n".join(body))
            for page in PAGES for lang, start, body in fenced_blocks(page) if lang == "python"]


@pytest.mark.parametrize("block", python_blocks(), ids=lambda b: str(b[0]))
def test_python_blocks_run(block, capsys):
    shown, code = block
    exec(compile(code, str(shown), "exec"), {"__name__": "docs_example"})


def test_the_config_file_shown_has_known_keys():
    import yaml

    from alignlimits.pipeline.config import StudyConfig

    known = {f.name for f in fields(StudyConfig)}
    blocks = [body for page in PAGES for lang, _, body in fenced_blocks(page) if lang in ("yaml", "yml")]
    assert blocks, "the config file is shown somewhere"
    for body in blocks:
        values = {k.replace("-", "_"): v for k, v in yaml.safe_load("\n".join(body)).items()}
        assert set(values) <= known, set(values) - known


def github_anchor(heading: str) -> str:
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    in_block, found = False, set()
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            in_block = not in_block
        elif not in_block and line.startswith("#"):
            found.add(github_anchor(line.lstrip("#")))
    return found


def test_relative_links_resolve():
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if file in PLACED_BY_HAND:
                continue
            if not file.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no file)")
            elif anchor and file.suffix == ".md" and anchor not in anchors(file):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no heading #{anchor})")
    assert not broken, "\n".join(broken)
