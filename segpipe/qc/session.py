"""What `segpipe infer` records per case: flags before segmenting, confidence after, cases.csv at the end."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segpipe.artifacts.plan import Plan
from segpipe.errors import SegpipeError
from segpipe.qc.casetable import case_row, cases_file, structures_of, voxel_ml, write_cases
from segpipe.qc.confidence import entropy_map, expected_dice, expected_dice_terms, region_terms
from segpipe.qc.ood import Flag, check_case, check_prediction


class Refused(SegpipeError):
    """A case --strict refuses to segment because it is out of distribution."""


@dataclass
class _Pending:
    flags: list[Flag] = field(default_factory=list)
    confidence: float | None = None
    terms: dict[str, tuple[float, float]] | None = None
    uncertainty: np.ndarray | None = None
    started: float = 0.0


class InferQC:
    """Out-of-distribution checks, confidence and the per-case table of one infer run.

    Args:
        plan: the model's plan (with "qc_reference" when the model folder has one).
        network: the model's network.json (in_channels, spatial_dims).
        regions: evaluation regions (name -> label values) to report volumes for.
        strict: refuse flagged cases instead of warning.
        uncertainty: keep a voxel entropy map of each case, in the input's geometry.
    """

    def __init__(self, plan: Plan, network: dict[str, Any], regions: dict[str, list[int]], precision: str,
                 *, strict: bool = False, uncertainty: bool = False, region_outputs: Any = None) -> None:
        self.plan, self.network, self.precision = plan, network, precision
        self.strict, self.uncertainty = strict, uncertainty
        self.structures = structures_of(plan.label_names, regions)
        self.region_outputs = region_outputs  # a RegionChain when the network has sigmoid region outputs
        self.rows: list[dict[str, Any]] = []
        self.warnings: list[str] = []
        self.has_reference = bool(plan.get("qc_reference"))
        self._case: _Pending = _Pending()
        self._patients: dict[str, list[Any]] = {}
        self._read: Callable[[Any], dict[str, Any]] | None = None
        self._patient_of: Callable[[str], str] = str
        self._mine: set[str] = set()
        self._features: dict[str, dict[str, Any] | None] = {}
        self._data: dict[str, dict[str, Any]] = {}

    def pool_patients(self, cases: Sequence[Any], read: Callable[[Any], dict[str, Any]],
                      patient_of: Callable[[str], str], mine: Sequence[Any] = ()) -> None:
        """Check the 2D slices of one patient together (contrast, orientation).

        Args:
            cases: every case of the run (all shards), each with `case_id` and `patient`.
            read: reads and preprocesses a case as for segmenting (its data, with "qc_features").
            patient_of: the patient a case id names, for cases that do not say (input files).
            mine: the cases this process segments; those read early are kept for `prepared`.
        """
        if int(self.network.get("spatial_dims", 3)) != 2:
            return  # a volume is checked alone; a patient's other volumes are other scans
        for case in cases:
            self._patients.setdefault(self._patient(case, patient_of), []).append(case)
        self._patient_of, self._read = patient_of, read
        self._mine = {case.case_id for case in mine}

    @staticmethod
    def _patient(case: Any, patient_of: Callable[[str], str]) -> str:
        return case.patient if case.patient and case.patient != case.case_id else patient_of(case.case_id)

    def prepared(self, case: Any) -> dict[str, Any] | None:
        """The case's preprocessed data if it was read early for a patient's pooled checks (once)."""
        return self._data.pop(case.case_id, None)

    def _peers(self, case: Any) -> list[dict[str, Any]]:
        """The QC features of the other slices of the case's patient (read once, unreadable ones left out)."""
        if case is None or self._read is None:
            return []
        group = self._patients.get(self._patient(case, self._patient_of), [])
        ids = {other.case_id for other in group}
        self._data = {k: v for k, v in self._data.items() if k in ids}  # another patient's (skipped) slices: not kept
        out = []
        for other in group:
            if other.case_id == case.case_id:
                continue
            if other.case_id not in self._features:
                try:
                    data = self._read(other)
                except Exception:  # noqa: BLE001 - a slice that cannot be read is reported when its turn comes
                    self._features[other.case_id] = None
                    continue
                self._features[other.case_id] = data.get("qc_features")
                if other.case_id in self._mine:
                    self._data[other.case_id] = data  # segmented later without reading it again
            if self._features[other.case_id] is not None:
                out.append(self._features[other.case_id])
        return out

    def start(self) -> None:
        """A new case begins (its clock starts)."""
        self._case = _Pending(started=time.perf_counter())

    def before(self, source: Path, data: dict[str, Any], case: Any = None) -> None:
        """Check the preprocessed case's features; warn, or with --strict raise `Refused`."""
        features = data.get("qc_features")
        if features is None:
            return
        if case is not None and self._read is not None:
            self._features[case.case_id] = features
        flags = check_case(features, self.plan, int(self.network["in_channels"]), int(self.network["spatial_dims"]),
                           self._peers(case))
        self._case.flags = flags
        for flag in flags:
            self.warnings.append(f"{source}: out of distribution ({flag.name}): {flag.message}")
        if self.strict and flags and not any(f.name == "channels" for f in flags):
            raise Refused(f"{source}: refused by --strict: " + ", ".join(f.name for f in flags))

    def predicted(self, chain: Any, data: dict[str, Any], labels: torch.Tensor, probs: torch.Tensor | None) -> None:
        """Confidence (and the uncertainty map) from the network's output on the preprocessed grid."""
        if probs is None:
            return
        if self.region_outputs is not None:
            outputs = self.region_outputs
            terms = region_terms(probs, labels[0], [list(m) for m in outputs.members])
            self._case.terms = dict(zip(outputs.names, terms))
        else:
            label_names = [n for n, m in self.structures.items() if len(m) == 1]
            self._case.terms = dict(zip(label_names, expected_dice_terms(probs, labels[0])))
        self._case.confidence = expected_dice(list(self._case.terms.values()))
        if self.uncertainty:
            from segpipe.transforms.inversion import invert_to_input

            entropy = entropy_map(probs, sigmoid=self.region_outputs is not None)[None]
            self._case.uncertainty = invert_to_input(chain, data, entropy, nearest=False)[0].numpy()

    def take_uncertainty(self) -> np.ndarray | None:
        """The current case's entropy map on the input's grid (once)."""
        out, self._case.uncertainty = self._case.uncertainty, None
        return out

    def done(self, case_id: str, source: Path, mask: Path | None, labels: np.ndarray | None, affine: Any, status: str) -> None:
        """Check the predicted volume against the training cases', and record the case's row."""
        if labels is not None:
            found = check_prediction(np.count_nonzero(labels) * voxel_ml(affine, labels.ndim), self.plan)
            self._case.flags = [*self._case.flags, *found]
            self.warnings += [f"{source}: doubtful prediction ({flag.name}): {flag.message}" for flag in found]
        self.rows.append(case_row(
            case_id, source, mask=mask, status=status, seconds=time.perf_counter() - self._case.started,
            precision=self.precision, labels=labels, affine=affine, structures=self.structures,
            confidence=self._case.confidence if labels is not None else None, flags=self._case.flags,
            terms=self._case.terms if labels is not None else None,
        ))

    def write(self, folder: Path, shard: tuple[int, int] = (0, 1)) -> Path | None:
        """Write cases.csv (`cases_file` of the shard) into the predictions folder (nothing when
        no case was processed)."""
        if not self.rows:
            return None
        return write_cases(Path(folder) / cases_file(*shard), self.rows)


def uncertainty_name(case_id: str, layout: str) -> str:
    """File name of a case's entropy map: NIfTI for volumes, .npy for 2D slices."""
    return f"{case_id}_uncertainty.npy" if layout in ("slices", "figshare") else f"{case_id}_uncertainty.nii.gz"
