"""The one exception type users see (a one-line message, exit code 2 from the CLI), and the one check of β."""


class AlignLimitsError(ValueError):
    """Bad input or an impossible request; the message says what is wrong and how to fix it."""

    exit_code = 2


def check_beta(beta, what: str) -> float:
    """``beta`` as a float when it is a number in (0, ∞), else a one-line error naming ``what`` (where it was given):
    the KL penalty β defines the target policy π_β, so every β of a study, a trainer or a stated policy passes here."""
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 < beta < float("inf"):
        raise AlignLimitsError(f"{what}: β must be > 0 (got {beta!r}): the KL penalty β > 0 defines the target policy π_β")
    return float(beta)
