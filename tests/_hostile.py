"""The hostile-input corpus (issue 17): one builder per kind, grouped by defect class.

Each builder makes its inputs in its own folder of the corpus and returns a `Kind`: the
command line, where the verb may write, and the words its one error line must hold.
A secret folder beside the corpus (`outside/`) holds the files hostile inputs point at;
the tests prove that no reader ever opens them.
"""

from __future__ import annotations

import gzip
import os
import shutil
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from PIL import Image

from tests._corpus import AFFINE, SHAPE, brain_voxel, edit_json, load, make_dataset, save


@dataclass
class Fixtures:
    """What builders share: the secret folder, a tiny model, a prepared dataset and its source."""

    outside: Path
    model: Path
    prepared: Path
    dataset: Path
    live_pid: int  # a process that runs for the whole session (holds locks in lock kinds)
    base: Path  # a small clean Decathlon dataset to copy


@dataclass
class Kind:
    """One hostile input: `segpipe ARGS` must fail with one line holding `fragments`."""

    args: list[str]
    output: Path | None = None  # the only place the verb may write (None: nowhere)
    fragments: tuple[str, ...] = ()
    report: bool = False  # --verify-only: a report with an `ERROR <file>: ...` line instead of one line
    env: dict[str, str] = field(default_factory=dict)
    watch: list[Path] = field(default_factory=list)  # more folders that must stay untouched


KINDS: dict[str, tuple[int, Callable[[Path, Fixtures], Kind]]] = {}


def kind(defect: int, name: str) -> Callable:
    """Register a builder under `name` for defect class `defect` (1..9 of issue 17)."""

    def register(build: Callable[[Path, Fixtures], Kind]) -> Callable[[Path, Fixtures], Kind]:
        assert name not in KINDS, name
        KINDS[name] = (defect, build)
        return build

    return register


# ---------------------------------------------------------------- file builders


def save_sform(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    """A NIfTI whose only geometry is `affine` as sform (nibabel refuses a singular qform)."""
    img = nib.Nifti1Image(np.asarray(data), None)
    img.set_qform(None, code=0)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))
    return path


def make_outside(folder: Path) -> Path:
    """The secret files hostile inputs point at."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "secret.raw").write_bytes(np.arange(64, dtype=np.float32).tobytes())
    for i in range(3):
        (folder / f"slice{i}.raw").write_bytes(np.arange(16, dtype=np.float32).tobytes())
    save(folder / "secret.nii.gz", np.ones(SHAPE, np.float32))
    Image.fromarray(np.full((16, 16), 7, np.uint8)).save(folder / "secret.png")
    import h5py

    with h5py.File(folder / "secret.h5", "w") as fh:
        fh["data"] = np.ones((8, 8), np.int16)
    return folder


def nrrd_header(data_file: str, sizes: str = "4 4 4", extra: str = "") -> str:
    return (f"NRRD0004\ntype: float\ndimension: {len(sizes.split())}\nsizes: {sizes}\nencoding: raw\nendian: little\n"
            f"space directions: (1,0,0) (0,1,0) (0,0,1)\n{data_file}\n{extra}")


def mhd_header(data_file: str, dims: str = "4 4 4", extra: str = "") -> str:
    return (f"ObjectType = Image\nNDims = {len(dims.split())}\nDimSize = {dims}\nElementType = MET_FLOAT\n"
            f"ElementSpacing = 1 1 1\nElementDataFile = {data_file}\n{extra}")


def generic_dataset(root: Path, image_name: str, image_text: str | None = None) -> Path:
    """images/ + labels/: case `a` (image given as header text) and a clean case `b`."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    label = np.zeros(SHAPE, np.uint8)
    label[4:8, 4:8, 4:8] = 1
    for cid in ("a", "b"):
        save(root / "labels" / f"{cid}.nii.gz", label)
    save(root / "images" / "b.nii.gz", np.random.default_rng(0).random(SHAPE).astype(np.float32) + 1)
    if image_text is not None:
        (root / "images" / image_name).write_text(image_text)
    return root


def slices_dataset(root: Path) -> Path:
    from tests.builders import make_slices

    return make_slices(root, patients=("BRATS_001", "BRATS_002", "BRATS_003"), size=(16, 16))


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def png_declaring(path: Path, width: int, height: int) -> Path:
    """A PNG whose IHDR declares `width` x `height` (8-bit grey) with one tiny IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + _png_chunk(b"IEND", b""))
    return path


def grey_png(path: Path, values: np.ndarray, bits: int) -> Path:
    """A grey PNG storing `values` (rows x columns, each below 2**bits) with `bits` (1, 2 or 4) bits a pixel."""
    height, width = values.shape
    per = 8 // bits
    padded = np.zeros((height, -(-width // per) * per), np.uint8)
    padded[:, :width] = values
    shifts = np.arange(per - 1, -1, -1) * bits  # the first pixel in the high bits
    rows = (padded.reshape(height, -1, per).astype(np.uint16) << shifts).sum(-1).astype(np.uint8)
    ihdr = struct.pack(">IIBBBBB", width, height, bits, 0, 0, 0, 0)
    data = zlib.compress(b"".join(b"\0" + row.tobytes() for row in rows))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", data) + _png_chunk(b"IEND", b""))
    return path


def nifti_declaring(path: Path, shape: tuple[int, ...]) -> Path:
    """A .nii.gz whose header declares `shape` (uint8) but holds a few bytes of data."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.uint8)
    header["vox_offset"] = 352
    header.set_sform(AFFINE, code=1)
    with gzip.open(path, "wb") as fh:
        fh.write(header.binaryblock + b"\0" * 4 + b"\0" * 1024)
    return path


def figshare_file(path: Path) -> Path:
    from segpipe.data.figshare import write_figshare_mat

    path.parent.mkdir(parents=True, exist_ok=True)
    mask = np.zeros((16, 16), np.uint8)
    mask[4:8, 4:8] = 1
    return write_figshare_mat(path, np.arange(256, dtype=np.int16).reshape(16, 16) + 1, mask, label=2, pid="P1",
                              border=[3, 2, 5, 2])


def swap_mat_image(path: Path, make: Callable) -> Path:  # noqa: ANN001 - h5py group -> None
    import h5py

    with h5py.File(path, "r+") as fh:
        del fh["cjdata"]["image"]
        make(fh["cjdata"])
    return path


def figshare_set(root: Path, cvind: np.ndarray | None = None) -> Path:
    """Six figshare slices of three patients, with `cvind.mat` (MATLAB v5) when given."""
    from scipy.io import savemat

    from tests.builders import make_figshare

    folder = make_figshare(root, n=6, size=(16, 16))
    if cvind is not None:
        savemat(str(folder / "cvind.mat"), {"cvind": np.asarray(cvind, dtype=float).reshape(-1, 1)})
    return folder


def swap_mat_mask(path: Path, mask: np.ndarray) -> Path:
    """Replace a figshare file's `tumorMask` by `mask` (as MATLAB shows it), keeping its attributes."""
    import h5py

    with h5py.File(path, "r+") as fh:
        group = fh["cjdata"]
        attrs = dict(group["tumorMask"].attrs)
        del group["tumorMask"]
        ds = group.create_dataset("tumorMask", data=np.ascontiguousarray(mask.T))
        for key, value in attrs.items():
            ds.attrs[key] = value
    return path


def copy_model(fx: Fixtures, dest: Path) -> Path:
    return Path(shutil.copytree(fx.model, dest))


def lock_with(folder: Path, pid: int, verb: str = "fit") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    os.symlink(f"pid={pid};verb={verb};host=test;since=now", folder / ".segpipe.lock")
    return folder


def image_in(folder: Path, name: str = "a.nii.gz") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    data = np.zeros((*SHAPE, 4), np.float32)
    data[2:14, 2:14, 2:10] = 1.0
    return save(folder / name, data)


def mask_in(folder: Path, name: str = "a.nii.gz") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    label = np.zeros(SHAPE, np.uint8)
    label[4:8, 4:8, 4:8] = 1
    return save(folder / name, label)


# ---------------------------------------------------------------- 1. reading outside the inputs

OUT_WORDS = ("outside",)


@kind(1, "nrrd-detached-absolute-preprocess")
def _(root: Path, fx: Fixtures) -> Kind:
    ds = generic_dataset(root / "ds", "a.nhdr", nrrd_header(f"data file: {fx.outside / 'secret.raw'}"))
    return Kind(["preprocess", "-i", ds, "-o", root / "out", "-j", "1"], root / "out",
                (str(ds / "images" / "a.nhdr"), "header names the data file", "outside"))


@kind(1, "nrrd-datafile-list-infer")
def _(root: Path, fx: Fixtures) -> Kind:
    (root / "in").mkdir(parents=True)
    rel = os.path.relpath(fx.outside / "secret.raw", root / "in")
    (root / "in" / "x.nhdr").write_text(nrrd_header("data file: LIST", extra=f"{rel}\n"))
    return Kind(["infer", "-m", fx.model, "-i", root / "in" / "x.nhdr", "-o", root / "out"], root / "out",
                ("x.nhdr", "header names the data file", "outside"))


@kind(1, "nrrd-printf-evaluate")
def _(root: Path, fx: Fixtures) -> Kind:
    mask_in(root / "ref")
    (root / "pred").mkdir(parents=True)
    rel = os.path.relpath(fx.outside / "slice%d.raw", root / "pred")
    (root / "pred" / "a.nhdr").write_text(nrrd_header(f"datafile: {rel} 0 2 1 2", sizes="4 4 3"))
    return Kind(["evaluate", "-p", root / "pred", "-l", root / "ref", "-o", root / "out"], root / "out",
                ("a.nhdr", "header names the data file", "outside"))


@kind(1, "mhd-absolute-infer")
def _(root: Path, fx: Fixtures) -> Kind:
    (root / "in").mkdir(parents=True)
    (root / "in" / "x.mhd").write_text(mhd_header(str(fx.outside / "secret.raw")))
    return Kind(["infer", "-m", fx.model, "-i", root / "in", "-o", root / "out"], root / "out",
                ("x.mhd", "header names the data file", "outside"))


@kind(1, "mhd-list-verify")
def _(root: Path, fx: Fixtures) -> Kind:
    rel = os.path.relpath(fx.outside / "secret.raw", root / "ds" / "images")
    ds = generic_dataset(root / "ds", "a.mhd", mhd_header("LIST 2D", extra=f"{rel}\n{rel}\n"))
    return Kind(["preprocess", "-i", ds, "--verify-only"], None, ("a.mhd", "header names the data file"), report=True)


@kind(1, "mha-pattern-preprocess")
def _(root: Path, fx: Fixtures) -> Kind:
    rel = os.path.relpath(fx.outside / "slice%d.raw", root / "ds" / "images")
    ds = generic_dataset(root / "ds", "a.mha", mhd_header(f"{rel} 0 2 1 2", dims="4 4 3"))
    return Kind(["preprocess", "-i", ds, "-o", root / "out", "-j", "1"], root / "out",
                ("a.mha", "header names the data file", "outside"))


@kind(1, "mhd-colon-separator-verify")
def _(root: Path, fx: Fixtures) -> Kind:
    header = mhd_header(str(fx.outside / "secret.raw")).replace(" = ", ": ")  # MetaIO reads `Key: value` too
    ds = generic_dataset(root / "ds", "a.mhd", header)
    return Kind(["preprocess", "-i", ds, "--verify-only"], None, ("a.mhd", "header names the data file"), report=True)


@kind(1, "nhdr-header-past-the-first-block-infer")
def _(root: Path, fx: Fixtures) -> Kind:
    (root / "in").mkdir(parents=True)
    padding = "# padding to push the data file past the first 64 KiB of the header ........\n" * 1000
    text = nrrd_header(f"data file: {fx.outside / 'secret.raw'}")
    (root / "in" / "x.nhdr").write_text(text.replace("type:", padding + "type:", 1))
    return Kind(["infer", "-m", fx.model, "-i", root / "in", "-o", root / "out"], root / "out",
                ("x.nhdr", "header names the data file", "outside"))


@kind(1, "mhd-header-past-the-first-block-preprocess")
def _(root: Path, fx: Fixtures) -> Kind:
    padding = "Comment = padding to push ElementDataFile past the first 64 KiB of the header ..\n" * 1000
    ds = generic_dataset(root / "ds", "a.mhd", padding + mhd_header(str(fx.outside / "secret.raw")))
    return Kind(["preprocess", "-i", ds, "-o", root / "out", "-j", "1"], root / "out",
                ("a.mhd", "header names the data file", "outside"))


@kind(1, "figshare-cvind-link-outside-preprocess")
def _(root: Path, fx: Fixtures) -> Kind:
    from scipy.io import savemat

    ds = figshare_set(root / "fs")
    savemat(str(fx.outside / "cvind_secret.mat"), {"cvind": np.ones((6, 1))})
    (ds / "cvind.mat").symlink_to(fx.outside / "cvind_secret.mat")
    return Kind(["preprocess", "-i", ds, "-o", root / "out", "-j", "1"], root / "out", (str(ds / "cvind.mat"), "outside"))


@kind(1, "figshare-cvind-external-link-verify")
def _(root: Path, fx: Fixtures) -> Kind:
    import h5py

    ds = figshare_set(root / "fs")
    with h5py.File(ds / "cvind.mat", "w") as fh:
        fh["cvind"] = h5py.ExternalLink(str(fx.outside / "secret.h5"), "/data")
    return Kind(["preprocess", "-i", ds, "--verify-only"], None, (str(ds / "cvind.mat"), "links to another file"))


@kind(1, "symlink-slices-preprocess")
def _(root: Path, fx: Fixtures) -> Kind:
    ds = slices_dataset(root / "ds")
    link = ds / "training_images" / "BRATS_002_z10.png"
    link.unlink()
    link.symlink_to(fx.outside / "secret.png")
    return Kind(["preprocess", "-i", ds, "-o", root / "out", "-j", "1"], root / "out", (str(link), "outside"))


@kind(1, "symlink-brats-verify")
def _(root: Path, fx: Fixtures) -> Kind:
    from tests.builders import make_brats

    ds = make_brats(root / "brats", shape=SHAPE)
    link = next((ds / "BraTS2021_00001").glob("*_flair.nii.gz"))
    link.unlink()
    link.symlink_to(fx.outside / "secret.nii.gz")
    return Kind(["preprocess", "-i", ds, "--verify-only"], None, (str(link), "outside"), report=True)


@kind(1, "symlink-brats-preprocess")
def _(root: Path, fx: Fixtures) -> Kind:
    from tests.builders import make_brats

    ds = make_brats(root / "brats", shape=SHAPE)
    link = next((ds / "BraTS2021_00002").glob("*_seg.nii.gz"))
    link.unlink()
    link.symlink_to(fx.outside / "secret.nii.gz")
    return Kind(["preprocess", "-i", ds, "-o", root / "out", "-j", "1"], root / "out", (str(link), "outside"))


@kind(1, "symlink-infer-folder")
def _(root: Path, fx: Fixtures) -> Kind:
    (root / "in").mkdir(parents=True)
    (root / "in" / "a.nii.gz").symlink_to(fx.outside / "secret.nii.gz")
    return Kind(["infer", "-m", fx.model, "-i", root / "in", "-o", root / "out"], root / "out", ("a.nii.gz", "outside"))


@kind(1, "symlink-evaluate-reference")
def _(root: Path, fx: Fixtures) -> Kind:
    mask_in(root / "pred")
    (root / "ref").mkdir(parents=True)
    (root / "ref" / "a.nii.gz").symlink_to(fx.outside / "secret.nii.gz")
    return Kind(["evaluate", "-p", root / "pred", "-l", root / "ref", "-o", root / "out"], root / "out",
                (str(root / "ref" / "a.nii.gz"), "outside"))


@kind(1, "mat-external-link-infer")
def _(root: Path, fx: Fixtures) -> Kind:
    import h5py

    mat = swap_mat_image(figshare_file(root / "in" / "1.mat"),
                         lambda g: g.__setitem__("image", h5py.ExternalLink(str(fx.outside / "secret.h5"), "/data")))
    return Kind(["infer", "-m", fx.model, "-i", mat, "-o", root / "out"], root / "out", (str(mat), "links to another file"))


@kind(1, "mat-external-storage-infer")
def _(root: Path, fx: Fixtures) -> Kind:
    mat = swap_mat_image(figshare_file(root / "in" / "1.mat"), lambda g: g.create_dataset(
        "image", shape=(4, 4), dtype="<f4", external=[(str(fx.outside / "secret.raw"), 0, 64)]))
    return Kind(["infer", "-m", fx.model, "-i", mat, "-o", root / "out"], root / "out", (str(mat), "stores its data in another file"))


@kind(1, "dicom-symlink-infer")
def _(root: Path, fx: Fixtures) -> Kind:
    from tests.builders import write_dicom_series

    series = write_dicom_series(root / "dcm", n=3)
    victim = sorted(series.iterdir())[1]
    shutil.copy(victim, fx.outside / "secret.dcm")
    victim.unlink()
    victim.symlink_to(fx.outside / "secret.dcm")
    return Kind(["infer", "-m", fx.model, "-i", series, "-o", root / "out"], root / "out", (str(victim), "outside"))


@kind(1, "manifest-path-escapes-fit")
def _(root: Path, fx: Fixtures) -> Kind:
    prep = Path(shutil.copytree(fx.prepared, root / "prep"))
    rel = os.path.relpath(fx.outside / "secret.raw", prep)
    edit_json(prep / "manifest.json", lambda m: next(iter(m["cases"].values())).update(image=rel))
    return Kind(["fit", "-d", prep, "-o", root / "model", "--epochs", "1"], root / "model",
                (str(prep / "manifest.json"), "points outside"))


@kind(1, "dicom-dcm-symlink-verify")
def _(root: Path, fx: Fixtures) -> Kind:
    from tests.builders import write_dicom_series

    series = write_dicom_series(root / "dcm" / "s1", n=3)
    victim = sorted(series.iterdir())[0]
    shutil.copy(victim, fx.outside / "secret2.dcm")
    victim.unlink()
    link = series / "linked.dcm"
    link.symlink_to(fx.outside / "secret2.dcm")
    return Kind(["preprocess", "-i", root / "dcm", "--verify-only"], None, (str(link), "outside"))


@kind(1, "dataset-json-symlink")
def _(root: Path, fx: Fixtures) -> Kind:
    ds = Path(shutil.copytree(fx.base, root / "ds"))
    shutil.copy(ds / "dataset.json", fx.outside / "dataset.json")
    (ds / "dataset.json").unlink()
    (ds / "dataset.json").symlink_to(fx.outside / "dataset.json")
    return Kind(["preprocess", "-i", ds, "-o", root / "out"], root / "out", (str(ds / "dataset.json"), "outside"))


@kind(1, "checkpoint-symlink-infer")
def _(root: Path, fx: Fixtures) -> Kind:
    model = copy_model(fx, root / "model")
    best = model / "checkpoints" / "best.pt"
    shutil.copy(best, fx.outside / "best.pt")
    best.unlink()
    best.symlink_to(fx.outside / "best.pt")
    image_in(root / "in")
    return Kind(["infer", "-m", model, "-i", root / "in", "-o", root / "out"], root / "out", (str(best), "outside"))


# ---------------------------------------------------------------- 2. writing over the inputs


@kind(2, "infer-output-is-input")
def _(root: Path, fx: Fixtures) -> Kind:
    image_in(root / "in")
    return Kind(["infer", "-m", fx.model, "-i", root / "in", "-o", root / "in", "--overwrite"], None,
                ("the output is the input",))


@kind(2, "infer-output-contains-input-file")
def _(root: Path, fx: Fixtures) -> Kind:
    image = image_in(root / "in")
    return Kind(["infer", "-m", fx.model, "-i", image, "-o", root / "in", "--overwrite"], None, ("contains the input",))


@kind(2, "infer-output-is-model")
def _(root: Path, fx: Fixtures) -> Kind:
    image_in(root / "in")
    return Kind(["infer", "-m", fx.model, "-i", root / "in", "-o", fx.model], None, ("the output is the input",),
                watch=[fx.model])


@kind(2, "preprocess-output-inside-input")
def _(root: Path, fx: Fixtures) -> Kind:
    ds = shutil.copytree(fx.base, root / "ds")
    return Kind(["preprocess", "-i", ds, "-o", Path(ds) / "prepared"], None, ("lies inside the input",))


@kind(2, "fit-output-inside-prepared")
def _(root: Path, fx: Fixtures) -> Kind:
    return Kind(["fit", "-d", fx.prepared, "-o", fx.prepared / "model"], None, ("lies inside the input",),
                watch=[fx.prepared])


@kind(2, "fit-model-inside-source-dataset")
def _(root: Path, fx: Fixtures) -> Kind:
    return Kind(["fit", "-d", fx.prepared, "-o", fx.dataset / "model"], None, ("lies inside the input", str(fx.dataset)),
                watch=[fx.dataset])


@kind(2, "evaluate-output-is-predictions")
def _(root: Path, fx: Fixtures) -> Kind:
    mask_in(root / "pred")
    mask_in(root / "ref")
    return Kind(["evaluate", "-p", root / "pred", "-l", root / "ref", "-o", root / "pred"], None, ("the output is the input",))


@kind(2, "evaluate-output-is-references")
def _(root: Path, fx: Fixtures) -> Kind:
    mask_in(root / "pred")
    mask_in(root / "ref")
    return Kind(["evaluate", "-p", root / "pred", "-l", root / "ref", "-o", root / "ref"], None, ("the output is the input",))


@kind(2, "export-over-a-checkpoint")
def _(root: Path, fx: Fixtures) -> Kind:
    model = copy_model(fx, root / "model")
    return Kind(["export", "-m", model, "-f", "torchscript", "-o", model / "checkpoints" / "best.pt", "--overwrite"],
                None, ("lies inside the input",))


@kind(2, "export-bundle-into-model")
def _(root: Path, fx: Fixtures) -> Kind:
    model = copy_model(fx, root / "model")
    return Kind(["export", "-m", model, "-f", "bundle", "-o", model], None, ("the output is the input",))


# ---------------------------------------------------------------- 3. preprocess refuses what verify calls an error


def _decathlon_with_label(root: Path, fx: Fixtures, change: Callable[[np.ndarray], np.ndarray]) -> tuple[Path, Path]:
    ds = Path(shutil.copytree(fx.base, root / "ds"))
    path = ds / "labelsTr" / "SYN_001.nii.gz"
    label, affine = load(path)
    save(path, change(label), affine)
    return ds, path


@kind(3, "fractional-label-preprocess")
def _(root: Path, fx: Fixtures) -> Kind:
    def change(label: np.ndarray) -> np.ndarray:
        out = label.astype(np.float32)
        out[brain_voxel(label)] = 0.5
        return out

    ds, path = _decathlon_with_label(root, fx, change)
    return Kind(["preprocess", "-i", ds, "-o", root / "out", "-j", "1"], root / "out", (str(path), "non-integer values 0.5"))


@kind(3, "fractional-label-verify")
def _(root: Path, fx: Fixtures) -> Kind:
    ds, path = _decathlon_with_label(root, fx, lambda lab: np.where(lab > 0, 1.25, 0).astype(np.float32))
    return Kind(["preprocess", "-i", ds, "--verify-only"], None, (str(path), "non-integer values 1.25"), report=True)


@kind(3, "slices-label-above-declared-set")
def _(root: Path, fx: Fixtures) -> Kind:
    ds = slices_dataset(root / "ds")
    bad = ds / "training_labels" / "BRATS_002_z10.png"
    label = np.zeros((16, 16), np.uint8)
    label[3, 3] = 9
    Image.fromarray(label).save(bad)
    return Kind(["preprocess", "-i", ds, "-o", root / "out", "-j", "1"], root / "out", (str(bad), "label values 9 not declared"))


@kind(3, "png-label-of-2-bit-grey-levels")
def _(root: Path, fx: Fixtures) -> Kind:
    ds = slices_dataset(root / "ds")
    bad = ds / "training_labels" / "BRATS_002_z10.png"
    label = np.zeros((16, 16), np.uint8)
    label[3:6, 3:6], label[8, 8] = 1, 3  # PIL reads them as 85 and 255: "label values 85, 255 not declared"
    grey_png(bad, label, 2)
    return Kind(["preprocess", "-i", ds, "-o", root / "out", "-j", "1"], root / "out",
                (str(bad), "stored with 2-bit grey levels, read as 0, 85, 170, 255", "store labels as 8-bit"))


@kind(3, "png-label-of-4-bit-grey-levels-evaluate")
def _(root: Path, fx: Fixtures) -> Kind:
    ds = slices_dataset(root / "ds")
    shutil.copytree(ds / "training_labels", root / "pred")
    bad = ds / "training_labels" / "BRATS_003_z20.png"
    label = np.zeros((16, 16), np.uint8)
    label[4:7, 4:7] = 2
    grey_png(bad, label, 4)
    return Kind(["evaluate", "-p", root / "pred", "-l", ds, "-o", root / "out"], root / "out",
                (str(bad), "stored with 4-bit grey levels, read as 0, 17, 34, ..., 255"))


@kind(3, "png16-label-preprocess")
def _(root: Path, fx: Fixtures) -> Kind:
    ds = slices_dataset(root / "ds")
    bad = ds / "training_labels" / "BRATS_003_z20.png"
    label = np.zeros((16, 16), np.uint16)
    label[3, 3] = 257  # 8-bit clipping or wrapping would turn it into 255 or 1
    Image.fromarray(label).save(bad)
    return Kind(["preprocess", "-i", ds, "-o", root / "out", "-j", "1"], root / "out", (str(bad), "label values 257"))


@kind(3, "singular-affine-preprocess")
def _(root: Path, fx: Fixtures) -> Kind:
    ds = Path(shutil.copytree(fx.base, root / "ds"))
    singular = AFFINE.copy()
    singular[:, 2] = 0.0
    singular[3, 3] = 1.0
    for sub in ("imagesTr", "labelsTr"):
        path = ds / sub / "SYN_002.nii.gz"
        data, _ = load(path)
        save_sform(path, data, singular)
    return Kind(["preprocess", "-i", ds, "-o", root / "out", "-j", "1"], root / "out", ("SYN_002.nii.gz", "affine is singular"))


@kind(3, "singular-affine-verify")
def _(root: Path, fx: Fixtures) -> Kind:
    ds = Path(shutil.copytree(fx.base, root / "ds"))
    singular = np.zeros((4, 4))
    singular[3, 3] = 1.0
    for sub in ("imagesTr", "labelsTr"):
        path = ds / sub / "SYN_000.nii.gz"
        data, _ = load(path)
        save_sform(path, data, singular)
    return Kind(["preprocess", "-i", ds, "--verify-only"], None, ("SYN_000.nii.gz", "affine is singular"), report=True)


@kind(3, "all-zero-image-preprocess")
def _(root: Path, fx: Fixtures) -> Kind:
    ds = Path(shutil.copytree(fx.base, root / "ds"))
    bad = save(ds / "imagesTr" / "SYN_001.nii.gz", np.zeros((*SHAPE, 4), np.float32))
    return Kind(["preprocess", "-i", ds, "-o", root / "out", "-j", "1"], root / "out", (str(bad), "all zeros"))


@kind(3, "label-of-two-channels-preprocess")
def _(root: Path, fx: Fixtures) -> Kind:
    ds, path = _decathlon_with_label(root, fx, lambda lab: np.stack([lab, np.zeros_like(lab)], -1))
    return Kind(["preprocess", "-i", ds, "-o", root / "out", "-j", "1"], root / "out", (str(path), "label has 2 channels"))


@kind(3, "label-within-float32-of-integers-preprocess")
def _(root: Path, fx: Fixtures) -> Kind:
    # float32 would round 1.00000001 to 1: the label is checked as stored
    ds, path = _decathlon_with_label(root, fx, lambda lab: np.where(lab > 0, lab + 1e-8, 0).astype(np.float64))
    return Kind(["preprocess", "-i", ds, "-o", root / "out", "-j", "1"], root / "out",
                (str(path), "non-integer values", "1.00000001"))


@kind(3, "label-spacing-off-by-a-tenth-far-from-the-origin-preprocess")
def _(root: Path, fx: Fixtures) -> Kind:
    far = AFFINE.copy()
    far[:3, 3] = [120.0, 120.0, -70.0]  # a tolerance relative to the origin let 0.1 mm a voxel through
    ds = Path(shutil.copytree(fx.base, root / "ds"))
    for sub in ("imagesTr", "labelsTr"):
        for path in sorted((ds / sub).glob("*.nii.gz")):
            data, _ = load(path)
            save(path, data, far)
    bad = ds / "labelsTr" / "SYN_001.nii.gz"
    wider = far.copy()
    wider[0, 0] = 1.1
    save(bad, load(bad)[0], wider)
    return Kind(["preprocess", "-i", ds, "-o", root / "out", "-j", "1"], root / "out", (str(bad), "spacing (1.1, 1, 1.2) differs"))


@kind(3, "decathlon-image-of-two-axes-preprocess")
def _(root: Path, fx: Fixtures) -> Kind:
    ds = Path(shutil.copytree(fx.base, root / "ds"))
    for sub in ("imagesTr", "labelsTr"):
        for path in sorted((ds / sub).glob("*.nii.gz")):
            data, affine = load(path)
            save(path, data[:, :, 5] if data.ndim == 3 else data[:, :, 5, 0], affine)
    return Kind(["preprocess", "-i", ds, "-o", root / "out", "-j", "1"], root / "out",
                ("SYN_000.nii.gz", "2 spatial axes (16 x 16)", "16 x 16 x 1"))


@kind(3, "slices-image-one-row-high-preprocess")
def _(root: Path, fx: Fixtures) -> Kind:
    ds = slices_dataset(root / "ds")
    for sub in ("training_images", "training_labels"):
        Image.fromarray(np.ones((1, 16), np.uint8)).save(ds / sub / "BRATS_002_z20.png")
    return Kind(["preprocess", "-i", ds, "-o", root / "out", "-j", "1"], root / "out",
                ("BRATS_002_z20.png", "16 x 1", "too small"))


@kind(8, "dataset-json-key-given-twice")
def _(root: Path, fx: Fixtures) -> Kind:
    ds = Path(shutil.copytree(fx.base, root / "ds"))
    text = (ds / "dataset.json").read_text().rstrip()
    # a second 'training' list: json.loads kept the last, and the first list's cases were dropped
    (ds / "dataset.json").write_text(text[:-1] + ', "training": []}')
    return Kind(["preprocess", "-i", ds, "-o", root / "out", "-j", "1"], root / "out",
                (str(ds / "dataset.json"), "key 'training' given twice"))


@kind(8, "dataset-json-label-index-given-twice")
def _(root: Path, fx: Fixtures) -> Kind:
    ds = Path(shutil.copytree(fx.base, root / "ds"))
    edit_json(ds / "dataset.json", lambda m: m["labels"].update({"01": "tumour"}))
    return Kind(["preprocess", "-i", ds, "-o", root / "out", "-j", "1"], root / "out",
                (str(ds / "dataset.json"), "gives index 1 twice ('1' and '01')"))


@kind(8, "dataset-json-two-cases-share-a-label")
def _(root: Path, fx: Fixtures) -> Kind:
    ds = Path(shutil.copytree(fx.base, root / "ds"))
    edit_json(ds / "dataset.json", lambda m: m["training"][1].update(label=m["training"][0]["label"]))
    return Kind(["preprocess", "-i", ds, "-o", root / "out", "-j", "1"], root / "out",
                (str(ds / "dataset.json"), "training[1] and training[0] share the label"))


@kind(8, "dataset-json-entry-of-dot-dot-verify")
def _(root: Path, fx: Fixtures) -> Kind:
    ds = Path(shutil.copytree(fx.base, root / "ds"))
    # named '..', the entry was taken for a hidden file and skipped: verify checked the others only
    edit_json(ds / "dataset.json", lambda m: m["training"][1].update(image="./imagesTr/.."))
    return Kind(["preprocess", "-i", ds, "--verify-only"], None, ("training[1].image", "a folder, not a file"))


@kind(9, "nifti-in-metres-infer")
def _(root: Path, fx: Fixtures) -> Kind:
    path = image_in(root / "in")
    img = nib.load(str(path))
    metres = nib.Nifti1Image(np.asarray(img.dataobj), np.diag([0.001, 0.001, 0.0012, 1.0]))
    metres.header.set_xyzt_units("meter")
    nib.save(metres, str(path))
    return Kind(["infer", "-m", fx.model, "-i", root / "in", "-o", root / "out"], root / "out",
                (str(path), "spatial unit 'meter'"))


@kind(9, "evaluate-reference-shifted-a-millimetre-far-from-the-origin")
def _(root: Path, fx: Fixtures) -> Kind:
    far = AFFINE.copy()
    far[:3, 3] = -1000.0  # a tolerance relative to the origin let 1 mm through
    label = np.zeros(SHAPE, np.uint8)
    label[4:8, 4:8, 4:8] = 1
    (root / "pred").mkdir()
    (root / "ref").mkdir()
    save(root / "pred" / "a.nii.gz", label, far)
    far[0, 3] += 1.0
    save(root / "ref" / "a.nii.gz", label, far)
    return Kind(["evaluate", "-p", root / "pred", "-l", root / "ref", "-o", root / "out"], root / "out",
                (str(root / "pred" / "a.nii.gz"), "origin"))


def _brats(root: Path, cases: tuple[str, ...] = ("BraTS2021_00001", "BraTS2021_00002", "BraTS2021_00003")) -> Path:
    from tests.builders import make_brats

    return make_brats(root / "brats", cases=cases, shape=SHAPE)


@kind(8, "brats-cohort-folder-holding-a-case-of-its-own")
def _(root: Path, fx: Fixtures) -> Kind:
    ds = _brats(root)
    for path in (ds / "BraTS2021_00003").iterdir():  # the cohort folder was read as that one case
        shutil.move(str(path), str(ds / path.name))
    (ds / "BraTS2021_00003").rmdir()
    return Kind(["preprocess", "-i", ds, "-o", root / "out", "-j", "1"], root / "out",
                (str(ds), "beside BraTS case folders"))


@kind(8, "brats-case-folder-with-its-seg-only")
def _(root: Path, fx: Fixtures) -> Kind:
    ds = _brats(root)
    for path in (ds / "BraTS2021_00002").iterdir():
        if "_seg" not in path.name:
            path.unlink()
    return Kind(["preprocess", "-i", ds, "-o", root / "out", "-j", "1"], root / "out",
                (str(ds / "BraTS2021_00002"), "missing channel file(s)"))


@kind(8, "brats-case-folder-one-level-down")
def _(root: Path, fx: Fixtures) -> Kind:
    ds = _brats(root)
    (ds / "more").mkdir()
    shutil.move(str(ds / "BraTS2021_00002"), str(ds / "more" / "BraTS2021_00002"))
    return Kind(["preprocess", "-i", ds, "-o", root / "out", "-j", "1"], root / "out",
                (str(ds / "more" / "BraTS2021_00002"), "inside more/"))


@kind(8, "brats-channel-of-another-case")
def _(root: Path, fx: Fixtures) -> Kind:
    ds = _brats(root)
    own = ds / "BraTS2021_00001" / "BraTS2021_00001_t1.nii.gz"
    own.unlink()
    shutil.copy(ds / "BraTS2021_00002" / "BraTS2021_00002_t1.nii.gz", ds / "BraTS2021_00001")
    return Kind(["preprocess", "-i", ds, "-o", root / "out", "-j", "1"], root / "out",
                (str(ds / "BraTS2021_00001"), "more than one case"))


@kind(8, "brats-case-folder-copied")
def _(root: Path, fx: Fixtures) -> Kind:
    ds = _brats(root)
    shutil.copytree(ds / "BraTS2021_00003", ds / "BraTS2021_00003 (copy)")
    return Kind(["preprocess", "-i", ds, "-o", root / "out", "-j", "1"], root / "out",
                ("BraTS2021_00003", "holds case BraTS2021_00003, as"))


@kind(8, "slices-jpeg-pair-among-the-pngs")
def _(root: Path, fx: Fixtures) -> Kind:
    ds = slices_dataset(root / "ds")
    for sub in ("training_images", "training_labels"):  # the pair was left out without a word
        Image.fromarray(np.ones((16, 16), np.uint8)).save(ds / sub / "BRATS_009_z1.jpg")
    return Kind(["preprocess", "-i", ds, "-o", root / "out", "-j", "1"], root / "out",
                ("BRATS_009_z1.jpg", "among the PNG slices"))


@kind(4, "animated-png-slice")
def _(root: Path, fx: Fixtures) -> Kind:
    ds = slices_dataset(root / "ds")
    path = ds / "training_images" / "BRATS_002_z20.png"
    first = Image.open(path).copy()
    first.save(path, save_all=True, append_images=[Image.fromarray(np.full(first.size[::-1], 77, np.uint8))])
    return Kind(["preprocess", "-i", ds, "-o", root / "out", "-j", "1"], root / "out", (str(path), "animated PNG of 2 frames"))


# ---------------------------------------------------------------- 4. wrong pixel meaning


@kind(4, "palette-png-with-colours")
def _(root: Path, fx: Fixtures) -> Kind:
    ds = slices_dataset(root / "ds")
    bad = ds / "training_images" / "BRATS_001_z20.png"
    img = Image.fromarray(np.tile(np.arange(16, dtype=np.uint8), (16, 1)), mode="L").convert("P")
    img.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
    img.save(bad)
    return Kind(["preprocess", "-i", ds, "-o", root / "out", "-j", "1"], root / "out", (str(bad), "palette PNG with coloured entries"))


@kind(4, "complex-nifti-image")
def _(root: Path, fx: Fixtures) -> Kind:
    ds = Path(shutil.copytree(fx.base, root / "ds"))
    data, affine = load(ds / "imagesTr" / "SYN_000.nii.gz")
    bad = save(ds / "imagesTr" / "SYN_000.nii.gz", data.astype(np.complex64) * (1 + 1j), affine)
    return Kind(["preprocess", "-i", ds, "-o", root / "out", "-j", "1"], root / "out", (str(bad), "complex-valued"))


@kind(4, "nrrd-int64-vector-image")
def _(root: Path, fx: Fixtures) -> Kind:
    header = ("NRRD0004\ntype: int64\ndimension: 4\nspace: left-posterior-superior\nsizes: 4 16 16 12\n"
              "kinds: vector space space space\nencoding: raw\nendian: little\n"
              "space directions: none (1,0,0) (0,1,0) (0,0,1)\n\n")
    ds = generic_dataset(root / "ds", "a.nrrd")
    bad = ds / "images" / "a.nrrd"
    bad.write_bytes(header.encode() + np.ones(4 * 16 * 16 * 12, "<i8").tobytes())
    return Kind(["preprocess", "-i", ds, "-o", root / "out", "-j", "1"], root / "out",
                (str(bad), "4 components of type long_long, which ITK cannot read"))


@kind(4, "complex-nifti-infer")
def _(root: Path, fx: Fixtures) -> Kind:
    (root / "in").mkdir(parents=True)
    bad = save(root / "in" / "c.nii.gz", np.ones((*SHAPE, 4), np.complex64))
    return Kind(["infer", "-m", fx.model, "-i", bad, "-o", root / "out"], root / "out", (str(bad), "complex-valued"))


@kind(4, "complex-mat-image")
def _(root: Path, fx: Fixtures) -> Kind:
    pair = np.dtype([("real", "<f8"), ("imag", "<f8")])
    mat = swap_mat_image(figshare_file(root / "in" / "1.mat"),
                         lambda g: g.create_dataset("image", data=np.zeros((16, 16), pair)))
    return Kind(["infer", "-m", fx.model, "-i", mat, "-o", root / "out"], root / "out", (str(mat), "complex-valued"))


# ---------------------------------------------------------------- 5. memory exhaustion

LIMIT_WORDS = ("over the memory limit",)


@kind(5, "nifti-gz-bomb-infer")
def _(root: Path, fx: Fixtures) -> Kind:
    (root / "in").mkdir(parents=True)
    bomb = nifti_declaring(root / "in" / "bomb.nii.gz", (2048, 2048, 600))
    return Kind(["infer", "-m", fx.model, "-i", bomb, "-o", root / "out"], root / "out", (str(bomb), "2048 x 2048 x 600", *LIMIT_WORDS))


@kind(5, "nifti-gz-bomb-preprocess")
def _(root: Path, fx: Fixtures) -> Kind:
    ds = Path(shutil.copytree(fx.base, root / "ds"))
    bomb = nifti_declaring(ds / "labelsTr" / "SYN_002.nii.gz", (4096, 4096, 100))
    return Kind(["preprocess", "-i", ds, "-o", root / "out", "-j", "1"], root / "out", (str(bomb), *LIMIT_WORDS))


@kind(5, "nrrd-declares-huge")
def _(root: Path, fx: Fixtures) -> Kind:
    (root / "in").mkdir(parents=True)
    path = root / "in" / "big.nrrd"
    path.write_bytes(nrrd_header("", sizes="5000 5000 500").encode() + b"\n" + b"\0" * 64)
    return Kind(["infer", "-m", fx.model, "-i", path, "-o", root / "out"], root / "out", (str(path), *LIMIT_WORDS))


@kind(5, "mha-declares-huge")
def _(root: Path, fx: Fixtures) -> Kind:
    (root / "in").mkdir(parents=True)
    path = root / "in" / "big.mha"
    path.write_bytes(mhd_header("LOCAL", dims="100000 100000 2").encode() + b"\0" * 64)
    return Kind(["infer", "-m", fx.model, "-i", path, "-o", root / "out"], root / "out", (str(path), *LIMIT_WORDS))


@kind(5, "mat-declares-18-gib")
def _(root: Path, fx: Fixtures) -> Kind:
    mat = swap_mat_image(figshare_file(root / "in" / "1.mat"), lambda g: g.create_dataset(
        "image", shape=(70000, 70000), dtype="<f4", chunks=(64, 64)))
    return Kind(["infer", "-m", fx.model, "-i", mat, "-o", root / "out"], root / "out",
                (str(mat), "70000 x 70000", "18.3 GiB", *LIMIT_WORDS))


@kind(5, "png-declares-huge")
def _(root: Path, fx: Fixtures) -> Kind:
    (root / "in").mkdir(parents=True)
    png = png_declaring(root / "in" / "huge.png", 60000, 60000)
    return Kind(["infer", "-m", fx.model, "-i", png, "-o", root / "out"], root / "out", (str(png), "too large"))


@kind(5, "dicom-declares-huge")
def _(root: Path, fx: Fixtures) -> Kind:
    import pydicom

    from tests.builders import write_dicom_series

    series = write_dicom_series(root / "dcm", n=2)
    for f in series.iterdir():
        ds = pydicom.dcmread(f)
        ds.Rows, ds.Columns, ds.NumberOfFrames = 60000, 60000, 500
        ds.save_as(f)
    return Kind(["infer", "-m", fx.model, "-i", series, "-o", root / "out"], root / "out", (str(series), *LIMIT_WORDS))


@kind(5, "label-value-1e8-declared")
def _(root: Path, fx: Fixtures) -> Kind:
    ds = Path(shutil.copytree(fx.base, root / "ds"))
    edit_json(ds / "dataset.json", lambda m: m["labels"].update({"100000000": "huge"}))
    return Kind(["preprocess", "-i", ds, "-o", root / "out", "-j", "1"], root / "out", ("label value 100000000", "outside 0..255"))


@kind(5, "roi-size-absurd")
def _(root: Path, fx: Fixtures) -> Kind:
    image_in(root / "in")
    return Kind(["infer", "-m", fx.model, "-i", root / "in", "-o", root / "out", "--roi-size", "100000,100000,100000"],
                root / "out", ("infer.roi_size", "between 1 and 4096"))


@kind(5, "roi-window-over-the-memory-limit")
def _(root: Path, fx: Fixtures) -> Kind:
    image_in(root / "in")  # each side allowed, the window 256 GiB: a small image is padded to it
    return Kind(["infer", "-m", fx.model, "-i", root / "in", "-o", root / "out", "--roi-size", "4096,4096,4096"],
                root / "out", ("a.nii.gz: infer.roi_size [4096, 4096, 4096]", "over the image memory limit", "SEGPIPE_MAX_IMAGE_MEMORY"))


@kind(5, "threads-absurd")
def _(root: Path, fx: Fixtures) -> Kind:
    image_in(root / "in")
    return Kind(["infer", "-m", fx.model, "-i", root / "in", "-o", root / "out", "--threads", "100000"], root / "out",
                ("infer.threads", "<= 1024"))


@kind(5, "nrrd-sizes-after-data-file")
def _(root: Path, fx: Fixtures) -> Kind:
    (root / "in").mkdir(parents=True)
    np.zeros(64 * 64 * 16, np.float32).tofile(root / "in" / "x.raw")
    text = "NRRD0004\ndata file: x.raw\ntype: float\ndimension: 3\nsizes: 64 64 16\nencoding: raw\nendian: little\n"
    (root / "in" / "x.nhdr").write_text(text)
    return Kind(["infer", "-m", fx.model, "-i", root / "in", "-o", root / "out"], root / "out",
                ("x.nhdr", "64 x 64 x 16", *LIMIT_WORDS), env={"SEGPIPE_MAX_IMAGE_MEMORY": "64KiB"})


@kind(5, "target-spacing-resamples-over-the-limit")
def _(root: Path, fx: Fixtures) -> Kind:
    return Kind(["preprocess", "-i", fx.base, "-o", root / "out", "-j", "1", "--set",
                 "preprocess.target_spacing=[0.01,0.01,0.01]"], root / "out",
                ("resampled to (0.01, 0.01, 0.01) mm", *LIMIT_WORDS))


@kind(5, "memory-limit-from-environment")
def _(root: Path, fx: Fixtures) -> Kind:
    image = image_in(root / "in")
    return Kind(["infer", "-m", fx.model, "-i", image, "-o", root / "out"], root / "out",
                (str(image), "memory limit of 1.0 KiB"), env={"SEGPIPE_MAX_IMAGE_MEMORY": "1KiB"})


def _infer_with_memory_limit(value: str, *words: str) -> Callable[[Path, Fixtures], Kind]:
    """`infer` under SEGPIPE_MAX_IMAGE_MEMORY=`value`: one line naming the variable and `words`."""

    def build(root: Path, fx: Fixtures) -> Kind:
        image = image_in(root / "in")
        return Kind(["infer", "-m", fx.model, "-i", image, "-o", root / "out"], root / "out",
                    ("SEGPIPE_MAX_IMAGE_MEMORY", *words), env={"SEGPIPE_MAX_IMAGE_MEMORY": value})

    return build


kind(5, "memory-limit-not-a-size")(_infer_with_memory_limit("lots", "expected a size"))
kind(9, "memory-limit-infinite")(_infer_with_memory_limit("1e309", "1e309"))


# ---------------------------------------------------------------- 6. concurrent writers


@kind(6, "locked-fit-output")
def _(root: Path, fx: Fixtures) -> Kind:
    out = lock_with(root / "model", fx.live_pid, "fit")
    return Kind(["fit", "-d", fx.prepared, "-o", out, "--epochs", "1"], None, (str(out), f"PID {fx.live_pid}", "in use"),
                watch=[out])


@kind(6, "locked-fit-resume")
def _(root: Path, fx: Fixtures) -> Kind:
    model = lock_with(copy_model(fx, root / "model"), fx.live_pid, "fit")
    return Kind(["fit", "-d", fx.prepared, "-o", model, "--resume"], None, (f"PID {fx.live_pid}", "in use"), watch=[model])


@kind(6, "locked-preprocess-output")
def _(root: Path, fx: Fixtures) -> Kind:
    out = lock_with(root / "out", fx.live_pid, "preprocess")
    return Kind(["preprocess", "-i", fx.base, "-o", out], None, (f"PID {fx.live_pid}", "segpipe preprocess"), watch=[out])


@kind(6, "locked-infer-output")
def _(root: Path, fx: Fixtures) -> Kind:
    image_in(root / "in")
    out = lock_with(root / "out", fx.live_pid, "infer")
    return Kind(["infer", "-m", fx.model, "-i", root / "in", "-o", out], None, (f"PID {fx.live_pid}",), watch=[out])


@kind(6, "locked-evaluate-output")
def _(root: Path, fx: Fixtures) -> Kind:
    mask_in(root / "pred")
    mask_in(root / "ref")
    out = lock_with(root / "out", fx.live_pid, "evaluate")
    return Kind(["evaluate", "-p", root / "pred", "-l", root / "ref", "-o", out], None, (f"PID {fx.live_pid}",), watch=[out])


@kind(6, "locked-reports-rebuild")
def _(root: Path, fx: Fixtures) -> Kind:
    from click.testing import CliRunner

    from segpipe.cli import cli

    mask_in(root / "pred")
    mask_in(root / "ref")
    out = root / "reports"
    done = CliRunner().invoke(cli, ["evaluate", "-q", "-p", str(root / "pred"), "-l", str(root / "ref"), "-o", str(out)])
    assert done.exit_code == 0, done.output
    lock_with(out, fx.live_pid, "evaluate")
    return Kind(["report", out, "--rebuild"], None, (f"PID {fx.live_pid}",), watch=[out])


# ---------------------------------------------------------------- 7. tracebacks that must be one line


@kind(7, "yaml-python-tag-on-resume")
def _(root: Path, fx: Fixtures) -> Kind:
    model = copy_model(fx, root / "model")
    marker = root / "code-ran"
    (model / "config.yaml").write_text(f"train: !!python/object/apply:os.system ['touch {marker}']\n")
    return Kind(["fit", "-d", fx.prepared, "-o", model, "--resume"], model, (str(model / "config.yaml"), "not valid YAML"))


@kind(7, "model-config-nested-too-deeply-at-infer")
def _(root: Path, fx: Fixtures) -> Kind:
    model = copy_model(fx, root / "model")
    (model / "config.yaml").write_text("train: " + "[" * 20000 + "]" * 20000 + "\n")
    image_in(root / "in")
    return Kind(["infer", "-m", model, "-i", root / "in", "-o", root / "out"], root / "out",
                (str(model / "config.yaml"), "YAML nested too deeply"))


@kind(7, "network-json-nested-too-deeply-at-infer")
def _(root: Path, fx: Fixtures) -> Kind:
    model = copy_model(fx, root / "model")
    (model / "network.json").write_text("[" * 100000 + "]" * 100000)
    image_in(root / "in")
    return Kind(["infer", "-m", model, "-i", root / "in", "-o", root / "out"], root / "out",
                (str(model / "network.json"), "JSON nested too deeply"))


@kind(7, "checkpoint-missing-keys-on-resume")
def _(root: Path, fx: Fixtures) -> Kind:
    model = copy_model(fx, root / "model")
    last = model / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=True)
    del state["optimizer"]
    torch.save(state, last)
    return Kind(["fit", "-d", fx.prepared, "-o", model, "--resume"], model, (str(last), "lacks the key 'optimizer'"))


@kind(7, "checkpoint-mistyped-key-on-resume")
def _(root: Path, fx: Fixtures) -> Kind:
    model = copy_model(fx, root / "model")
    last = model / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=True)
    state["epoch"] = "three"
    torch.save(state, last)
    return Kind(["fit", "-d", fx.prepared, "-o", model, "--resume"], model, (str(last), "'epoch' holds str"))


@kind(7, "checkpoint-mistyped-weights-at-infer")
def _(root: Path, fx: Fixtures) -> Kind:
    model = copy_model(fx, root / "model")
    best = model / "checkpoints" / "best.pt"
    state = torch.load(best, weights_only=True)
    state["model"] = [1, 2, 3]
    torch.save(state, best)
    image_in(root / "in")
    return Kind(["infer", "-m", model, "-i", root / "in", "-o", root / "out"], root / "out", (str(best), "'model' holds list"))


def _best_checkpoint_holding(key: str, value: object, *words: str) -> Callable[[Path, Fixtures], Kind]:
    """`infer` with best.pt's `key` set to `value`: one line naming best.pt and `words`."""

    def build(root: Path, fx: Fixtures) -> Kind:
        model = copy_model(fx, root / "model")
        best = model / "checkpoints" / "best.pt"
        state = torch.load(best, weights_only=True)
        state[key] = value
        torch.save(state, best)
        image_in(root / "in")
        return Kind(["infer", "-m", model, "-i", root / "in", "-o", root / "out"], root / "out", (str(best), *words))

    return build


kind(7, "checkpoint-threshold-mistyped-at-infer")(_best_checkpoint_holding("threshold", "low", "'threshold' holds str"))
kind(7, "checkpoint-threshold-out-of-range-at-infer")(
    _best_checkpoint_holding("threshold", 7.0, "threshold 7.0", "between 0 and 1"))


@kind(7, "checkpoint-weights-nan-at-infer")
def _(root: Path, fx: Fixtures) -> Kind:
    model = copy_model(fx, root / "model")
    best = model / "checkpoints" / "best.pt"
    state = torch.load(best, weights_only=True)
    name = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][name] = torch.full_like(state["model"][name], float("nan"))  # a diverged training's weights
    torch.save(state, best)
    image_in(root / "in")
    return Kind(["infer", "-m", model, "-i", root / "in", "-o", root / "out"], root / "out",
                (str(best), "non-finite weights", f"'{name}'"))


@kind(7, "overlap-one-in-model-config")
def _(root: Path, fx: Fixtures) -> Kind:
    model = copy_model(fx, root / "model")
    config = model / "config.yaml"
    config.write_text(config.read_text().replace("overlap: 0.5", "overlap: 1.0"))
    image_in(root / "in")
    return Kind(["infer", "-m", model, "-i", root / "in", "-o", root / "out"], root / "out", (str(config), "infer.overlap", "< 1"))


@kind(7, "roi-size-wrong-rank")
def _(root: Path, fx: Fixtures) -> Kind:
    image_in(root / "in")
    return Kind(["infer", "-m", fx.model, "-i", root / "in", "-o", root / "out", "--roi-size", "16,16"], root / "out",
                ("infer.roi_size", "has 2 values", "expected 3"))


@kind(7, "patient-pattern-invalid")
def _(root: Path, fx: Fixtures) -> Kind:
    mask_in(root / "pred")
    mask_in(root / "ref")
    return Kind(["evaluate", "-p", root / "pred", "-l", root / "ref", "-o", root / "out", "--set", "evaluate.patient_pattern=(x"],
                root / "out", ("evaluate.patient_pattern", "not a valid regular expression"))


@kind(7, "patient-pattern-without-group")
def _(root: Path, fx: Fixtures) -> Kind:
    mask_in(root / "pred")
    mask_in(root / "ref")
    return Kind(["evaluate", "-p", root / "pred", "-l", root / "ref", "-o", root / "out", "--set", "evaluate.patient_pattern=a"],
                root / "out", ("evaluate.patient_pattern", "group named patient"))


@kind(7, "device-cuda-without-cuda")
def _(root: Path, fx: Fixtures) -> Kind:
    image_in(root / "in")
    return Kind(["infer", "-m", fx.model, "-i", root / "in", "-o", root / "out", "--device", "cuda"], root / "out",
                ("--device", "CUDA is not available"))


@kind(7, "fit-device-cuda-without-cuda")
def _(root: Path, fx: Fixtures) -> Kind:
    return Kind(["fit", "-d", fx.prepared, "-o", root / "model", "--device", "cuda"], root / "model",
                ("train.device", "CUDA is not available"))


@kind(7, "device-unknown")
def _(root: Path, fx: Fixtures) -> Kind:
    return Kind(["fit", "-d", fx.prepared, "-o", root / "model", "--set", "train.device=gpu0"], root / "model",
                ("train.device", "must be cpu, cuda"))


def _fit_set(key_value: str, *words: str) -> Callable[[Path, Fixtures], Kind]:
    def build(root: Path, fx: Fixtures) -> Kind:
        return Kind(["fit", "-d", fx.prepared, "-o", root / "model", "--set", key_value], root / "model",
                    (key_value.split("=")[0], *words))

    return build


kind(7, "lr-nan")(_fit_set("train.lr=.nan", "finite"))
kind(7, "num-workers-negative")(_fit_set("train.num_workers=-1", ">= 0"))
kind(7, "threshold-grid-above-one")(_fit_set("train.threshold_grid=[0.5,1.5]", "between 0 and 1", "1.5"))
kind(7, "threshold-zero")(_fit_set("infer.threshold=0", "> 0"))

# ---------------------------------------------------------------- 8. nonsense accepted with exit 0

kind(7, "lr-overflowing-float32")(_fit_set("train.lr=1e300", "<= 10"))
kind(7, "seed-beyond-32-bits")(_fit_set("train.seed=99999999999999999999", "<= 4294967295"))
kind(5, "iterations-per-epoch-absurd")(_fit_set("train.iterations_per_epoch=100000000000000000000000", "<= 100000"))
kind(5, "max-seconds-absurd")(_fit_set("train.max_seconds=1e300", "<= 31622400"))
kind(5, "epochs-absurd")(_fit_set("train.epochs=99999999999999999999", "<= 1000000"))
kind(8, "augment-listed-twice")(_fit_set("train.augment=[flip,rotate90,flip]", "'flip' more than once"))
kind(8, "batch-size-negative")(_fit_set("train.batch_size=-1", ">= 1"))
kind(8, "epochs-zero")(_fit_set("train.epochs=0", ">= 1"))
kind(8, "patch-size-with-zeros")(_fit_set("train.patch_size=[0,16,16]", "between 1 and 4096"))
kind(8, "lr-infinite")(_fit_set("train.lr=.inf", "finite"))


@kind(8, "folds-zero")
def _(root: Path, fx: Fixtures) -> Kind:
    return Kind(["preprocess", "-i", fx.base, "-o", root / "out", "--set", "preprocess.folds=0"], root / "out",
                ("preprocess.folds", ">= 2"))


@kind(8, "spacing-not-positive")
def _(root: Path, fx: Fixtures) -> Kind:
    return Kind(["preprocess", "-i", fx.base, "-o", root / "out", "--set", "preprocess.target_spacing=[1,0,-1]"],
                root / "out", ("preprocess.target_spacing", "> 0"))


@kind(8, "overlap-negative-in-config-file")
def _(root: Path, fx: Fixtures) -> Kind:
    config = root / "c.yaml"
    root.mkdir(parents=True, exist_ok=True)
    config.write_text("infer:\n  overlap: -0.5\n")
    return Kind(["preprocess", "-i", fx.base, "-o", root / "out", "--config", config], root / "out",
                (str(config), "infer.overlap", ">= 0"))


# ---------------------------------------------------------------- 9. misleading messages


@kind(9, "nifti-pixdim-zero-infer")
def _(root: Path, fx: Fixtures) -> Kind:
    image = image_in(root / "in", "a.nii")  # uncompressed: the header's bytes are edited in place
    block = bytearray(image.read_bytes())
    struct.pack_into("<f", block, 80, 0.0)  # pixdim[1]
    struct.pack_into("<hh", block, 252, 0, 0)  # qform_code, sform_code: the grid comes from pixdim
    image.write_bytes(bytes(block))
    return Kind(["infer", "-m", fx.model, "-i", image, "-o", root / "out"], root / "out",
                (str(image), "NIfTI pixdim (0, 1, 1.2)", "not positive"))


@kind(9, "mha-spacing-zero-infer")
def _(root: Path, fx: Fixtures) -> Kind:
    (root / "in").mkdir(parents=True)
    path = root / "in" / "a.mha"
    path.write_bytes(mhd_header("LOCAL").replace("ElementSpacing = 1 1 1", "ElementSpacing = 0 1 1").encode() + b"\0" * 256)
    return Kind(["infer", "-m", fx.model, "-i", path, "-o", root / "out"], root / "out",
                (str(path), "MetaImage ElementSpacing (0, 1, 1)", "not positive"))


def _short_mha(body: bytes, extra: str = "") -> bytes:
    """A 4 x 4 x 4 MET_SHORT MetaImage holding `body` after its header."""
    header = mhd_header("LOCAL").replace("MET_FLOAT", "MET_SHORT").replace("ElementDataFile", extra + "ElementDataFile")
    return header.encode() + body


@kind(4, "mha-compressed-stream-damaged-infer")
def _(root: Path, fx: Fixtures) -> Kind:
    (root / "in").mkdir(parents=True)
    path = root / "in" / "a.mha"
    stream = b"\x78\x9c" + b"garbage" * 50  # ITK says "Uncompress failed" and keeps whatever memory held
    path.write_bytes(_short_mha(stream, f"CompressedData = True\nCompressedDataSize = {len(stream)}\n"))
    return Kind(["infer", "-m", fx.model, "-i", path, "-o", root / "out"], root / "out",
                (str(path), "compressed image data is damaged"))


@kind(4, "mha-compressed-size-too-small-preprocess")
def _(root: Path, fx: Fixtures) -> Kind:
    stream = zlib.compress((np.arange(64) + 1).astype("<i2").tobytes())
    text = _short_mha(stream, "CompressedData = True\nCompressedDataSize = 8\n")
    ds = generic_dataset(root / "ds", "a.mha")
    (ds / "images" / "a.mha").write_bytes(text)
    return Kind(["preprocess", "-i", ds, "-o", root / "out", "-j", "1"], root / "out",
                ("a.mha", "compressed image data is cut short"))


@kind(4, "mha-compressed-local-without-size-verify")
def _(root: Path, fx: Fixtures) -> Kind:
    stream = zlib.compress((np.arange(64) + 1).astype("<i2").tobytes())
    ds = generic_dataset(root / "ds", "a.mha")
    (ds / "images" / "a.mha").write_bytes(_short_mha(stream, "CompressedData = True\n"))
    return Kind(["preprocess", "-i", ds, "--verify-only"], None, ("a.mha", "without a CompressedDataSize"), report=True)


@kind(4, "mha-data-cut-short-infer")
def _(root: Path, fx: Fixtures) -> Kind:
    (root / "in").mkdir(parents=True)
    path = root / "in" / "a.mha"
    path.write_bytes(_short_mha(b"\1\0" * 40))
    return Kind(["infer", "-m", fx.model, "-i", path, "-o", root / "out"], root / "out",
                (str(path), "image data is cut short (80 of 128 bytes)"))


@kind(9, "mha-offset-not-finite-infer")
def _(root: Path, fx: Fixtures) -> Kind:
    (root / "in").mkdir(parents=True)
    path = root / "in" / "a.mha"
    path.write_bytes(_short_mha(b"\1\0" * 64, "Offset = nan 0 0\n"))
    return Kind(["infer", "-m", fx.model, "-i", path, "-o", root / "out"], root / "out",
                (str(path), "MetaImage Offset (nan, 0, 0)", "not finite"))


@kind(9, "nrrd-space-directions-singular-preprocess")
def _(root: Path, fx: Fixtures) -> Kind:
    ds = generic_dataset(root / "ds", "a.nhdr", nrrd_header("data file: a.raw").replace("(0,1,0)", "(0,0,0)"))
    np.ones(64, np.float32).tofile(ds / "images" / "a.raw")
    return Kind(["preprocess", "-i", ds, "-o", root / "out", "-j", "1"], root / "out",
                ("a.nhdr", "NRRD space directions", "singular"))


@kind(9, "nrrd-encoding-unreadable-verify")
def _(root: Path, fx: Fixtures) -> Kind:
    ds = generic_dataset(root / "ds", "a.nhdr", nrrd_header("data file: a.raw.bz2").replace("encoding: raw", "encoding: bzip2"))
    (ds / "images" / "a.raw.bz2").write_bytes(b"BZh9")
    return Kind(["preprocess", "-i", ds, "--verify-only"], None, ("a.nhdr", "NRRD encoding 'bzip2' cannot be read"),
                report=True)


@kind(8, "figshare-cvind-one-fold-preprocess")
def _(root: Path, fx: Fixtures) -> Kind:
    ds = figshare_set(root / "fs", cvind=np.full(6, 2))
    return Kind(["preprocess", "-i", ds, "-o", root / "out", "-j", "1"], root / "out",
                (str(ds / "cvind.mat"), "every slice in fold 2", "no slice to train on"))


@kind(8, "figshare-cvind-fold-not-whole-verify")
def _(root: Path, fx: Fixtures) -> Kind:
    ds = figshare_set(root / "fs", cvind=[1, 1, 2, 2, 1.5, 3])
    return Kind(["preprocess", "-i", ds, "--verify-only"], None, (str(ds / "cvind.mat"), "fold index 1.5", "not a positive whole number"))


@kind(3, "figshare-mask-not-logical-verify")
def _(root: Path, fx: Fixtures) -> Kind:
    ds = figshare_set(root / "fs")
    mask = np.zeros((16, 16), np.uint8)
    mask[4:8, 4:8] = 255
    swap_mat_mask(ds / "3.mat", mask)
    return Kind(["preprocess", "-i", ds, "--verify-only"], None,
                (str(ds / "3.mat"), "cjdata.tumorMask holds values other than 0 and 1 (255)"), report=True)


@kind(3, "figshare-mask-not-logical-evaluate")
def _(root: Path, fx: Fixtures) -> Kind:
    refs = figshare_set(root / "refs")
    preds = Path(shutil.copytree(refs, root / "preds"))
    mask = np.zeros((16, 16), np.float64)
    mask[4:8, 4:8] = 0.4
    swap_mat_mask(refs / "2.mat", mask)
    return Kind(["evaluate", "-p", preds, "-l", refs, "-o", root / "out"], root / "out",
                (str(refs / "2.mat"), "tumorMask holds values other than 0 and 1 (0.4)"))


@kind(9, "mha-element-type-unknown-verify")
def _(root: Path, fx: Fixtures) -> Kind:
    ds = generic_dataset(root / "ds", "a.mha")
    (ds / "images" / "a.mha").write_bytes(mhd_header("LOCAL").replace("MET_FLOAT", "MET_WEIRD").encode() + b"\0" * 256)
    return Kind(["preprocess", "-i", ds, "--verify-only"], None, ("a.mha", "ElementType 'MET_WEIRD'", "not a pixel type"),
                report=True)


@kind(9, "nrrd-itk-reason-named-infer")
def _(root: Path, fx: Fixtures) -> Kind:
    (root / "in").mkdir(parents=True)
    path = root / "in" / "a.nrrd"
    path.write_bytes(nrrd_header("", sizes="4 4 4").replace("sizes: 4 4 4", "sizes: 4 4").encode() + b"\n" + b"\0" * 256)
    return Kind(["infer", "-m", fx.model, "-i", path, "-o", root / "out"], root / "out",
                (str(path), "ITK:", "parsed 2 values, but dimension is 3"))


def _edit_series(folder: Path, edit: Callable) -> Path:  # noqa: ANN001 - (pydicom Dataset, index) -> None
    """Rewrite every slice of a DICOM series through `edit(dataset, instance_number)`."""
    import pydicom

    for path in sorted(folder.iterdir()):
        ds = pydicom.dcmread(path)
        edit(ds, int(ds.InstanceNumber))
        ds.save_as(path)
    return folder


@kind(4, "dicom-pixel-data-cut-short-infer")
def _(root: Path, fx: Fixtures) -> Kind:
    from tests.builders import write_dicom_series

    series = _edit_series(write_dicom_series(root / "in" / "s1", n=4, shape=(16, 16)),
                          lambda ds, _i: setattr(ds, "PixelData", ds.PixelData[:100]))
    return Kind(["infer", "-m", fx.model, "-i", series, "-o", root / "out"], root / "out",
                ("pixel data is cut short (100 of 512 bytes)",))


@kind(4, "dicom-frames-not-a-number-infer")
def _(root: Path, fx: Fixtures) -> Kind:
    from tests.builders import write_dicom_series

    series = _edit_series(write_dicom_series(root / "in" / "s1", n=2, shape=(16, 16)),
                          lambda ds, _i: setattr(ds, "NumberOfFrames", "4.5"))
    return Kind(["infer", "-m", fx.model, "-i", series, "-o", root / "out"], root / "out",
                ("NumberOfFrames '4.5' is not a whole number of frames",))


@kind(4, "dicom-gantry-tilt-preprocess")
def _(root: Path, fx: Fixtures) -> Kind:
    from tests.builders import write_dicom_series

    series = _edit_series(write_dicom_series(root / "ds" / "s1", n=4, shape=(16, 16)), lambda ds, i: setattr(
        ds, "ImagePositionPatient", [0.0, 0.5 * i, float(ds.ImagePositionPatient[2])]))
    return Kind(["preprocess", "-i", root / "ds", "-o", root / "out", "-j", "1"], root / "out",
                (str(series), "gantry tilt of about 14.0 degrees"))


@kind(9, "dicom-position-not-finite-verify")
def _(root: Path, fx: Fixtures) -> Kind:
    from tests.builders import write_dicom_series

    series = write_dicom_series(root / "ds" / "s1", n=4, shape=(16, 16))
    _edit_series(series, lambda ds, i: setattr(ds, "ImagePositionPatient", [0.0, 0.0, float("nan")]) if i == 2 else None)
    return Kind(["preprocess", "-i", root / "ds", "--verify-only"], None, ("ImagePositionPatient", "is not finite"))


@kind(8, "evaluate-prediction-of-a-case-twice")
def _(root: Path, fx: Fixtures) -> Kind:
    mask_in(root / "ref")
    mask_in(root / "pred", "a.nii")
    save(root / "pred" / "a.nii.gz", np.zeros(SHAPE, np.uint8))  # which one was scored depended on the sort
    return Kind(["evaluate", "-p", root / "pred", "-l", root / "ref", "-o", root / "out"], root / "out",
                ("case id 'a' appears twice", "keep one"))


@kind(9, "evaluate-mask-value-beyond-32-bits")
def _(root: Path, fx: Fixtures) -> Kind:
    ref = mask_in(root / "ref")
    label = load(ref)[0].astype(np.int64) * (2**32 + 1)  # became label 1 in int32: Dice 1.0
    (root / "pred").mkdir(parents=True)
    nib.save(nib.Nifti1Image(label, AFFINE, dtype=np.int64), str(root / "pred" / "a.nii.gz"))
    return Kind(["evaluate", "-p", root / "pred", "-l", root / "ref", "-o", root / "out"], root / "out",
                (str(root / "pred" / "a.nii.gz"), "mask values 4294967297 are outside 0..255"))


@kind(3, "image-overflowing-float32-verify")
def _(root: Path, fx: Fixtures) -> Kind:
    ds = Path(shutil.copytree(fx.base, root / "Task97"))
    path = sorted((ds / "imagesTr").glob("*.nii.gz"))[0]
    data, affine = load(path)
    data = data.astype(np.float64)
    data[1, 1, 1] = 1e300  # finite as stored, Inf once held as float32, which preprocess refuses
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return Kind(["preprocess", "-i", ds, "--verify-only"], None, (str(path), "0 NaN and 1 Inf voxel(s)"), report=True)


def _prepared_with_splits(root: Path, fx: Fixtures, change: Callable[[list], None]) -> Path:
    prepared = Path(shutil.copytree(fx.prepared, root / "prepared"))
    edit_json(prepared / "splits.json", change)
    return prepared


@kind(8, "splits-case-in-train-and-val")
def _(root: Path, fx: Fixtures) -> Kind:
    prepared = _prepared_with_splits(root, fx, lambda s: s[0]["val"].append(s[0]["train"][0]))
    return Kind(["fit", "-d", prepared, "-o", root / "model"], root / "model",
                (str(prepared / "splits.json"), "in both 'train' and 'val'"))


@kind(8, "splits-fold-entry-out-of-place")
def _(root: Path, fx: Fixtures) -> Kind:
    prepared = _prepared_with_splits(root, fx, lambda s: s.pop(0))
    return Kind(["fit", "-d", prepared, "-o", root / "model"], root / "model",
                (str(prepared / "splits.json"), "entry 0 says fold 1"))


@kind(7, "splits-without-training-cases")
def _(root: Path, fx: Fixtures) -> Kind:
    prepared = _prepared_with_splits(root, fx, lambda s: s[0].update(train=[]))
    return Kind(["fit", "-d", prepared, "-o", root / "model"], root / "model",
                (str(prepared / "splits.json"), "fold 0 has no training cases"))


@kind(9, "splits-val-a-string")
def _(root: Path, fx: Fixtures) -> Kind:
    prepared = _prepared_with_splits(root, fx, lambda s: s[0].update(val=s[0]["val"][0]))
    return Kind(["fit", "-d", prepared, "-o", root / "model"], root / "model",
                (str(prepared / "splits.json"), "fold 0 'val' must be a list of case ids"))


@kind(7, "config-not-utf8")
def _(root: Path, fx: Fixtures) -> Kind:
    root.mkdir(parents=True, exist_ok=True)
    (root / "c.yaml").write_bytes(b"train:\n  lr: 0.01 \xeb\xff\n")
    return Kind(["fit", "-d", fx.prepared, "-o", root / "model", "--config", root / "c.yaml"], root / "model",
                (str(root / "c.yaml"), "not UTF-8 text (byte 0xeb"))


@kind(8, "config-key-given-twice")
def _(root: Path, fx: Fixtures) -> Kind:
    root.mkdir(parents=True, exist_ok=True)
    (root / "c.yaml").write_text("train:\n  lr: 0.01\nmodel:\n  filters: 8\ntrain:\n  epochs: 3\n")
    return Kind(["fit", "-d", fx.prepared, "-o", root / "model", "--config", root / "c.yaml"], root / "model",
                (str(root / "c.yaml"), "key 'train' given twice (line 5)"))


@kind(9, "config-option-empty")
def _(root: Path, fx: Fixtures) -> Kind:
    return Kind(["fit", "-d", fx.prepared, "-o", root / "model", "--config", ""], root / "model",
                ("option --config: empty",))


@kind(5, "config-larger-than-a-config")
def _(root: Path, fx: Fixtures) -> Kind:
    root.mkdir(parents=True, exist_ok=True)
    (root / "c.yaml").write_text("train:\n  augment: [" + ", ".join(["flip"] * 300_000) + "]\n")
    return Kind(["fit", "-d", fx.prepared, "-o", root / "model", "--config", root / "c.yaml"], root / "model",
                (str(root / "c.yaml"), "cannot read config: larger than 1.0 MiB"))


@kind(9, "config-a-folder")
def _(root: Path, fx: Fixtures) -> Kind:
    (root / "configs").mkdir(parents=True)
    return Kind(["fit", "-d", fx.prepared, "-o", root / "model", "--config", root / "configs"], root / "model",
                (str(root / "configs"), "a folder, not a config file"))


@kind(7, "metrics-csv-not-text-at-evaluate")
def _(root: Path, fx: Fixtures) -> Kind:
    model = copy_model(fx, root / "model")
    (model / "metrics.csv").write_bytes(b"garbage\x00\xff\n1,2")
    mask_in(root / "pred")
    mask_in(root / "ref")
    return Kind(["evaluate", "-p", root / "pred", "-l", root / "ref", "-o", root / "out", "--model", model], root / "out",
                (str(model / "metrics.csv"), "not a readable table"))


@kind(7, "checkpoint-zero-bytes-at-infer")
def _(root: Path, fx: Fixtures) -> Kind:
    model = copy_model(fx, root / "model")
    (model / "checkpoints" / "best.pt").write_bytes(b"")
    image_in(root / "in")
    return Kind(["infer", "-m", model, "-i", root / "in", "-o", root / "out"], root / "out",
                (str(model / "checkpoints" / "best.pt"), "not a readable checkpoint"))


@kind(8, "evaluate-region-of-a-label-not-in-the-set")
def _(root: Path, fx: Fixtures) -> Kind:
    mask_in(root / "pred")
    mask_in(root / "ref")
    return Kind(["evaluate", "-p", root / "pred", "-l", root / "ref", "-o", root / "out", "--set",
                 "evaluate.regions={core: [1, 9]}"], root / "out", ("evaluate.regions", "region 'core'", "[9]"))


@kind(8, "evaluate-region-named-like-a-label")
def _(root: Path, fx: Fixtures) -> Kind:
    label = load(mask_in(root / "ref"))[0]
    label[9:12, 9:12, 9:12] = 2
    for folder in ("pred", "ref"):
        (root / folder).mkdir(exist_ok=True)
        save(root / folder / "a.nii.gz", label)
    return Kind(["evaluate", "-p", root / "pred", "-l", root / "ref", "-o", root / "out", "--set",
                 "evaluate.regions={label_1: [1, 2]}"], root / "out",
                ("region 'label_1' [1, 2] is named like label 1 and would replace its scores",))


@kind(8, "evaluate-region-name-not-a-column")
def _(root: Path, fx: Fixtures) -> Kind:
    mask_in(root / "pred")
    mask_in(root / "ref")
    return Kind(["evaluate", "-p", root / "pred", "-l", root / "ref", "-o", root / "out", "--set",
                 "evaluate.regions={'../x': [1]}"], root / "out", ("region name '../x' must be 1 to 64 letters",))


@kind(2, "infer-over-a-users-cases-csv")
def _(root: Path, fx: Fixtures) -> Kind:
    image_in(root / "in")
    (root / "out").mkdir()
    (root / "out" / "cases.csv").write_text("patient,age,diagnosis\nP1,54,GBM\n")  # the user's own table
    return Kind(["infer", "-m", fx.model, "-i", root / "in", "-o", root / "out"], None,
                (str(root / "out" / "cases.csv"), "was not written by segpipe infer"))


@kind(2, "evaluate-over-a-users-summary-csv")
def _(root: Path, fx: Fixtures) -> Kind:
    mask_in(root / "pred")
    mask_in(root / "ref")
    (root / "out").mkdir()
    (root / "out" / "summary.csv").write_text("cohort,n\nA,12\n")
    return Kind(["evaluate", "-p", root / "pred", "-l", root / "ref", "-o", root / "out"], None,
                (str(root / "out" / "summary.csv"), "was not written by segpipe evaluate"))


@kind(2, "preprocess-over-a-users-npy-in-cases")
def _(root: Path, fx: Fixtures) -> Kind:
    (root / "out" / "cases").mkdir(parents=True)
    np.save(root / "out" / "cases" / "my_data.npy", np.arange(10))  # deleted as an orphan before
    return Kind(["preprocess", "-i", fx.base, "-o", root / "out", "-j", "1"], None,
                (str(root / "out" / "cases" / "my_data.npy"), "was not written by segpipe preprocess"))


@kind(2, "preprocess-over-a-users-manifest")
def _(root: Path, fx: Fixtures) -> Kind:
    (root / "out").mkdir()
    (root / "out" / "manifest.json").write_text('{"shipment": 3}')
    return Kind(["preprocess", "-i", fx.base, "-o", root / "out", "-j", "1"], None,
                (str(root / "out" / "manifest.json"), "was not written by segpipe preprocess"))


@kind(2, "preprocess-into-a-model-folder")
def _(root: Path, fx: Fixtures) -> Kind:
    model = copy_model(fx, root / "model")  # its plan.json would have been replaced
    return Kind(["preprocess", "-i", fx.base, "-o", model, "-j", "1"], None, (str(model), "is a model folder"))


@kind(2, "fit-over-a-users-files")
def _(root: Path, fx: Fixtures) -> Kind:
    (root / "model").mkdir()
    (root / "model" / "metrics.csv").write_text("week,weight\n1,70\n")
    return Kind(["fit", "-d", fx.prepared, "-o", root / "model", "--epochs", "1"], None,
                (str(root / "model" / "metrics.csv"), "was not written by segpipe fit"))


@kind(2, "fit-over-a-users-config-and-plan")
def _(root: Path, fx: Fixtures) -> Kind:
    (root / "model").mkdir()
    (root / "model" / "config.yaml").write_text("recipe: my own\n")  # kept whole by the refusal
    (root / "model" / "plan.json").write_text('{"plan": "mine"}\n')
    return Kind(["fit", "-d", fx.prepared, "-o", root / "model", "--epochs", "1"], None,
                ("model", "was not written by segpipe fit"))


@kind(2, "fit-into-a-prepared-folder")
def _(root: Path, fx: Fixtures) -> Kind:
    prepared = Path(shutil.copytree(fx.prepared, root / "prepared"))
    return Kind(["fit", "-d", fx.prepared, "-o", prepared, "--epochs", "1"], None, (str(prepared), "is a prepared dataset"))


@kind(2, "evaluate-over-a-users-figure")
def _(root: Path, fx: Fixtures) -> Kind:
    mask_in(root / "pred")
    mask_in(root / "ref")
    (root / "out").mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(root / "out" / "overlay_best.png")  # the user's own figure
    return Kind(["evaluate", "-p", root / "pred", "-l", root / "ref", "-o", root / "out"], None,
                (str(root / "out" / "overlay_best.png"), "was not written by segpipe evaluate"))


def _model_with_plan(root: Path, fx: Fixtures, edit: Callable[[dict], None]) -> Path:
    model = copy_model(fx, root / "model")
    edit_json(model / "plan.json", edit)
    image_in(root / "in")
    return model


@kind(7, "model-plan-qc-reference-lacks-a-field")
def _(root: Path, fx: Fixtures) -> Kind:
    model = _model_with_plan(root, fx, lambda p: p["qc_reference"].pop("spacing_min"))
    return Kind(["infer", "-m", model, "-i", root / "in", "-o", root / "out"], root / "out",
                (str(model / "plan.json"), "qc_reference 'spacing_min' must hold 2 or 3 numbers"))


@kind(7, "model-plan-qc-template-not-a-cube")
def _(root: Path, fx: Fixtures) -> Kind:
    model = _model_with_plan(root, fx, lambda p: p["qc_reference"].update(template=[1, 2]))
    return Kind(["infer", "-m", model, "-i", root / "in", "-o", root / "out"], root / "out",
                (str(model / "plan.json"), "qc_reference 'template' must hold n^3 numbers"))


@kind(7, "model-plan-orientation-not-axis-codes")
def _(root: Path, fx: Fixtures) -> Kind:
    model = _model_with_plan(root, fx, lambda p: p["preprocess"].update(orientation="XYZ"))
    return Kind(["infer", "-m", model, "-i", root / "in", "-o", root / "out"], root / "out",
                (str(model / "plan.json"), "'preprocess.orientation' must be three axis codes"))


@kind(7, "model-plan-negative-spacing")
def _(root: Path, fx: Fixtures) -> Kind:
    model = _model_with_plan(root, fx, lambda p: p["preprocess"].update(target_spacing=[-1, 1, 1]))
    return Kind(["infer", "-m", model, "-i", root / "in", "-o", root / "out"], root / "out",
                (str(model / "plan.json"), "'preprocess.target_spacing'"))


@kind(7, "infer-folds-prepared-by-two-plans")
def _(root: Path, fx: Fixtures) -> Kind:
    copy_model(fx, root / "cv" / "fold_0")
    other = copy_model(fx, root / "cv" / "fold_1")
    edit_json(other / "plan.json", lambda p: p["preprocess"].update(target_spacing=[2.0, 2.0, 2.4]))
    image_in(root / "in")
    return Kind(["infer", "-m", root / "cv", "-i", root / "in", "-o", root / "out"], root / "out",
                (str(other / "plan.json"), "differ in preprocessing", "target_spacing"))


@kind(2, "fit-refused-leaves-no-folder")
def _(root: Path, fx: Fixtures) -> Kind:
    return Kind(["fit", "-d", fx.prepared, "-o", root / "model", "--init-from", root / "no-such-model"], None,
                ("no-such-model",), watch=[root])


@kind(9, "mha-transform-singular-infer")
def _(root: Path, fx: Fixtures) -> Kind:
    (root / "in").mkdir(parents=True)
    path = root / "in" / "a.mha"
    path.write_bytes(mhd_header("LOCAL").replace("ElementDataFile", "TransformMatrix = 0 0 0 0 0 0 0 0 0\nElementDataFile")
                     .encode() + b"\0" * 256)
    return Kind(["infer", "-m", fx.model, "-i", path, "-o", root / "out"], root / "out",
                (str(path), "MetaImage TransformMatrix", "is singular"))


@kind(9, "label-minus-one")
def _(root: Path, fx: Fixtures) -> Kind:
    def change(label: np.ndarray) -> np.ndarray:
        out = label.astype(np.int8)
        out[brain_voxel(label)] = -1
        return out

    ds, path = _decathlon_with_label(root, fx, change)
    return Kind(["preprocess", "-i", ds, "-o", root / "out", "-j", "1"], root / "out", (str(path), "label values -1"))


@kind(9, "truncated-png")
def _(root: Path, fx: Fixtures) -> Kind:
    ds = slices_dataset(root / "ds")
    bad = ds / "training_images" / "BRATS_003_z10.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (16, 16), dtype=np.uint8)).save(bad)
    bad.write_bytes(bad.read_bytes()[:-40])
    return Kind(["preprocess", "-i", ds, "-o", root / "out", "-j", "1"], root / "out", (str(bad), "PNG is truncated"))


@kind(9, "one-pixel-png")
def _(root: Path, fx: Fixtures) -> Kind:
    ds = slices_dataset(root / "ds")
    for sub in ("training_images", "training_labels"):
        Image.fromarray(np.ones((1, 1), np.uint8)).save(ds / sub / "BRATS_002_z20.png")
    return Kind(["preprocess", "-i", ds, "-o", root / "out", "-j", "1"], root / "out", ("BRATS_002_z20.png", "1 x 1", "too small"))


# ---------------------------------------------------------------- readers: series read in part, headers read elsewhere


def _dicom_edited(root: Path, edit: Callable) -> Path:  # noqa: ANN001 - (pydicom Dataset, index) -> None
    from tests.builders import write_dicom_series

    return _edit_series(write_dicom_series(root / "ds" / "s1", n=4, shape=(16, 16)), edit)


@kind(4, "dicom-series-number-differs-preprocess")
def _(root: Path, fx: Fixtures) -> Kind:
    series = _dicom_edited(root, lambda ds, i: setattr(ds, "SeriesNumber", 1 if i < 3 else 2))
    return Kind(["preprocess", "-i", root / "ds", "-o", root / "out", "-j", "1"], root / "out",
                (str(series), "slices differ in SeriesNumber", "IM0001: 2", ": 1)", "read only part of it"))


@kind(4, "dicom-rescale-slope-differs-infer")
def _(root: Path, fx: Fixtures) -> Kind:
    series = _dicom_edited(root, lambda ds, i: setattr(ds, "RescaleSlope", 1.0 if i < 3 else 0.5))
    return Kind(["infer", "-m", fx.model, "-i", series, "-o", root / "out"], root / "out",
                (str(series), "slices differ in RescaleSlope", "0.5", "with IM0001's value"))


@kind(4, "dicom-enhanced-frame-missing-infer")
def _(root: Path, fx: Fixtures) -> Kind:
    from tests.builders import write_enhanced_dicom

    path = write_enhanced_dicom(root / "in" / "s1" / "f.dcm", [0.0, 2.0, 4.0, 8.0, 10.0], shape=(16, 16))
    return Kind(["infer", "-m", fx.model, "-i", path.parent, "-o", root / "out"], root / "out",
                (str(path), "gap of 4 mm between frames at 4 mm (frame 3) and 8 mm (frame 4)", "about 1 missing frame"))


@kind(8, "dicom-series-beside-series-folders-preprocess")
def _(root: Path, fx: Fixtures) -> Kind:
    from tests.builders import write_dicom_series

    write_dicom_series(root / "ds", n=3)
    write_dicom_series(root / "ds" / "s2", n=3)
    return Kind(["preprocess", "-i", root / "ds", "-o", root / "out", "-j", "1"], root / "out",
                (str(root / "ds"), "holds DICOM files beside series sub-folders (s2)"))


def _header_linked_from_below(ds: Path, fx: Fixtures, name: str, text: Callable[[str], str]) -> Path:
    """`ds/images/<name>`, a link to the header `ds/d1/d2/d3/d4/<name>`, whose data file `../`
    x 4 + `outside/secret.raw` stays inside `ds` from the link's target but, read from the
    link's own folder as ITK reads it, is the secret file."""
    deep = ds / "d1" / "d2" / "d3" / "d4"
    deep.mkdir(parents=True)
    up = os.path.relpath(fx.outside, ds / "images")
    (deep / name).write_text(text(f"{up}/secret.raw"))
    (ds / "images" / name).symlink_to(os.path.relpath(deep / name, ds / "images"))
    return ds / "images" / name


@kind(1, "mhd-linked-header-data-file-outside-verify")
def _(root: Path, fx: Fixtures) -> Kind:
    ds = generic_dataset(root / "ds", "a.mhd")
    link = _header_linked_from_below(ds, fx, "a.mhd", mhd_header)
    return Kind(["preprocess", "-i", ds, "--verify-only"], None, (str(link), "header names the data file", "outside"),
                report=True)


@kind(1, "nhdr-in-linked-folder-data-file-outside-preprocess")
def _(root: Path, fx: Fixtures) -> Kind:
    ds = generic_dataset(root / "ds", "a.nhdr")
    deep = ds / "d1" / "d2" / "d3" / "d4"  # images/ is a link to it: the header's data file, 4 x `../` up, as for the .mhd above
    deep.parent.mkdir(parents=True)
    (ds / "images").rename(deep)
    (ds / "images").symlink_to(os.path.relpath(deep, ds))
    up = os.path.relpath(fx.outside, ds / "images")
    (deep / "a.nhdr").write_text(nrrd_header(f"data file: {up}/secret.raw"))
    return Kind(["preprocess", "-i", ds, "-o", root / "out", "-j", "1"], root / "out",
                (str(ds / "images" / "a.nhdr"), "header names the data file", "outside"))


@kind(9, "nrrd-space-units-cm-infer")
def _(root: Path, fx: Fixtures) -> Kind:
    (root / "in").mkdir(parents=True)
    path = root / "in" / "a.nhdr"
    header = nrrd_header("data file: a.raw").replace("space directions:", 'space: left-posterior-superior\n'
                                                     'space units: "cm" "cm" "cm"\nspace directions:')
    path.write_text(header)
    np.ones(64, np.float32).tofile(root / "in" / "a.raw")
    return Kind(["infer", "-m", fx.model, "-i", path, "-o", root / "out"], root / "out",
                (str(path), "NRRD spatial unit 'cm'", "segpipe reads voxel sizes in mm"))


@kind(9, "mhd-data-file-missing-infer")
def _(root: Path, fx: Fixtures) -> Kind:
    (root / "in").mkdir(parents=True)
    path = root / "in" / "a.mhd"
    path.write_text(mhd_header("nothere.raw"))
    return Kind(["infer", "-m", fx.model, "-i", path, "-o", root / "out"], root / "out",
                (str(path), f"the data file it names, {root / 'in' / 'nothere.raw'}, does not exist"))


@kind(9, "mhd-list-slice-cut-short-verify")
def _(root: Path, fx: Fixtures) -> Kind:
    ds = generic_dataset(root / "ds", "a.mhd", mhd_header("LIST 2D", extra="s0.raw\ns1.raw\ns2.raw\ns3.raw\n"))
    for k in range(4):
        np.ones(16 if k != 2 else 5, np.float32).tofile(ds / "images" / f"s{k}.raw")
    return Kind(["preprocess", "-i", ds, "--verify-only"], None,
                ("a.mhd", f"image data is cut short (20 of 64 bytes in {ds / 'images' / 's2.raw'})"), report=True)


@kind(9, "dicom-slice-cut-short-before-its-uid-infer")
def _(root: Path, fx: Fixtures) -> Kind:
    from tests.builders import write_dicom_series

    series = write_dicom_series(root / "in" / "s1", n=4, shape=(16, 16))
    victim = sorted(series.iterdir())[1]
    victim.write_bytes(victim.read_bytes()[:300])
    return Kind(["infer", "-m", fx.model, "-i", series, "-o", root / "out"], root / "out",
                (str(victim), "neither a SeriesInstanceUID nor pixel data", "cut short"))


@kind(9, "nrrd-float-rgb-infer")
def _(root: Path, fx: Fixtures) -> Kind:
    (root / "in").mkdir(parents=True)
    path = root / "in" / "a.nrrd"
    header = ("NRRD0004\ntype: float\ndimension: 4\nspace: left-posterior-superior\nsizes: 3 16 16 12\n"
              "kinds: RGB-color domain domain domain\nencoding: raw\nendian: little\n"
              "space directions: none (1,0,0) (0,1,0) (0,0,1)\n\n")
    path.write_bytes(header.encode() + np.ones(3 * 16 * 16 * 12, "<f4").tobytes())
    return Kind(["infer", "-m", fx.model, "-i", path, "-o", root / "out"], root / "out",
                (str(path), "3 components of type float in rgb pixels", "store one channel per file"))



# ---------------------------------------------------------------- evaluate's inputs (a probe of 2026-11-28)

def _evaluate(root: Path, *words: str, extra: tuple = ()) -> Kind:
    return Kind(["evaluate", "-p", root / "pred", "-l", root / "ref", "-o", root / "out", *extra], root / "out", words)


@kind(4, "evaluate-reference-holds-a-label-outside-the-model-set")
def _(root: Path, fx: Fixtures) -> Kind:
    mask_in(root / "pred")
    label = np.zeros(SHAPE, np.uint8)
    label[4:8, 4:8, 4:8], label[9:12, 9:12, 4:8] = 1, 4  # a BraTS-numbered tumour part was scored as background
    save((root / "ref").mkdir(parents=True) or root / "ref" / "a.nii.gz", label)
    return _evaluate(root, str(root / "ref" / "a.nii.gz"), "label value(s) 4", "outside the label set",
                     extra=("--model", fx.model))


@kind(4, "evaluate-png-reference-nifti-prediction-of-a-slice")
def _(root: Path, fx: Fixtures) -> Kind:
    """Not a refusal of the slice: the same non-square mask as PNG (rows first) and 2D NIfTI (x
    first) was compared transposed; a 3D volume beside it in the same patient is refused."""
    for folder in ("pred", "ref"):
        (root / folder).mkdir()
    mask = np.zeros((24, 40), np.uint8)
    mask[2:10, 4:28] = 1
    Image.fromarray(mask).save(root / "ref" / "BRATS_001_z1.png")
    nib.save(nib.Nifti1Image(mask.T.copy(), np.eye(4)), str(root / "pred" / "BRATS_001_z1.nii.gz"))
    mask_in(root / "pred", "BRATS_001_z2.nii.gz")
    mask_in(root / "ref", "BRATS_001_z2.nii.gz")
    return _evaluate(root, "patient BRATS_001", "3D", "2D", "must all be of one kind")


@kind(9, "evaluate-masks-all-background-without-labels")
def _(root: Path, fx: Fixtures) -> Kind:
    for folder in ("pred", "ref"):
        (root / folder).mkdir()
        save(root / folder / "a.nii.gz", np.zeros(SHAPE, np.uint8))
    return _evaluate(root, "background only", "no label to score")


@kind(7, "evaluate-masks-of-two-channels")
def _(root: Path, fx: Fixtures) -> Kind:
    for folder in ("pred", "ref"):
        (root / folder).mkdir()
        save(root / folder / "a.nii.gz", np.zeros((*SHAPE, 2), np.uint8))
    return _evaluate(root, "a.nii.gz", "2 or 3 axes", "found 4")


@kind(7, "evaluate-cases-csv-not-infers")
def _(root: Path, fx: Fixtures) -> Kind:
    mask_in(root / "pred")
    mask_in(root / "ref")
    (root / "pred" / "cases.csv").write_text("case,confidence\na,high\n")
    return _evaluate(root, str(root / "pred" / "cases.csv"), "not a cases.csv")


@kind(5, "evaluate-patient-pattern-backtracking")
def _(root: Path, fx: Fixtures) -> Kind:
    for folder in ("pred", "ref"):
        (root / folder).mkdir()
        for z in (1, 2):
            mask_in(root / folder, "a" * 32 + f"_z{z}.nii.gz")
    return _evaluate(root, "evaluate.patient_pattern", "backtracks", extra=("--set", "evaluate.patient_pattern=^(?P<patient>(a+)+)b"))


@kind(8, "evaluate-label-names-of-one-column")
def _(root: Path, fx: Fixtures) -> Kind:
    ds = make_dataset(root / "ds")
    edit_json(ds / "dataset.json", lambda d: d.update(labels={"0": "background", "1": "a b", "2": "a_b", "3": "c"}))
    (root / "pred").mkdir()
    for label in sorted((ds / "labelsTr").iterdir()):
        shutil.copyfile(label, root / "pred" / label.name)
    return Kind(["evaluate", "-p", root / "pred", "-l", ds, "-o", root / "out"], root / "out", ("'a b'", "'a_b'", "one column"))


@kind(9, "evaluate-model-folder-missing")
def _(root: Path, fx: Fixtures) -> Kind:
    mask_in(root / "pred")
    mask_in(root / "ref")
    return _evaluate(root, "option --model", str(root / "model_typo"), "not a model folder",
                     extra=("--model", root / "model_typo"))


kind(7, "grad-clip-of-400-digits")(_fit_set("train.grad_clip=" + "9" * 400, "too large for a float"))
kind(7, "lr-an-impossible-date")(_fit_set("train.lr=2001-02-30", "a value YAML cannot read"))
kind(3, "orientation-in-lower-case")(_fit_set("preprocess.orientation=lps", "three axis codes"))


@kind(8, "target-spacing-in-micrometres")
def _(root: Path, fx: Fixtures) -> Kind:
    return Kind(["preprocess", "-i", fx.base, "-o", root / "out", "-j", "1", "--set", "preprocess.target_spacing=[1000,1000,1000]"],
                root / "out", ("preprocess.target_spacing", "over 20x the voxel size", "1 x 1 x 1 voxels", "in mm"))

def build_all(root: Path, fx: Fixtures) -> dict[str, Kind]:
    """Every kind, each in its own folder under `root`."""
    out = {}
    for name, (_defect, build) in KINDS.items():
        folder = root / name
        folder.mkdir(parents=True)
        out[name] = build(folder, fx)
    return out


def defects() -> dict[int, list[str]]:
    """Kind names by defect class."""
    by: dict[int, list[str]] = {}
    for name, (defect, _) in KINDS.items():
        by.setdefault(defect, []).append(name)
    return by


__all__ = ["KINDS", "Kind", "Fixtures", "build_all", "defects", "make_outside", "make_dataset", "png_declaring"]
