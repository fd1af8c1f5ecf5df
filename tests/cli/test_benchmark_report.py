"""Report of ``nnssl_benchmark`` from a fake results set, and the metric conventions (MONAI NSD / HD95)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nnssl.cli.benchmark_metrics import surface_metrics
from nnssl.cli.benchmark_report import PLOT_FILE, paired_differences, summarize, write_report, write_results

PNG_MAGIC = b"\x89PNG"
# trainer -> k -> Dice per repeat
FAKE_DICE = {
    "SSLViTTrainer": {"2": [0.50, 0.70], "4": [0.60, 0.80], "all": [0.90, 0.92]},
    "SSLViTTrainer_scratch": {"2": [0.30, 0.40], "4": [0.55, 0.85], "all": [0.88, 0.90]},
    "nnUNetTrainer": {"2": [0.45, 0.75], "4": [0.70, 0.70], "all": [0.95, None]},  # None: nothing scored
}
POOL = 16


def _fake_runs() -> list[dict[str, Any]]:
    runs = []
    for trainer, per_k in FAKE_DICE.items():
        for k, values in per_k.items():
            for repeat, dice in enumerate(values):
                hd = None if dice is None else 10 * (1 - dice)
                plain = None if dice is None else dice - 0.1  # without TTA: 10 points lower, to tell them apart
                runs.append({"run": f"k{k}_r{repeat}__{trainer}", "trainer": trainer, "variant": f"{trainer}_x",
                             "k": k, "num_train": POOL if k == "all" else int(k), "repeat": repeat,
                             "patch_size": [32, 48, 48], "wall_s": 12.0,
                             "compute": {"steps": 4, "train_s": 10.0 + repeat, "s_per_step": 2.5,
                                         "flops_per_step": 3e9, "total_tflops": 0.012},
                             "metrics": {"mean": {"Dice": dice, "NSD": dice, "HD95": hd}, "per_case": {}},
                             "metrics_no_tta": {"mean": {"Dice": plain, "NSD": plain, "HD95": hd}, "per_case": {}}})
    return runs


STUDY = {"dataset": "Dataset501_Fake", "budget": "tiny", "seed": 0, "heldout": ["a", "b"], "pool": ["c"] * POOL,
         "heldout_seen_by_pretraining": []}
SETUP = {"command": "nnssl_benchmark -d 501 -pd 500", "budget_description": "fake", "equal": "compute",
         "compute_s": 10.0, "schedules": {"SSLViTTrainer": {"variant": "SSLViTTrainer_tiny", "epochs": 2,
                                                            "iterations_per_epoch": 2}}, "nsd_tolerance_mm": 2.0,
         "device": "cpu", "notes": ["a note"], "pretraining": {"num_images": 40, "config": {"encoder": "vit_tiny"}}}


def test_summary_means_and_spread_over_repeats() -> None:
    summary = summarize(_fake_runs())
    entry = summary["SSLViTTrainer"]["2"]
    assert entry["n"] == 2 and entry["Dice_mean"] == pytest.approx(0.6)
    assert entry["Dice_sd"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert list(summary["SSLViTTrainer"]) == ["2", "4", "all"]  # training-size order
    lone = summary["nnUNetTrainer"]["all"]
    assert lone["Dice_mean"] == pytest.approx(0.95) and math.isnan(lone["Dice_sd"])  # one scored repeat: no sd
    diffs = paired_differences(_fake_runs(), "SSLViTTrainer", "SSLViTTrainer_scratch")
    assert diffs["2"]["mean"] == pytest.approx(25.0) and diffs["2"]["sd"] == pytest.approx(np.std([20, 30], ddof=1))
    assert entry["Dice_noTTA_mean"] == pytest.approx(0.5)  # the no-TTA metrics are summarized apart
    plain = paired_differences(_fake_runs(), "SSLViTTrainer", "nnUNetTrainer", "metrics_no_tta")
    assert plain["all"]["n"] == 1 and plain["all"]["mean"] == pytest.approx(-5.0)


def test_report_tables_plot_and_results_json(tmp_path: Path) -> None:
    runs = _fake_runs()
    report = write_report(tmp_path, STUDY, SETUP, runs).read_text()
    assert "| SSLViTTrainer | 60.0 ± 14.1 (n=2) | 70.0 ± 14.1 (n=2) | 91.0 ± 1.4 (n=2) |" in report
    assert "| nnUNetTrainer | 60.0 ± 21.2 (n=2) | 70.0 ± 0.0 (n=2) | 95.0 (n=1) |" in report
    assert "k=2: SSLViTTrainer − SSLViTTrainer_scratch = +25.0 ± 7.1 Dice points" in report
    assert "2 repeats; goal ≥ +5: met; without TTA +25.0)" in report
    assert "k=4: SSLViTTrainer − SSLViTTrainer_scratch = +0.0" in report
    assert "k=2: SSLViTTrainer − nnUNetTrainer = +0.0 ± 7.1 Dice points (paired over 2 repeats; goal ≥ -2: met; " \
        "without TTA +0.0)" in report
    assert "k=all: SSLViTTrainer − nnUNetTrainer = -5.0 Dice points (paired over 1 repeats; goal ≥ -2: NOT met" \
        in report
    assert "| SSLViTTrainer | 50.0 ± 14.1 (n=2) | 60.0 ± 14.1 (n=2) | 81.0 ± 1.4 (n=2) |" in report  # no-TTA table
    assert "| SSLViTTrainer | `SSLViTTrainer_tiny` | 4 | 10.5 | 2.50 | 3.0 | 0.0 |" in report  # compute table
    assert "Pretraining saw the held-out images: **no (0 of 2" in report and "> a note" in report
    assert report.count("| k2_r") == 6 and (tmp_path / PLOT_FILE).read_bytes()[:4] == PNG_MAGIC
    results = json.loads(write_results(tmp_path, STUDY, SETUP, runs).read_text())  # strict JSON: NaN -> null
    assert len(results["runs"]) == len(runs)
    assert results["summary"]["nnUNetTrainer"]["all"]["Dice_sd"] is None


def test_pretraining_that_saw_heldout_images_is_reported(tmp_path: Path) -> None:
    report = write_report(tmp_path, {**STUDY, "heldout_seen_by_pretraining": ["a"]}, SETUP, _fake_runs()).read_text()
    assert "**yes, 1 of 2 held-out images (a)**" in report


def test_surface_metrics_follow_the_stated_conventions() -> None:
    spacing = (2.0, 1.0, 1.0)
    reference = np.zeros((8, 16, 16), bool)
    reference[2:6, 4:10, 4:10] = True
    assert surface_metrics(reference, reference, spacing, 1.0) == pytest.approx((1.0, 0.0))
    shifted = np.roll(reference, 3, axis=2)  # 3 voxels = 3 mm off in X
    nsd_tight, hd = surface_metrics(shifted, reference, spacing, 1.0)
    nsd_loose, _ = surface_metrics(shifted, reference, spacing, 3.0)
    assert hd == pytest.approx(3.0) and nsd_tight < nsd_loose == pytest.approx(1.0)
    empty = np.zeros_like(reference)
    diagonal = float(np.linalg.norm(np.array(reference.shape) * spacing))
    assert surface_metrics(empty, reference, spacing, 1.0) == pytest.approx((0.0, diagonal))
    assert surface_metrics(reference, empty, spacing, 1.0) == pytest.approx((0.0, diagonal))
    assert all(math.isnan(v) for v in surface_metrics(empty, empty, spacing, 1.0))
