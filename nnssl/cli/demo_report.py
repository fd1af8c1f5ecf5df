"""The demo's ``report.md``: Dice table, loss curves, reconstruction previews and segmentation overlays (PNG).

Reads only what the demo's commands wrote: nnU-Net's ``summary.json`` (from ``nnUNetv2_evaluate_folder``) and
``progress.png``, the pretraining run's ``checkpoint_final.pth`` history and preview PNGs, and the NIfTI images,
labels and predictions. Figures are copied or drawn into ``<output>/figures``; every file is written atomically.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen before pyplot is imported)
import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

from nnssl.cli.demo_steps import StepRecord  # noqa: E402
from nnssl.training.checkpoint import CHECKPOINT_FINAL, load_checkpoint  # noqa: E402
from nnssl.training.pretrainer import PROGRESS_PNG, RECON_PNG  # noqa: E402

REPORT_FILE = "report.md"
FIGURES_FOLDER = "figures"
SUMMARY_FILE = "summary.json"
NIFTI, IMAGE_SUFFIX = ".nii.gz", "_0000.nii.gz"
DISPLAY_WINDOW_HU = (-1000.0, 400.0)  # lung window: tumours and vessels against air
OVERLAY_ALPHA = 0.55
OVERLAY_COLOURS = ("#00c853", "#ff6d00", "#2962ff", "#d50000")  # ground truth, then one per trainer
PANEL_INCHES = 3.0
FIGURE_DPI = 100
FILE_MODE = 0o644
RECON_GLOB = RECON_PNG.split("{", 1)[0] + "*.png"
CAVEAT = ("**Read this first.** This is a small CPU budget on procedural phantoms (a few minutes of pretraining and "
          "fine-tuning, a handful of cases, one run per trainer). It shows that the whole pipeline runs end to end "
          "and that the fine-tuned ViT segments; the difference between pretrained and scratch below is a single run "
          "each, and run-to-run spread is as large as that difference. The repeated, equal-compute comparison is "
          "`docs/benchmark_phantoms/report.md`.")


@dataclass(frozen=True)
class TrainerRun:
    """One fine-tuned model of the comparison.

    Attributes:
        role: ``pretrained`` or ``scratch``.
        trainer: the nnU-Net trainer class name.
        fold_folder: ``nnUNet_results/.../<trainer>__<plans>__3d_fullres/fold_0``.
        predictions: the folder of its test-set predictions and their ``summary.json``.
    """

    role: str
    trainer: str
    fold_folder: Path
    predictions: Path


@dataclass(frozen=True)
class CaseScore:
    """nnU-Net's metrics of one test case for the first foreground label."""

    dice: float
    reference_voxels: int
    predicted_voxels: int


def read_case_scores(summary: Path) -> tuple[dict[str, CaseScore], float]:
    """Per-case scores and the mean Dice (nnU-Net's ``foreground_mean``, which skips NaN cases) of a summary.json.

    A case's Dice is NaN when neither the reference nor the prediction has the label.
    """
    data = json.loads(Path(summary).read_text())
    scores = {}
    for entry in data["metric_per_case"]:
        label = sorted(entry["metrics"], key=int)[0]
        metrics = entry["metrics"][label]
        case = Path(entry["reference_file"]).name.removesuffix(NIFTI)
        scores[case] = CaseScore(float(metrics["Dice"]), int(metrics["n_ref"]), int(metrics["n_pred"]))
    return scores, float(data["foreground_mean"]["Dice"])


def _atomic_target(path: Path) -> str:
    """A readable temp file beside ``path``, to be ``os.replace``d onto it once complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    os.chmod(tmp, FILE_MODE)  # mkstemp creates 0600
    return tmp


def _save_figure(fig: plt.Figure, path: Path) -> None:
    tmp = _atomic_target(path)
    try:
        fig.savefig(tmp, dpi=FIGURE_DPI, format="png")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        Path(tmp).unlink(missing_ok=True)


def _copy(source: Path, target: Path) -> Path | None:
    """Atomic copy; None (nothing written) when ``source`` is missing."""
    if not source.is_file():
        return None
    tmp = _atomic_target(target)
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return target


def _read(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))  # (Z, Y, X)


def tumour_slice(reference: np.ndarray, predictions: Sequence[np.ndarray]) -> int:
    """The axial slice with the most ground-truth tumour; else the most predicted tumour; else the middle one.

    Args:
        reference: (Z, Y, X) label.
        predictions: (Z, Y, X) predicted labels.
    """
    for volume in (reference, *predictions):
        area = (volume > 0).sum(axis=(1, 2))  # (Z,)
        if area.any():
            return int(area.argmax())
    return reference.shape[0] // 2


def save_overlay(image: Path, reference: Path, predictions: Mapping[str, Path], path: Path) -> int:
    """One row of panels through the tumour slice: the image, then the ground truth and each prediction on it.

    Returns:
        The axial slice index shown.
    """
    ct = _read(image).astype(np.float32)  # (Z, Y, X) HU
    label = _read(reference)
    predicted = {name: _read(file) for name, file in predictions.items()}
    z = tumour_slice(label, list(predicted.values()))
    panels = [("image", None), ("ground truth", label), *predicted.items()]
    fig, axes = plt.subplots(1, len(panels), figsize=(PANEL_INCHES * len(panels), PANEL_INCHES), squeeze=False)
    for i, (ax, (title, mask)) in enumerate(zip(axes[0], panels, strict=True)):
        ax.imshow(ct[z], cmap="gray", vmin=DISPLAY_WINDOW_HU[0], vmax=DISPLAY_WINDOW_HU[1])
        if mask is not None:
            colour = OVERLAY_COLOURS[(i - 1) % len(OVERLAY_COLOURS)]
            ax.imshow(np.ma.masked_equal(mask[z] > 0, False), cmap=ListedColormap([colour]), alpha=OVERLAY_ALPHA,
                      vmin=0, vmax=1)
            title = f"{title} ({int((mask[z] > 0).sum())} px)"
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.suptitle(f"{reference.name.removesuffix(NIFTI)}, axial slice {z}", fontsize=10)
    fig.tight_layout()
    _save_figure(fig, path)
    return z


def _fmt_dice(score: CaseScore | None) -> str:
    if score is None:
        return "missing"
    if math.isnan(score.dice):
        return "n/a (no tumour in reference or prediction)"
    return f"{score.dice:.3f} ({score.predicted_voxels} voxels predicted)"


def dice_table(runs: Sequence[TrainerRun], cases: Sequence[str]) -> list[str]:
    """Markdown rows: one per test case and the mean, one column per trainer."""
    scored = [read_case_scores(run.predictions / SUMMARY_FILE) for run in runs]
    header = "| test case | tumour voxels | " + " | ".join(f"Dice {r.role} (`{r.trainer}`)" for r in runs) + " |"
    lines = [header, "|" + " --- |" * (2 + len(runs))]
    for case in cases:
        voxels = next((s[0][case].reference_voxels for s in scored if case in s[0]), None)
        cells = [_fmt_dice(s[0].get(case)) for s in scored]
        lines.append(f"| {case} | {'?' if voxels is None else voxels} | " + " | ".join(cells) + " |")
    means = ["n/a" if math.isnan(mean) else f"**{mean:.3f}**" for _, mean in scored]
    lines.append("| **mean** (nnU-Net's foreground mean; n/a cases skipped) | | " + " | ".join(means) + " |")
    silent = [r for r, s in zip(runs, scored, strict=True) if not any(c.predicted_voxels for c in s[0].values())]
    if silent:
        lines += ["", f"{' and '.join(f'`{r.trainer}`' for r in silent)} predict no tumour voxel in any test case: "
                  "the model did not learn the tumour at this budget, so its Dice says nothing yet."]
    if len(runs) == 2 and not any(math.isnan(mean) for _, mean in scored):
        difference = scored[0][1] - scored[1][1]
        lines += ["", f"{runs[0].role} − {runs[1].role}: {difference:+.3f} Dice on {len(cases)} test cases, one run "
                  "each. A single run cannot tell a gain from run-to-run spread; the phantom study repeats each "
                  "comparison 3 times."]
    return lines


def _pretraining_section(run_folder: Path, figures: Path) -> list[str]:
    lines = ["## Pretraining", ""]
    history: Mapping[str, Any] = load_checkpoint(run_folder / CHECKPOINT_FINAL).get("history", {})
    losses = [float(v) for v in history.get("epoch_loss", [])]
    if losses:
        change = (f" ({(1 - losses[-1] / losses[0]) * 100:.0f}% lower after the last epoch than after the first)"
                  if len(losses) > 1 else "")
        lines += [f"Reconstruction loss per epoch: {' → '.join(f'{v:.3f}' for v in losses)}{change}.", ""]
    progress = _copy(run_folder / PROGRESS_PNG, figures / "pretrain_progress.png")
    if progress:
        lines += [f"![pretraining loss]({FIGURES_FOLDER}/{progress.name})", ""]
    previews = sorted(run_folder.glob(RECON_GLOB))
    shown = ([("first", previews[0])] if len(previews) > 1 else []) + ([("last", previews[-1])] if previews else [])
    for which, source in shown:
        target = _copy(source, figures / f"pretrain_recon_{which}_{source.name}")
        lines += [f"Reconstruction preview after the {which} epoch ({source.stem}).", "",
                  f"![reconstruction {which}]({FIGURES_FOLDER}/{target.name})", ""]
    return lines


def _finetuning_section(runs: Sequence[TrainerRun], figures: Path) -> list[str]:
    lines = ["## Fine-tuning (nnU-Net's progress.png)", ""]
    for run in runs:
        validation = run.fold_folder / "validation" / SUMMARY_FILE
        val = read_case_scores(validation)[1] if validation.is_file() else float("nan")
        lines += [f"### {run.role}: `{run.trainer}`", "",
                  f"nnU-Net's fold-0 validation Dice: {'n/a' if math.isnan(val) else f'{val:.3f}'}.", ""]
        copied = _copy(run.fold_folder / "progress.png", figures / f"finetune_{run.role}_progress.png")
        lines += [f"![{run.role} progress]({FIGURES_FOLDER}/{copied.name})" if copied else "(no progress.png)", ""]
    return lines


def _overlay_section(runs: Sequence[TrainerRun], raw: Path, cases: Sequence[str], figures: Path) -> list[str]:
    lines = ["## Segmentations of the held-out cases", "",
             "Axial slice with the most ground-truth tumour (lung window); green: ground truth, then one colour per "
             "trainer.", ""]
    for case in cases:
        predictions = {f"{r.role}": r.predictions / f"{case}{NIFTI}" for r in runs}
        path = figures / f"overlay_{case}.png"
        save_overlay(raw / "imagesTs" / f"{case}{IMAGE_SUFFIX}", raw / "labelsTs" / f"{case}{NIFTI}", predictions,
                     path)
        lines += [f"![{case}]({FIGURES_FOLDER}/{path.name})", ""]
    return lines


def _steps_section(records: Sequence[StepRecord], output: Path) -> list[str]:
    lines = ["## What ran", "",
             f"Each step is the console command shown, run with the nnssl_* / nnUNet_* folders under `{output}`; its "
             "output is in the log file. Times are wall-clock seconds of the run that produced the step's result.", "",
             "| step | command | seconds | log |", "| --- | --- | --- | --- |"]
    for r in records:
        seconds = "-" if r.seconds is None else f"{r.seconds:.1f}"
        log = Path(r.log).relative_to(output) if Path(r.log).is_relative_to(output) else Path(r.log)
        lines.append(f"| {r.name}{' (reused)' if r.reused else ''} | `{r.command}` | {seconds} | `{log}` |")
    total = sum(r.seconds or 0.0 for r in records)
    lines += [f"| **total** | | **{total:.0f}** | |", ""]
    return lines


def write_report(output: Path, records: Sequence[StepRecord], pretraining_run: Path, runs: Sequence[TrainerRun],
                 labeled_raw: Path, test_cases: Sequence[str], facts: Mapping[str, str]) -> Path:
    """Write ``<output>/report.md`` and its figures; returns the report's path.

    Args:
        output: the demo's output folder.
        records: the steps as run (or reused), in order.
        pretraining_run: the nnssl_pretrain run folder (checkpoint_final.pth, progress.png, recon PNGs).
        runs: the fine-tuned models to compare (pretrained first).
        labeled_raw: the labeled nnU-Net raw dataset (imagesTs, labelsTs).
        test_cases: identifiers of the held-out cases.
        facts: one line each about the data and budget (name -> text).
    """
    output = Path(output)
    figures = output / FIGURES_FOLDER
    lines = ["# nnssl demo report", "", CAVEAT, ""]
    lines += [f"- **{name}**: {text}" for name, text in facts.items()] + [""]
    lines += ["## Dice on the held-out test cases", "",
              "Computed by `nnUNetv2_evaluate_folder` on cases never used in training or pretraining.", ""]
    lines += dice_table(runs, test_cases) + [""]
    lines += _overlay_section(runs, labeled_raw, test_cases, figures)
    lines += _pretraining_section(pretraining_run, figures)
    lines += _finetuning_section(runs, figures)
    lines += _steps_section(records, output)
    report = output / REPORT_FILE
    tmp = _atomic_target(report)
    try:
        Path(tmp).write_text("\n".join(lines))
        os.replace(tmp, report)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return report
