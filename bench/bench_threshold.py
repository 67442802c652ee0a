"""Would a tumour threshold other than the argmax's 0.5 help figshare_2d, chosen honestly?

Reads the held-out predictions of a `bench_quality` figshare run made again with
`segpipe infer --probabilities` (one PNG mask and one `<case>_probabilities.npy` per slice,
every fold's held-out slices into one folder), and scores per patient, slices pooled, keeping
the largest component as `figshare_2d` does:

- each fixed threshold on all 9 patients (a choice made on the scored patients: flattering);
- cross-fitted: for each fold, the threshold that scores best on the other folds' held-out
  patients (predicted by their own fold models), applied to this fold's patients;
- one fold's choice (what `fit` does with train.threshold_grid): the threshold one fold's
  patients prefer, applied to another fold's patients, over every ordered pair of folds.

    R=/tmp/bench_quality/figshare_2d/10min
    for k in 0 1 2 3 4; do
      segpipe infer -m $R/figshare_2d/fold_$k -i $R/held_out/fold_$k -o /tmp/probs --checkpoint last \
        --precision fp32 --probabilities -q
    done
    python bench/bench_threshold.py --pred /tmp/probs --splits $R/../prepared/splits.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from segpipe.data.mat_file import read_mat_field, read_mat_header
from segpipe.metrics.overlap import OverlapTally
from segpipe.transforms.postprocess import keep_largest_component

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "figshare_format_lgg"
THRESHOLDS = (0.5, 0.4, 0.3, 0.2, 0.15, 0.1)


def per_patient(pred: Path, data: Path, splits: list[dict]) -> pd.DataFrame:
    """Per-patient Dice (slices pooled, as `evaluate` pools them) at every threshold, each mask
    cleaned up as `infer` does for figshare_2d (`infer.keep_largest: [1]`)."""
    fold_of = {case: k for k, split in enumerate(splits) for case in split["val"]}
    tallies: dict[tuple[int, str], dict[float, OverlapTally]] = {}
    for png in sorted(pred.glob("*.png")):
        case = png.stem
        tumour = np.load(pred / f"{case}_probabilities.npy")[..., 1]
        if tumour.shape != np.asarray(Image.open(png)).shape:
            raise SystemExit(f"{png}: probabilities and mask differ in shape")
        reference = read_mat_field(data / f"{case}.mat", "tumorMask") > 0
        patient = (fold_of[case], read_mat_header(data / f"{case}.mat")["pid"])
        for threshold, tally in tallies.setdefault(patient, {t: OverlapTally() for t in THRESHOLDS}).items():
            mask = keep_largest_component((tumour > threshold).astype(np.uint8), [1]) > 0
            tally.add(mask, reference, (1.0, 1.0), distances=False)
    return pd.DataFrame([{"fold": fold, "patient": pid, **{t: tally.scores()["dice"] for t, tally in by_threshold.items()}}
                         for (fold, pid), by_threshold in tallies.items()])


def cross_fitted(patients: pd.DataFrame) -> pd.DataFrame:
    """Each fold's patients scored at the threshold that the other folds' patients prefer."""
    parts = []
    for fold, own in patients.groupby("fold"):
        others = patients[patients["fold"] != fold]
        chosen = max(THRESHOLDS, key=lambda t: others[t].mean())
        parts.append(pd.DataFrame({"patient": own["patient"], "fold": fold, "threshold": chosen,
                                   "dice": own[chosen], "dice_argmax": own[0.5]}))
    return pd.concat(parts, ignore_index=True)


def one_fold_choices(patients: pd.DataFrame) -> pd.DataFrame:
    """What `fit` does with train.threshold_grid, judged on new patients: the threshold one fold's
    patients prefer (the earliest of equals), applied to another fold's patients, for every
    ordered pair of folds; the gain over the argmax is that fold's mean Dice difference."""
    by_fold = patients.groupby("fold")[list(THRESHOLDS)].mean()
    rows = []
    for chooser in by_fold.index:
        chosen = max(THRESHOLDS, key=lambda t: by_fold.loc[chooser, t])  # max keeps the first of equals
        for scored in by_fold.index.drop(chooser):
            rows.append({"chooser": chooser, "scored": scored, "threshold": chosen,
                         "gain": by_fold.loc[scored, chosen] - by_fold.loc[scored, 0.5]})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pred", type=Path, required=True, help="infer output with --probabilities, all folds")
    parser.add_argument("--splits", type=Path, required=True, help="the run's prepared splits.json")
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    patients = per_patient(args.pred, args.data, json.loads(args.splits.read_text()))
    print("| tumour threshold | " + " | ".join(f"{t:g}" for t in THRESHOLDS) + " |")
    print("|---|" + "---:|" * len(THRESHOLDS))
    print("| mean Dice, 9 patients | " + " | ".join(f"{patients[t].mean():.3f}" for t in THRESHOLDS) + " |")
    fitted = cross_fitted(patients)
    print(f"\ncross-fitted: {fitted['dice'].mean():.3f} against {fitted['dice_argmax'].mean():.3f} at 0.5 "
          f"(thresholds chosen per fold: {', '.join(f'{t:g}' for t in fitted.groupby('fold')['threshold'].first())})")
    pairs = one_fold_choices(patients)
    print(f"one fold's choice on another fold: gain {pairs['gain'].mean():+.3f} over the argmax, "
          f"ahead in {(pairs['gain'] > 0).sum()} of {len(pairs)} pairs of folds")


if __name__ == "__main__":
    main()
