"""Reader for the Medical Segmentation Decathlon layout (dataset.json + imagesTr/labelsTr)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from segpipe.data.build import build_dataset
from segpipe.data.case import Case
from segpipe.data.dataset import Dataset
from segpipe.data.layout import Layout
from segpipe.data.paths import case_id_of, inside, is_hidden_or_resource, is_image_file
from segpipe.errors import SegpipeError
from segpipe.parsing import parse_json, read_text

REQUIRED_KEYS = ("labels", "modality", "training")

__all__ = ["LAYOUT", "Dataset", "read_decathlon", "is_decathlon_folder"]


def _load_json(path: Path) -> dict[str, Any]:
    from segpipe.data.guard import resolve_inside

    resolve_inside(path)  # a dataset.json linked in from elsewhere is not read
    data = parse_json(read_text(path), path)  # a byte-order mark, as Windows editors write, is read past
    if not isinstance(data, dict):
        raise SegpipeError(f"{path}: expected a JSON object at the top level")
    return data


def _index_map(raw: Any, key: str, source: Path) -> dict[int, str]:
    if not isinstance(raw, dict) or not raw:
        raise SegpipeError(f"{source}: '{key}' must be a non-empty mapping of index to name")
    out: dict[int, str] = {}
    given: dict[int, str] = {}
    for k, v in raw.items():
        try:
            index = int(k)
        except (TypeError, ValueError):
            raise SegpipeError(f"{source}: '{key}' has a non-integer index {k!r}") from None
        if index in given:
            raise SegpipeError(f"{source}: '{key}' gives index {index} twice ({given[index]!r} and {k!r})")
        if not isinstance(v, str):
            raise SegpipeError(f"{source}: '{key}' index {k!r} names {v!r}; a name is a string")
        given[index], out[index] = str(k), v
    if key == "labels":  # names are the report's columns: two labels under one name would be merged
        seen: dict[str, int] = {}
        for index, name in sorted(out.items()):
            if name in seen:
                raise SegpipeError(f"{source}: 'labels' names {name!r} twice (labels {seen[name]} and {index})")
            seen[name] = index
    return dict(sorted(out.items()))


def _existing(root: Path, rel: Any, where: str, source: Path) -> Path:
    if not isinstance(rel, str) or not rel:
        raise SegpipeError(f"{source}: {where} must be a relative path string")
    path = inside(root, rel, f"{source} {where}")
    if not path.is_file():
        what = "a folder, not a file" if path.is_dir() else "missing"
        raise SegpipeError(f"{path}: listed in {source.name} ({where}) as {rel!r}, but {what}")
    return path


def read_decathlon(root: str | Path) -> Dataset:
    """Read a Decathlon task folder, checking dataset.json and that every listed file exists.

    Raises:
        SegpipeError: missing folder or dataset.json, malformed JSON, missing keys, paths
            escaping the folder, missing files or duplicate case ids.
    """
    root = Path(root)
    if not root.exists():
        raise SegpipeError(f"{root}: no such file or folder")
    if not root.is_dir():
        raise SegpipeError(f"{root}: expected a dataset folder, got a file")
    source = root / "dataset.json"
    if not source.is_file():
        raise SegpipeError(
            f"{root}: no dataset.json (expected the Medical Segmentation Decathlon layout)"
        )
    meta = _load_json(source)
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise SegpipeError(f"{source}: missing key(s) {', '.join(repr(k) for k in missing)}")
    labels = _index_map(meta["labels"], "labels", source)
    modality = _index_map(meta["modality"], "modality", source)
    if not isinstance(meta["training"], list):
        raise SegpipeError(f"{source}: 'training' must be a list of {{image, label}} entries")

    training: list[Case] = []
    seen: set[str] = set()
    labels_of: dict[Path, int] = {}
    for i, entry in enumerate(meta["training"]):
        if not isinstance(entry, dict) or "image" not in entry or "label" not in entry:
            raise SegpipeError(f"{source}: training[{i}] must have 'image' and 'label'")
        if is_hidden_or_resource(Path(str(entry["image"]))):
            continue
        image = _existing(root, entry["image"], f"training[{i}].image", source)
        label = _existing(root, entry["label"], f"training[{i}].label", source)
        cid = case_id_of(image)
        if cid in seen:
            raise SegpipeError(f"{source}: duplicate case id '{cid}' (training[{i}])")
        if label.resolve() in labels_of:
            raise SegpipeError(f"{source}: training[{i}] and training[{labels_of[label.resolve()]}] share the label "
                               f"{entry['label']!r}; each case has its own")
        seen.add(cid)
        labels_of[label.resolve()] = i
        training.append(Case(case_id=cid, patient=cid, images=[image], label=label))

    test: list[Case] = []
    raw_test = meta.get("test", [])
    if not isinstance(raw_test, list):
        raise SegpipeError(f"{source}: 'test' must be a list of image paths")
    for i, entry in enumerate(raw_test):
        rel = entry.get("image") if isinstance(entry, dict) else entry
        if isinstance(rel, str) and is_hidden_or_resource(Path(rel)):
            continue
        image = _existing(root, rel, f"test[{i}]", source)
        cid = case_id_of(image)
        if isinstance(entry, dict) and entry.get("label"):
            label = _existing(root, entry["label"], f"test[{i}].label", source)
        else:
            label = _held_out_label(root, rel, f"{source} test[{i}] (its labelsTs/ file)")
        test.append(Case(case_id=cid, patient=cid, images=[image], label=label))

    if not training and not test:
        raise SegpipeError(f"{source}: lists no cases")
    return build_dataset(
        root, "decathlon", training=training, test=test, labels=labels,
        modalities=[modality[k] for k in sorted(modality)], name=str(meta.get("name", root.name)),
    )


def _held_out_label(root: Path, rel: str, where: str) -> Path | None:
    """`labelsTs/<name>` beside a test image listed as `imagesTs/<name>`, where the dataset
    ships one (the Decathlon itself does not; challenge releases and carved test splits do)."""
    image = Path(rel)
    if image.parent.name != "imagesTs":
        return None
    label = inside(root, str(image.parent.parent / "labelsTs" / image.name), where)
    return label if label.is_file() else None


def is_decathlon_folder(root: Path) -> bool:
    """A folder with a dataset.json."""
    return (root / "dataset.json").is_file()


def decathlon_inputs(dataset: Dataset) -> list[Case]:
    """What `infer` segments in a Decathlon folder: the test cases dataset.json lists, else
    its training cases; refused when it lists none while imagesTs/ holds images (which are
    meant is unclear, and segmenting the training cases silently would pass for a test run)."""
    if dataset.test:
        return list(dataset.test)
    unlisted = [p for p in sorted((dataset.root / "imagesTs").glob("*")) if is_image_file(p)]
    if unlisted:
        raise SegpipeError(
            f"{dataset.root / 'dataset.json'}: 'test' lists no images, yet imagesTs/ holds {len(unlisted)} "
            f"(e.g. {unlisted[0].name}); give {dataset.root / 'imagesTs'} to segment them, or {dataset.root / 'imagesTr'} "
            "for the training cases"
        )
    return list(dataset.training)


LAYOUT = Layout(
    name="decathlon",
    describe="dataset.json + imagesTr/ + labelsTr/ (+ imagesTs/, labelsTs/ when present), the Medical Segmentation Decathlon",
    detect=is_decathlon_folder,
    read=read_decathlon,
    inputs=decathlon_inputs,
)
