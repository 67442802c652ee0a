"""The one check of every file a reader opens: inside the inputs, not too large, real-valued.

Every verb declares its input folders with `reading_inside(...)`; every place that opens
an image, a label or a mask calls `check_read(path)` first. It

- resolves the path (symlinks included) and refuses it when it lies outside the input
  folders (without declared folders: outside the folder the path is in);
- finds the files a header names (NRRD `data file:` / `datafile:`, single, LIST or
  printf-style; MetaImage `ElementDataFile`, single, LIST or pattern, both read whole as
  ITK reads them by `segpipe.data.headers`, which also refuses voxel data cut short or a
  damaged compressed stream; HDF5 external
  links, external storage and virtual datasets in MAT-files) and refuses any outside
  the inputs (HDF5 references are refused outright: MAT-files never need them);
- reads the sizes the header declares (NIfTI, NRRD, MetaImage, PNG, MAT v7.3, DICOM) and
  refuses an image over the memory limit of `segpipe.limits` before it is allocated,
  and refuses complex-valued images (their imaginary part would be dropped).

`add_read_hook(fn)` calls `fn(resolved_path)` for every file the guard lets a reader open
(tests use it to prove that nothing outside their folder is read).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from segpipe.data.headers import check_data, data_file_paths, frame_count, read_metaimage, read_nrrd
from segpipe.errors import SegpipeError
from segpipe.limits import check_image_size

_ROOTS: contextvars.ContextVar[tuple[Path, ...] | None] = contextvars.ContextVar("segpipe_read_roots", default=None)
_HOOKS: list[Callable[[Path], None]] = []
HEADER_BYTES = 1 << 16
MAX_LISTED_FILES = 100_000
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


@contextlib.contextmanager
def reading_inside(*roots: str | Path) -> Iterator[tuple[Path, ...]]:
    """Within the block, `check_read` accepts only files resolving inside `roots`.

    A file root stands for its folder (`infer -i scan.nii.gz`).
    """
    resolved = tuple(_root_of(Path(r)) for r in roots if r is not None)
    token = _ROOTS.set(resolved)
    try:
        yield resolved
    finally:
        _ROOTS.reset(token)


def input_roots() -> tuple[Path, ...] | None:
    """The folders declared by the innermost `reading_inside`, or None."""
    return _ROOTS.get()


def add_read_hook(hook: Callable[[Path], None]) -> Callable[[], None]:
    """Call `hook(resolved)` for every file `check_read` or `resolve_inside` lets through;
    returns a function that removes the hook."""
    _HOOKS.append(hook)
    return lambda: _HOOKS.remove(hook) if hook in _HOOKS else None


def _root_of(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    base = path if path.is_dir() or not path.exists() else path.parent
    return base.resolve()


def _inside(target: Path, roots: Iterable[Path]) -> bool:
    return any(target == r or r in target.parents for r in roots)


def resolve_inside(path: str | Path, *, named_by: str | Path | None = None) -> Path:
    """Resolve `path` (symlinks too) and refuse it when it leaves the input folders.

    Args:
        path: the file as a reader would open it.
        named_by: the header that names `path`, for the message.

    Raises:
        SegpipeError: the file resolves outside every input folder.
    """
    given = Path(os.path.abspath(path))
    try:
        target = given.resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop
        raise SegpipeError(f"{given}: cannot resolve the path ({exc})") from None
    roots = _ROOTS.get()
    if roots is None:
        roots = (_root_of(Path(os.path.abspath(named_by)).parent if named_by else given.parent),)
    if not _inside(target, roots):
        where = roots[0] if len(roots) == 1 else "the input folders " + ", ".join(map(str, roots))
        if named_by is not None:
            raise SegpipeError(f"{named_by}: header names the data file {path}, which lies outside {where}; refused")
        raise SegpipeError(f"{given}: resolves to {target}, outside {where}; refused (links out of the inputs are not followed)")
    for hook in list(_HOOKS):
        hook(target)
    return target


def check_read(path: str | Path) -> Path:
    """Check a file (or a DICOM series folder) before any reader opens it.

    Returns:
        The resolved path.

    Raises:
        SegpipeError: missing, outside the inputs (itself or a file its header names), larger
            than the memory limit, complex-valued, or a header that cannot be parsed.
    """
    target = resolve_inside(path)
    if target.is_dir():
        _check_series(Path(path), target)
        return target
    if not target.exists():
        raise SegpipeError(f"{path}: no such file")  # before a reader words it as a corrupt file
    if not target.is_file():
        return target  # a device or a pipe: the reader says what it is
    try:
        with open(target, "rb") as fh:
            head = fh.read(HEADER_BYTES)
    except OSError as exc:
        raise SegpipeError(f"{path}: cannot read ({exc.strerror or exc})") from None
    name = target.name.lower()
    if head.startswith(b"NRRD"):
        _check_nrrd(Path(path), target, head)
    elif _looks_metaimage(name, head):
        _check_metaimage(Path(path), target, head)
    elif name.endswith((".nii", ".nii.gz")):
        _check_nifti(Path(path))
    elif head.startswith(b"\x89PNG"):
        _check_png(Path(path))
    elif head.startswith(HDF5_MAGIC) or head[512:520] == HDF5_MAGIC:
        _check_hdf5(Path(path))
    elif head[128:132] == b"DICM":
        _check_series(Path(path), target, files=[target])
    return target


# ---------------------------------------------------------------- header-referenced files


def _check_refs(path: Path, target: Path, names: list[str]) -> None:
    if len(names) > MAX_LISTED_FILES:
        raise SegpipeError(f"{path}: header names {len(names)} data files")
    for name in names:
        for ref in data_file_paths(path, target, name):
            resolve_inside(ref, named_by=path)


def _check_nrrd(path: Path, target: Path, head: bytes) -> None:
    header = read_nrrd(path, target, head, MAX_LISTED_FILES)
    _check_refs(path, target, header.data)
    if "complex" in header.fields.get("kinds", "").lower():
        raise SegpipeError(f"{path}: complex-valued image; segpipe needs real intensities (store the magnitude)")
    if header.shape:
        check_image_size(path, header.shape, header.itemsize or 4)
    _check_nrrd_units(path, header.fields.get("space units", ""))
    directions = header.fields.get("space directions", "")
    vectors = re.findall(r"\(([^)]*)\)", directions)
    if vectors:
        try:
            values = [float(x) for v in vectors for x in v.split(",")]
        except ValueError:
            raise SegpipeError(f"{path}: NRRD header field 'space directions' is not a list of vectors") from None
        _check_geometry(path, values, "NRRD space directions", matrix=len(values) == len(vectors) ** 2)
    check_data(path, target, header)


_MM = ("", "mm", "millimeter", "millimeters", "millimetre", "millimetres")


def _refuse_unit(path: Path, fmt: str, unit: str) -> None:
    """The one wording for voxel sizes stored in another unit than mm."""
    raise SegpipeError(f"{path}: {fmt} spatial unit '{unit}'; segpipe reads voxel sizes in mm (store them in mm)")


def _check_nrrd_units(path: Path, value: str) -> None:
    """NRRD `space units` ("cm" "cm" "cm"): ITK ignores them and reads the sizes as mm."""
    units = re.findall(r'"([^"]*)"', value) or value.split()
    unit = next((u.strip() for u in units if u.strip().lower() not in _MM), None)
    if unit is not None:
        _refuse_unit(path, "NRRD", unit)


def _looks_metaimage(name: str, head: bytes) -> bool:
    return name.endswith((".mha", ".mhd")) or re.search(rb"(?mi)^\s*ElementDataFile\s*[=:]", head[:8192]) is not None


def _check_metaimage(path: Path, target: Path, head: bytes) -> None:
    header = read_metaimage(path, target, head, MAX_LISTED_FILES)
    fields = header.fields
    _check_refs(path, target, header.data)
    if header.shape:
        check_image_size(path, header.shape, header.itemsize or 4)
    for key, shown, matrix, positive in (("elementspacing", "ElementSpacing", False, True),
                                         ("transformmatrix", "TransformMatrix", True, False),
                                         ("offset", "Offset", False, False), ("origin", "Origin", False, False),
                                         ("position", "Position", False, False)):
        if fields.get(key):
            try:
                values = [float(v) for v in fields[key].split()]
            except ValueError:
                raise SegpipeError(f"{path}: MetaImage header field {shown} is not a list of numbers") from None
            _check_geometry(path, values, f"MetaImage {shown}", matrix=matrix, positive=positive)
    check_data(path, target, header)


def _check_geometry(path: Path, values: list[float], field: str, matrix: bool = False, positive: bool = True) -> None:
    """Refuse a header's voxel spacing that is not finite and positive, a direction matrix
    that is singular, or an origin that is not finite: readers would stop in their own words
    or put in 1 mm (or 0) silently."""
    import numpy as np

    arr = np.asarray(values, dtype=float)
    shown = f"{field} ({', '.join(f'{v:.6g}' for v in arr)})"
    if not np.all(np.isfinite(arr)):
        raise SegpipeError(f"{path}: {shown} is not finite")
    if matrix:
        n = int(round(len(arr) ** 0.5))
        if n * n == len(arr) and n > 0 and abs(np.linalg.det(arr.reshape(n, n))) < 1e-12:
            raise SegpipeError(f"{path}: {shown} is singular (no direction for some axis)")
    elif positive and np.any(arr <= 0):
        raise SegpipeError(f"{path}: {shown} holds a voxel size that is not positive")


def check_channel_grids(paths: list[str | Path]) -> None:
    """The channel files of one case (BraTS's four modalities) share the first's voxel grid:
    MONAI's concatenation would fail naming only the first file, in its own words.
    NIfTI headers only; other formats are compared after loading."""
    import nibabel as nib
    import numpy as np

    from segpipe.data.validate import grid_problem

    files = [Path(p) for p in paths if Path(p).name.lower().endswith((".nii", ".nii.gz"))]
    if len(files) < 2 or len(files) != len(paths):
        return
    first = nib.load(str(files[0]))
    for path in files[1:]:
        img = nib.load(str(path))
        if img.shape != first.shape:
            raise SegpipeError(f"{path}: channel shape {tuple(img.shape)} differs from {files[0].name} {tuple(first.shape)}")
        a, b = np.asarray(img.affine, dtype=float), np.asarray(first.affine, dtype=float)
        if not np.allclose(a, b):  # MONAI's own test for concatenating channels
            problem = grid_problem(a, b) or f"affine differs by up to {np.abs(a - b).max():.2g}"
            raise SegpipeError(f"{path}: channel {problem} of {files[0].name}")


# ---------------------------------------------------------------- declared sizes


def _refuse_complex(path: Path, dtype: object) -> None:
    import numpy as np

    dt = np.dtype(dtype)  # type: ignore[call-overload]
    if dt.kind == "c" or (dt.names is not None and {"real", "imag"} <= set(dt.names)):
        raise SegpipeError(f"{path}: complex-valued image; segpipe needs real intensities (store the magnitude)")


def _raw_nifti_header(path: Path) -> object | None:
    """The header as stored: `nib.load` mends a zero or negative pixdim (to 1 or its size) and
    says so on stderr. None when the bytes are no NIfTI-1 or -2 header (nib.load then says why)."""
    import nibabel as nib
    from nibabel.openers import ImageOpener

    try:
        with ImageOpener(str(path)) as fh:
            block = fh.read(540)
        for klass in (nib.Nifti1Header, nib.Nifti2Header):
            size = klass.template_dtype.itemsize
            if len(block) >= size:
                hdr = klass(binaryblock=block[:size], check=False)
                if int(hdr["sizeof_hdr"]) == size:
                    return hdr
    except Exception:  # damaged files are named by nib.load below
        return None
    return None


def _check_nifti(path: Path) -> None:
    import nibabel as nib

    raw = _raw_nifti_header(path)
    if raw is not None and int(raw["sform_code"]) == 0:  # type: ignore[index]  # the grid is then built from pixdim
        ndim = int(raw["dim"][0])  # type: ignore[index]
        _check_geometry(path, [float(v) for v in raw["pixdim"][1 : 1 + min(3, max(ndim, 1))]], "NIfTI pixdim")  # type: ignore[index]
    try:
        img = nib.load(str(path))
        dtype = img.get_data_dtype()
    except Exception as exc:  # nibabel raises many types for broken headers
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SegpipeError(f"{path}: cannot read image header ({first})") from None
    _refuse_complex(path, dtype)
    unit = img.header.get_xyzt_units()[0]
    if unit not in ("mm", "unknown"):  # nibabel's affine is in the file's own unit; every other reader's in mm
        _refuse_unit(path, "NIfTI", unit)
    if dtype.names is not None:
        raise SegpipeError(f"{path}: NIfTI of a structured type ({dtype}); segpipe needs one real value per voxel")
    if len(img.shape) > 4:  # readers would take the 4th and later axes as space or channels, each its own way
        raise SegpipeError(f"{path}: NIfTI of {len(img.shape)} dimensions ({' x '.join(map(str, img.shape))}); "
                           "segpipe reads 2D or 3D images, with any channels along a 4th dimension")
    check_image_size(path, tuple(img.shape), dtype.itemsize)


def _check_png(path: Path) -> None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            width, height = img.size
            bands = len(img.getbands())
            coloured = img.mode in ("P", "PA") and _coloured_palette(img)
            frames = int(getattr(img, "n_frames", 1))
    except Image.DecompressionBombError:
        raise SegpipeError(f"{path}: PNG declares an image too large to decode safely") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise SegpipeError(f"{path}: not a readable PNG ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    check_image_size(path, (width, height, bands))
    if frames > 1:
        raise SegpipeError(f"{path}: animated PNG of {frames} frames; a slice is one image (only the first would be read)")
    if coloured:
        raise SegpipeError(f"{path}: palette PNG with coloured entries; its pixels are colours, not intensities or "
                           "labels (store grayscale, e.g. PIL.Image.open(path).convert('L'))")
    try:
        with Image.open(path) as img:
            img.load()  # decodes every row: a PNG cut short fails here, not half-read later
    except (OSError, SyntaxError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SegpipeError(f"{path}: PNG is truncated or damaged, its image data is incomplete ({first})") from None


def _coloured_palette(img: object) -> bool:
    """Whether a palette image uses a table entry that is not grey (R = G = B)."""
    import numpy as np

    palette = np.asarray(img.getpalette() or [], dtype=np.int32)  # type: ignore[attr-defined]
    table = palette[: len(palette) // 3 * 3].reshape(-1, 3)
    used = [i for _count, i in (img.getcolors(maxcolors=256) or [])]  # type: ignore[attr-defined]
    used = [i for i in used if isinstance(i, int) and i < len(table)]
    rows = table[used] if used else table
    return bool(len(rows)) and not (np.all(rows[:, 0] == rows[:, 1]) and np.all(rows[:, 1] == rows[:, 2]))


def _check_hdf5(path: Path) -> None:
    import h5py

    try:
        fh = h5py.File(path, "r")
    except Exception:
        return  # not readable as HDF5: the reader says why in its own words
    with fh:
        def visit(group: h5py.Group, prefix: str) -> None:
            for key in group:
                link = group.get(key, getlink=True)
                name = f"{prefix}{key}"
                if isinstance(link, h5py.ExternalLink):
                    raise SegpipeError(f"{path}: '{name}' links to another file ({link.filename}); MAT-files must hold their own data")
                if isinstance(link, h5py.SoftLink):
                    continue
                obj = group[key]
                if isinstance(obj, h5py.Group):
                    visit(obj, f"{name}/")
                elif isinstance(obj, h5py.Dataset):
                    if obj.external or obj.is_virtual:
                        raise SegpipeError(f"{path}: '{name}' stores its data in another file; MAT-files must hold their own data")
                    if len(obj.shape) >= 2:
                        _refuse_complex(Path(f"{path}"), obj.dtype)
                    check_image_size(f"{path} ('{name}')", tuple(obj.shape), obj.dtype.itemsize or 4)

        visit(fh, "")


def _check_series(given: Path, folder: Path, files: list[Path] | None = None) -> None:
    """DICOM: every file of a series folder inside the inputs; rows x columns x frames in all."""
    if files is None:  # dot files left out, as paths.is_hidden_or_resource does (paths imports this module)
        files = [p for p in sorted(Path(given).iterdir()) if not p.name.startswith(".") and not p.is_dir()]
        for p in files:
            resolve_inside(p)
    try:
        import pydicom
    except ImportError:
        return
    rows = cols = 0
    frames = 0
    for p in files:
        try:
            with open(p, "rb") as fh:
                if fh.read(132)[128:132] != b"DICM" and not p.name.lower().endswith(".dcm"):
                    continue
            ds = pydicom.dcmread(p, stop_before_pixels=True, specific_tags=["Rows", "Columns", "NumberOfFrames", "SamplesPerPixel"])
        except Exception:
            continue  # the DICOM reader names unreadable files itself
        r, c = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
        n = frame_count(p, ds) * int(ds.get("SamplesPerPixel", 1) or 1)
        rows, cols, frames = max(rows, r), max(cols, c), frames + n
    if frames:
        check_image_size(given, (cols, rows, frames))


__all__ = ["reading_inside", "input_roots", "add_read_hook", "resolve_inside", "check_read"]
