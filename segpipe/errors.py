"""The one exception type for problems caused by the user's input or environment."""

import re
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


_OWN_WORDS = re.compile(r"segpipe\.errors\.SegpipeError: (.*)")
_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception)): (.*)$", re.M)
_ITK_OBJECT = re.compile(r"^\w+\(0x[0-9a-fA-F]+\):\s*")
_ITK_ERROR = re.compile(r"(?:ITK ERROR|itk::ERROR):")


def reader_error(exc: BaseException, path: object, what: str) -> SegpipeError:
    """One clear line from whatever a reader raised, naming its cause.

    MONAI wraps reader errors in RuntimeError, or, when every reader failed, folds their
    tracebacks into "cannot find a suitable reader": a segpipe reader's own message is
    found in either and passed through; an ITK error is cut to ITK's own reason.
    """
    root = exc
    while root.__cause__ is not None:
        root = root.__cause__
    if isinstance(root, SegpipeError):
        return root
    text = str(root).strip()
    own = _OWN_WORDS.search(text)
    if own:
        return SegpipeError(own.group(1).strip())
    return SegpipeError(f"{path}: {what} ({_reason(root, text)})")


def _reason(root: BaseException, text: str) -> str:
    itk = _ITK_ERROR.search(text)
    if itk:
        block = text[itk.end():].split("Traceback (most recent call last)", 1)[0]
        lines = [line.strip() for line in block.splitlines() if line.strip()]
        first = _ITK_OBJECT.sub("", lines[0]) if lines else ""
        teem = [line for line in lines[1:] if line.startswith("[")]  # NRRD's own trail: the last line is the cause
        return "ITK: " + (f"{first} {teem[-1]}" if teem else first)[:300]
    if "cannot find a suitable reader" in text:
        raised = _EXCEPTION_LINE.findall(text)  # the designated reader's traceback comes first
        if raised:
            name, message = raised[0]
            return f"{name.rsplit('.', 1)[-1]}: {message.strip()[:200]}"
    first = text.splitlines()[0] if text else ""
    return f"{type(root).__name__}: {first[:200]}" if first else type(root).__name__
