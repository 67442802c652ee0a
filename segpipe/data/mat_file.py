"""The figshare brain-tumour MAT-file format (Cheng et al., doi 10.6084/m9.figshare.1512427): read and write.

Each slice is `N.mat`, a MATLAB v7.3 MAT-file (an HDF5 file behind a 512-byte MATLAB
header) holding the struct `cjdata`: `image` (int16), `tumorMask` (logical), `label`
(double: 1 meningioma, 2 glioma, 3 pituitary), `PID` (char, stored as uint16 codes) and
`tumorBorder` (x1, y1, x2, y2, ... as a row vector; x = column, y = row, 1-based).

Orientation: MATLAB stores matrices column-major and HDF5 row-major, so each HDF5 dataset
holds the transpose of the MATLAB matrix. Everything here transposes back: `image[r, c]`
equals MATLAB's `cjdata.image(r+1, c+1)` (rows, cols as MATLAB and `imshow` show them), and
`write_figshare_mat` stores the transpose again, so read -> write round-trips.

Geometry: the files carry none. The set's slices are 512 x 512 pixels of 0.49 mm, or
256 x 256 of the same field of view (Cheng et al. 2015), so `pixel_spacing` gives a slice
the pixel size of that field of view: 0.49 mm at 512, 0.98 mm at 256. Slices of either
size then share one millimetre grid once resampled (`preprocess.target_spacing`).

`cvind.mat` holds 5-fold indices, one per slice in file-number order (`read_cvind`).
The layout reader is `segpipe.data.figshare`; the MONAI reader of these files is
`segpipe.data.mat_reader.FigshareMatReader`, kept apart so that reading the layout does
not import MONAI.
"""

from __future__ import annotations

import time
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segpipe.data.validate import shown_values
from segpipe.errors import SegpipeError

TUMOUR_TYPES = {1: "meningioma", 2: "glioma", 3: "pituitary"}
LABELS = {0: "background", 1: "tumour"}
FIELDS = ("image", "tumorMask")
HEADER_SIZE = 512
FIELD_OF_VIEW_MM = 512 * 0.49  # the figshare set's 512 x 512 slices of 0.49 mm pixels


def pixel_spacing(shape: Sequence[int]) -> tuple[float, float]:
    """Pixel size in mm of a (rows, cols) slice: the set's field of view over its longer side."""
    size = FIELD_OF_VIEW_MM / max(int(shape[0]), int(shape[1]))
    return size, size


def matlab_header(text: str = "") -> bytes:
    """The 128-byte MATLAB 7.3 header (padded to 512 bytes) that precedes the HDF5 data."""
    desc = text or (
        "MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: "
        + time.strftime("%a %b %d %H:%M:%S %Y")
        + " HDF5 schema 1.00 ."
    )
    head = desc.encode("ascii")[:116].ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM"
    return head.ljust(HEADER_SIZE, b"\x00")


def _fail(path: Path, what: str) -> SegpipeError:
    return SegpipeError(f"{path}: {what}")


def _h5(path: Path):  # noqa: ANN202 - h5py.File
    import h5py

    from segpipe.data.guard import check_read

    check_read(path)  # inside the inputs, no external links or storage, within the size limits
    try:
        return h5py.File(path, "r")
    except Exception as exc:  # h5py raises OSError, but also others on corrupt files
        raise _fail(path, f"not a MATLAB v7.3 (HDF5) MAT-file ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None


def _dataset(group: Any, name: str, path: Path) -> Any:
    import h5py

    obj = group.get(name) if name in group else None
    if not isinstance(obj, h5py.Dataset):
        raise _fail(path, f"cjdata.{name} is missing")
    return obj


def _matrix(ds: Any, path: Path, name: str) -> np.ndarray:
    """A 2D MATLAB matrix, transposed back to MATLAB's (rows, cols)."""
    if len(ds.shape) != 2 or 0 in ds.shape:
        raise _fail(path, f"cjdata.{name} must be a 2D matrix, has shape {tuple(reversed(ds.shape))}")
    if ds.dtype.kind not in "biuf":
        raise _fail(path, f"cjdata.{name} has non-numeric type {ds.dtype}")
    return np.ascontiguousarray(ds[()].T)


def _text(ds: Any, path: Path, name: str) -> str:
    codes = np.asarray(ds[()]).ravel()
    if codes.dtype.kind not in "iu" or codes.size == 0 or codes.min() < 0 or codes.max() > 0x10FFFF:
        raise _fail(path, f"cjdata.{name} is not a MATLAB char array")
    # MATLAB pads char arrays with NULs; one patient's PID must read the same whatever the padding
    text = unicodedata.normalize("NFC", "".join(chr(int(c)) for c in codes).replace("\x00", " ").strip())
    if any(unicodedata.category(ch) == "Cc" for ch in text):
        raise _fail(path, f"cjdata.{name} holds control characters ({text!r})")
    return text


def _scalar(ds: Any, path: Path, name: str) -> float:
    values = np.asarray(ds[()]).ravel()
    if values.size != 1 or values.dtype.kind not in "biuf":
        raise _fail(path, f"cjdata.{name} must be one number")
    return float(values[0])


def _struct(fh: Any, path: Path) -> Any:
    import h5py

    group = fh.get("cjdata") if "cjdata" in fh else None
    if not isinstance(group, h5py.Group):
        raise _fail(path, "no struct 'cjdata' (expected the figshare brain-tumour format)")
    return group


def read_mat_header(path: str | Path) -> dict[str, Any]:
    """Header facts of one figshare MAT-file without reading the pixels.

    Returns:
        {"pid": str, "tumour_label": int, "tumour_type": str, "shape": (rows, cols)}.

    Raises:
        SegpipeError: not an HDF5 MAT-file, missing or malformed fields, image and mask of
            different shapes, a tumour label other than 1, 2, 3.
    """
    path = Path(path)
    with _h5(path) as fh:
        try:
            group = _struct(fh, path)
            shapes = {}
            for name in FIELDS:
                ds = _dataset(group, name, path)
                if len(ds.shape) != 2 or 0 in ds.shape:
                    raise _fail(path, f"cjdata.{name} must be a 2D matrix, has shape {tuple(reversed(ds.shape))}")
                shapes[name] = tuple(reversed(ds.shape))
            if shapes["image"] != shapes["tumorMask"]:
                raise _fail(path, f"cjdata.image is {shapes['image']} but cjdata.tumorMask is {shapes['tumorMask']}")
            pid = _text(_dataset(group, "PID", path), path, "PID")
            if not pid:
                raise _fail(path, "cjdata.PID is empty")
            label = _scalar(_dataset(group, "label", path), path, "label")
            if label not in TUMOUR_TYPES:
                raise _fail(path, f"cjdata.label is {label:g}; expected 1 meningioma, 2 glioma or 3 pituitary")
        except SegpipeError:
            raise
        except Exception as exc:  # corrupt HDF5 internals surface as many exception types
            raise _fail(path, f"cannot read MAT-file contents ({type(exc).__name__}: {exc})") from None
    return {"pid": pid, "tumour_label": int(label), "tumour_type": TUMOUR_TYPES[int(label)], "shape": shapes["image"]}


def read_mat_field(path: str | Path, field: str = "image") -> np.ndarray:
    """One field of `cjdata` as MATLAB shows it: `image`/`tumorMask` as (rows, cols),
    `tumorBorder` as a flat vector, `label` as a 1-element array, `PID` as a 0-d str array.

    Raises:
        SegpipeError: file or field missing or malformed.
    """
    path = Path(path)
    with _h5(path) as fh:
        try:
            ds = _dataset(_struct(fh, path), field, path)
            if field == "PID":
                return np.asarray(_text(ds, path, field))
            if field in ("tumorBorder", "label"):
                return np.asarray(ds[()], dtype=np.float64).ravel()
            arr = _matrix(ds, path, field)
        except SegpipeError:
            raise
        except Exception as exc:
            raise _fail(path, f"cannot read cjdata.{field} ({type(exc).__name__}: {exc})") from None
    if field == "tumorMask":
        odd = np.unique(arr[(arr != 0) & (arr != 1)])
        if odd.size:  # one reading for preprocess, verify and evaluate: a logical mask holds 0 and 1
            raise _fail(path, f"cjdata.tumorMask holds values other than 0 and 1 ({shown_values(odd.astype(float).tolist())}); "
                              "a MATLAB logical mask is 0/1")
        arr = arr.astype(np.uint8)
    return arr


def write_figshare_mat(
    path: str | Path,
    image: np.ndarray,
    mask: np.ndarray,
    *,
    label: int = 2,
    pid: str = "unknown",
    border: Sequence[float] | None = None,
) -> Path:
    """Write one slice in the figshare MAT-file format (MATLAB 7.3 header + HDF5), atomically.

    `image` and `mask` are (rows, cols) as MATLAB shows them; they are stored transposed, as
    MATLAB does, so `read_mat_field` returns them unchanged.
    """
    import h5py

    from segpipe.atomic import atomic_path

    path = Path(path)
    image = np.asarray(image)
    mask = np.asarray(mask)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", userblock_size=HEADER_SIZE) as fh:
            group = fh.create_group("cjdata")
            group.attrs["MATLAB_class"] = np.bytes_(b"struct")

            def put(name: str, data: np.ndarray, cls: str, decode: int | None = None) -> None:
                ds = group.create_dataset(name, data=data)
                ds.attrs["MATLAB_class"] = np.bytes_(cls.encode())
                if decode is not None:
                    ds.attrs["MATLAB_int_decode"] = np.int32(decode)

            codes = np.array([[ord(c)] for c in pid], dtype=np.uint16).reshape(-1, 1)
            put("PID", codes, "char", 2)
            put("image", np.ascontiguousarray(image.astype(np.int16).T), "int16")
            put("label", np.array([[float(label)]]), "double")
            put("tumorBorder", np.asarray(border if border is not None else [], dtype=np.float64).reshape(-1, 1), "double")
            put("tumorMask", np.ascontiguousarray((mask != 0).astype(np.uint8).T), "logical", 1)
        with open(tmp, "r+b") as fh:
            fh.write(matlab_header())
    return path


def read_cvind(path: Path) -> np.ndarray:
    """The fold index per slice from `cvind.mat` (MATLAB v7.3 or older formats).

    Raises:
        SegpipeError: the file cannot be read or holds no numeric vector.
    """
    from segpipe.data.guard import check_read

    check_read(path)  # inside the inputs; no HDF5 external links or storage
    values: np.ndarray | None = None
    try:
        import h5py

        if h5py.is_hdf5(path):
            with h5py.File(path, "r") as fh:
                names = ["cvind"] if isinstance(fh.get("cvind"), h5py.Dataset) else [
                    k for k in fh if isinstance(fh[k], h5py.Dataset) and fh[k].dtype.kind in "biuf"
                ]
                if names:
                    values = np.asarray(fh[names[0]][()]).ravel()
        else:
            from scipy.io import loadmat

            data = {k: v for k, v in loadmat(path).items() if not k.startswith("__")}
            raw = data.get("cvind", next(iter(data.values()), None))
            if raw is not None:
                values = np.asarray(raw).ravel()
    except Exception as exc:
        raise _fail(path, f"cannot read fold indices ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    if values is None or values.size == 0 or values.dtype.kind not in "biuf" or not np.all(np.isfinite(values)):
        raise _fail(path, "holds no numeric fold-index vector 'cvind'")
    wrong = values[(values != np.round(values)) | (values < 1)]
    if wrong.size:
        raise _fail(path, f"fold index {wrong[0]:g} is not a positive whole number (folds are numbered from 1)")
    return values.astype(np.int64)
