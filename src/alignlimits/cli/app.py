"""The typer application every command module registers on."""

import typer

app = typer.Typer(
    name="alignlimits",
    help="The limit of KL-regularised alignment, and how close real methods come.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
