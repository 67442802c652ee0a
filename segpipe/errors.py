"""The one exception type for problems caused by the user's input or environment."""

import reprlib

_SHOWN = reprlib.Repr()
_SHOWN.maxlevel, _SHOWN.maxlist, _SHOWN.maxtuple, _SHOWN.maxdict = 2, 4, 4, 4
_SHOWN.maxstring, _SHOWN.maxother = 80, 80


class SegpipeError(Exception):
    """A user-facing error: the CLI prints its message as one line and exits non-zero.

    The message should name the file or option and say what is wrong (and, where it
    helps, how to fix it).
    """


def shown(value: object) -> str:
    """`repr(value)` cut short for an error line: a YAML file's aliases can nest a value whose
    full repr runs to gigabytes, and a pasted string to pages."""
    return _SHOWN.repr(value)


def reader_error(exc: BaseException, path: object, what: str) -> SegpipeError:
    """One clear line from whatever a reader raised: MONAI wraps reader errors in
    RuntimeError, so the root cause is found and named; a SegpipeError passes through."""
    root = exc
    while root.__cause__ is not None:
        root = root.__cause__
    if isinstance(root, SegpipeError):
        return root
    text = str(root).strip()
    first = text.splitlines()[0] if text else type(root).__name__
    return SegpipeError(f"{path}: {what} ({first})")
