"""Lesion-wise scores (BraTS 2023) and panoptic quality per region, through panoptica.

Two panoptica evaluations per region and case:

- BraTS 2023 lesion-wise Dice and HD95. Reference lesions are the reference's connected
  components (26-connected in 3D, 8 in 2D), grouped when their dilations touch (dilation
  by `dilation` iterations of the 18-neighbourhood, the 8-neighbourhood in 2D). A
  predicted component is matched to the reference lesion whose dilated extent it touches;
  the lesion's Dice and HD95 are taken against the union of its matched components. A
  missed lesion scores Dice 0 and HD95 374 mm, every unmatched predicted component counts
  as a false positive with Dice 0 and HD95 374 mm, so

      lesion-wise Dice = sum of lesion Dice / (reference lesions + false positives).

  Reference lesions of at most `min_volume` mm3 (mm2 for slices) are left out of the sum
  and the count; predicted components that touch them are not false positives.
  panoptica (2.1) has no matcher for this rule: `DilationGroupedComponents` and
  `DilationMatching` plug it into panoptica's approximator and matcher interfaces, and
  panoptica computes the per-lesion Dice and HD95 and the counts.
- Panoptic quality with panoptica's own connected components and one-to-one matching at
  IoU > 0.5 (Kirillov et al.): RQ = TP / (TP + FP/2 + FN/2), SQ = mean IoU of the matched
  pairs, PQ = SQ x RQ.

A patient's slices are pooled: sums and counts are added over its slices or volumes
before the ratios are taken. Where a region has no lesion in either mask, every score is
NaN (segpipe's empty-mask convention; the BraTS scripts score such a case 1 and 0 mm).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from segpipe.errors import SegpipeError

MISSING_EXTRA = "needs panoptica: pip install 'segpipe[lesion]'"
HD95_PENALTY_MM = 374.0  # BraTS 2023: HD95 of a missed or false-positive lesion
RULE = {
    "lesion_dice": "BraTS 2023: sum of reference-lesion Dice / (reference lesions + false-positive components)",
    "lesion_hd95_mm": "BraTS 2023: (sum of lesion HD95 + 374 mm per missed or false-positive lesion) / the same count",
    "matching": "reference components grouped and matched through their dilation (BraTS 2023); PQ/RQ/SQ: IoU > 0.5, one-to-one",
    "hd95": "panoptica: 95th percentile of the surface distances of both masks pooled, in mm",
    "library": "panoptica (Kofler et al. 2023, arXiv:2312.02608)",
}


def require_panoptica(option: str = "option --lesion-wise"):
    """Import panoptica (quietly), or fail with one line naming the extra."""
    try:
        import panoptica
        from panoptica.utils.citation_reminder import disable_citation_reminder
    except ImportError:
        raise SegpipeError(f"{option}: {MISSING_EXTRA}") from None
    disable_citation_reminder()  # it prints to standard output, which --json keeps for JSON
    return panoptica


def _components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected components with full connectivity (26 in 3D, 8 in 2D), as BraTS counts lesions."""
    import cc3d

    labels, count = cc3d.connected_components(np.ascontiguousarray(mask.astype(np.uint8)), return_N=True)
    return labels.astype(np.int32), int(count)


def _dilation_structure(ndim: int) -> np.ndarray:
    return ndimage.generate_binary_structure(ndim, 2)  # BraTS: 18-neighbourhood in 3D


def dilated_extent(lesions: np.ndarray, iterations: int) -> np.ndarray:
    """Each lesion's label spread over its dilation (the dilations of two lesions never touch)."""
    out = lesions
    footprint = _dilation_structure(lesions.ndim)
    for _ in range(iterations):
        out = ndimage.grey_dilation(out, footprint=footprint)
    return out


def _plugins(panoptica):
    """panoptica approximator and matcher classes implementing the BraTS 2023 rule."""
    from panoptica.instance_approximator import InstanceApproximator
    from panoptica.instance_matcher import InstanceMatchingAlgorithm
    from panoptica.utils.instancelabelmap import InstanceLabelMap
    from panoptica.utils.processing_pair import UnmatchedInstancePair

    class DilationGroupedComponents(InstanceApproximator):
        """Predicted components as they are; reference components grouped by their dilation."""

        def __init__(self, dilation: int) -> None:
            self.dilation = dilation

        def _approximate_instances(self, semantic_pair, **kwargs):
            pred, n_pred = _components(semantic_pair.prediction_arr > 0)
            ref = semantic_pair.reference_arr > 0
            grown = ndimage.binary_dilation(ref, _dilation_structure(ref.ndim), iterations=self.dilation) if self.dilation else ref
            groups, n_ref = _components(grown)
            return UnmatchedInstancePair(prediction_arr=pred, reference_arr=np.where(ref, groups, 0).astype(np.int32),
                                         n_pred_instances=n_pred, n_ref_instances=n_ref)

        @classmethod
        def _yaml_repr(cls, node) -> dict:
            return {"dilation": node.dilation}

    class DilationMatching(InstanceMatchingAlgorithm):
        """Each predicted component goes to the reference lesion whose dilated extent it touches
        (the one it overlaps most, should it touch two)."""

        def __init__(self, dilation: int) -> None:
            self.dilation = dilation

        def _match_instances(self, unmatched_instance_pair, context=None, **kwargs):
            zone = dilated_extent(unmatched_instance_pair.reference_arr, self.dilation)
            pred = unmatched_instance_pair.prediction_arr
            labelmap = InstanceLabelMap()
            hit = (pred > 0) & (zone > 0)
            width = int(zone.max()) + 1
            counts = np.bincount(pred[hit].astype(np.int64) * width + zone[hit], minlength=(int(pred.max()) + 1) * width)
            overlap = counts.reshape(-1, width)  # [predicted component, reference lesion] -> voxels in its dilated extent
            for p in np.nonzero(overlap.any(axis=1))[0]:
                labelmap.add_labelmap_entry(int(p), int(np.argmax(overlap[p])))
            return labelmap

        @classmethod
        def _yaml_repr(cls, node) -> dict:
            return {"dilation": node.dilation}

    return DilationGroupedComponents, DilationMatching


@dataclass
class LesionTally:
    """Lesion counts and sums of one region, pooled over a patient's slices or volumes."""

    dice_sum: float = 0.0
    hd95_sum: float = 0.0
    lesions_ref: int = 0
    lesions_tp: int = 0
    lesions_fn: int = 0
    lesions_fp: int = 0
    pq_tp: int = 0
    pq_fp: int = 0
    pq_fn: int = 0
    iou_sum: float = 0.0

    def __iadd__(self, other: LesionTally) -> LesionTally:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        return self

    def scores(self) -> dict[str, float]:
        """lesion_dice, lesion_hd95_mm, the lesion counts, pq, rq, sq."""
        nan = float("nan")
        scored = self.lesions_ref + self.lesions_fp
        matched = self.pq_tp + 0.5 * (self.pq_fp + self.pq_fn)
        sq = self.iou_sum / self.pq_tp if self.pq_tp else nan
        rq = self.pq_tp / matched if matched else nan
        return {
            "lesion_dice": self.dice_sum / scored if scored else nan,
            "lesion_hd95_mm": self.hd95_sum / scored if scored else nan,
            "lesions_ref": self.lesions_ref,
            "lesions_tp": self.lesions_tp,
            "lesions_fn": self.lesions_fn,
            "lesions_fp": self.lesions_fp,
            "pq": (sq if self.pq_tp else 0.0) * rq if matched else nan,
            "rq": rq,
            "sq": sq,
        }


class LesionScorer:
    """Scores one binary region mask pair at a time (panoptica evaluators built once)."""

    def __init__(self, dilation: int = 3, min_volume: float = 50.0) -> None:
        if dilation < 0:
            raise SegpipeError(f"evaluate.lesion_dilation: expected 0 or more iterations, got {dilation}")
        if min_volume < 0:
            raise SegpipeError(f"evaluate.lesion_min_volume: expected 0 or more mm3, got {min_volume}")
        panoptica = require_panoptica()
        from panoptica import CCABackend, ConnectedComponentsInstanceApproximator, InputType, Metric, NaiveThresholdMatching

        from panoptica.utils.edge_case_handling import EdgeCaseHandler, EdgeCaseResult, MetricZeroTPEdgeCaseHandling

        grouped, matching = _plugins(panoptica)
        self.min_volume = min_volume
        self._metric = Metric
        no_tp = MetricZeroTPEdgeCaseHandling(no_instances_result=EdgeCaseResult.NAN, default_result=EdgeCaseResult.ZERO)
        edge_cases = EdgeCaseHandler({  # panoptica has no zero-TP rule for HD95; segpipe scores misses itself
            Metric.DSC: no_tp, Metric.IOU: no_tp,
            Metric.HD95: MetricZeroTPEdgeCaseHandling(no_instances_result=EdgeCaseResult.NAN, default_result=EdgeCaseResult.INF),
        })
        self._brats = panoptica.Panoptica_Evaluator(
            expected_input=InputType.SEMANTIC, instance_approximator=grouped(dilation), instance_matcher=matching(dilation),
            instance_metrics=[Metric.DSC, Metric.HD95], global_metrics=[Metric.DSC], edge_case_handler=edge_cases,
        )
        self._pq = panoptica.Panoptica_Evaluator(
            expected_input=InputType.SEMANTIC, instance_approximator=ConnectedComponentsInstanceApproximator(CCABackend.cc3d),
            instance_matcher=NaiveThresholdMatching(Metric.IOU, 0.5), instance_metrics=[Metric.IOU], global_metrics=[Metric.DSC],
        )

    def score(self, pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> LesionTally:
        """Lesion tally of one slice or volume (boolean masks of one region)."""
        tally = LesionTally()
        if not pred.any() and not ref.any():
            return tally
        from panoptica import MetricMode

        p, r = pred.astype(np.uint8), ref.astype(np.uint8)
        spacing = tuple(float(s) for s in spacing)
        brats = self._brats.evaluate(p, r, voxelspacing=spacing, verbose=False)["ungrouped"]
        dsc = np.asarray(brats.get_list_metric(self._metric.DSC, MetricMode.ALL), float) if brats.tp else np.empty(0)
        hd = np.asarray(brats.get_list_metric(self._metric.HD95, MetricMode.ALL), float) if brats.tp else np.empty(0)
        kept = np.asarray(brats.instance_volume_matched_ref_list, float) > self.min_volume
        missed = int(np.count_nonzero(np.asarray(brats.instance_volume_unmatched_ref_list, float) > self.min_volume))
        tally.lesions_tp = int(kept.sum())
        tally.lesions_fn = missed
        tally.lesions_ref = tally.lesions_tp + missed
        tally.lesions_fp = int(brats.fp)
        tally.dice_sum = float(dsc[kept].sum()) if dsc.size else 0.0
        tally.hd95_sum = float(np.where(np.isfinite(hd[kept]), hd[kept], HD95_PENALTY_MM).sum() if hd.size else 0.0) + HD95_PENALTY_MM * (missed + tally.lesions_fp)
        pq = self._pq.evaluate(p, r, voxelspacing=spacing, verbose=False)["ungrouped"]
        tally.pq_tp, tally.pq_fp, tally.pq_fn = int(pq.tp), int(pq.fp), int(pq.fn)
        tally.iou_sum = float(np.sum(pq.get_list_metric(self._metric.IOU, MetricMode.ALL))) if pq.tp else 0.0
        return tally


def lesion_columns(per_case, per_patient, loaded: Mapping, structures: dict[str, list[int]], ecfg, quiet: bool = True):
    """Add lesion-wise columns (`lesion_dice_<region>`, ..., `pq_<region>`) to the case and patient tables.

    Args:
        per_case: one row per slice or volume, with `case` and `patient` columns.
        per_patient: one row per patient, with a `patient` column.
        loaded: case id -> (prediction, reference, spacing).
        structures: region name -> label values.
        ecfg: the evaluate config (lesion_dilation, lesion_min_volume).
    """
    import pandas as pd

    from segpipe.progress import progress

    scorer = LesionScorer(ecfg.lesion_dilation, ecfg.lesion_min_volume)
    case_rows, pooled = [], {}
    for cid, patient in progress(list(zip(per_case["case"], per_case["patient"])), desc="lesions", unit="case", quiet=quiet):
        pred, ref, spacing = loaded[cid]
        row: dict[str, object] = {"case": cid}
        for name, members in structures.items():
            tally = scorer.score(np.isin(pred, members), np.isin(ref, members), spacing)
            pooled.setdefault(patient, {}).setdefault(name, LesionTally()).__iadd__(tally)
            row.update({f"{k}_{name}": v for k, v in tally.scores().items()})
        case_rows.append(row)
    patient_rows = [
        {"patient": p, **{f"{k}_{name}": v for name, tally in tallies.items() for k, v in tally.scores().items()}}
        for p, tallies in pooled.items()
    ]
    return (per_case.merge(pd.DataFrame(case_rows), on="case", how="left"),
            per_patient.merge(pd.DataFrame(patient_rows), on="patient", how="left"))


__all__ = ["HD95_PENALTY_MM", "LesionScorer", "LesionTally", "MISSING_EXTRA", "RULE", "dilated_extent", "lesion_columns", "require_panoptica"]
