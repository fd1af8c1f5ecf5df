"""``results.json``, ``report.md`` and the label-efficiency plot of a study, from its per-run result dicts.

Means are over the repeats (``--folds``) of each (trainer, k); the spread is the sample standard deviation over those
repeats. Pretrained-minus-baseline differences are paired by repeat (same k training cases, same held-out cases).
Every metric is reported with test-time mirroring (nnU-Net's validation, ``metrics``) and without
(``metrics_no_tta``, suffix ``_noTTA``).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nnssl.cli.benchmark_metrics import METRICS, from_json_safe, to_json_safe
from nnssl.config.plans import write_json_atomic

RESULTS_FILE, REPORT_FILE, PLOT_FILE = "results.json", "report.md", "label_efficiency.png"
RESULTS_VERSION = 1
SECONDS_PER_MINUTE = 60
DICE_POINTS = 100  # Dice 0..1 reported in points 0..100
GOAL_MARGIN_POINTS = 5.0  # goal: pretrained >= scratch + 5 Dice points at k <= GOAL_MAX_K
GOAL_MAX_K = 4
GOAL_CNN_MARGIN_POINTS = -2.0  # goal: pretrained >= nnU-Net's CNN - 2 Dice points at every k
NO_TTA = "_noTTA"
SOURCES = {"": "metrics", NO_TTA: "metrics_no_tta"}  # metric-name suffix -> result key
DIFF_DIGITS = 9  # rounding of mean differences, so float noise never flips a verdict (-1e-15 is 0)
PLOT_SIZE_IN = (7.0, 4.5)
PLOT_DPI = 110


def _k_sort_key(run: dict[str, Any]) -> tuple[int, int]:
    return run["num_train"], run["k"] == "all"


def summarize(runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{trainer: {k: {"num_train", "repeats", "n", "<metric>_mean", "<metric>_sd"}}}``, k in training-size order;
    ``n`` counts the repeats with a Dice."""
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    names = [metric + suffix for suffix in SOURCES for metric in METRICS]
    for run in sorted(runs, key=_k_sort_key):
        entry = summary.setdefault(run["trainer"], {}).setdefault(run["k"], {"num_train": run["num_train"],
                                                                              "repeats": []})
        entry["repeats"].append(run["repeat"])
        for suffix, source in SOURCES.items():
            means = (run.get(source) or {}).get("mean", {})
            for metric in METRICS:
                entry.setdefault(metric + suffix, []).append(from_json_safe(means.get(metric)))
    for per_k in summary.values():
        for entry in per_k.values():
            for metric in names:
                values = [v for v in entry.pop(metric) if not math.isnan(v)]
                if metric == METRICS[0]:
                    entry["n"] = len(values)  # repeats with a Dice (all-empty held-out predictions have none)
                entry[f"{metric}_mean"] = float(np.mean(values)) if values else math.nan
                entry[f"{metric}_sd"] = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
    return summary


def paired_differences(runs: Sequence[dict[str, Any]], better: str, baseline: str,
                       source: str = "metrics") -> dict[str, dict[str, float]]:
    """Mean and sd over repeats of ``better`` minus ``baseline`` Dice (points), per k with both trainers;
    ``source`` is ``metrics`` (with TTA) or ``metrics_no_tta``."""
    by_key = {(r["trainer"], r["k"], r["repeat"]): from_json_safe((r.get(source) or {}).get("mean", {}).get("Dice"))
              for r in runs}
    out: dict[str, dict[str, float]] = {}
    for run in sorted(runs, key=_k_sort_key):
        if run["trainer"] != better or (baseline, run["k"], run["repeat"]) not in by_key:
            continue
        diff = DICE_POINTS * (by_key[(better, run["k"], run["repeat"])] - by_key[(baseline, run["k"], run["repeat"])])
        out.setdefault(run["k"], {"diffs": []})["diffs"].append(diff)
    for entry in out.values():
        diffs = [d for d in entry.pop("diffs") if not math.isnan(d)]
        entry["n"] = len(diffs)
        entry["mean"] = round(float(np.mean(diffs)), DIFF_DIGITS) + 0.0 if diffs else math.nan  # no "-0.0"
        entry["sd"] = float(np.std(diffs, ddof=1)) if len(diffs) > 1 else math.nan
    return out


def write_results(output: Path, study: dict[str, Any], setup: dict[str, Any], runs: Sequence[dict[str, Any]]) -> Path:
    """``results.json``: the study facts, the setup, every run (per-case metrics included) and the summary."""
    path = Path(output) / RESULTS_FILE
    content = {"version": RESULTS_VERSION, "study": study, "setup": setup, "summary": summarize(runs),
               "runs": list(runs)}
    write_json_atomic(to_json_safe(content), path)
    return path


def plot_label_efficiency(summary: dict[str, dict[str, dict[str, Any]]], path: Path, title: str) -> Path:
    """Dice (mean +- sd over repeats) against the number of labeled training cases, one line per trainer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=PLOT_SIZE_IN)
    ticks: dict[int, str] = {}
    for trainer, per_k in summary.items():
        xs = [e["num_train"] for e in per_k.values()]
        means = [DICE_POINTS * e["Dice_mean"] for e in per_k.values()]
        sds = [DICE_POINTS * (0.0 if math.isnan(e["Dice_sd"]) else e["Dice_sd"]) for e in per_k.values()]
        axis.errorbar(xs, means, yerr=sds, marker="o", capsize=4, label=trainer)
        ticks |= {e["num_train"]: (f"all ({e['num_train']})" if k == "all" else k) for k, e in per_k.items()}
    axis.set_xscale("log", base=2)
    axis.set_xticks(sorted(ticks), [ticks[t] for t in sorted(ticks)])
    axis.minorticks_off()
    axis.set_xlabel("labeled training cases (k)")
    axis.set_ylabel("Dice on the held-out cases (points)")
    axis.set_ylim(bottom=0)
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=PLOT_DPI)
    plt.close(figure)
    return path


def _cell(entry: dict[str, Any] | None, metric: str, scale: float = 1.0, digits: int = 1) -> str:
    if entry is None or math.isnan(entry.get(f"{metric}_mean", math.nan)):
        return "–"
    sd = entry[f"{metric}_sd"]
    spread = "" if math.isnan(sd) else f" ± {scale * sd:.{digits}f}"
    return f"{scale * entry[f'{metric}_mean']:.{digits}f}{spread} (n={entry['n']})"


def _metric_table(summary: dict[str, dict[str, dict[str, Any]]], metric: str, scale: float) -> list[str]:
    ks = sorted({k: e["num_train"] for per_k in summary.values() for k, e in per_k.items()}.items(),
                key=lambda item: (item[1], item[0] == "all"))
    lines = ["| trainer | " + " | ".join(f"k={k}" + (f" ({n})" if k == "all" else "") for k, n in ks) + " |",
             "|---" * (len(ks) + 1) + "|"]
    for trainer, per_k in summary.items():
        lines.append(f"| {trainer} | " + " | ".join(_cell(per_k.get(k), metric, scale) for k, _ in ks) + " |")
    return lines


def _goal_lines(runs: Sequence[dict[str, Any]]) -> list[str]:
    """The goals, checked on the Dice with TTA: pretrained >= scratch + 5 points at k <= 4, >= nnU-Net's CNN - 2
    points at every k; the same differences without TTA beside them."""
    lines = []
    for baseline, margin in (("SSLViTTrainer_scratch", GOAL_MARGIN_POINTS), ("nnUNetTrainer", GOAL_CNN_MARGIN_POINTS)):
        diffs = paired_differences(runs, "SSLViTTrainer", baseline)
        plain = paired_differences(runs, "SSLViTTrainer", baseline, SOURCES[NO_TTA])
        for k, entry in diffs.items():
            small = k != "all" and int(k) <= GOAL_MAX_K
            if baseline == "SSLViTTrainer_scratch" and not small:
                verdict = f"the goal is for k ≤ {GOAL_MAX_K}"
            else:
                verdict = f"goal ≥ {margin:+.0f}: " + ("met" if entry["mean"] >= margin else "NOT met")
            no_tta = plain.get(k, {}).get("mean", math.nan)
            no_tta_text = "" if math.isnan(no_tta) else f"; without TTA {no_tta:+.1f}"
            lines.append(f"- k={k}: SSLViTTrainer − {baseline} = {_mean_sd(entry)} Dice points "
                         f"(paired over {entry['n']} repeats; {verdict}{no_tta_text})")
    return lines or ["- (needs SSLViTTrainer and a baseline in --trainers)"]


def _mean_sd(entry: dict[str, float]) -> str:
    if math.isnan(entry["mean"]):
        return "–"
    return f"{entry['mean']:+.1f}" + ("" if math.isnan(entry["sd"]) else f" ± {entry['sd']:.1f}")


def compute_lines(runs: Sequence[dict[str, Any]], setup: dict[str, Any]) -> list[str]:
    """Per trainer: its schedule and what its runs really spent (mean over runs of ``compute.json``)."""
    lines = ["| trainer | nnU-Net class | steps | training s per run (mean) | s per step | GFLOP per step | "
             "TFLOP per run |", "|---|---|---|---|---|---|---|"]
    for trainer, schedule in setup.get("schedules", {}).items():
        spent = [r["compute"] for r in runs if r["trainer"] == trainer and r.get("compute")]
        seconds = [c["train_s"] for c in spent]
        per_step = [c["s_per_step"] for c in spent]
        flops = [c["flops_per_step"] for c in spent]
        lines.append(f"| {trainer} | `{schedule['variant']}` | {schedule['epochs'] * schedule['iterations_per_epoch']}"
                     f" | {_mean_or_dash(seconds, 1)} | {_mean_or_dash(per_step, 2)} | "
                     f"{_mean_or_dash([f / 1e9 for f in flops], 1)} | "
                     f"{_mean_or_dash([c['total_tflops'] for c in spent], 1)} |")
    return lines


def _mean_or_dash(values: Sequence[float], digits: int) -> str:
    return f"{float(np.mean(values)):.{digits}f}" if values else "–"


def write_report(output: Path, study: dict[str, Any], setup: dict[str, Any], runs: Sequence[dict[str, Any]]) -> Path:
    """``report.md`` with the setup, mean ± sd tables, the paired differences, the plot and every run."""
    summary = summarize(runs)
    plot = plot_label_efficiency(summary, Path(output) / PLOT_FILE, f"{study['dataset']}, budget {study['budget']}")
    pre = setup.get("pretraining", {})
    seen = study.get("heldout_seen_by_pretraining")
    seen_text = "unknown (the pretraining's raw images are not in $nnssl_raw)" if seen is None else \
        (f"yes, {len(seen)} of {len(study['heldout'])} held-out images ({', '.join(seen)})" if seen else
         f"no (0 of {len(study['heldout'])} held-out images are among its {pre.get('num_images')} images)")
    wall = [r["wall_s"] for r in runs if r.get("wall_s") is not None]
    lines = [
        f"# Label-efficiency study: {study['dataset']}", "",
        f"Command: `{setup['command']}`", "",
        f"- **Budget `{study['budget']}`** (equal {setup.get('equal', 'steps')}): {setup['budget_description']}; the "
        "compute table below lists what each trainer really spent.",
        f"- **Pretraining**: {pre.get('config', {}).get('method')} on {pre.get('config', {}).get('encoder')}, "
        f"{pre.get('config', {}).get('epochs')} epochs × {pre.get('config', {}).get('iters_per_epoch')} steps, "
        f"dataset {pre.get('dataset')}, checkpoint sha256 {str(pre.get('sha256', ''))[:12]}. "
        f"Pretraining saw the held-out images: **{seen_text}**. No labels are used in pretraining.",
        f"- **Held-out cases** ({len(study['heldout'])}, stratified by tumour size, seed {study['seed']}, never in a "
        f"training split): {', '.join(study['heldout'])}. Training pool: {len(study['pool'])} cases; each k-subset is "
        "drawn per repeat, one case per tumour-size stratum.",
        f"- **Evaluation**: nnU-Net's final validation of each run predicts the held-out cases (sliding window, "
        f"mirroring) and its evaluator gives the Dice; MONAI gives the surface Dice (NSD) at "
        f"{setup['nsd_tolerance_mm']:g} mm and HD95 (mm). Case-level conventions: both masks empty → left out; one "
        "empty → Dice 0, NSD 0, HD95 = image diagonal.",
        f"- **Runs**: {len(runs)} finished on device `{setup['device']}`, {setup.get('jobs', 1)} at a time; their "
        f"`nnUNetv2_train` commands (training + validation) took {sum(wall) / SECONDS_PER_MINUTE:.1f} min of wall "
        f"time summed over runs ({len(wall)} timed).", "",
        "## Dice with test-time mirroring (points, mean ± sd over repeats)", "",
        *_metric_table(summary, "Dice", DICE_POINTS), "",
        "## Dice without test-time mirroring (points)", "", *_metric_table(summary, "Dice" + NO_TTA, DICE_POINTS), "",
        f"![label efficiency]({plot.name})", "",
        "## Compute", "", *compute_lines(runs, setup), "",
        "## Pretrained vs baselines (paired by repeat)", "", *_goal_lines(runs), "",
        f"## Surface Dice at {setup['nsd_tolerance_mm']:g} mm (points), with / without TTA", "",
        *_metric_table(summary, "NSD", DICE_POINTS), "", *_metric_table(summary, "NSD" + NO_TTA, DICE_POINTS), "",
        "## HD95 (mm), with / without TTA", "", *_metric_table(summary, "HD95", 1.0), "",
        *_metric_table(summary, "HD95" + NO_TTA, 1.0), "",
        *[f"> {note}" for note in setup.get("notes", ())], "",
        "## Every run", "", "Empty = held-out cases where the model predicted no foreground at all.", "",
        "| run | variant | patch | Dice | Dice no TTA | NSD | HD95 | empty | steps | train s | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in sorted(runs, key=lambda r: (r["num_train"], r["k"] == "all", r["repeat"], r["trainer"])):
        mean = run["metrics"]["mean"]
        plain = (run.get("metrics_no_tta") or {}).get("mean", {})
        cells = [_fmt(mean["Dice"], DICE_POINTS), _fmt(plain.get("Dice"), DICE_POINTS),
                 _fmt(mean["NSD"], DICE_POINTS), _fmt(mean["HD95"], 1.0)]
        patch = "x".join(map(str, run["patch_size"])) if run.get("patch_size") else "–"
        wall_s = "–" if run.get("wall_s") is None else f"{run['wall_s']:.0f}"
        empty = run["metrics"].get("empty_predictions")
        empty_text = "–" if empty is None else f"{empty}/{len(run['metrics']['per_case'])}"
        spent = run.get("compute") or {}
        steps = str(spent.get("steps", "–"))
        train_s = "–" if spent.get("train_s") is None else f"{spent['train_s']:.0f}"
        lines.append(f"| {run['run']} | {run['variant']} | {patch} | " + " | ".join(cells)
                     + f" | {empty_text} | {steps} | {train_s} | {wall_s} |")
    lines += ["", "Per-case metrics of every run are in `results.json`."]
    path = Path(output) / REPORT_FILE
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)
    return path


def _fmt(value: float | None, scale: float) -> str:
    return "–" if value is None or math.isnan(value) else f"{scale * value:.1f}"
