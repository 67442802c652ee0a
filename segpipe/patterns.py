"""User-given regular expressions (patient patterns), searched within a time limit.

Python's regular expressions backtrack: a pattern such as `(a+)+b` takes seconds on a
30-character name and doubles with each character more. A pattern from a config is
searched under a timer, so such a pattern is refused in one line instead of hanging.
"""

from __future__ import annotations

import re
import signal
import threading

from segpipe.errors import SegpipeError

SEARCH_SECONDS = 2.0  # per name: patient names are short; a sane pattern takes microseconds


class _Expired(Exception):
    pass


def _expired(signum: int, frame: object) -> None:
    raise _Expired


def bounded_search(regex: re.Pattern[str], text: str, key: str) -> re.Match[str] | None:
    """`regex.search(text)`, refused when it takes over SEARCH_SECONDS (a timer in the main
    thread; elsewhere, where no timer can interrupt it, the plain search).

    Raises:
        SegpipeError: the search ran out of time, naming the config `key`, the pattern and the text.
    """
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        return regex.search(text)
    previous = signal.signal(signal.SIGALRM, _expired)
    signal.setitimer(signal.ITIMER_REAL, SEARCH_SECONDS)
    try:
        return regex.search(text)
    except _Expired:
        raise SegpipeError(f"config key '{key}': the pattern {regex.pattern!r} takes over {SEARCH_SECONDS:g} s on the name "
                           f"{text!r} (it backtracks without end); write it without nested repeats such as (a+)+") from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


__all__ = ["bounded_search", "SEARCH_SECONDS"]
