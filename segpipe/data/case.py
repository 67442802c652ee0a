"""The record every dataset reader produces."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Case:
    """One image (possibly several channel files) with its optional label.

    Attributes:
        case_id: unique name of the case; output files are named after it.
        patient: the patient it belongs to; splits never separate one patient's cases.
        images: one 4D file, or one file per channel in channel order.
        label: the reference segmentation, if any.
        attrs: reader-specific facts (e.g. tumour type).
    """

    case_id: str
    patient: str
    images: list[Path]
    label: Path | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
