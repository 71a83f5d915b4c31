"""The typer application every command module registers on, and the console they print to."""

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

app = typer.Typer(
    name="alignlimits",
    help="The limit of KL-regularised alignment, and how close real methods come.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class _Console(Console):
    def on_broken_pipe(self) -> None:
        # rich would exit 1 silently; the CLI's main() says what happened and exits 2
        self.quiet = True
        raise BrokenPipeError


# piped to a file or a CI log, rich would assume 80 columns and wrap every table's method names
console = _Console(width=None if sys.stdout.isatty() else 150)


def json_to_stdout(json_out: Optional[Path]) -> None:
    """With ``--json -`` stdout carries only the JSON: tables and messages move to stderr."""
    if json_out is not None and str(json_out) == "-":
        console.stderr = True


def _version(value: bool) -> None:
    if value:
        from alignlimits import __version__

        print(f"alignlimits {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """The limit of KL-regularised alignment, and how close real methods come."""
