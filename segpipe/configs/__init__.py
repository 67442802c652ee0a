"""Ready configs shipped with segpipe (also reachable as the repository's configs/ folder)."""

from __future__ import annotations

from pathlib import Path

from segpipe.errors import SegpipeError

CONFIG_DIR = Path(__file__).parent


def available() -> list[str]:
    """Names of the ready configs."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def resolve_config(name_or_path: str) -> Path:
    """A path to an existing YAML file, or the name of a ready config (e.g. `demo`)."""
    if not name_or_path.strip():
        raise SegpipeError(f"option --config: empty (give a YAML file or a ready config: {', '.join(available())})")
    path = Path(name_or_path)
    if path.is_file():
        return path
    bundled = CONFIG_DIR / f"{name_or_path}.yaml"
    if "/" not in name_or_path and bundled.is_file():
        return bundled
    if path.is_dir():
        raise SegpipeError(f"{name_or_path}: a folder, not a config file (give a YAML file or a ready config: "
                           f"{', '.join(available())})")
    raise SegpipeError(f"{name_or_path}: no such config file or ready config (ready: {', '.join(available())})")
