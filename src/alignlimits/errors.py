"""The one exception type users see: a one-line message, exit code 2 from the CLI."""


class AlignLimitsError(ValueError):
    """Bad input or an impossible request; the message says what is wrong and how to fix it."""

    exit_code = 2
