"""The one exception type for problems caused by the user's input or environment."""


class SegpipeError(Exception):
    """A user-facing error: the CLI prints its message as one line and exits non-zero.

    The message should name the file or option and say what is wrong (and, where it
    helps, how to fix it).
    """
