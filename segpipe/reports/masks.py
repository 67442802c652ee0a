"""Reading masks and images for evaluation, whatever format the pipeline wrote or read."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segpipe.data.paths import IMAGE_SUFFIXES, case_id_of
from segpipe.data.validate import label_problem
from segpipe.errors import SegpipeError, reader_error

MASK_SUFFIXES = (*IMAGE_SUFFIXES, ".png", ".mat")


def is_mask_file(path: Path) -> bool:
    """A file evaluate can read as a mask (not hidden, known suffix)."""
    return path.is_file() and not path.name.startswith(".") and path.name.lower().endswith(MASK_SUFFIXES)


def mask_id(path: Path) -> str:
    """Case id of a mask file name."""
    name = path.name
    for suffix in (".png", ".mat"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return case_id_of(path)


def masks_by_case(files: list[Path]) -> dict[str, Path]:
    """Mask files by case id, refusing two files of one case (`a.nii` and `a.nii.gz`): which
    one is scored would otherwise depend on how the names sort."""
    out: dict[str, Path] = {}
    for path in files:
        cid = mask_id(path)
        if cid in out:
            raise SegpipeError(f"{path}: case id '{cid}' appears twice in {path.parent} (also {out[cid].name}); keep one")
        out[cid] = path
    return out


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

    from segpipe.data.slices import to_declared_mode

    with Image.open(path) as img:
        return np.asarray(to_declared_mode(img))


def _read_mat_mask(path: Path) -> np.ndarray:
    from segpipe.data.mat_file import read_mat_field

    return read_mat_field(path, "tumorMask")  # the reading preprocess and validation use


def load_mask(path: str | Path) -> tuple[np.ndarray, tuple[float, ...]]:
    """Integer label map and its voxel spacing in mm (1.0 per axis where a format has none;
    the figshare set's pixel size for MAT-files, as `FigshareMatReader` gives it).

    Raises:
        SegpipeError: unreadable file or non-integer values.
    """
    data, spacing, _ = load_mask_grid(path)
    return data, spacing


def _itk_affine(img) -> np.ndarray:
    """ITK's voxel-to-world (LPS) as a RAS affine like nibabel's, for the (x, y[, z]) array."""
    import itk

    n = img.GetImageDimension()
    direction = np.asarray(itk.array_from_matrix(img.GetDirection()), dtype=float).reshape(n, n)
    affine = np.eye(4)
    affine[:n, :n] = direction * np.asarray(img.GetSpacing(), dtype=float)
    affine[:n, 3] = np.asarray(img.GetOrigin(), dtype=float)
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine


def load_mask_grid(path: str | Path) -> tuple[np.ndarray, tuple[float, ...], np.ndarray | None]:
    """`load_mask` and the mask's voxel-to-world affine (RAS), None where the format has none
    (PNG, MAT)."""
    from segpipe.data.guard import check_read

    path = Path(path)
    check_read(path)  # inside the inputs, header-named files too; within the size limits
    name = path.name.lower()
    try:
        if name.endswith(".png"):
            data, spacing, affine = _read_png(path), (1.0, 1.0), None
            if data.ndim == 3:
                raise SegpipeError(f"{path}: a mask PNG must have one channel, found {data.shape[2]}")
        elif name.endswith(".mat"):
            from segpipe.data.mat_file import pixel_spacing

            data, affine = _read_mat_mask(path), None
            spacing = pixel_spacing(data.shape)
        elif name.endswith((".nii", ".nii.gz")):
            import nibabel as nib

            img = nib.load(str(path))
            data = np.asanyarray(img.dataobj)
            affine = np.asarray(img.affine, dtype=float)
            # the affine's voxel sides, as the grid check and every reader use (pixdim may disagree with the sform)
            spacing = tuple(float(z) for z in np.linalg.norm(affine[:3, :3], axis=0))
        else:
            import itk

            from segpipe.data.itk_reading import imread

            img = imread(path)
            data = itk.array_view_from_image(img).T.copy()  # ITK arrays are z, y, x
            spacing = tuple(float(s) for s in img.GetSpacing())
            affine = _itk_affine(img)
    except SegpipeError:
        raise
    except Exception as exc:  # readers raise many types for broken files
        raise reader_error(exc, path, "cannot read mask") from None
    if data.ndim == len(spacing) + 1 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim not in (2, 3):
        raise SegpipeError(f"{path}: a mask has 2 or 3 axes (one label map), found {data.ndim} (shape "
                           f"{' x '.join(map(str, data.shape))})")
    problem = label_problem(data, None, noun="mask")  # the checks preprocess applies to labels: integers 0..255
    if problem:
        raise SegpipeError(f"{path}: {problem}")
    return data.astype(np.int32), spacing[: data.ndim], affine


def on_reference_grid(pred: np.ndarray, pred_affine: np.ndarray | None, pred_path: Path,
                      ref_shape: tuple[int, ...], ref_affine: np.ndarray | None, ref_path: Path) -> np.ndarray:
    """`pred` on the reference's voxel grid: as it is when the affines agree (or a format has
    none, or the shapes differ beyond an order of axes: the caller names the shapes), its axes
    flipped and swapped when it stores the same grid in another orientation.

    Raises:
        SegpipeError: the grids differ otherwise (another spacing, origin or field of view), which
            voxel-wise scores would silently get wrong.
    """
    from segpipe.data.validate import grid_problem

    if pred_affine is None or ref_affine is None or sorted(pred.shape) != sorted(ref_shape):
        return pred
    problem = grid_problem(pred_affine, ref_affine)
    if problem is None:
        return pred
    if pred.ndim == 3:
        from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation, ornt_transform

        turn = ornt_transform(io_orientation(pred_affine), io_orientation(ref_affine))
        if grid_problem(pred_affine @ inv_ornt_aff(turn, pred.shape), ref_affine) is None:
            return np.ascontiguousarray(apply_orientation(pred, turn))
    raise SegpipeError(f"{pred_path}: not on the reference's voxel grid ({ref_path}): {problem}; "
                       "resample the prediction onto the reference first")


def load_display_slice(path: Path, mask_shape: tuple[int, ...], index: int | None) -> np.ndarray | None:
    """A 2D image to draw under an overlay: slice `index` of the last axis (first channel)."""
    from segpipe.data.guard import check_read

    name = path.name.lower()
    try:
        check_read(path)
        if name.endswith(".png"):
            data = _read_png(path).astype(np.float32)
            return data if data.ndim == 2 else data[..., 0]
        if name.endswith(".mat"):
            import h5py

            with h5py.File(path, "r") as fh:
                return np.asarray(fh["cjdata"]["image"]).T.astype(np.float32)
        if name.endswith((".nii", ".nii.gz")):
            import nibabel as nib

            img = nib.load(str(path))
            if img.shape[:3] != tuple(mask_shape):
                return None
            obj = img.dataobj
            return np.asarray(obj[:, :, index] if img.ndim == 3 else obj[:, :, index, 0], dtype=np.float32)
        if name.endswith((".nrrd", ".nhdr", ".mha", ".mhd")):
            import itk

            from segpipe.data.itk_reading import imread

            data = np.asarray(itk.array_view_from_image(imread(path))).T  # ITK arrays are z, y, x
            data = data[0] if data.ndim == len(mask_shape) + 1 else data  # first channel of a vector image
            if data.shape != tuple(mask_shape):
                return None
            return np.asarray(data[:, :, index] if index is not None and data.ndim == 3 else data, dtype=np.float32)
    except Exception:  # an overlay without its image is still useful
        return None
    return None


__all__ = ["MASK_SUFFIXES", "is_mask_file", "load_display_slice", "load_mask", "load_mask_grid", "mask_id",
           "on_reference_grid"]
