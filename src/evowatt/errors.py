"""Errors a user can cause. The CLI turns each into one message and exit code 2, never a traceback."""


class EvowattError(Exception):
    """A problem with the user's input (config, grammar, dataset, meter, checkpoint) that names its fix."""
