"""Inference benchmark (issue 6): seconds per 240x240x155x4 case, segpipe against plain MONAI.

Both run the same network (segpipe's UNet, 16 filters, depth 4, trained briefly on the
case so that Dice means something), the same ROI, overlap, gaussian blending and
sliding-window batch size, at the same precision. Plain MONAI is the usual recipe:
nibabel load, reorientation to RAS (as the model was trained), z-score over non-zero
voxels per channel, `sliding_window_inference` over the whole volume, argmax, back to the
file's orientation. segpipe is `segpipe infer` end to end with its defaults (load,
preprocess, crop to the brain, skip empty windows, channels-last, fused norms, freed
memory kept for reuse, invert, write the NIfTI mask). Every configuration runs in a
fresh process, so peak resident memory is its own. bf16 means
`torch.autocast("cpu", dtype=torch.bfloat16)` for both.

With `--device cuda` both run on the GPU (fp32, bf16 and fp16 autocast), the model is trained
there with fp16 autocast and gradient scaling, each way runs once untimed before the timed
run (CUDA's first-call costs), and peak GPU memory is reported.

    python bench/bench_infer.py --case ../shared/data/Task01_BrainTumour_sample --work /tmp/bench_infer
    python bench/bench_infer.py --device cuda --work /tmp/bench_infer_gpu
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROI, OVERLAP, SW_BATCH = 96, 0.5, 2
# plain-cropped: the plain way over the brain's bounding box only, to show that segpipe's
# Dice equals plain MONAI's over the same box (instance norms see the same windows)
WAYS = ("plain", "plain-cropped", "segpipe")


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def matmul_peak_gflops(dtype_name: str, seconds: float = 3.0, device: str = "cpu") -> float:
    """This machine's matrix-multiply rate in `dtype_name`, the yardstick for convolution efficiency."""
    import torch

    dtype = getattr(torch, dtype_name)
    size = 2048 if device == "cpu" else 8192
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    a @ b
    _sync(device)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        _sync(device)
        n += 1
    return 2 * size**3 * n / (time.perf_counter() - start) / 1e9


def _sync(device: str) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    import torch

    torch.get_device_module(device).synchronize(device)


def window_gflop(model_dir: Path) -> float:
    """GFLOP of one forward pass over one ROI window (torch's FLOP counter, convolutions)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from segpipe.artifacts.model_folder import load_model_folder

    net = load_model_folder(model_dir).net
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        net(torch.zeros(1, 4, ROI, ROI, ROI))
    return counter.get_total_flops() / 1e9


def run_plain(image: Path, model_dir: Path, precision: str, out: Path, crop: bool = False, device: str = "cpu") -> dict:
    """The plain MONAI way, timed from file to written mask; with `crop`, only over the brain's box."""
    import nibabel as nib
    import numpy as np
    import torch
    from monai.inferers import sliding_window_inference

    from segpipe.artifacts.model_folder import load_model_folder
    from segpipe.runtime.precision import autocast

    net = load_model_folder(model_dir).net.to(device).eval()
    start = time.perf_counter()
    img = nib.load(str(image))
    # the model was trained on RAS-oriented volumes, as MONAI's Orientationd gives them
    to_ras = nib.orientations.io_orientation(img.affine)
    data = nib.orientations.apply_orientation(np.asanyarray(img.dataobj, dtype=np.float32), to_ras)
    x = torch.from_numpy(np.moveaxis(data, -1, 0).copy()).to(device)
    for c in range(x.shape[0]):
        mask = x[c] != 0
        x[c][mask] = (x[c][mask] - x[c][mask].mean()) / x[c][mask].std()
    box = tuple(slice(None) for _ in range(3))
    if crop:
        nonzero = np.argwhere((x != 0).any(0).cpu().numpy())
        box = tuple(slice(lo, hi) for lo, hi in zip(nonzero.min(0), nonzero.max(0) + 1))
    calls, net_seconds = [0], [0.0]

    def counted(batch: torch.Tensor) -> torch.Tensor:
        calls[0] += batch.shape[0]
        tick = time.perf_counter()
        out = net(batch)
        _sync(device)
        net_seconds[0] += time.perf_counter() - tick
        return out

    with torch.inference_mode(), autocast(precision, torch.device(device)):
        sw_start = time.perf_counter()
        logits = sliding_window_inference(x[(None, slice(None), *box)], (ROI,) * 3, SW_BATCH, counted, overlap=OVERLAP, mode="gaussian")
        _sync(device)
        sw_seconds = time.perf_counter() - sw_start
    labels = np.zeros(x.shape[1:], np.uint8)
    labels[box] = logits.argmax(1)[0].cpu().numpy()
    back = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt("RAS"), to_ras)
    labels = np.ascontiguousarray(nib.orientations.apply_orientation(labels, back))
    nib.save(nib.Nifti1Image(labels, img.affine), str(out))
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "sw_seconds": sw_seconds, "net_seconds": net_seconds[0], "windows": calls[0], "peak_rss_mib": _peak_rss_mib()}


def run_segpipe(image: Path, model_dir: Path, precision: str, out: Path, device: str = "cpu") -> dict:
    """`segpipe infer` on one file, timed from file to written mask."""
    from segpipe.prediction import SkipEmptyWindows
    from segpipe.pipeline import infer as infer_module

    calls, net_seconds = [0], [0.0]
    real_forward = SkipEmptyWindows.forward

    def counted(self, x):  # count and time the windows that reach the network
        calls[0] += int((x.flatten(1).abs().amax(1) > 0).sum())
        tick = time.perf_counter()
        out = real_forward(self, x)
        _sync(device)
        net_seconds[0] += time.perf_counter() - tick
        return out

    SkipEmptyWindows.forward = counted
    start = time.perf_counter()
    infer_module.infer(model_dir, [image], out.parent, {"roi_size": [ROI] * 3, "overlap": OVERLAP, "mode": "gaussian",
                       "sw_batch_size": SW_BATCH, "precision": precision, "device": device}, overwrite=True, quiet=True)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "net_seconds": net_seconds[0], "windows": calls[0], "peak_rss_mib": _peak_rss_mib()}


def dice_vs_reference(pred: Path, ref: Path) -> float:
    """Mean Dice over labels 1-3 against the manual segmentation."""
    import nibabel as nib
    import numpy as np

    from segpipe.metrics.overlap import dice

    p = np.asarray(nib.load(str(pred)).dataobj)
    r = np.asarray(nib.load(str(ref)).dataobj)
    return float(np.nanmean([dice(p == k, r == k) for k in (1, 2, 3)]))


def prepare_model(case_root: Path, work: Path, device: str = "cpu") -> Path:
    """A model folder with the benchmark's network, trained briefly on the case (on a GPU: fp16 with gradient scaling)."""
    model = work / "model"
    if (model / "checkpoints" / "best.pt").is_file():
        return model
    common = ["--set", "model.filters=16", "--set", "model.depth=4", "--set", "train.patch_size=[64,64,64]"]
    subprocess.run([sys.executable, "-m", "segpipe", "preprocess", "-i", str(case_root), "-o", str(work / "prepared"), "-q", *common], check=True)
    subprocess.run([sys.executable, "-m", "segpipe", "fit", "-d", str(work / "prepared"), "-o", str(model), "-q", "--epochs", "1",
                    "--set", "train.iterations_per_epoch=80", "--set", "train.lr=0.003", "--set", "train.samples_per_volume=2",
                    "--set", "train.pos_neg_ratio=3", "--device", device,
                    *(["--set", "train.precision=fp16"] if device.startswith("cuda") else []), *common], check=True)
    return model


def run_one(way: str, precision: str, image: Path, model: Path, out: Path, device: str) -> dict:
    """One way at one precision; on a GPU after an untimed warm-up run, with its peak GPU memory."""
    import torch

    def once() -> dict:
        if way == "segpipe":
            return run_segpipe(image, model, precision, out, device)
        return run_plain(image, model, precision, out, crop=way == "plain-cropped", device=device)

    if not device.startswith("cuda"):
        return once()
    once()
    torch.cuda.reset_peak_memory_stats()
    result = once()
    result["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/Task01_BrainTumour_sample")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_infer"))
    parser.add_argument("--device", default="cpu", help="cpu (default) or a CUDA device such as cuda")
    parser.add_argument("--one", nargs=2, metavar=("WAY", "PRECISION"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    image = args.case / "imagesTr" / "BRATS_900.nii.gz"
    model = args.work / "model"
    gpu = args.device.startswith("cuda")
    if args.one:
        way, precision = args.one
        out = args.work / f"{way}_{precision}" / "BRATS_900.nii.gz"
        out.parent.mkdir(parents=True, exist_ok=True)
        result = run_one(way, precision, image, model, out, args.device)
        result["dice"] = dice_vs_reference(out, args.case / "labelsTr" / "BRATS_900.nii.gz")
        print(json.dumps(result))
        return

    args.work.mkdir(parents=True, exist_ok=True)
    prepare_model(args.case, args.work, args.device)
    gflop = window_gflop(model)
    peaks = {name: matmul_peak_gflops(name, device=args.device) for name in ("bfloat16", "float32")}
    precisions = ("fp32", "bf16", "fp16") if gpu else ("fp32", "bf16")
    rows = {}
    for precision in precisions:
        for way in WAYS:
            proc = subprocess.run([sys.executable, __file__, "--case", str(args.case), "--work", str(args.work), "--device",
                                   args.device, "--one", way, precision], capture_output=True, text=True, check=True)
            rows[(way, precision)] = json.loads(proc.stdout.strip().splitlines()[-1])
    where = torch.cuda.get_device_name() if gpu else "CPU"
    print(f"\nnetwork: segpipe UNet 16..256 (depth 4), ROI {ROI}^3, overlap {OVERLAP}, gaussian, sw batch {SW_BATCH}; "
          f"{gflop:.1f} GFLOP of convolutions per window; {where} matmul: bf16 {peaks['bfloat16']:.0f} GFLOP/s, "
          f"fp32 {peaks['float32']:.0f} GFLOP/s\n")
    memory = "peak GPU MiB" if gpu else "peak RSS MiB"
    print("| precision | way | s/case | speed-up | windows run | network s | GFLOP/s in network calls | % of bf16 matmul | "
          f"% of fp32 matmul | {memory} | Dice vs manual |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for precision in precisions:
        base = rows[("plain", precision)]["seconds"]
        for way in WAYS:
            r = rows[(way, precision)]
            rate = r["windows"] * gflop / r["net_seconds"]
            print(f"| {precision} | {way} | {r['seconds']:.2f} | {base / r['seconds']:.2f}x | {r['windows']} | {r['net_seconds']:.2f} | "
                  f"{rate:.0f} | {100 * rate / peaks['bfloat16']:.0f}% | {100 * rate / peaks['float32']:.0f}% | "
                  f"{r['peak_gpu_mib' if gpu else 'peak_rss_mib']:.0f} | {r['dice']:.3f} |")


if __name__ == "__main__":
    main()
