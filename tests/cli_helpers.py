"""Run the command line as a user does, and check its one-line errors."""

import subprocess
import sys


class CLI:
    @staticmethod
    def run(*args, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "alignlimits", *map(str, args)], capture_output=True, text=True, **kwargs)

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
