"""Progress bars: shown only on a terminal, never under --quiet or --json."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from tqdm import tqdm


def progress(iterable: Iterable[Any] | None = None, *, quiet: bool = False, **options: Any) -> tqdm:
    """A tqdm bar on standard error when it is a terminal and `quiet` is off; else a silent one."""
    return tqdm(iterable, disable=quiet or not sys.stderr.isatty(), **options)
