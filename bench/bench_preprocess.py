"""Preprocessing wall time per case: `segpipe preprocess` against nnU-Net v2's
`nnUNetv2_plan_and_preprocess`, on the same Decathlon-layout cases, in one run.

Both tools do the same work: read every case, fingerprint the dataset, crop to the
non-zero (brain) box, z-score each channel over the brain, resample to the median spacing
(here 1 mm isotropic, which both detect and skip) and write the result. Each runs in a
fresh output folder as a subprocess, timed from start to exit (interpreter start-up
included), with the same number of worker processes.

The cases are copies of the real BRATS_900 case (240x240x155x4, ../shared/data), each
intensity-scaled and (every other one) mirrored left-right so no two files are equal.
They are written to a temporary folder, never into the repository. segpipe reads them in
MSD layout (one 4D NIfTI per case); nnU-Net gets the same volumes in its raw format
(one 3D NIfTI per channel, Dataset5XX_Name/imagesTr/<case>_000c.nii.gz).

nnU-Net lives in its own virtual environment, CPU torch only (no CUDA wheels):

    python3 -m venv /tmp/nnunet-venv
    /tmp/nnunet-venv/bin/pip install torch==2.13.0
    echo torch==2.13.0 > /tmp/nnunet-constraints.txt
    /tmp/nnunet-venv/bin/pip install nnunetv2 -c /tmp/nnunet-constraints.txt

(`--setup` runs exactly these commands when the folder is missing.)

Usage (from the repository root):

    python bench/bench_preprocess.py                      # 6 cases, 2 workers
    python bench/bench_preprocess.py --cases 4 --workers 1 --no-verify --skip-nnunet
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO.parent / "shared" / "data" / "Task01_BrainTumour_sample"
DATASET_ID = 537
DATASET_NAME = f"Dataset{DATASET_ID}_BraTSBench"
MODALITIES = {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}
LABELS = {"background": 0, "edema": 1, "non-enhancing tumor": 2, "enhancing tumour": 3}


def _run(cmd: list[str], env: dict[str, str] | None = None, log: Path | None = None) -> float:
    """Run `cmd`, return its wall time; on failure print the log's tail and raise."""
    start = time.perf_counter()
    with open(log, "w") if log else open(os.devnull, "w") as fh:
        proc = subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        tail = log.read_text()[-3000:] if log else ""
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}\n{tail}")
    return wall


def setup_nnunet(venv: Path) -> None:
    """Create the nnU-Net virtualenv (CPU torch 2.13.0 pinned) if it is missing."""
    if (venv / "bin" / "nnUNetv2_plan_and_preprocess").exists():
        return
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "pip"), "install", "-q"]
    subprocess.run([*pip, "torch==2.13.0"], check=True)
    constraints = venv / "constraints.txt"
    constraints.write_text("torch==2.13.0\n")
    subprocess.run([*pip, "nnunetv2", "-c", str(constraints)], check=True)


def build_cases(work: Path, n: int) -> tuple[Path, Path]:
    """Write `n` perturbed copies of BRATS_900 in MSD layout and in nnU-Net's raw format."""
    image = nib.load(str(SOURCE / "imagesTr" / "BRATS_900.nii.gz"))
    label = nib.load(str(SOURCE / "labelsTr" / "BRATS_900.nii.gz"))
    data = np.asarray(image.dataobj, dtype=np.float32)
    seg = np.asarray(label.dataobj).astype(np.uint8)
    msd = work / "Task01_BrainTumourBench"
    raw = work / "nnUNet_raw" / DATASET_NAME
    for folder in (msd / "imagesTr", msd / "labelsTr", raw / "imagesTr", raw / "labelsTr"):
        folder.mkdir(parents=True, exist_ok=True)
    training = []
    for i in range(n):
        cid = f"BRATS_{900 + i:03d}"
        img = data * np.float32(1.0 + 0.03 * i)
        lab = seg
        if i % 2:
            img, lab = img[::-1].copy(), lab[::-1].copy()
        nib.save(nib.Nifti1Image(img, image.affine, image.header), str(msd / "imagesTr" / f"{cid}.nii.gz"))
        nib.save(nib.Nifti1Image(lab, label.affine, label.header), str(msd / "labelsTr" / f"{cid}.nii.gz"))
        header = image.header.copy()
        header.set_data_shape(img.shape[:3])
        for c in range(img.shape[3]):
            nib.save(nib.Nifti1Image(np.ascontiguousarray(img[..., c]), image.affine, header), str(raw / "imagesTr" / f"{cid}_{c:04d}.nii.gz"))
        nib.save(nib.Nifti1Image(lab, label.affine, label.header), str(raw / "labelsTr" / f"{cid}.nii.gz"))
        training.append({"image": f"./imagesTr/{cid}.nii.gz", "label": f"./labelsTr/{cid}.nii.gz"})
    meta = json.loads((SOURCE / "dataset.json").read_text())
    meta.update(numTraining=n, training=training, test=[], numTest=0)
    (msd / "dataset.json").write_text(json.dumps(meta, indent=2))
    (raw / "dataset.json").write_text(json.dumps(
        {"channel_names": MODALITIES, "labels": LABELS, "numTraining": n, "file_ending": ".nii.gz", "name": DATASET_NAME}, indent=2))
    return msd, raw.parent


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kib / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return f"{os.cpu_count()} CPU cores ({cpu}){mem}, Python {platform.python_version()}, {platform.system()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=6)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--nnunet-venv", type=Path, default=Path("/tmp/nnunet-venv"))
    parser.add_argument("--setup", action="store_true", help="create the nnU-Net virtualenv if missing")
    parser.add_argument("--skip-nnunet", action="store_true")
    parser.add_argument("--no-verify", action="store_true", help="run nnU-Net without --verify_dataset_integrity")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    if not SOURCE.is_dir():
        sys.exit(f"{SOURCE}: the real Task01 sample is needed (../shared/data beside the repository)")

    work = Path(tempfile.mkdtemp(prefix="segpipe-bench-pre-"))
    rows: list[tuple[str, str, float]] = []
    try:
        print(f"building {args.cases} cases in {work} ...", file=sys.stderr)
        msd, raw = build_cases(work, args.cases)
        w = str(args.workers)

        out = work / "segpipe_prepared"
        cmd = [sys.executable, "-m", "segpipe", "preprocess", "-i", str(msd), "-o", str(out), "--workers", w, "-q"]
        wall = _run(cmd, env={**os.environ, "PYTHONWARNINGS": "ignore"}, log=work / "segpipe.log")
        rows.append(("segpipe", f"segpipe preprocess -i MSD -o OUT --workers {w} -q", wall))
        print(f"segpipe: {wall:.1f} s", file=sys.stderr)

        if not args.skip_nnunet:
            if args.setup:
                setup_nnunet(args.nnunet_venv)
            exe = args.nnunet_venv / "bin" / "nnUNetv2_plan_and_preprocess"
            if not exe.exists():
                sys.exit(f"{exe}: missing; create it with --setup (or the commands in this script's docstring)")
            env = {**os.environ, "nnUNet_raw": str(raw), "nnUNet_preprocessed": str(work / "nnUNet_preprocessed"),
                   "nnUNet_results": str(work / "nnUNet_results")}
            cmd = [str(exe), "-d", str(DATASET_ID), "-c", "3d_fullres", "-np", w, "-npfp", w]
            if not args.no_verify:
                cmd.append("--verify_dataset_integrity")
            wall = _run(cmd, env=env, log=work / "nnunet.log")
            shown = " ".join(["nnUNetv2_plan_and_preprocess", *cmd[1:]])
            rows.append(("nnU-Net v2", shown, wall))
            print(f"nnU-Net: {wall:.1f} s", file=sys.stderr)
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)

    base = rows[0][2]
    print(f"\nMachine: {machine()}; {args.cases} cases of 240x240x155x4, {args.workers} workers\n")
    print("| tool | command | wall (s) | s/case | time vs segpipe |")
    print("|---|---|---:|---:|---:|")
    for name, shown, wall in rows:
        print(f"| {name} | `{shown}` | {wall:.1f} | {wall / args.cases:.2f} | {wall / base:.2f}x |")


if __name__ == "__main__":
    main()
