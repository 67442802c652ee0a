"""Per-patient scores: slices or volumes of a patient pooled before scoring.

One implementation for `segpipe evaluate` and for validation during `segpipe fit`, so the
number training optimises is the number the report shows.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import pandas as pd

from segpipe.errors import SegpipeError
from segpipe.metrics.overlap import OverlapTally


RESERVED = ("mean",)  # a structure named so would collide with the tables' dice_mean


def label_structures(label_ids: Sequence[int], names: dict[int, str]) -> list[str]:
    """The structure name of each label (its name, spaces as underscores), each a column of its own.

    Raises:
        SegpipeError: two labels whose names give one column (`a b` and `a_b`), or a reserved name.
    """
    out = [names.get(k, f"label_{k}").replace(" ", "_") for k in label_ids]
    for k, name in zip(label_ids, out):
        if name in RESERVED:
            raise SegpipeError(f"label {k} is named '{name}', which the tables keep for the mean over labels "
                               "(dice_mean); rename the label")
        if out.count(name) > 1:
            twins = [names.get(j, f"label_{j}") for j, n in zip(label_ids, out) if n == name]
            raise SegpipeError(f"labels named {', '.join(map(repr, twins))} give one column name '{name}' "
                               "(spaces become underscores); rename one of them")
    return out


def structures(label_ids: Sequence[int], names: dict[int, str], regions: dict[str, list[int]]) -> dict[str, list[int]]:
    """Scored structures: each label alone (by its name), then each region (a union of labels).

    A region named like a label (MSD's "enhancing tumour" = region [3]) must hold that label
    alone: it would replace the label's columns.
    """
    out = {name: [k] for name, k in zip(label_structures(label_ids, names), label_ids)}
    for name, members in regions.items():
        if name in out and sorted(set(members)) != out[name]:
            raise SegpipeError(f"config key 'evaluate.regions': region '{name}' {sorted(set(members))} is named like "
                               f"label {out[name][0]} and would replace its scores; name the region otherwise")
    out.update(regions)
    return out


def _row(prefix: dict[str, object], tallies: dict[str, OverlapTally]) -> dict[str, object]:
    row = dict(prefix)
    for name, tally in tallies.items():
        for metric, value in tally.scores().items():
            row[f"{metric}_{name}"] = value
    return row


class PatientScores:
    """Tallies of every structure per case and per patient.

    Args:
        structures: name -> label values (see :func:`structures`).
        label_structures: the names that are single labels; their mean is `dice_mean`.
        distances: also pool surface distances (HD95); validation leaves them out.
    """

    def __init__(self, structures: dict[str, list[int]], label_structures: Sequence[str], distances: bool = True) -> None:
        self.structures = structures
        self.label_structures = list(label_structures)
        self.distances = distances
        self.case_rows: list[dict[str, object]] = []
        self.dims: dict[str, tuple[int, str]] = {}  # patient -> (its cases' dimensionality, its first case)
        self.patients: dict[str, dict[str, OverlapTally]] = defaultdict(lambda: {s: OverlapTally() for s in structures})

    def add(self, case: str, patient: str, pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> None:
        """Score one slice or volume and add it to its patient's pool (of one dimensionality)."""
        first = self.dims.setdefault(patient, (pred.ndim, case))
        if first[0] != pred.ndim:
            raise SegpipeError(f"patient {patient}: case {case} is {pred.ndim}D and case {first[1]} {first[0]}D; a patient's "
                               "slices or volumes are pooled, so they must all be of one kind (set evaluate.patient_pattern)")
        case_tallies = {s: OverlapTally() for s in self.structures}
        for name, members in self.structures.items():
            p, r = np.isin(pred, members), np.isin(ref, members)
            case_tallies[name].add(p, r, spacing, self.distances)
            self.patients[patient][name].add(p, r, spacing, self.distances)
        self.case_rows.append(_row({"case": case, "patient": patient}, case_tallies))

    def per_case(self) -> pd.DataFrame:
        """One row per slice or volume."""
        return pd.DataFrame(self.case_rows)

    def per_patient(self) -> pd.DataFrame:
        """One row per patient, its slices pooled; `dice_mean` is the mean label Dice of the patient."""
        table = pd.DataFrame([_row({"patient": p}, t) for p, t in self.patients.items()])
        table.insert(1, "dice_mean", table[[f"dice_{s}" for s in self.label_structures]].mean(axis=1, skipna=True))
        counts = self.per_case()["patient"].value_counts()
        table.insert(2, "slices_or_volumes", table["patient"].map(counts))
        return table

    def mean_dice(self) -> dict[str, float]:
        """Mean over patients of each structure's pooled Dice and of `dice_mean`, as summary.csv reports it."""
        table = self.per_patient()
        out = {}
        for column in ["dice_mean", *(f"dice_{s}" for s in self.structures)]:
            value = table[column].mean(skipna=True)
            out[column.removeprefix("dice_")] = float("nan") if pd.isna(value) else float(value)
        return out

