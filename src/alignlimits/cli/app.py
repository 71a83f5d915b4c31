"""The typer application every command module registers on."""

import sys

import typer
from rich.console import Console

app = typer.Typer(
    name="alignlimits",
    help="The limit of KL-regularised alignment, and how close real methods come.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# piped to a file or a CI log, rich would assume 80 columns and wrap every table's method names
console = Console(width=None if sys.stdout.isatty() else 150)
