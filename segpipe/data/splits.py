"""Patient-grouped k-fold splits: one patient's cases never straddle train and validation."""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Any

from segpipe.data.case import Case


def patient_folds(cases: list[Case], folds: int = 5, seed: int = 0) -> list[dict[str, list[str]]]:
    """Split cases into `folds` folds by patient, reproducibly.

    Patients are shuffled with `seed` and dealt to folds largest-first, so folds hold
    similar numbers of cases. With fewer patients than folds the number of folds shrinks
    to the number of patients; with one patient the only fold trains on it and has no
    validation cases.

    Returns:
        One `{"fold", "train", "val"}` dict of case ids per fold.
    """
    by_patient: dict[str, list[str]] = defaultdict(list)
    for case in cases:
        by_patient[case.patient].append(case.case_id)
    patients = sorted(by_patient)
    if len(patients) <= 1:
        return [{"fold": 0, "train": sorted(c.case_id for c in cases), "val": []}]
    random.Random(seed).shuffle(patients)
    k = max(2, min(folds, len(patients)))
    patients.sort(key=lambda p: -len(by_patient[p]))  # stable: shuffled order breaks ties
    groups: list[list[str]] = [[] for _ in range(k)]
    sizes = [0] * k
    for patient in patients:
        target = min(range(k), key=lambda i: (sizes[i], i))
        groups[target].append(patient)
        sizes[target] += len(by_patient[patient])
    splits = []
    for i in range(k):
        val = sorted(cid for p in groups[i] for cid in by_patient[p])
        train = sorted(cid for j in range(k) if j != i for p in groups[j] for cid in by_patient[p])
        splits.append({"fold": i, "train": train, "val": val})
    return splits


def dataset_folds_problem(dataset: Any) -> str | None:
    """Why the folds a dataset defines itself (figshare `cvind.mat`) cannot be used, or None:
    a case they leave out, or a patient whose cases they put in two folds."""
    assignment: dict[str, int] = getattr(dataset, "folds", None) or {}
    fold_of_patient: dict[str, set[int]] = defaultdict(set)
    for case in dataset.training:
        if case.case_id not in assignment:
            return f"they give no fold for case {case.case_id}"
        fold_of_patient[case.patient].add(assignment[case.case_id])
    split = next((p for p, f in fold_of_patient.items() if len(f) > 1), None)
    return f"they put patient {split}'s cases in folds {sorted(fold_of_patient[split])}" if split is not None else None


def dataset_folds(dataset: Any) -> tuple[list[dict[str, list[str]]] | None, str | None]:
    """Folds the dataset itself defines (figshare `cvind.mat`), if they keep patients whole,
    and why they are not used.

    Returns (None, None) when the dataset defines none, and (None, the reason) when
    `dataset_folds_problem` finds one (then patient-grouped folds are made instead).
    """
    assignment: dict[str, int] | None = getattr(dataset, "folds", None)
    if not assignment:
        return None, None
    why = dataset_folds_problem(dataset)
    if why:
        return None, why
    folds = sorted(set(assignment[c.case_id] for c in dataset.training))
    return [
        {
            "fold": i,
            "train": sorted(c.case_id for c in dataset.training if assignment[c.case_id] != k),
            "val": sorted(c.case_id for c in dataset.training if assignment[c.case_id] == k),
        }
        for i, k in enumerate(folds)
    ], None
