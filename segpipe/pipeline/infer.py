"""`segpipe infer`: segment new images and write masks in the input's own geometry."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.inferers import sliding_window_inference
from tqdm import tqdm

from segpipe.atomic import write_with
from segpipe.config import InferConfig, merge_dict
from segpipe.data.case import Case
from segpipe.data.inputs import discover_inputs
from segpipe.errors import SegpipeError
from segpipe.pipeline.model_folder import ModelFolder, load_model_folder
from segpipe.transforms.preprocessing import invert_prediction, preprocessing_chain


@dataclass
class InferResult:
    """What an infer run wrote."""

    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    seconds_per_case: float = 0.0


def predict_labels(model: ModelFolder, image: torch.Tensor, icfg: InferConfig, sliding_window: bool) -> torch.Tensor:
    """Argmax labels (1, ...) of a preprocessed channel-first image."""
    device = torch.device(icfg.device)
    net = model.net.to(device)
    x = image[None].to(device)
    with torch.inference_mode():
        if sliding_window:
            roi = icfg.roi_size or model.config.train.patch_size or model.plan["patch_size"]
            logits = sliding_window_inference(
                x, roi_size=list(roi), sw_batch_size=icfg.sw_batch_size, predictor=net,
                overlap=icfg.overlap, mode=icfg.mode,
            )
        else:
            logits = net(x)
    return logits.argmax(1).cpu().to(torch.uint8)


def _save_like(reference: Path, labels: np.ndarray, path: Path) -> None:
    """Write `labels` as NIfTI with the reference image's affine and orientation codes."""
    ref = nib.load(str(reference))
    out = nib.Nifti1Image(labels.astype(np.uint8), ref.affine)
    out.header.set_xyzt_units(*ref.header.get_xyzt_units())
    sform, scode = ref.header.get_sform(coded=True)
    qform, qcode = ref.header.get_qform(coded=True)
    out.header.set_sform(ref.affine if sform is None else sform, code=int(scode) or 1)
    out.header.set_qform(ref.affine if qform is None else qform, code=int(qcode) or 1)
    write_with(path, lambda tmp: nib.save(out, str(tmp)))


def segment_case(model: ModelFolder, case: Case, icfg: InferConfig, sliding_window: bool) -> np.ndarray:
    """Preprocess, predict and invert one case; labels on the input's voxel grid."""
    settings = model.plan["preprocess"]
    chain = preprocessing_chain(
        settings["target_spacing"], with_label=False, orientation=settings["orientation"],
        crop_foreground=settings["crop_foreground"], normalize_nonzero=settings["normalize_nonzero"],
    )
    source = str(case.images[0]) if len(case.images) == 1 else [str(p) for p in case.images]
    try:
        data = chain({"image": source})
    except Exception as exc:  # MONAI wraps reader errors in RuntimeError
        root = exc
        while root.__cause__ is not None:
            root = root.__cause__
        raise SegpipeError(f"{case.images[0]}: cannot read image ({root})") from None
    channels = data["image"].shape[0]
    if channels != model.network["in_channels"]:
        raise SegpipeError(
            f"{case.images[0]}: has {channels} channel(s), the model expects {model.network['in_channels']}"
        )
    pred = predict_labels(model, data["image"].as_tensor(), icfg, sliding_window)
    return invert_prediction(chain, data, pred)[0].numpy()


def infer(
    model_dir: str | Path,
    inputs: list[str | Path],
    output_dir: str | Path,
    overrides: dict[str, Any] | None = None,
    *,
    sliding_window: bool = True,
    overwrite: bool = False,
    quiet: bool = False,
) -> InferResult:
    """Segment every input case into `output_dir/<case_id>.nii.gz`.

    `overrides` are `infer.*` config keys given on the command line; the rest comes
    from the model folder's config.yaml. Cases whose output exists are skipped unless `overwrite`. Each mask is written to a
    temporary name and renamed into place, so an interrupted run leaves no partial file.
    """
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    model = load_model_folder(model_dir, overrides.get("checkpoint"))
    icfg = merge_dict(model.config, {"infer": overrides}, "command line").infer
    cases = discover_inputs(inputs)
    out = Path(output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".segpipe-write-test"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise SegpipeError(f"{out}: cannot write to the output folder ({exc.strerror})") from None
    result = InferResult()
    started = time.perf_counter()
    for case in tqdm(cases, desc="infer", unit="case", disable=quiet):
        target = out / f"{case.case_id}.nii.gz"
        if target.exists() and not overwrite:
            result.skipped.append(target)
            continue
        labels = segment_case(model, case, icfg, sliding_window)
        _save_like(case.images[0], labels, target)
        result.written.append(target)
    if result.written:
        result.seconds_per_case = (time.perf_counter() - started) / len(result.written)
    return result
