"""Errors every layer may raise and the command line shows as one line."""


class SetupError(Exception):
    """The installation lacks something a command needs (a native part not built): a problem of the
    machine, not of any input, so a batch stops at once rather than record it against every sample."""
