"""Shared builders for the tests: small datasets of every layout, written under tmp_path.

One module for every test that needs a dataset on disk, so a reader's format is written in
one place (TorchIO's tests/utils.py plays this part there).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import yaml
from PIL import Image

from segpipe.data.figshare import write_figshare_mat

AFFINE = np.diag([1.0, 1.0, 2.0, 1.0])


def model_with_config(model: Path, target: Path, **sections: dict) -> Path:
    """A copy of a model folder whose config.yaml has these settings, e.g. infer={"tta": True}."""
    shutil.copytree(model, target)
    config = yaml.safe_load((target / "config.yaml").read_text())
    for section, settings in sections.items():
        config[section].update(settings)
    (target / "config.yaml").write_text(yaml.safe_dump(config))
    return target


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data), affine), str(path))
    return path


def label_volume(shape=(6, 5, 4), values=(1, 2)) -> np.ndarray:
    lab = np.zeros(shape, np.uint8)
    for i, v in enumerate(values):
        lab[i + 1, 1:3, 1:3] = v
    return lab


def make_brats(root: Path, cases=("BraTS2021_00001", "BraTS2021_00002"), naming="2021", shape=(6, 5, 4)) -> Path:
    chans = ["_flair", "_t1", "_t1ce", "_t2"] if naming == "2021" else ["-t2f", "-t1n", "-t1c", "-t2w"]
    seg = "_seg" if naming == "2021" else "-seg"
    enhancing = 4 if naming == "2021" else 3
    for cid in cases:
        for c, suffix in enumerate(chans):
            write_nifti(root / cid / f"{cid}{suffix}.nii.gz", np.full(shape, c + 1, np.int16) + np.arange(shape[0])[:, None, None].astype(np.int16))
        write_nifti(root / cid / f"{cid}{seg}.nii.gz", label_volume(shape, (1, 2, enhancing)))
    return root


def make_slices(root: Path, patients=("BRATS_001", "BRATS_002"), slices=(10, 20), size=(5, 7)) -> Path:
    for folder in ("training_images", "training_labels"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for p in patients:
        for z in slices:
            img = np.arange(size[0] * size[1], dtype=np.uint8).reshape(size)
            lab = np.zeros(size, np.uint8)
            lab[1, 2] = 3
            Image.fromarray(img).save(root / "training_images" / f"{p}_z{z}.png")
            Image.fromarray(lab).save(root / "training_labels" / f"{p}_z{z}.png")
    return root


def make_figshare(root: Path, n=4, size=(6, 8)) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(1, n + 1):
        image = np.arange(size[0] * size[1], dtype=np.int16).reshape(size) + i
        mask = np.zeros(size, np.uint8)
        mask[1:3, 2:5] = 1
        write_figshare_mat(root / f"{i}.mat", image, mask, label=1 + i % 3, pid=f"P{(i + 1) // 2}", border=[3, 2, 5, 2, 5, 3])
    return root


def make_generic(root: Path, nnunet=False, images="images", labels="labels", cases=("a", "b")) -> Path:
    for cid in cases:
        if nnunet:
            for c in range(2):
                write_nifti(root / images / f"{cid}_{c:04d}.nii.gz", np.full((6, 5, 4), c + 1.0, np.float32))
        else:
            write_nifti(root / images / f"{cid}.nii.gz", np.random.default_rng(0).random((6, 5, 4)).astype(np.float32))
        write_nifti(root / labels / f"{cid}.nii.gz", label_volume())
    return root


def write_dicom_series(folder: Path, n=5, spacing=2.0, skip=(), series_uid=None, patient="P1", shape=(8, 6)) -> Path:
    from pydicom.dataset import Dataset as DicomDataset
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    uid = series_uid or generate_uid()
    study, frame = generate_uid(), generate_uid()
    for i in range(n):
        if i in skip:
            continue
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = DicomDataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.PatientID, ds.Modality = patient, "CT"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, uid, frame
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [0.0, 0.0, i * spacing]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing, ds.SliceThickness = [1.0, 1.0], spacing
        ds.Rows, ds.Columns = shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = np.full(shape, i * 10, np.int16).tobytes()
        # files written in reverse order so the reader must sort by position
        ds.save_as(folder / f"IM{n - i:04d}", enforce_file_format=True)
    return folder

def write_enhanced_dicom(path: Path, heights: list[float], shape=(8, 6)) -> Path:
    """One enhanced MR file: a frame at each of `heights` (mm along z), its position in the
    per-frame functional groups, orientation and pixel spacing in the shared ones."""
    from pydicom.dataset import Dataset as DicomDataset
    from pydicom.dataset import FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    enhanced_mr = "1.2.840.10008.5.1.4.1.1.4.1"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = enhanced_mr, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = DicomDataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = enhanced_mr, meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.Modality = "P1", "MR"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = generate_uid(), generate_uid(), generate_uid()
    ds.Rows, ds.Columns = shape
    ds.NumberOfFrames = len(heights)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    measures, orientation, shared = DicomDataset(), DicomDataset(), DicomDataset()
    measures.PixelSpacing, measures.SliceThickness = [1.0, 1.0], 2.0
    orientation.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    shared.PixelMeasuresSequence, shared.PlaneOrientationSequence = Sequence([measures]), Sequence([orientation])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = []
    for z in heights:
        position, frame = DicomDataset(), DicomDataset()
        position.ImagePositionPatient = [0.0, 0.0, float(z)]
        frame.PlanePositionSequence = Sequence([position])
        frames.append(frame)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    ds.PixelData = np.arange(len(heights) * shape[0] * shape[1], dtype=np.int16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def make_pairs(root: Path, cases=("a", "b"), label_suffix="_label", image_suffix="_image", ext=".nii.gz",
               unlabelled=("u",), channels: int = 1, shape=(6, 5, 4)) -> Path:
    """`<case>_image<ext>` + `<case>_label<ext>` files, and images without a label."""
    import itk

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)

    def save(path: Path, data: np.ndarray) -> None:
        if ext.startswith(".nii"):
            write_nifti(path, data)
        else:
            itk.imwrite(itk.image_from_array(np.ascontiguousarray(data.T)), str(path))

    for cid in (*cases, *unlabelled):
        image = rng.random((*shape, channels) if channels > 1 else shape).astype(np.float32)
        save(root / f"{cid}{image_suffix}{ext}", image)
        if cid in cases:
            save(root / f"{cid}{label_suffix}{ext}", label_volume(shape, (1, 2)))
    return root


def braintumour_2d_slices(volume: Path, out: Path, heights=(46, 62, 77, 93, 108, 124), patient="BRATS_900") -> list[Path]:
    """Axial slices of a 240 x 240 x 155 BraTS volume made as BrainTumour_2D's are.

    2 x 2 block means (120 x 120 pixels), front of the head up, uint8 scaled by the
    volume's 99.5th percentile of non-zero voxels (1-255 inside the brain, 0 outside),
    named `<patient>_z<height>.png` at the dataset's six heights.
    """
    data = np.asarray(nib.load(str(volume)).dataobj, dtype=np.float64)
    top = float(np.percentile(data[data > 0], 99.5))
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for z in heights:
        block = data[:, :, z].reshape(120, 2, 120, 2).mean((1, 3)).T  # BraTS LPS: rows front to back
        pixels = np.where(block > 0, np.clip(np.round(block / top * 255), 1, 255), 0).astype(np.uint8)
        paths.append(out / f"{patient}_z{z}.png")
        Image.fromarray(pixels).save(paths[-1])
    return paths
