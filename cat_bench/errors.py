"""Errors a user can cause; the CLI turns them into a message and exit status 2."""


class UsageError(Exception):
    """Bad user input (unknown name, out-of-range value, missing or corrupt file).

    The message must name the bad value and what is allowed.
    """


class CorruptRecord(UsageError):
    """A run directory's record or checkpoint cannot be read: that run fails, a suite goes on with the others."""


class RunBusy(UsageError):
    """Another process holds the run directory's lock (it trains or evaluates that run now)."""


class GroupFailed(Exception):
    """A rank of a data-parallel training group failed or was killed; the group stopped, --resume continues."""


class Diverged(Exception):
    """An epoch's training loss is not finite: the run stopped before recording that epoch (exit status 1)."""
