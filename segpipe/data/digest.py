"""Content hashes of a case's source files: what tells a prepared case from a changed input."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_digest(paths: list[Path]) -> str:
    """Content hash of a case's source files, in order."""
    from segpipe.data.guard import check_read

    h = hashlib.blake2b(digest_size=16)
    for path in paths:
        check_read(path)  # the first read of a label: inside the inputs, within the limits
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


__all__ = ["file_digest"]
