"""The project's one error base class.

Every error a stage raises on purpose (bad input, a bad setting, a model that cannot start)
is a `SynthllmError` whose message names the file, record or config key; the command line
prints it as one line and exits with status 2, while anything else is a bug and keeps its
traceback.
"""


class SynthllmError(Exception):
    """An error with a message meant for the user: what is wrong and where."""
