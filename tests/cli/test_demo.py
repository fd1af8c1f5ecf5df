"""nnssl_demo: the step runner (reuse, failures, environment), the report, and the whole demo at the tiny budget."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from nnssl.cli import demo
from nnssl.cli.demo_report import TrainerRun, read_case_scores, tumour_slice, write_report
from nnssl.cli.demo_steps import STEPS_FILE, Step, StepRecord, StepRunner, subprocess_environment
from nnssl.errors import NnsslError
from nnssl.training.checkpoint import CHECKPOINT_FINAL, FORMAT_VERSION, build_header, save_checkpoint

SHAPE = (6, 16, 16)  # (Z, Y, X) of the synthetic report volumes
TINY_DEMO_TIMEOUT_S = 900  # hang guard, not a speed target
RERUN_FRACTION = 0.5  # a rerun that reuses every step only starts Python and writes the report


def _fail_command(message: str, code: int = 3) -> list[str]:
    return [sys.executable, "-c", f"import sys; print({message!r}); sys.exit({code})"]


def test_failing_step_names_the_step_and_its_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runner = StepRunner(tmp_path, subprocess_environment({}), total=1)
    step = Step("broken", "a step that fails", _fail_command("boom: the cause"), tmp_path / "never")
    with pytest.raises(NnsslError, match=r"demo step 'broken' failed with exit code 3") as err:
        runner.run(step)
    log = tmp_path / "logs" / "01_broken.log"
    assert str(log) in str(err.value) and "boom: the cause" in log.read_text()
    assert "boom: the cause" in capsys.readouterr().err  # the log's last lines are shown too


def test_finished_step_is_reused_and_timings_are_recorded(tmp_path: Path) -> None:
    artefact = tmp_path / "result.txt"
    make = [sys.executable, "-c", f"open({str(artefact)!r}, 'w').write('x')"]
    runner = StepRunner(tmp_path, subprocess_environment({}), total=1)
    first = runner.run(Step("make", "writes the artefact", make, artefact))
    assert artefact.read_text() == "x" and not first.reused and first.seconds is not None

    again = StepRunner(tmp_path, subprocess_environment({}), total=1)  # a new demo process
    second = again.run(Step("make", "writes the artefact", _fail_command("must not run"), artefact))
    assert second.reused and second.seconds == first.seconds
    assert json.loads((tmp_path / STEPS_FILE).read_text())["steps"]["make"]["reused"] is True


def test_step_environment_overrides_and_removes_variables(tmp_path: Path) -> None:
    runner = StepRunner(tmp_path, {**subprocess_environment({}), "DEMO_A": "1", "DEMO_B": "1"}, total=1)
    out = tmp_path / "env.json"
    dump = [sys.executable, "-c", f"import json, os; json.dump(dict(os.environ), open({str(out)!r}, 'w'))"]
    runner.run(Step("env", "dumps its environment", dump, out, env={"DEMO_A": "2", "DEMO_B": None}))
    env = json.loads(out.read_text())
    assert env["DEMO_A"] == "2" and "DEMO_B" not in env


def test_trainer_folder_is_found_without_importing_the_trainers(tmp_path: Path) -> None:
    code = ("import sys; from nnssl.cli.demo_steps import subprocess_environment; "
            "env = subprocess_environment({'nnUNet_results': __import__('pathlib').Path('/r')}); "
            "print(env['nnUNet_extTrainer']); print(env['nnUNet_results']); "
            "print('nnssl_trainers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    ext, results, imported = out
    assert Path(ext).name == "ext" and Path(ext).parent.name == "nnssl_trainers" and Path(ext, "__init__.py").exists()
    assert results == "/r" and imported == "False"


def test_fresh_refuses_a_folder_the_demo_did_not_write(tmp_path: Path) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("keep me")
    with pytest.raises(NnsslError, match="does not look like a demo output"):
        demo.prepare_output(foreign, fresh=True)
    assert (foreign / "thesis.tex").is_file()

    previous = tmp_path / "demo_output"
    (previous / "logs").mkdir(parents=True)
    (previous / STEPS_FILE).write_text("{}")
    assert demo.prepare_output(previous, fresh=True) == previous.resolve()
    assert list(previous.iterdir()) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without a GPU")
def test_cuda_without_a_gpu_is_a_clear_error() -> None:
    with pytest.raises(NnsslError, match="--device cuda"):
        demo.resolve_device("cuda")
    assert demo.resolve_device("auto") == "cpu"


def test_until_stops_after_a_step_and_a_rerun_reuses_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "demo_output"
    args = ["-o", str(output), "--budget", "tiny", "--until", "nnssl_preprocess", "-np", "1", "--device", "cpu"]
    assert demo.main(args) == 0
    first = capsys.readouterr().out
    data = output / "nnssl_preprocessed" / "Dataset500_PhantomCTUnlabeled" / "nnsslPlans_3d"
    assert "[demo 3/13] nnssl_preprocess" in first and "[demo 4/13]" not in first
    assert len(list(data.glob("*.pkl"))) == demo.BUDGETS["tiny"].unlabeled_cases
    assert demo.main(args) == 0
    second = capsys.readouterr().out
    assert second.count("reusing") == 3 and "$ " not in second

    with pytest.raises(SystemExit) as exit_info:  # another budget in the same folder would mix datasets
        demo.main(["-o", str(output), "--budget", "demo", "--device", "cpu"])
    assert exit_info.value.code == 2
    assert "--budget tiny" in capsys.readouterr().err


def _write(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.0, 1.0, 2.0))
    sitk.WriteImage(image, str(path))


def _synthetic_outputs(root: Path) -> tuple[Path, Path, list[TrainerRun]]:
    """Raw test cases, two trainers' predictions with nnU-Net's summary.json, progress PNGs and a pretraining run."""
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder_simple

    raw = root / "raw"
    label = np.zeros(SHAPE, dtype=np.uint8)
    label[2:4, 5:9, 5:9] = 1  # 32 tumour voxels, most of them on slices 2 and 3
    label[4, 6, 6] = 1
    ct = np.full(SHAPE, -800, dtype=np.int16)
    for case in ("case_a", "case_b"):
        _write(ct, raw / "imagesTs" / f"{case}_0000.nii.gz")
        _write(label, raw / "labelsTs" / f"{case}.nii.gz")
    runs = []
    for role, prediction in (("pretrained", label), ("scratch", np.zeros_like(label))):
        run = TrainerRun(role, f"Trainer_{role}", root / role / "fold_0", root / "predictions" / role)
        for case in ("case_a", "case_b"):
            _write(prediction, run.predictions / f"{case}.nii.gz")
        compute_metrics_on_folder_simple(str(raw / "labelsTs"), str(run.predictions), [1],
                                         str(run.predictions / "summary.json"), num_processes=1)
        run.fold_folder.mkdir(parents=True)
        (run.fold_folder / "progress.png").write_bytes(b"\x89PNG fake")
        runs.append(run)
    pretraining = root / "pretraining"
    header = build_header({}, {}, {}, {}, (32, 32, 32), (8, 8, 8), 1)
    save_checkpoint({"format_version": FORMAT_VERSION, "header": header, "encoder_state_dict": {},
                     "history": {"epoch_loss": [2.0, 1.5, 1.0]}}, pretraining / CHECKPOINT_FINAL)
    for name in ("progress.png", "recon_epoch_001.png", "recon_epoch_002.png"):
        (pretraining / name).write_bytes(b"\x89PNG fake")
    return raw, pretraining, runs


def test_report_has_the_dice_table_figures_and_steps(tmp_path: Path) -> None:
    raw, pretraining, runs = _synthetic_outputs(tmp_path)
    records = [StepRecord("pretrain", "pretraining", "nnssl_pretrain -d 500", 12.5, True, str(tmp_path / "x.log"))]
    report = write_report(tmp_path, records, pretraining, runs, raw, ["case_a", "case_b"], {"budget": "test"})
    text = report.read_text()
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| case_")}
    assert set(rows) == {"case_a", "case_b"}
    for row in rows.values():
        cells = [c.strip() for c in row.split("|")[1:-1]]
        assert cells[1] == "33" and cells[2].startswith("1.000") and cells[3].startswith("0.000")
    mean = next(line for line in text.splitlines() if line.startswith("| **mean**"))
    assert "**1.000**" in mean and "**0.000**" in mean
    assert "2.000 → 1.500 → 1.000 (50% lower" in text
    assert "| pretrain (reused) | `nnssl_pretrain -d 500` | 12.5 |" in text
    assert "`Trainer_scratch` predict no tumour voxel" in text and "`Trainer_pretrained` predict" not in text
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(linked) == 2 + 1 + 2 + 2  # overlays, pretraining loss, two previews, two fine-tuning curves
    assert all((tmp_path / link).is_file() for link in linked)
    assert (tmp_path / "figures" / "overlay_case_a.png").read_bytes()[:4] == b"\x89PNG"


def test_case_scores_and_tumour_slice(tmp_path: Path) -> None:
    _, _, runs = _synthetic_outputs(tmp_path)
    scores, mean = read_case_scores(runs[1].predictions / "summary.json")
    assert mean == 0.0 and scores["case_a"].reference_voxels == 33 and scores["case_a"].predicted_voxels == 0
    empty = np.zeros(SHAPE, dtype=np.uint8)
    predicted = empty.copy()
    predicted[5, 0, 0] = 1
    assert tumour_slice(empty, [empty, predicted]) == 5  # no ground truth: the predicted tumour's slice
    assert tumour_slice(empty, [empty]) == SHAPE[0] // 2


@pytest.mark.slow
def test_tiny_demo_writes_the_report_and_a_rerun_reuses_every_step(tmp_path: Path) -> None:
    output = tmp_path / "demo_output"
    command = [str(Path(sys.executable).parent / "nnssl_demo"), "-o", str(output), "--budget", "tiny", "--device",
               "cpu", "-np", "1"]
    start = time.perf_counter()
    first = subprocess.run(command, capture_output=True, text=True, timeout=TINY_DEMO_TIMEOUT_S, cwd=tmp_path)
    first_seconds = time.perf_counter() - start
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert f"report: {output / 'report.md'}" in first.stdout
    text = (output / "report.md").read_text()
    budget = demo.BUDGETS["tiny"]
    for trainer in (budget.trainer, budget.scratch_trainer):
        assert f"Dice {'scratch' if 'scratch' in trainer else 'pretrained'} (`{trainer}`)" in text
    case_rows = [line for line in text.splitlines() if line.startswith("| phantom_test_")]
    assert len(case_rows) == budget.test_cases
    for row in case_rows:
        cells = [c.strip() for c in row.split("|")[1:-1]]
        assert len(cells) == 4 and all(re.match(r"(\d\.\d{3}|n/a)", c) for c in cells[2:])
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):
        assert (output / link).is_file(), link
    figures = {p.name for p in (output / "figures").glob("*.png")}
    assert {"pretrain_progress.png", "finetune_pretrained_progress.png", "finetune_scratch_progress.png"} <= figures
    assert any(name.startswith("overlay_phantom_test_") for name in figures)
    steps = json.loads((output / STEPS_FILE).read_text())["steps"]
    assert list(steps) == list(demo.STEP_NAMES[:-1]) and not any(s["reused"] for s in steps.values())

    start = time.perf_counter()
    second = subprocess.run(command, capture_output=True, text=True, timeout=TINY_DEMO_TIMEOUT_S, cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert time.perf_counter() - start < RERUN_FRACTION * first_seconds  # relative: robust to a busy machine
    assert second.stdout.count("reusing") == len(demo.STEP_NAMES) - 1 and "$ " not in second.stdout
