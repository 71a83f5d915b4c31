"""Command line: `alignlimits COMMAND`. Bad input exits with code 2 and one line on stderr."""

import os
import sys

from alignlimits.errors import AlignLimitsError


def main() -> None:
    # Hugging Face's per-file bars (loading weights, writing shards) would bury our own progress bars
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from alignlimits.cli.app import app
        from alignlimits.cli import analysis, hack, run, sample  # noqa: F401  (they register commands)

        # without standalone mode, click returns the exit code of Exit (typer turns Ctrl-C into Exit(130))
        code = app(standalone_mode=False)
        if code == 130:
            raise KeyboardInterrupt
        if isinstance(code, int) and code:
            sys.exit(code)
    except AlignLimitsError as err:
        print(f"alignlimits: error: {err}", file=sys.stderr)
        sys.exit(AlignLimitsError.exit_code)
    except KeyboardInterrupt:
        print("alignlimits: interrupted; run the same command again to resume.", file=sys.stderr)
        sys.exit(130)
    except Exception as err:  # click's usage errors arrive here in standalone_mode=False
        import click

        if isinstance(err, click.exceptions.Exit):
            sys.exit(err.exit_code)
        if isinstance(err, click.ClickException):
            print(f"alignlimits: error: {err.format_message()}", file=sys.stderr)
            sys.exit(2)
        if isinstance(err, click.exceptions.Abort):
            sys.exit(130)
        raise
