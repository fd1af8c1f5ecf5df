"""Pictures of a run: ``progress.png`` (loss, learning rate, throughput) and ``recon_epoch_XXX.png`` (mid slices of the
input, the corrupted input, the reconstruction and the target). Drawn with matplotlib's Agg backend (no display)."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen before pyplot is imported)
import numpy as np  # noqa: E402
import torch  # noqa: E402

PREVIEW_COLUMNS = ("input", "corrupted", "reconstruction", "target")
PLANE_NAMES = ("axial (mid Z)", "coronal (mid Y)", "sagittal (mid X)")
# Display window: percentiles of the input, robust to a few extreme voxels.
WINDOW_PERCENTILES = (0.5, 99.5)
FIGURE_DPI = 100
PANEL_INCHES = 2.4


def mid_slices(volume: np.ndarray) -> list[np.ndarray]:
    """(Z, Y, X) -> [axial (Y, X), coronal (Z, X), sagittal (Z, Y)] through the centre."""
    z, y, x = (s // 2 for s in volume.shape)
    return [volume[z], volume[:, y], volume[:, :, x]]


def _save_figure(fig: plt.Figure, path: Path) -> None:
    """Atomic PNG write (a viewer never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=FIGURE_DPI)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        Path(tmp).unlink(missing_ok=True)


def save_reconstruction_preview(previews: Mapping[str, torch.Tensor], path: Path, title: str = "") -> None:
    """Plot sample 0, channel 0 of each preview as three orthogonal mid slices.

    Args:
        previews: ``MethodOutput.previews``; tensors (B, C, Z, Y, X). Missing keys are skipped.
        path: output PNG.
        title: figure title (e.g. the epoch).
    """
    columns = [key for key in PREVIEW_COLUMNS if key in previews]
    if not columns:
        return
    volumes = {key: previews[key][0, 0].detach().float().cpu().numpy() for key in columns}  # (Z, Y, X) each
    reference = volumes.get("input", volumes[columns[0]])
    vmin, vmax = np.percentile(reference, WINDOW_PERCENTILES)
    fig, axes = plt.subplots(len(PLANE_NAMES), len(columns), squeeze=False,
                             figsize=(PANEL_INCHES * len(columns), PANEL_INCHES * len(PLANE_NAMES)))
    for col, key in enumerate(columns):
        for row, image in enumerate(mid_slices(volumes[key])):
            ax = axes[row][col]
            ax.imshow(image, cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(key)
            if col == 0:
                ax.set_ylabel(PLANE_NAMES[row])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _save_figure(fig, path)


def save_progress_plot(history: Mapping[str, Sequence[float]], path: Path) -> None:
    """Loss (per step and per-epoch mean), learning rate and throughput over epochs.

    Args:
        history: needs ``step_loss``, ``epoch_loss``, ``epoch_lr``, ``epoch_samples_per_s`` (lists).
        path: output PNG.
    """
    fig, (ax_loss, ax_lr, ax_speed) = plt.subplots(1, 3, figsize=(15, 4))
    step_loss = list(history.get("step_loss", []))
    epoch_loss = list(history.get("epoch_loss", []))
    if epoch_loss and step_loss:
        steps_per_epoch = len(step_loss) / len(epoch_loss)
        ax_loss.plot(np.arange(1, len(step_loss) + 1) / steps_per_epoch, step_loss, color="0.7", lw=0.6,
                     label="step")
    ax_loss.plot(np.arange(1, len(epoch_loss) + 1), epoch_loss, "o-", color="C0", ms=3, label="epoch mean")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="training loss")
    ax_loss.legend()
    epoch_lr = list(history.get("epoch_lr", []))
    ax_lr.plot(np.arange(1, len(epoch_lr) + 1), epoch_lr, "o-", color="C1", ms=3)
    ax_lr.set(xlabel="epoch", ylabel="learning rate", title="learning rate (end of epoch)")
    speed = list(history.get("epoch_samples_per_s", []))
    ax_speed.plot(np.arange(1, len(speed) + 1), speed, "o-", color="C2", ms=3)
    ax_speed.set(xlabel="epoch", ylabel="samples / s", title="throughput (all ranks)")
    for ax in (ax_loss, ax_lr, ax_speed):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    _save_figure(fig, path)
