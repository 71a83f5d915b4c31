"""Run the command line as a user does (the installed `alignlimits` script), and check its one-line errors."""

import shutil
import subprocess
import sys
from pathlib import Path


def installed_command() -> list[str]:
    """The console script pip installed next to this interpreter (what a user types), else `python -m`."""
    script = Path(sys.executable).with_name("alignlimits")
    if script.exists():
        return [str(script)]
    found = shutil.which("alignlimits")
    return [found] if found else [sys.executable, "-m", "alignlimits"]


class CLI:
    command = installed_command()

    @staticmethod
    def run(*args, **kwargs) -> subprocess.CompletedProcess:
        kwargs.setdefault("capture_output", True)
        return subprocess.run([*CLI.command, *map(str, args)], text=True, **kwargs)

    @staticmethod
    def assert_clean_error(proc, *needles) -> None:
        """Exit code 2, one line on stderr naming the problem, no traceback, no numbers printed."""
        assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        assert len(lines) == 1, proc.stderr
        assert "Traceback" not in proc.stderr
        for needle in needles:
            assert needle.lower() in lines[0].lower(), lines[0]
        assert proc.stdout.strip() == "", "no numbers may be printed with an error"
