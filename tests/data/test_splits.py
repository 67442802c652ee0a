"""Patient-grouped folds: one patient's cases never straddle train and validation."""

from segpipe.data.case import Case
from segpipe.data.splits import patient_folds


def _cases(patients: int, per_patient: int) -> list[Case]:
    return [Case(f"P{p}_s{s}", f"P{p}", []) for p in range(patients) for s in range(per_patient)]


def test_folds_group_patients_and_cover_every_case_once():
    cases = _cases(11, 3)
    folds = patient_folds(cases, folds=5, seed=3)
    assert len(folds) == 5
    val_all = [cid for f in folds for cid in f["val"]]
    assert sorted(val_all) == sorted(c.case_id for c in cases)
    for f in folds:
        train_patients = {cid.split("_")[0] for cid in f["train"]}
        val_patients = {cid.split("_")[0] for cid in f["val"]}
        assert not train_patients & val_patients
        assert len(f["train"]) + len(f["val"]) == len(cases)


def test_folds_are_reproducible_and_seed_dependent():
    cases = _cases(20, 1)
    assert patient_folds(cases, 5, seed=0) == patient_folds(cases, 5, seed=0)
    assert patient_folds(cases, 5, seed=0) != patient_folds(cases, 5, seed=1)


def test_few_patients_shrink_the_folds():
    assert len(patient_folds(_cases(3, 2), folds=5)) == 3
    single = patient_folds(_cases(1, 4), folds=5)
    assert len(single) == 1 and single[0]["val"] == [] and len(single[0]["train"]) == 4
