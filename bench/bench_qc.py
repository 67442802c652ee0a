"""Quality-control benchmark (issue 16): does confidence track Dice, and do the OOD checks fire?

On the held-out patients of a trained 2D model (fold 0 of BrainTumour_2D):

1. runs `segpipe infer` (cases.csv: confidence, flags) and `segpipe evaluate` (per-patient Dice);
2. computes every confidence candidate per slice (expected Dice, entropy and max-softmax
   inside the predicted tumour and its boundary band, Dice between a plain and a mirrored
   pass, volume plausibility against the training volumes), averages them per patient, and
   picks the candidate with the best Spearman rho on one half of the patients; rho is then
   reported on the other half and on all;
3. compares the mean Dice of patients marked needs_review with the others;
4. counts out-of-distribution flags on the held-out slices as they are (should be none), on
   held-out slices changed in known ways, and on real volumes unlike the training slices
   (the BraTS 2021 case's four channels; nilearn's MNI152 T1 template).

    OMP_NUM_THREADS=2 segpipe fit --data PREP --output MODEL --config msd_2d --fold 0 --set train.max_seconds=540
    python bench/bench_qc.py --model MODEL --prepared PREP --work /tmp/bench_qc

nilearn (for the template) is needed only here: pip install nilearn.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _segpipe(*args: str) -> list[str]:
    return [sys.executable, "-m", "segpipe", *args]


def _png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img)


def candidate_table(model: Path, images: list[Path], reference: dict) -> list[dict]:
    """Every confidence candidate of each held-out slice (one plain and one mirrored pass)."""
    import torch

    from segpipe.config import merge_dict
    from segpipe.data.inputs import discover_inputs
    from segpipe.pipeline.infer import Segmenter, load_models
    from segpipe.qc.confidence import candidates, expected_dice_terms

    models = load_models(model, None, None)
    icfg = merge_dict(models[0].config, {"infer": {"precision": "fp32"}}, "bench").infer
    seg = Segmenter(models, icfg)
    median_ml = float(reference.get("tumour_ml_quantiles", {}).get("50", 0.0))
    rows = []
    for case in discover_inputs(images):
        chain = seg.chain("slices", case.images[0])
        x = chain({"image": str(case.images[0])})["image"].as_tensor()
        probs = seg.probabilities(x, sliding_window=True)
        axes = list(range(1, x.ndim))
        mirrored = torch.flip(seg.probabilities(torch.flip(x, axes), sliding_window=True), axes)
        row = candidates(probs, probs.argmax(0), mirrored)
        for k, (num, den) in enumerate(expected_dice_terms(probs, probs.argmax(0)), start=1):
            row[f"_num{k}"], row[f"_den{k}"] = num, den
        ml = row["tumour_voxels"] / 1000.0
        row["volume_plausibility"] = -abs(float(np.log((ml + 0.01) / (median_ml + 0.01))))
        row["case"] = case.case_id
        rows.append(row)
    return rows


def spearman(a, b) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b, nan_policy="omit").statistic)


def ood_counts(model: Path, work: Path, held_out: list[Path], data: Path) -> dict[str, Counter]:
    """Flags on held-out slices as they are, changed in known ways, and on real volumes unlike training."""
    import nibabel as nib
    from PIL import Image
    from scipy import ndimage

    from segpipe.artifacts.model_folder import ModelFolder
    from segpipe.qc.ood import check_case
    from segpipe.transforms.preprocessing import chain_for

    folder = ModelFolder.open(model)
    plan, network = folder.plan, folder.network_spec()

    def flags_of(path: Path, layout: str) -> list[str]:
        chain = chain_for(plan.preprocess, layout, with_label=False, record_qc=True, path=path)
        features = chain({"image": str(path)})["qc_features"]
        names = sorted(f.name for f in check_case(features, plan, network["in_channels"], network["spatial_dims"]))
        return ["cases", *(names or ["(none)"])]

    changed = work / "changed"
    changed.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)

    def shell(a: np.ndarray) -> np.ndarray:
        distance = ndimage.distance_transform_edt(a == 0)
        out = a.copy()
        ring = (distance > 3) & (distance < 9)
        out[ring] = rng.uniform(150, 255, int(ring.sum()))
        return out

    changes = {
        "skull-like shell added": shell,
        "flipped up-down": lambda a: a[::-1],
        "transposed": lambda a: a.T,
        "intensities inverted (256 - v)": lambda a: np.where(a > 0, 256 - a.astype(int), 0),
        "intensities cubed (gamma 3)": lambda a: np.where(a > 0, np.maximum(1, 255 * (a / 255.0) ** 3), 0),
        "intensities halved (linear, harmless)": lambda a: np.where(a > 0, a // 2 + 1, 0),
    }
    counts: dict[str, Counter] = {"held-out slices as they are": Counter()}
    for path in held_out:
        counts["held-out slices as they are"].update(flags_of(path, "slices"))
    sample = held_out[::8]
    for name, change in changes.items():
        counts[name] = Counter()
        for path in sample:
            target = changed / f"{path.stem}.png"
            Image.fromarray(change(_png(path).astype(np.float64)).astype(np.uint8)).save(target)
            counts[name].update(flags_of(target, "slices"))
    # the same slices as NIfTI: two channels; a 2 mm grid (resampled)
    for name in ("two channels", "resampled to 2 mm pixels"):
        counts[name] = Counter()
        for path in sample:
            a = _png(path).astype(np.float32).T
            if name == "two channels":
                img = nib.Nifti1Image(np.stack([a, a], -1)[:, :, None, :], np.eye(4))
            else:
                img = nib.Nifti1Image(ndimage.zoom(a, 0.5, order=1)[:, :, None], np.diag([2.0, 2.0, 1.0, 1.0]))
            target = changed / f"{path.stem}_{name.split()[0]}.nii.gz"
            nib.save(img, str(target))
            counts[name].update(flags_of(target, "generic"))
    brats = data.parent / "BraTS2021" / "BraTS2021_00006"
    for channel in ("t1ce", "t1", "t2", "flair"):
        path = brats / f"BraTS2021_00006_{channel}.nii.gz"
        if path.is_file():
            counts[f"BraTS 2021 volume, {channel}"] = Counter(flags_of(path, "generic"))
    try:
        import nilearn

        mni = Path(nilearn.__file__).parent / "datasets" / "data" / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
        counts[f"MNI152 T1 template (nilearn {nilearn.__version__})"] = Counter(flags_of(mni, "generic"))
    except ImportError:
        print("nilearn not installed: MNI152 template skipped", file=sys.stderr)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="2D model folder (segpipe fit --config msd_2d --fold 0)")
    parser.add_argument("--prepared", type=Path, required=True, help="its prepared dataset (splits.json)")
    parser.add_argument("--data", type=Path, default=SHARED / "BrainTumour_2D")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_qc"))
    args = parser.parse_args()
    import pandas as pd
    import torch

    from segpipe.qc.confidence import expected_dice

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    work = args.work
    fold = json.loads((args.prepared / "splits.json").read_text())[0]
    held = work / "held_out_images"
    held.mkdir(parents=True, exist_ok=True)
    for case in fold["val"]:
        link = held / f"{case}.png"
        if not link.exists():
            shutil.copyfile((args.data / "training_images" / f"{case}.png").resolve(), link)  # segpipe refuses links out of its input folder
    pred, report = work / "pred", work / "report"
    subprocess.run(_segpipe("infer", "-m", str(args.model), "-i", str(held), "-o", str(pred), "-q", "--overwrite",
                            "--precision", "fp32"), check=True)
    subprocess.run(_segpipe("evaluate", "-p", str(pred), "-l", str(args.data), "-o", str(report), "-q"), check=True)
    per_patient = pd.read_csv(report / "per_patient.csv", dtype={"patient": str})
    cases = pd.read_csv(pred / "cases.csv", dtype={"case": str})

    plan = json.loads((args.model / "plan.json").read_text())
    table = pd.DataFrame(candidate_table(args.model, sorted(held.iterdir()), plan.get("qc_reference", {})))
    table["patient"] = table["case"].str.extract(r"^(BRATS_\d+)")[0]
    names = [c for c in table.columns if c not in ("case", "patient", "tumour_voxels") and not c.startswith("_")]
    per_patient_conf = table.groupby("patient")[names].mean()
    sums = table.groupby("patient")[[c for c in table.columns if c.startswith("_")]].sum()
    labels = sorted({int(c[4:]) for c in sums.columns if c.startswith("_num")})
    per_patient_conf["expected_dice_pooled"] = [
        expected_dice([(row[f"_num{k}"], row[f"_den{k}"]) for k in labels]) for _, row in sums.iterrows()
    ]
    names.append("expected_dice_pooled")
    merged = per_patient.set_index("patient")[["dice_mean", "dice_whole_tumour"]].join(per_patient_conf, how="inner")
    patients = sorted(merged.index)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(patients))
    half_a = [patients[i] for i in order[: len(patients) // 2]]
    half_b = [patients[i] for i in order[len(patients) // 2:]]

    print(f"\n{len(merged)} held-out patients ({len(table)} slices); Spearman rho with per-patient mean Dice\n")
    print("| candidate (per-patient mean of slices) | rho, half A (selection) | rho, half B | rho, all | rho with whole-tumour Dice, all |")
    print("|---|---|---|---|---|")
    for name in names:
        print(f"| {name} | {spearman(merged.loc[half_a, name], merged.loc[half_a, 'dice_mean']):.3f} | "
              f"{spearman(merged.loc[half_b, name], merged.loc[half_b, 'dice_mean']):.3f} | "
              f"{spearman(merged[name], merged['dice_mean']):.3f} | {spearman(merged[name], merged['dice_whole_tumour']):.3f} |")
    best = max(names, key=lambda n: spearman(merged.loc[half_a, n], merged.loc[half_a, "dice_mean"]))
    print(f"\nbest on half A: {best}")

    cases["patient"] = cases["case"].str.extract(r"^(BRATS_\d+)")[0]
    joined = per_patient.set_index("patient")[["dice_mean", "confidence", "needs_review"]]  # evaluate's join of cases.csv
    joined["needs_review"] = joined["needs_review"].astype(str).str.lower().isin(("true", "1"))
    rho = spearman(joined["confidence"], joined["dice_mean"])
    flagged, unflagged = joined[joined["needs_review"]], joined[~joined["needs_review"]]
    print(f"\nshipped confidence (per_patient.csv: expected Dice with the patient's slices pooled, from cases.csv): rho {rho:.3f} over {len(joined)} patients")
    print(f"needs_review: {len(flagged)} patients, mean Dice {flagged['dice_mean'].mean():.3f}; "
          f"others: {len(unflagged)}, mean Dice {unflagged['dice_mean'].mean():.3f}; "
          f"difference {unflagged['dice_mean'].mean() - flagged['dice_mean'].mean():.3f}")
    quartile = float(joined["confidence"].quantile(0.25))
    for t in (quartile, 0.3, 0.4, 0.5, 0.6, 0.7):
        f = joined[joined["confidence"] < t]
        u = joined[joined["confidence"] >= t]
        print(f"  threshold {t:.3f}{' (lowest quarter)' if t == quartile else ''}: {len(f)} flagged mean Dice {f['dice_mean'].mean():.3f}, {len(u)} others {u['dice_mean'].mean():.3f}")

    counts = ood_counts(args.model, work, sorted(held.iterdir()), args.data)
    print("\n| input | cases | flags (count) |\n|---|---|---|")
    for name, counter in counts.items():
        n = counter.pop("cases")
        text = ", ".join(f"{k} {v}" for k, v in sorted(counter.items()))
        print(f"| {name} | {n} | {text} |")
    merged.to_csv(work / "candidates_per_patient.csv")
    table.to_csv(work / "candidates_per_slice.csv", index=False)


if __name__ == "__main__":
    main()
