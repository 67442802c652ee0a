"""Quality-control benchmark (issue 16): does confidence track Dice, and do the OOD checks fire?

On the held-out patients of a trained 2D model (fold 0 of BrainTumour_2D):

1. runs `segpipe infer` (cases.csv: confidence, flags) and `segpipe evaluate` (per-patient Dice);
2. computes every confidence candidate per slice (expected Dice, entropy and max-softmax
   inside the predicted tumour and its boundary band, Dice between a plain and a mirrored
   pass, volume plausibility against the training volumes), averages them per patient, and
   picks the candidate with the best Spearman rho on one half of the patients; rho is then
   reported on the other half and on all;
3. compares the mean Dice of patients marked needs_review with the others;
4. counts out-of-distribution flags, each slice checked alone and a patient's slices pooled
   (as `segpipe infer` pools them), on the held-out slices as they are (should be none),
   on held-out patients' slices changed in known ways, on the BraTS 2021 case's four
   channels as slices made as BrainTumour_2D's (t1ce is the training contrast; t2 and flair
   should be flagged) and as volumes, on nilearn's MNI152 T1 template and on dipy's real
   heads with the scalp on; and prints the contrast distances behind the `intensity` flag.

    OMP_NUM_THREADS=2 segpipe fit --data PREP --output MODEL --config msd_2d --fold 0 --set train.max_seconds=540
    python bench/bench_qc.py --model MODEL --prepared PREP --work /tmp/bench_qc [--ood-only]

nilearn (the template) and dipy (the heads) are needed only here: pip install 'segpipe[bench]'.
"""

from __future__ import annotations

import argparse
import json
import os
import re
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


def _patient(path: Path) -> str:
    return re.sub(r"_z\d+$", "", path.stem.removesuffix(".nii"))


def contrast_line(name: str, features: dict[Path, dict], plan) -> None:
    """The contrast distance (segpipe.qc.reference.contrast_distance) of each slice and of each patient's pooled slices."""
    from segpipe.qc.reference import contrast_distance

    stats = plan.get("qc_reference", {}).get("contrast")
    features = {p: f for p, f in features.items() if f["channels"] == len(stats or []) and f.get("contrast", [None])[0] is not None}
    if not stats or not features:
        return
    median, scale, limits = stats[0]["median"], stats[0]["scale"], stats[0]["limits"]
    alone = [contrast_distance([f["contrast"][0]], median, scale) for f in features.values()]
    groups: dict[str, list[float]] = {}
    for p, f in features.items():
        groups.setdefault(_patient(p), []).append(f["contrast"][0])
    pooled = [contrast_distance(v, median, scale) for v in groups.values()]
    print(f"contrast {name}: {len(alone)} slices, distance min/median/max {min(alone):.2f}/{np.median(alone):.2f}/{max(alone):.2f} "
          f"(limit alone {limits[0]:.2f}); {len(pooled)} patients pooled: {min(pooled):.2f}/{np.median(pooled):.2f}/{max(pooled):.2f} "
          f"(limit for {max(len(v) for v in groups.values())} slices {limits[min(len(limits), max(len(v) for v in groups.values())) - 1]:.2f}); "
          f"training median {median:+.3f}, spread {scale:.3f}, values {', '.join(f'{v[0] if len(v) == 1 else np.mean(v):+.2f}' for v in list(groups.values())[:3])}")


def ood_counts(model: Path, work: Path, held_out: list[Path], data: Path) -> dict[str, tuple[Counter, Counter]]:
    """Flags on held-out slices as they are, changed in known ways, and on real scans unlike training.

    Each entry: (flags with every slice checked alone, flags with the slices of one patient
    pooled as `segpipe infer` pools them).
    """
    import nibabel as nib
    from PIL import Image
    from scipy import ndimage

    from segpipe.artifacts.model_folder import ModelFolder
    from segpipe.qc.ood import check_case
    from segpipe.transforms.preprocessing import chain_for

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.builders import braintumour_2d_slices

    folder = ModelFolder.open(model)
    plan, network = folder.plan, folder.network_spec()

    def features_of(path: Path, layout: str) -> dict:
        chain = chain_for(plan.preprocess, layout, with_label=False, record_qc=True, path=path)
        return chain({"image": str(path)})["qc_features"]

    def count(paths: list[Path], layout: str) -> tuple[Counter, Counter]:
        features = {p: features_of(p, layout) for p in paths}
        contrast_line(paths[0].parent.name if len(paths) > 1 else paths[0].name, features, plan)
        alone, pooled = Counter(), Counter()
        for p, f in features.items():
            peers = [g for q, g in features.items() if q != p and _patient(q) == _patient(p)]
            for counter, others in ((alone, []), (pooled, peers)):
                names = sorted(x.name for x in check_case(f, plan, network["in_channels"], network["spatial_dims"], others))
                counter.update(["cases", *(names or ["(none)"])])
        return alone, pooled

    changed = work / "changed"
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
    counts = {"held-out slices as they are": count(held_out, "slices")}
    patients = sorted({_patient(p) for p in held_out})[::4]  # every slice of every 4th held-out patient
    sample = [p for p in held_out if _patient(p) in patients]
    for k, (name, change) in enumerate(changes.items()):
        folder_k = changed / f"change{k}"
        folder_k.mkdir(parents=True, exist_ok=True)
        targets = []
        for path in sample:
            targets.append(folder_k / f"{path.stem}.png")
            Image.fromarray(change(_png(path).astype(np.float64)).astype(np.uint8)).save(targets[-1])
        counts[name] = count(targets, "slices")
    # the same slices as NIfTI: two channels; a 2 mm grid (resampled)
    for name in ("two channels", "resampled to 2 mm pixels"):
        targets = []
        for path in sample:
            a = _png(path).astype(np.float32).T
            if name == "two channels":
                img = nib.Nifti1Image(np.stack([a, a], -1)[:, :, None, :], np.eye(4))
            else:
                img = nib.Nifti1Image(ndimage.zoom(a, 0.5, order=1)[:, :, None], np.diag([2.0, 2.0, 1.0, 1.0]))
            targets.append(changed / f"{path.stem}_{name.split()[0]}.nii.gz")
            nib.save(img, str(targets[-1]))
        counts[name] = count(targets, "generic")
    brats = data.parent / "BraTS2021" / "BraTS2021_00006"
    for channel in ("t1ce", "t1", "t2", "flair"):
        path = brats / f"BraTS2021_00006_{channel}.nii.gz"
        if path.is_file():
            slices = braintumour_2d_slices(path, changed / f"brats_{channel}")
            counts[f"BraTS 2021 case, {channel}, 6 slices made as BrainTumour_2D's"] = count(slices, "slices")
    for channel in ("t1ce", "t1", "t2", "flair"):
        path = brats / f"BraTS2021_00006_{channel}.nii.gz"
        if path.is_file():
            counts[f"BraTS 2021 volume, {channel}"] = count([path], "generic")
    try:
        import nilearn

        mni = Path(nilearn.__file__).parent / "datasets" / "data" / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
        counts[f"MNI152 T1 template (nilearn {nilearn.__version__}; skull-stripped)"] = count([mni], "generic")
    except ImportError:
        print("nilearn not installed: MNI152 template skipped", file=sys.stderr)
    try:
        import dipy
        from dipy.data import get_fnames

        for name in ("aniso_vox", "S0_10"):  # real heads, scalp on (diffusion b0 volumes shipped inside dipy)
            src = nib.load(get_fnames(name=name))
            volume = np.asarray(src.dataobj, dtype=np.float32)
            volume = volume[..., 0] if volume.ndim == 4 else volume
            target = changed / f"dipy_{name}.nii.gz"
            nib.save(nib.Nifti1Image(volume, src.affine), str(target))
            counts[f"dipy {dipy.__version__} {name}: real head, scalp on"] = count([target], "generic")
    except ImportError:
        print("dipy not installed: real heads with the scalp on skipped", file=sys.stderr)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="2D model folder (segpipe fit --config msd_2d --fold 0)")
    parser.add_argument("--prepared", type=Path, required=True, help="its prepared dataset (splits.json)")
    parser.add_argument("--data", type=Path, default=SHARED / "BrainTumour_2D")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_qc"))
    parser.add_argument("--ood-only", action="store_true", help="only the out-of-distribution table (no infer, evaluate, confidence)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    work = args.work
    fold = json.loads((args.prepared / "splits.json").read_text())[0]
    held = work / "held_out_images"
    held.mkdir(parents=True, exist_ok=True)
    for case in fold["val"]:
        link = held / f"{case}.png"
        if not link.exists():
            shutil.copyfile((args.data / "training_images" / f"{case}.png").resolve(), link)  # segpipe refuses links out of its input folder
    if not args.ood_only:
        confidence_tables(args, work, held)
    print_ood(ood_counts(args.model, work, sorted(held.iterdir()), args.data))


def confidence_tables(args: argparse.Namespace, work: Path, held: Path) -> None:
    """Confidence candidates against Dice, and needs_review, on the held-out patients."""
    import pandas as pd

    from segpipe.qc.confidence import expected_dice

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

    merged.to_csv(work / "candidates_per_patient.csv")
    table.to_csv(work / "candidates_per_slice.csv", index=False)


def print_ood(counts: dict[str, tuple[Counter, Counter]]) -> None:
    print("\n| input | cases | flags, each slice alone | flags, a patient's slices pooled (as infer does) |\n|---|---|---|---|")
    for name, (alone, pooled) in counts.items():
        n = alone.pop("cases")
        pooled.pop("cases")
        texts = [", ".join(f"{k} {v}" for k, v in sorted(c.items())) for c in (alone, pooled)]
        print(f"| {name} | {n} | {texts[0]} | {texts[1]} |")


if __name__ == "__main__":
    main()
