"""Writing masks in the input's own form and geometry (every file atomically)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from segpipe.atomic import write_with

ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")


def output_name(case_id: str, layout: str, source: Path) -> str:
    """File name of a case's mask: PNG for slices and MAT-files, NRRD/MHA kept, else NIfTI."""
    if layout in ("slices", "figshare"):
        return f"{case_id}.png"
    name = source.name.lower()
    for suffix in (".nrrd", ".mha"):
        if layout != "dicom" and name.endswith(suffix):
            return f"{case_id}{suffix}"
    return f"{case_id}.nii.gz"


def nifti_like(reference: Path, data: np.ndarray) -> nib.Nifti1Image:
    """`data` (spatial..., [C]) as a NIfTI with the reference's sform and qform, their codes as
    they are, and its voxel sizes and units.

    A code of 0 stays 0: turned into 1, other tools (ITK) would read a geometry the input lacks,
    and with both 0 every reader falls back to the voxel sizes, as it does for the input.
    """
    ref = nib.load(str(reference))
    out = nib.Nifti1Image(data, None)  # no affine: nibabel would write it as an sform of code 2
    out.header.set_xyzt_units(*ref.header.get_xyzt_units())
    spatial = min(3, len(ref.shape), data.ndim)
    out.header.set_zooms((*(float(z) for z in ref.header.get_zooms()[:spatial]), *(1.0,) * (data.ndim - spatial)))
    sform, scode = ref.header.get_sform(coded=True)
    qform, qcode = ref.header.get_qform(coded=True)
    if sform is not None:
        out.header.set_sform(sform, code=int(scode))
    if qform is not None:
        out.header.set_qform(qform, code=int(qcode))
    return out


def write_nifti_like(reference: Path, labels: np.ndarray, path: Path) -> None:
    """NIfTI mask on the reference's grid, with its header's geometry (`nifti_like`)."""
    out = nifti_like(reference, labels.astype(np.uint8))
    write_with(path, lambda tmp: nib.save(out, str(tmp)))


def write_nifti_affine(affine: np.ndarray, labels: np.ndarray, path: Path) -> None:
    """NIfTI mask with a given RAS affine (e.g. a DICOM series' geometry as MONAI read it)."""
    out = nib.Nifti1Image(labels.astype(np.uint8), np.asarray(affine, dtype=float))
    out.header.set_sform(out.affine, code=1)
    out.header.set_qform(out.affine, code=1)
    write_with(path, lambda tmp: nib.save(out, str(tmp)))


def write_itk_like(reference: Path, labels: np.ndarray, path: Path) -> None:
    """NRRD/MHA mask with the reference's origin, spacing and direction (through ITK)."""
    import itk

    # typed, as ITK's wrapping lacks some files' own component types (int8, int64); only the geometry is read
    reader = itk.ImageFileReader[itk.Image[itk.F, labels.ndim]].New(FileName=str(reference))
    reader.UpdateOutputInformation()
    info = reader.GetOutput()
    out = itk.image_from_array(np.ascontiguousarray(labels.astype(np.uint8).T))  # ITK arrays are z, y, x
    out.SetOrigin(info.GetOrigin())
    out.SetSpacing(info.GetSpacing())
    out.SetDirection(info.GetDirection())
    write_with(path, lambda tmp: itk.imwrite(out, str(tmp), compression=True))


def rows_first(layout: str, array: np.ndarray) -> np.ndarray:
    """A 2D case's array (x, y[, C]) indexed like its image file (rows, columns[, C]).

    MONAI's PILReader reads PNG slices as (x, y); the figshare reader already gives rows first.
    """
    return np.ascontiguousarray(np.swapaxes(array, 0, 1)) if layout == "slices" else array


def write_png(labels: np.ndarray, path: Path) -> None:
    """8-bit PNG mask of a (rows, columns) array."""
    from PIL import Image

    write_with(path, lambda tmp: Image.fromarray(np.ascontiguousarray(labels.astype(np.uint8))).save(tmp, format="PNG"))


def write_mask(layout: str, source: Path, labels: np.ndarray, path: Path, original_affine: np.ndarray | None) -> None:
    """Write `labels` (on the input's own voxel grid) in the form that suits `layout`."""
    name = source.name.lower()
    if layout in ("slices", "figshare"):
        write_png(rows_first(layout, labels), path)
    elif layout == "dicom" or not name.endswith((".nii", ".nii.gz", *ITK_SUFFIXES)):
        write_nifti_affine(original_affine if original_affine is not None else np.eye(4), labels, path)
    elif name.endswith(ITK_SUFFIXES):
        write_itk_like(source, labels, path)
    else:
        write_nifti_like(source, labels, path)


def probability_name(case_id: str, layout: str) -> str:
    """File name of a case's probability map: NIfTI for volumes, .npy for 2D slices."""
    return f"{case_id}_probabilities.npy" if layout in ("slices", "figshare") else f"{case_id}_probabilities.nii.gz"


def write_probabilities(layout: str, source: Path, probs: np.ndarray, path: Path, original_affine: np.ndarray | None) -> None:
    """Class probabilities (spatial..., C), or an uncertainty map (spatial...), on the input's grid:
    NIfTI for volumes, .npy for slices (indexed like the mask: rows, columns[, C])."""
    probs = probs.astype(np.float32)
    if layout in ("slices", "figshare"):
        probs = rows_first(layout, probs)
        write_with(path, lambda tmp: np.save(tmp, probs))
        return
    if source.name.lower().endswith((".nii", ".nii.gz")):
        image = nifti_like(source, probs)
    else:
        image = nib.Nifti1Image(probs, original_affine if original_affine is not None else np.eye(4))
    write_with(path, lambda tmp: nib.save(image, str(tmp)))
