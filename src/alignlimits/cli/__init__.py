"""Command line: `alignlimits COMMAND`.

The contract: bad input or a usage mistake (unknown option or command, a missing or malformed
argument) prints one line on stderr saying what to do and exits with code 2, never a traceback.
"""

import os
import sys

from alignlimits.errors import AlignLimitsError


def _click_exceptions() -> tuple:
    """The exception modules of every click typer may run on: its vendored copy (typer ≥ 0.29,
    ``typer._click``) and the click package; catching only one silently broke the contract once."""
    modules = []
    for name in ("typer._click.exceptions", "click.exceptions"):
        try:
            modules.append(__import__(name, fromlist=["UsageError"]))
        except ImportError:
            pass
    return tuple(modules)


def _types(modules: tuple, name: str) -> tuple:
    import typer

    found = tuple(getattr(m, name) for m in modules if hasattr(m, name))
    return found + ((getattr(typer, name),) if hasattr(typer, name) else ())


def _quiet_third_parties() -> None:
    # Hugging Face's per-file bars would bury our own progress bars, and transformers' advisory
    # warnings ("mtime may not be reliable…") are noise to a user of this command
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # TRL warns about the installed vLLM at import; its trainers here sample with transformers, never vLLM
    import warnings

    warnings.filterwarnings("ignore", message="TRL currently supports vLLM versions")


def _fail(message: str, code: int = AlignLimitsError.exit_code) -> None:
    from alignlimits.methods.distributed import is_main

    if is_main():  # under a launcher every process refuses alike (same inputs, same files); one says so
        print(f"alignlimits: error: {' '.join(message.split())}", file=sys.stderr)
    sys.exit(code)


def _usage_error(err) -> None:
    ctx = getattr(err, "ctx", None)
    path = ctx.command_path if ctx is not None else "alignlimits"
    _fail(f"{err.format_message()} (see `{path} --help`)")


def _broken_pipe() -> None:
    # the reader left (`| head`): later writes to stdout, and Python's own flush at exit, go nowhere
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    _fail("the output pipe closed before all output was written; to keep everything, write to a file "
          "(e.g. --json FILE, or `> out.txt`) instead of piping into a reader that stops early")


def _on_sigterm(signum, frame) -> None:
    # Python's default for SIGTERM ends the process at once; raising instead unwinds it, so `finally` blocks and
    # exit handlers remove what they own (the streamed frontier's spill in TMPDIR) and the message says to resume
    print("alignlimits: terminated; run the same command again to resume.", file=sys.stderr)
    raise SystemExit(128 + signum)


def _run_app() -> int:
    from alignlimits.cli.app import app, console
    from alignlimits.methods.distributed import is_main
    from alignlimits.cli import analysis, hack, run, sample, training  # noqa: F401  (they register commands)

    console.quiet = not is_main()  # under a launcher rank 0 speaks for every process
    # standalone_mode=False: click raises its usage errors and returns Exit's code, so we format them
    code = app(standalone_mode=False)
    sys.stdout.flush()  # a closed pipe shows here, inside the handlers below, not at interpreter exit
    return code if isinstance(code, int) else 0


def main() -> None:
    import signal

    signal.signal(signal.SIGTERM, _on_sigterm)
    _quiet_third_parties()
    modules = _click_exceptions()
    no_args = _types(modules, "NoArgsIsHelpError")
    usage, other = _types(modules, "UsageError"), _types(modules, "ClickException")
    exits, aborts = _types(modules, "Exit"), _types(modules, "Abort")
    try:
        code = _run_app()
    except AlignLimitsError as err:
        _fail(str(err))
    except KeyboardInterrupt:
        print("alignlimits: interrupted; run the same command again to resume.", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:
        _broken_pipe()
    except no_args:
        sys.exit(0)  # bare `alignlimits`: typer has printed the help to stdout
    except usage as err:
        _usage_error(err)
    except other as err:
        _fail(err.format_message())
    except exits as err:
        code = err.exit_code
    except aborts:
        code = 130
    if code == 130:  # typer turns Ctrl-C into Exit(130)
        print("alignlimits: interrupted; run the same command again to resume.", file=sys.stderr)
    if code:
        sys.exit(code)
