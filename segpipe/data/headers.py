"""NRRD and MetaImage headers read as ITK reads them, for the read guard (and a DICOM
header's frame count, which the guard and the DICOM reader share).

Both formats are text headers that may name other files and may hold the image data
after them. The guard needs what ITK will use: every field (NRRD fields may follow
`data file:`; MetaImage keys end at `=` or `:`), the whole header (not a first block of it),
and where the data starts, so that data cut short or a damaged compressed stream is
refused instead of read as whatever memory held.
"""

from __future__ import annotations

import os
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from segpipe.errors import SegpipeError

HEADER_LIMIT = 1 << 20  # a header longer than this is refused, not read in part
_CHUNK = 1 << 20

_MET_SIZES = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
              "MET_LONG": 8, "MET_ULONG": 8, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8}
_NRRD_ENCODINGS = {"raw", "gzip", "gz", "ascii", "text", "txt", "hex"}
_MET_KEY = re.compile(r"^\s*([^=:]*?)\s*[=:](.*)$")


@dataclass
class Header:
    """What a NRRD or MetaImage header declares.

    `data` names the files holding the voxels (empty: after the header, at `offset`);
    `shape` is every axis with channels; `itemsize` 0 when the type is not known.
    """

    fields: dict[str, str]
    data: list[str] = field(default_factory=list)
    listed: bool = False  # LIST or a printf pattern: several files, one slice each
    offset: int = 0
    shape: tuple[int, ...] = ()
    itemsize: int = 0
    compressed: bool = False
    compressed_size: int | None = None
    local_size_required: bool = False  # MetaIO reads LOCAL compressed data only by CompressedDataSize


def _whole_header(path: Path, target: Path, head: bytes, ends: re.Pattern[bytes], fmt: str) -> tuple[bytes, bool]:
    """The header's bytes, read on past `head` until `ends` matches; (bytes, ended)."""
    found = ends.search(head)
    if found is not None:
        return head[: found.end()], True
    size = target.stat().st_size
    if size <= len(head):
        return head, False
    if size > HEADER_LIMIT:
        with open(target, "rb") as fh:
            block = fh.read(HEADER_LIMIT)
        found = ends.search(block)
        if found is None:
            raise SegpipeError(f"{path}: {fmt} header runs past {HEADER_LIMIT // 1024} KiB without ending; refused")
        return block[: found.end()], True
    with open(target, "rb") as fh:
        block = fh.read()
    found = ends.search(block)
    return (block[: found.end()], True) if found is not None else (block, False)


def expand(spec: str, following: list[str], path: Path, max_files: int) -> tuple[list[str], bool]:
    """File names of a NRRD `data file:` or MetaImage `ElementDataFile` value; (names, listed)."""
    words = spec.split()
    if not words:
        return [], False
    if words[0].upper() == "LIST":
        return [line.strip() for line in following if line.strip()], True
    if words[0].upper() == "LOCAL":
        return [], False
    if "%" in words[0] and len(words) >= 4:
        try:
            start, stop, step = (int(w) for w in words[1:4])
        except ValueError:
            raise SegpipeError(f"{path}: data file pattern {spec!r} has no valid range") from None
        if step == 0 or abs((stop - start) // step) + 1 > max_files:
            raise SegpipeError(f"{path}: data file pattern {spec!r} names too many files")
        try:
            return [words[0] % i for i in range(start, stop + (1 if step > 0 else -1), step)], True
        except (TypeError, ValueError):
            raise SegpipeError(f"{path}: data file pattern {spec!r} is not a valid printf pattern") from None
    return [spec.strip()], False


def data_file_paths(path: Path, target: Path, name: str) -> list[Path]:
    """Where a data file a header names may be opened, ITK's way first: `name` joined to the
    header's folder as given and `..` collapsed in the text (ITK's readers), then joined to that
    folder with its links followed (the file system's walk), and to the resolved header's folder."""
    if os.path.isabs(name):
        return [Path(os.path.abspath(name))]
    given = Path(os.path.abspath(path)).parent
    found = [Path(os.path.abspath(given / name)), given.resolve() / name, target.parent / name]
    return list(dict.fromkeys(found))


def _ints(path: Path, fields: dict[str, str], key: str, shown: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in fields.get(key, "").split())
    except ValueError:
        raise SegpipeError(f"{path}: {shown} is not a list of integers") from None


def nrrd_itemsize(kind: str) -> int:
    kind = kind.lower()
    if kind == "block":
        return 0
    if "char" in kind or re.search(r"int8", kind):
        return 1
    if "short" in kind or "16" in kind:
        return 2
    if "long" in kind or "64" in kind or kind == "double":
        return 8
    return 4


def read_nrrd(path: Path, target: Path, head: bytes, max_files: int) -> Header:
    """Every field of a NRRD header up to its blank line (or the end of a detached header)."""
    raw, _ended = _whole_header(path, target, head, re.compile(rb"\r?\n\r?\n"), "NRRD")
    lines = raw.decode("latin-1").splitlines()
    fields: dict[str, str] = {}
    data: list[str] = []
    listed = False
    for i, line in enumerate(lines[1:], start=1):
        if not line.strip():
            break
        if line.startswith("#") or ":" not in line:
            continue
        key, _, value = line.partition(":")
        key = key.strip().lower()
        value = value.lstrip("=").strip()
        fields[key] = value
        if key in ("data file", "datafile"):
            data, listed = expand(value, lines[i + 1:], path, max_files)
            if value.split() and value.split()[0].upper() == "LIST":
                break  # the rest of the header is the list of files
    encoding = fields.get("encoding", "raw").lower()
    if encoding not in _NRRD_ENCODINGS:
        raise SegpipeError(f"{path}: NRRD encoding '{encoding}' cannot be read (segpipe reads raw, gzip, ascii and hex)")
    return Header(fields, data, listed, len(raw), _ints(path, fields, "sizes", "NRRD header field 'sizes'"),
                  nrrd_itemsize(fields.get("type", "float")), compressed=encoding in ("gzip", "gz"))


def read_metaimage(path: Path, target: Path, head: bytes, max_files: int) -> Header:
    """MetaImage fields up to `ElementDataFile`, the last one; keys end at `=` or `:` as in ITK's MetaIO."""
    raw, ended = _whole_header(path, target, head, re.compile(rb"(?mi)^[ \t]*ElementDataFile[ \t]*[=:][^\n]*\n?"),
                               "MetaImage")
    if not ended and target.stat().st_size > len(raw):
        raise SegpipeError(f"{path}: MetaImage header has no ElementDataFile field")
    lines = raw.decode("latin-1").splitlines()
    fields: dict[str, str] = {}
    data: list[str] = []
    listed = False
    for i, line in enumerate(lines):
        match = _MET_KEY.match(line)
        if match is None:
            continue
        key, value = match.group(1).lower(), match.group(2).strip()
        fields[key] = value
        if key == "elementdatafile":
            rest = lines[i + 1:]
            if value.split() and value.split()[0].upper() == "LIST":
                with open(target, "rb") as fh:  # the names run to the end of the file
                    fh.seek(len(raw))
                    rest = fh.read(HEADER_LIMIT).decode("latin-1").splitlines()
            data, listed = expand(value, rest, path, max_files)
            break
    dims = _ints(path, fields, "dimsize", "MetaImage header field DimSize")
    channels = _ints(path, fields, "elementnumberofchannels", "MetaImage header field ElementNumberOfChannels") or (1,)
    compressed = fields.get("compresseddata", "").strip().lower() == "true"
    size = _ints(path, fields, "compresseddatasize", "MetaImage header field CompressedDataSize")
    kind = fields.get("elementtype", "").upper()
    itemsize = _MET_SIZES.get(kind.removesuffix("_ARRAY"), 0)
    if kind and not itemsize:
        raise SegpipeError(f"{path}: MetaImage ElementType {fields['elementtype']!r} is not a pixel type ITK reads "
                           f"({', '.join(_MET_SIZES)})")
    return Header(fields, data, listed, len(raw), (*dims, *channels[:1]) if dims else (), itemsize, compressed,
                  size[0] if size else None, local_size_required=True)


def check_data(path: Path, target: Path, header: Header) -> None:
    """Refuse a data file the header names that does not exist, voxel data shorter than the
    header declares, or a compressed stream that does not inflate to exactly that size (ITK
    would say so on stderr in its own words, or fill the rest from uninitialised memory)."""
    sources = [data_file_paths(path, target, name)[0] for name in header.data]
    for source in sources:
        if not source.is_file():
            raise SegpipeError(f"{path}: the data file it names, {source}, does not exist")
    if not header.shape or not header.itemsize:
        return
    if header.fields.get("encoding", "raw").lower() in ("ascii", "text", "txt", "hex"):
        return
    if any(k in header.fields for k in ("byte skip", "byteskip", "line skip", "lineskip", "headersize")):
        return  # data placed by skips: ITK's own reader checks what it reads
    expected = header.itemsize
    for side in header.shape:
        expected *= int(side)
    if header.listed or len(sources) > 1:
        _check_listed(path, sources, expected, header.compressed)
        return
    source, start = (sources[0], 0) if sources else (target, header.offset)  # a data file, or after the header
    available = source.stat().st_size - start
    if not header.compressed:
        if available < expected:
            where = f" in {source}" if sources else ""
            raise SegpipeError(f"{path}: image data is cut short ({available} of {expected} bytes{where})")
        return
    if header.compressed_size is None and header.local_size_required and not header.data:
        raise SegpipeError(f"{path}: compressed LOCAL data without a CompressedDataSize field; ITK's MetaImage "
                           "reader cannot read it")
    if header.compressed_size is not None:
        if header.compressed_size > available:
            raise SegpipeError(f"{path}: compressed image data is cut short ({available} of {header.compressed_size} bytes)")
        available = header.compressed_size
    produced, failed = _inflate(source, start, available, expected)
    if produced < expected:
        raise SegpipeError(f"{path}: compressed image data is {'damaged' if failed else 'cut short'} (it inflates to "
                           f"{produced} of {expected} bytes)")


def _check_listed(path: Path, sources: list[Path], expected: int, compressed: bool) -> None:
    """Raw data in several files (LIST or a pattern), an equal share of the voxels each: a file
    shorter than its share is named."""
    if compressed or not sources or expected % len(sources):
        return
    share = expected // len(sources)
    for source in sources:
        size = source.stat().st_size
        if size < share:
            raise SegpipeError(f"{path}: image data is cut short ({size} of {share} bytes in {source})")


def _inflate(source: Path, start: int, length: int, expected: int) -> tuple[int, bool]:
    """(bytes a zlib or gzip stream inflates to, at most `expected`; whether zlib found it damaged)."""
    inflater = zlib.decompressobj(47)  # zlib or gzip header, as teem and MetaIO write them
    total = 0
    try:
        with open(source, "rb") as fh:
            fh.seek(start)
            left = length
            while left > 0 and total < expected and not inflater.eof:
                chunk = fh.read(min(_CHUNK, left))
                if not chunk:
                    break
                left -= len(chunk)
                while chunk and total < expected and not inflater.eof:
                    total += len(inflater.decompress(chunk, expected - total))
                    chunk = inflater.unconsumed_tail
    except zlib.error:
        return total, True
    return total, False


def frame_count(path: Path, h: object) -> int:
    """A DICOM header's NumberOfFrames (1 when absent), read the same way by the DICOM reader
    and the read guard."""
    text = str(h.get("NumberOfFrames", 1) or 1).strip() or "1"  # type: ignore[attr-defined]
    if not text.isdigit() or int(text) < 1:
        raise SegpipeError(f"{path}: NumberOfFrames {text[:40]!r} is not a whole number of frames")
    return int(text)


__all__ = ["Header", "HEADER_LIMIT", "read_nrrd", "read_metaimage", "check_data", "data_file_paths", "expand",
           "nrrd_itemsize", "frame_count"]
