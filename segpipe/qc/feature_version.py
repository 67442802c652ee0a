"""The version of `segpipe.qc.features`, apart from them: reading a reference or a case table
needs it, and not the features' MONAI and torch imports (seconds for `evaluate`)."""

VERSION = 2  # of the features; a reference built from other features is not compared with them

__all__ = ["VERSION"]
