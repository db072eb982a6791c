"""One exception type for problems the user can fix (bad paths, files, names, settings).

The command-line entry points print these as a single line and exit non-zero instead of showing a
traceback, because the traceback would point into our code while the fault is in the user's input.
"""


class LightcycleError(Exception):
    """A user-facing error: the message names the file or setting and what is wrong with it."""
