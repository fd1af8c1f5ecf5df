"""Per-case metrics of one study run: nnU-Net's evaluator (Dice) plus MONAI's surface Dice (NSD) and HD95.

nnU-Net's final validation predicts the held-out cases (they are the run's ``val`` split) and scores them with
``compute_metrics_on_folder`` into ``validation/summary.json``; that file gives the Dice and the file pairs. MONAI's
``compute_surface_dice`` (tolerance in mm) and ``compute_hausdorff_distance`` (95th percentile, in mm) are computed on
the same pairs with the reference's voxel spacing.

Conventions for empty masks (a model starved of labels often predicts nothing):
- reference and prediction both empty: every metric is NaN (nothing to segment; nnU-Net's Dice convention) and the
  case is left out of the means;
- one of them empty: Dice 0 (nnU-Net), NSD 0, HD95 = the image diagonal in mm (the largest possible distance).
"""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.metrics import compute_hausdorff_distance, compute_surface_dice

from nnssl.data.raw_dataset import file_ending_of, reader_for
from nnssl.errors import NnsslError

METRICS = ("Dice", "NSD", "HD95")
HD_PERCENTILE = 95
DEFAULT_NSD_TOLERANCE_MM = 3.0  # about one in-plane voxel of the study phantoms; Sarcoma CT slices are 3.3 mm


def read_summary(summary_file: Path) -> dict[str, Any]:
    """nnU-Net's ``summary.json``.

    Raises:
        NnsslError: missing or unreadable (the run's validation did not finish).
    """
    try:
        return json.loads(Path(summary_file).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise NnsslError(f"{summary_file} is missing or unreadable ({err}); the run's final validation did not "
                         "finish: rerun nnssl_benchmark to continue it") from None


def _read_mask(path: Path) -> tuple[np.ndarray, tuple[float, ...]]:
    """A segmentation (Z, Y, X) and its spacing (Z, Y, X) in mm, read with nnU-Net's reader for the file type."""
    seg, properties = reader_for(file_ending_of(Path(path)))().read_seg(str(path))  # (1, Z, Y, X)
    return seg[0], tuple(float(s) for s in properties["spacing"])


def surface_metrics(prediction: np.ndarray, reference: np.ndarray, spacing: tuple[float, ...],
                    tolerance_mm: float) -> tuple[float, float]:
    """NSD at ``tolerance_mm`` and HD95 in mm of two boolean masks (Z, Y, X), with the empty-mask conventions above."""
    pred_any, ref_any = bool(prediction.any()), bool(reference.any())
    if not pred_any and not ref_any:
        return math.nan, math.nan
    if not pred_any or not ref_any:
        diagonal = float(np.linalg.norm(np.asarray(reference.shape) * np.asarray(spacing)))
        return 0.0, diagonal
    pred = _one_hot(prediction)  # (1, 2, Z, Y, X)
    ref = _one_hot(reference)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI warns about deprecated argument names of its own internals
        nsd = compute_surface_dice(pred, ref, [float(tolerance_mm)], include_background=False, spacing=spacing)
        hd95 = compute_hausdorff_distance(pred, ref, include_background=False, percentile=HD_PERCENTILE,
                                          spacing=spacing)
    return float(nsd[0, 0]), float(hd95[0, 0])


def _one_hot(mask: np.ndarray) -> torch.Tensor:
    """Boolean (Z, Y, X) -> float (1, 2, Z, Y, X): background, foreground."""
    fg = torch.from_numpy(np.ascontiguousarray(mask)).bool()
    return torch.stack([~fg, fg]).unsqueeze(0).float()


def run_metrics(summary_file: Path, labels: list[int], tolerance_mm: float) -> dict[str, Any]:
    """Per-case and mean metrics of one run from its nnU-Net ``summary.json``.

    Args:
        summary_file: ``fold_0/validation/summary.json``.
        labels: foreground label values to score (``dataset.json`` labels without background).
        tolerance_mm: NSD tolerance.

    Returns:
        ``{"per_case": {case: {metric: value, "predicted_voxels": n}}, "per_label": {case: {label: {metric:
        value}}}, "mean": {metric: value}, "cases_scored": {metric: n}, "empty_predictions": n}``; case values are the
        mean over labels, NaN (JSON null) where nothing was there to segment.
    """
    summary = read_summary(summary_file)
    pairs = [(Path(e["prediction_file"]), Path(e["reference_file"]), e["metrics"]) for e in summary["metric_per_case"]]
    return _score_pairs(pairs, labels, tolerance_mm)


def folder_metrics(prediction_folder: Path, reference_folder: Path, cases: list[str], labels: list[int],
                   tolerance_mm: float) -> dict[str, Any]:
    """:func:`run_metrics` for predictions nnU-Net did not score (e.g. ``nnUNetv2_predict --disable_tta``): the
    Dice is computed here with nnU-Net's convention (NaN when both masks are empty).

    Raises:
        NnsslError: a case's prediction is missing.
    """
    reference_files = {p.name.removesuffix(file_ending_of(p)): p for p in Path(reference_folder).iterdir()}
    pairs = []
    for case in cases:
        reference = reference_files[case]
        prediction = Path(prediction_folder) / reference.name
        if not prediction.is_file():
            raise NnsslError(f"{prediction} is missing; delete {prediction_folder} and rerun nnssl_benchmark")
        pairs.append((prediction, reference, None))
    return _score_pairs(pairs, labels, tolerance_mm)


def dice_score(prediction: np.ndarray, reference: np.ndarray) -> float:
    """2|A∩B| / (|A| + |B|) of two boolean masks; NaN when both are empty (nnU-Net's convention)."""
    total = int(prediction.sum()) + int(reference.sum())
    return math.nan if total == 0 else 2.0 * int(np.logical_and(prediction, reference).sum()) / total


def _score_pairs(pairs: list[tuple[Path, Path, dict[str, Any] | None]], labels: list[int],
                 tolerance_mm: float) -> dict[str, Any]:
    """Metrics of (prediction file, reference file, nnU-Net's per-label metrics or None) pairs."""
    per_case: dict[str, dict[str, float]] = {}
    per_label: dict[str, dict[str, dict[str, float]]] = {}
    for prediction_file, reference_file, nnunet_metrics in pairs:
        prediction, spacing = _read_mask(prediction_file)
        reference, _ = _read_mask(reference_file)
        case = reference_file.name.removesuffix(file_ending_of(reference_file))
        scores = {}
        for label in labels:
            nsd, hd95 = surface_metrics(prediction == label, reference == label, spacing, tolerance_mm)
            if nnunet_metrics is None:
                dice = dice_score(prediction == label, reference == label)
            else:
                dice = nnunet_metrics.get(str(label), {}).get("Dice", math.nan)
            scores[str(label)] = {"Dice": float(math.nan if dice is None else dice), "NSD": nsd, "HD95": hd95}
        per_label[case] = scores
        per_case[case] = {m: _nanmean([s[m] for s in scores.values()]) for m in METRICS}
        per_case[case]["predicted_voxels"] = int(np.count_nonzero(np.isin(prediction, labels)))
    mean = {m: _nanmean([c[m] for c in per_case.values()]) for m in METRICS}
    scored = {m: sum(not math.isnan(c[m]) for c in per_case.values()) for m in METRICS}
    empty = sum(c["predicted_voxels"] == 0 for c in per_case.values())
    return {"per_case": per_case, "per_label": per_label, "mean": mean, "cases_scored": scored,
            "empty_predictions": empty}


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def to_json_safe(value: Any) -> Any:
    """NaN -> None (strict JSON), recursively."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: to_json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json_safe(v) for v in value]
    return value


def from_json_safe(value: Any) -> float:
    """None -> NaN (for means over stored results)."""
    return math.nan if value is None else float(value)
