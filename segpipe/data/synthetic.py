"""A small synthetic brain-tumour dataset in the Decathlon layout, for the demo and tests."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from segpipe.atomic import write_json, write_with

MODALITIES = {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}
LABELS = {"0": "background", "1": "edema", "2": "non-enhancing tumour", "3": "enhancing tumour"}
# Mean intensity of brain, edema, non-enhancing and enhancing tissue in each channel: each
# label is told apart by a different channel, as in real multi-parametric MRI.
CONTRAST = np.array(
    [
        [300.0, 520.0, 430.0, 450.0],  # FLAIR: edema bright
        [400.0, 380.0, 300.0, 330.0],  # T1w: tumour dark
        [350.0, 360.0, 330.0, 700.0],  # t1gd: enhancing rim bright
        [250.0, 450.0, 520.0, 400.0],  # T2w: core bright
    ]
)


def _ellipsoid(grid: list[np.ndarray], centre: np.ndarray, radii: np.ndarray) -> np.ndarray:
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1.0


def synthetic_case(rng: np.random.Generator, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """One 4-channel volume (X, Y, Z, 4) and its label map with nested tumour regions."""
    grid = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")
    size = np.array(shape, dtype=np.float32)
    brain = _ellipsoid(grid, size / 2, size * rng.uniform(0.38, 0.45, 3))
    centre = size / 2 + rng.uniform(-0.12, 0.12, 3) * size
    r_edema = size * rng.uniform(0.16, 0.24, 3)
    edema = _ellipsoid(grid, centre, r_edema) & brain
    core = _ellipsoid(grid, centre + rng.uniform(-1.5, 1.5, 3), r_edema * rng.uniform(0.45, 0.6)) & edema
    necrotic = _ellipsoid(grid, centre, r_edema * rng.uniform(0.25, 0.35)) & core
    label = np.zeros(shape, np.uint8)
    label[edema] = 1
    label[core] = 3  # enhancing rim ...
    label[necrotic] = 2  # ... around a non-enhancing centre
    image = np.zeros((*shape, 4), np.float32)
    tissue = np.where(brain, label.astype(np.int64), -1)
    for channel in range(4):
        scale = rng.uniform(0.85, 1.15)  # scanner-to-scanner gain
        values = np.where(tissue >= 0, CONTRAST[channel][np.clip(tissue, 0, 3)], 0.0) * scale
        noise = rng.normal(0.0, 35.0, shape) * brain
        image[..., channel] = np.clip(values + noise, 0, None) * brain
    return image, label


def make_synthetic_dataset(root: str | Path, cases: int = 12, test_cases: int = 3, shape: tuple[int, int, int] = (48, 48, 40), seed: int = 0) -> Path:
    """Write `cases` labelled training cases and `test_cases` held-out cases (with their
    reference masks in labelsTs/, which real Decathlon tasks do not ship) under `root`.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    affine = np.diag([1.0, 1.0, 1.2, 1.0])
    affine[:3, 3] = [-24.0, -24.0, -24.0]
    training, test = [], []
    for i in range(cases + test_cases):
        cid = f"SYN_{i:03d}"
        image, label = synthetic_case(rng, shape)
        held_out = i >= cases
        img_dir, lab_dir = ("imagesTs", "labelsTs") if held_out else ("imagesTr", "labelsTr")
        write_with(root / img_dir / f"{cid}.nii.gz", lambda t: nib.save(nib.Nifti1Image(image, affine), str(t)))
        write_with(root / lab_dir / f"{cid}.nii.gz", lambda t: nib.save(nib.Nifti1Image(label, affine), str(t)))
        if held_out:
            test.append(f"./imagesTs/{cid}.nii.gz")
        else:
            training.append({"image": f"./imagesTr/{cid}.nii.gz", "label": f"./labelsTr/{cid}.nii.gz"})
    write_json(
        root / "dataset.json",
        {
            "name": "SyntheticBrainTumour",
            "description": "Synthetic 4-channel volumes with nested edema / non-enhancing / enhancing regions",
            "tensorImageSize": "4D",
            "modality": MODALITIES,
            "labels": LABELS,
            "numTraining": len(training),
            "numTest": len(test),
            "training": training,
            "test": test,
        },
    )
    return root


__all__ = ["make_synthetic_dataset", "synthetic_case"]
