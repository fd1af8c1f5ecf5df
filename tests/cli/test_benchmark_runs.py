"""``nnssl_benchmark`` bookkeeping: dry run, resume (finished runs reused, killed runs continued), bad input; and one
slow end-to-end study with the real commands on a tiny phantom set.

The fast tests replace the subprocesses with :class:`FakeCommands`, which writes what each real command leaves on disk
(plans, preprocessed case files, a checkpoint, nnU-Net's ``validation/summary.json``) and records every call.
"""
from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnssl.cli.benchmark import (
    build_parser,
    config_from_args,
    default_jobs,
    main,
    run_benchmark,
    run_environment,
)
from nnssl.cli.benchmark_prepare import _matched_plans_current, pretraining_steps, resolve_pretraining
from nnssl.cli.benchmark_runs import RESULT_VERSION
from nnssl.cli.benchmark_study import STUDY_FILE
from nnssl.config.pretrained import file_sha256
from nnssl.errors import NnsslError
from nnssl.models.registry import build_encoder

LABELED, UNLABELED = "Dataset501_Tiny", "Dataset500_Unlabeled"
SHAPE = (8, 12, 12)
TUMOUR_SIDES = (0, 2, 3, 4, 5, 6, 7)  # one tumour-free case
TRAIN = "nnUNetv2_train"
PREDICT = "nnUNetv2_predict"
NNUNET_PATCH, GRID_PATCH = (8, 12, 12), (8, 16, 16)  # nnU-Net's plan; on the ViT's 8-voxel token grid
E2E_BUDGET_S = 900  # hang guard, not a speed target: a loaded 2-core machine is slow


def _write(array: np.ndarray, path: Path, spacing: tuple[float, float, float] = (2.0, 1.0, 1.0)) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing[::-1])
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))


@pytest.fixture
def datasets(nnssl_env: dict[str, Path]) -> dict[str, Path]:
    """A labeled nnU-Net raw dataset (7 cases, tumour cubes of growing size) and an unlabeled nnssl one."""
    rng = np.random.default_rng(0)
    raw = nnssl_env["nnUNet_raw"] / LABELED
    for i, side in enumerate(TUMOUR_SIDES):
        label = np.zeros(SHAPE, np.uint8)
        label[2:2 + min(side, 5), 2:2 + side, 2:2 + side] = 1
        _write(rng.normal(0, 100, SHAPE).astype(np.int16), raw / "imagesTr" / f"c{i}_0000.nii.gz")
        _write(label, raw / "labelsTr" / f"c{i}.nii.gz")
    (raw / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0,
                                                  "tumour": 1}, "numTraining": len(TUMOUR_SIDES),
                                                  "file_ending": ".nii.gz"}))
    pre = nnssl_env["nnssl_raw"] / UNLABELED
    _write(rng.normal(0, 100, SHAPE).astype(np.int16), pre / "imagesTr" / "u0_0000.nii.gz")
    (pre / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "file_ending": ".nii.gz",
                                                  "numTraining": 1}))
    return {**nnssl_env, "raw": raw}


def _plans(patch: tuple[int, ...], **extra: object) -> dict:
    return {"configurations": {"3d_fullres": {"patch_size": list(patch), **extra}}}


class FakeCommands:
    """Stands in for the console commands; ``kill`` makes the n-th training call die after a first checkpoint."""

    def __init__(self, folders: dict[str, Path], kill: int | None = None) -> None:
        self.folders = folders
        self.kill = kill
        self.calls: list[list[str]] = []
        self.lock = threading.Lock()  # concurrent runs (--jobs) call this from several threads

    @property
    def train_calls(self) -> list[list[str]]:
        return [c for c in self.calls if c[0] == TRAIN]

    def __call__(self, command: Sequence[str], env: Mapping[str, str], log: Path) -> float:
        with self.lock:
            self.calls.append(list(command))
            number = len(self.train_calls)  # this call's place among the training calls
        name = command[0]
        pre = Path(env["nnUNet_preprocessed"]) / LABELED
        ids = [p.name.removesuffix(".nii.gz") for p in (self.folders["raw"] / "labelsTr").iterdir()]
        if name == "nnssl_plan_and_preprocess":
            self._cases(self.folders["nnssl_preprocessed"] / UNLABELED / "nnsslPlans_3d", ["u0"])
            (self.folders["nnssl_preprocessed"] / UNLABELED / "nnsslPlans.json").write_text("{}")
        elif name == "nnssl_pretrain":
            options = dict(zip(command[1::2], command[2::2], strict=False))  # what nnssl_pretrain saves
            run = self.folders["nnssl_results"] / UNLABELED / f"{options['-m']}__vit_tiny__nnsslPlans"
            run.mkdir(parents=True, exist_ok=True)
            (run / "checkpoint_final.pth").write_bytes(b"weights")
            after = command[command.index("--method-kwargs") + 1:] if "--method-kwargs" in command else []
            kwargs = list(itertools.takewhile(lambda arg: "=" in arg, after))
            saved = {"epochs": int(options["--epochs"]), "iters_per_epoch": int(options["--iters-per-epoch"]),
                     "batch_size": int(options["--batch-size"]), "accumulate": 1,
                     "lr": float(options.get("--lr", 1e-4)), "method_kwargs": dict(kv.split("=") for kv in kwargs)}
            (run / "pretrain_config.json").write_text(json.dumps(saved))
        elif name == "nnUNetv2_plan_and_preprocess":
            self._cases(pre / "nnUNetPlans_3d_fullres", ids)
            (pre / "nnUNetPlans.json").write_text(json.dumps(_plans(NNUNET_PATCH)))
            for i in ids:
                _write(sitk.GetArrayFromImage(sitk.ReadImage(str(self.folders["raw"] / "labelsTr" / f"{i}.nii.gz"))),
                       pre / "gt_segmentations" / f"{i}.nii.gz")
        elif name == "nnssl_transfer_plans":
            from nnssl.config.pretrained import file_sha256

            checkpoint = Path(command[command.index("--checkpoint") + 1])
            assert command[command.index("--patch-size") + 1:][:3] == [str(v) for v in NNUNET_PATCH]
            block = {"checkpoint": str(checkpoint.resolve()), "sha256": file_sha256(checkpoint),
                     "encoder": build_encoder("vit_tiny", 1, GRID_PATCH).config()}
            (pre / "nnsslPlans.json").write_text(json.dumps(_plans(GRID_PATCH, pretrained=block)))
            self._cases(pre / "nnsslPlans_3d_fullres", ids)
        elif name == TRAIN:
            self._train(command, env, number)
        elif name == PREDICT:  # the no-TTA prediction: perfect as well
            output = Path(command[command.index("-o") + 1])
            for image in Path(command[command.index("-i") + 1]).iterdir():
                case = image.name.removesuffix("_0000.nii.gz")
                reference = Path(env["nnUNet_preprocessed"]) / LABELED / "gt_segmentations" / f"{case}.nii.gz"
                _write(sitk.GetArrayFromImage(sitk.ReadImage(str(reference))), output / f"{case}.nii.gz")
        return 1.0

    @staticmethod
    def _cases(folder: Path, ids: list[str]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for i in ids:
            for suffix in (".b2nd", "_seg.b2nd", ".pkl"):
                (folder / f"{i}{suffix}").write_bytes(b"")

    def _train(self, command: Sequence[str], env: Mapping[str, str], number: int) -> None:
        trainer, plans = command[command.index("-tr") + 1], command[command.index("-p") + 1]
        split = json.loads((Path(env["nnUNet_preprocessed"]) / LABELED / "splits_final.json").read_text())
        assert len(split) == 1 and not set(split[0]["train"]) & set(split[0]["val"])
        model = Path(env["nnUNet_results"]) / LABELED / f"{trainer}__{plans}__3d_fullres"
        fold = model / "fold_0"
        fold.mkdir(parents=True, exist_ok=True)
        (fold / "checkpoint_latest.pth").write_bytes(b"")
        if self.kill is not None and number == self.kill:
            raise NnsslError("killed")
        # earlier runs end later, so the results' order must not come from completion order
        time.sleep(max(0.0, 0.05 * (6 - number)) if self.kill is None else 0.0)
        (model / "plans.json").write_text(json.dumps(_plans(GRID_PATCH if plans == "nnsslPlans" else NNUNET_PATCH)))
        (fold / "checkpoint_final.pth").write_bytes(b"")
        entries = []
        for case in split[0]["val"]:  # a perfect prediction: the reference itself
            reference = Path(env["nnUNet_preprocessed"]) / LABELED / "gt_segmentations" / f"{case}.nii.gz"
            prediction = fold / "validation" / f"{case}.nii.gz"
            _write(sitk.GetArrayFromImage(sitk.ReadImage(str(reference))), prediction)
            dice = 1.0 if sitk.GetArrayFromImage(sitk.ReadImage(str(reference))).any() else float("nan")
            entries.append({"prediction_file": str(prediction), "reference_file": str(reference),
                            "metrics": {"1": {"Dice": dice}}})
        (fold / "validation" / "summary.json").write_text(json.dumps({"metric_per_case": entries}))


def _config(output: Path, *extra: str):
    args = build_parser().parse_args(["-d", "501", "-pd", "500", "--labels", "2", "all", "--folds", "0",
                                      "--budget", "tiny", "--holdout", "2", "--device", "cpu", "--jobs", "1",
                                      "--output", str(output), *extra])
    return config_from_args(args)


def test_dry_run_prints_plan_and_cost_and_writes_nothing(datasets: dict[str, Path], tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "bench"
    assert main(["-d", "501", "-pd", "500", "--labels", "2", "all", "--folds", "0", "1", "--budget", "tiny",
                 "--holdout", "2", "--output", str(output), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "held-out: 2 cases" in out and "pretraining saw held-out images: no" in out
    for expected in ("run   `nnssl_plan_and_preprocess -d Dataset500_Unlabeled", "run   `nnssl_pretrain",
                     "run   `nnUNetv2_plan_and_preprocess -d 501 -c 3d_fullres", "run   `nnssl_transfer_plans -d 501"):
        assert expected in out
    assert "runs (12 = 2 label counts x 2 repeats x 3 trainers" in out and "status: 12 todo" in out
    assert "SSLViTTrainer_scratch_tiny" in out and "nnsslUNetTrainer_tiny" in out and "estimated cost:" in out
    assert "fine-tuning patch: not planned yet" in out and "(known once nnU-Net has planned)" in out
    assert not output.exists()


def test_finished_runs_are_reused(datasets: dict[str, Path], tmp_path: Path) -> None:
    fake = FakeCommands(datasets)
    config = _config(tmp_path / "bench")
    report = run_benchmark(config, execute=fake)
    assert [c[0] for c in fake.calls[:4]] == ["nnssl_plan_and_preprocess", "nnssl_pretrain",
                                              "nnUNetv2_plan_and_preprocess", "nnssl_transfer_plans"]
    assert len(fake.train_calls) == 6 and not any("--c" in c or "--val" in c for c in fake.train_calls)
    predictions = [c for c in fake.calls if c[0] == PREDICT]
    assert len(predictions) == 6 and all("--disable_tta" in c and "checkpoint_final.pth" in c for c in predictions)
    results = json.loads((report.parent / "results.json").read_text())
    heldout = json.loads((report.parent / STUDY_FILE).read_text())["heldout"]
    for run in results["runs"]:
        assert not set(run["train_cases"]) & set(heldout) and sorted(run["metrics"]["per_case"]) == heldout
        assert run["metrics"]["mean"]["Dice"] == 1.0 or run["metrics"]["cases_scored"]["Dice"] == 0
        assert run["metrics_no_tta"]["mean"]["Dice"] == run["metrics"]["mean"]["Dice"]  # both perfect here
        assert sorted(run["metrics_no_tta"]["per_case"]) == heldout
    assert "| SSLViTTrainer |" in report.read_text()

    again = FakeCommands(datasets)
    run_benchmark(config, execute=again)
    assert again.calls == []  # every step and run reused


def test_reused_pretraining_with_other_settings_is_flagged(datasets: dict[str, Path], tmp_path: Path) -> None:
    config = _config(tmp_path / "bench")
    run_benchmark(config, execute=FakeCommands(datasets))
    target = resolve_pretraining(config)
    [step] = pretraining_steps(config, target)
    assert step.command is None and "reusing" in step.note and "WARNING" not in step.note
    saved = json.loads((target.run_folder / "pretrain_config.json").read_text())
    (target.run_folder / "pretrain_config.json").write_text(json.dumps({**saved, "epochs": saved["epochs"] + 7}))
    [step] = pretraining_steps(config, target)
    assert step.command is None
    assert f"epochs {saved['epochs'] + 7} vs {saved['epochs']}" in step.note and str(target.run_folder) in step.note
    (target.run_folder / "pretrain_config.json").write_text("{truncated")
    [step] = pretraining_steps(config, target)
    assert step.command is None and "settings are unknown" in step.note


def test_killed_run_continues_and_others_are_kept(datasets: dict[str, Path], tmp_path: Path) -> None:
    config = _config(tmp_path / "bench")
    killed = FakeCommands(datasets, kill=2)
    with pytest.raises(NnsslError, match="killed"):
        run_benchmark(config, execute=killed)
    assert len(killed.train_calls) == 2 and len(list((tmp_path / "bench" / "runs").glob("*.json"))) == 1

    resumed = FakeCommands(datasets)
    run_benchmark(config, execute=resumed)
    assert [c[0] for c in resumed.calls] == [TRAIN, PREDICT] * 5  # preparation reused, first run reused
    assert resumed.train_calls[0] == [*killed.train_calls[1], "--c"]
    assert not any("--c" in c for c in resumed.train_calls[1:])


def test_concurrent_runs_give_the_serial_results_and_a_failure_starts_nothing_new(datasets: dict[str, Path],
                                                                                  tmp_path: Path) -> None:
    serial = run_benchmark(_config(tmp_path / "serial"), execute=FakeCommands(datasets))
    parallel = run_benchmark(_config(tmp_path / "parallel", "--jobs", "3"), execute=FakeCommands(datasets))
    runs = [json.loads((r.parent / "results.json").read_text())["runs"] for r in (serial, parallel)]
    assert [r["run"] for r in runs[0]] == [r["run"] for r in runs[1]]  # report order does not depend on --jobs
    assert [r["metrics"]["mean"] for r in runs[0]] == [r["metrics"]["mean"] for r in runs[1]]

    killed = FakeCommands(datasets, kill=1)
    with pytest.raises(NnsslError, match="killed"):
        run_benchmark(_config(tmp_path / "killed", "--jobs", "2"), execute=killed)
    assert len(killed.train_calls) <= 3  # the failed run, the one beside it, at most one started meanwhile; not 6
    resumed = FakeCommands(datasets)
    run_benchmark(_config(tmp_path / "killed", "--jobs", "2"), execute=resumed)
    kept = len(killed.train_calls) - 1
    assert len(resumed.train_calls) == 6 - kept and sum("--c" in c for c in resumed.train_calls) == 1


def test_concurrent_runs_share_threads_and_workers_unless_the_user_set_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("nnssl.cli.benchmark.usable_cpus", lambda: 4)
    for variable in ("OMP_NUM_THREADS", "nnUNet_n_proc_DA", "nnUNet_def_n_proc"):
        monkeypatch.delenv(variable, raising=False)
    env = run_environment({"nnUNet_n_proc_DA": "4", "PATH": "/bin"}, jobs=2, num_processes=4)
    assert env["OMP_NUM_THREADS"] == "2" and env["nnUNet_n_proc_DA"] == "2" and env["PATH"] == "/bin"
    assert run_environment({}, jobs=4, num_processes=2)["nnUNet_n_proc_DA"] == "1"  # never 0: nnU-Net crashes
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.setenv("nnUNet_n_proc_DA", "5")
    env = run_environment({"OMP_NUM_THREADS": "3", "nnUNet_n_proc_DA": "5"}, jobs=2, num_processes=4)
    assert env["OMP_NUM_THREADS"] == "3" and env["nnUNet_n_proc_DA"] == "5"


def test_jobs_default_to_the_cores_on_cpu_and_one_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("nnssl.cli.benchmark.usable_cpus", lambda: 2)
    assert default_jobs("cpu") == 2 and default_jobs("cuda") == 1
    monkeypatch.setattr("nnssl.cli.benchmark.usable_cpus", lambda: 64)
    assert default_jobs("cpu") == 4
    with pytest.raises(NnsslError, match="--jobs must be at least 1"):
        config_from_args(build_parser().parse_args(["-d", "501", "-pd", "500", "--jobs", "0", "--device", "cpu"]))


def test_trained_runs_are_only_scored_and_rescored_at_a_new_tolerance(datasets: dict[str, Path],
                                                                       tmp_path: Path) -> None:
    config = _config(tmp_path / "bench")
    run_benchmark(config, execute=FakeCommands(datasets))
    first, second = sorted((tmp_path / "bench" / "runs").glob("*.json"))[:2]
    first.unlink()  # killed between nnU-Net's validation and our result file
    second.write_text(json.dumps({**json.loads(second.read_text()), "version": 1}))  # an older nnssl wrote it
    later = FakeCommands(datasets)
    run_benchmark(_config(tmp_path / "bench", "--nsd-tolerance", "1.5"), execute=later)
    assert later.calls == []
    results = [json.loads(p.read_text()) for p in (tmp_path / "bench" / "runs").iterdir()]
    assert all(r["nsd_tolerance_mm"] == 1.5 and r["version"] == RESULT_VERSION for r in results)
    assert all(r["metrics"]["empty_predictions"] == sum(not c["predicted_voxels"] for c in
                                                        r["metrics"]["per_case"].values()) for r in results)


def test_unfinished_validation_reruns_only_the_validation(datasets: dict[str, Path], tmp_path: Path) -> None:
    config = _config(tmp_path / "bench", "--trainers", "nnUNetTrainer")
    run_benchmark(config, execute=FakeCommands(datasets))
    for result in (tmp_path / "bench" / "runs").iterdir():
        summary = Path(json.loads(result.read_text())["model_folder"]) / "validation" / "summary.json"
        summary.unlink()
        result.unlink()
    again = FakeCommands(datasets)
    run_benchmark(config, execute=again)
    assert len(again.train_calls) == 2 and all(c[-1] == "--val" for c in again.train_calls)


def test_bad_input_is_refused(datasets: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(NnsslError, match="did you mean 'SSLViTTrainer'"):
        _config(tmp_path, "--trainers", "SSLVitTrainer")
    with pytest.raises(NnsslError, match="unknown budget 'shrot'; did you mean 'short'"):
        _config(tmp_path, "--budget", "shrot")
    with pytest.raises(NnsslError, match="exceeds the 5 training cases"):
        run_benchmark(_config(tmp_path / "b", "--labels", "6"), dry_run=True)
    with pytest.raises(NnsslError, match="no pretraining dataset '499'"):
        run_benchmark(config_from_args(build_parser().parse_args(["-d", "501", "-pd", "499"])), dry_run=True)
    run_benchmark(_config(tmp_path / "b"), execute=FakeCommands(datasets))
    with pytest.raises(NnsslError, match="belongs to another study: budget 'tiny' .asked: 'short'"):
        run_benchmark(_config(tmp_path / "b", "--budget", "short"), dry_run=True)
    with pytest.raises(SystemExit) as exit_info:
        main(["-d", "501", "-pd", "500", "--labels", "zero", "--dry-run"])
    assert exit_info.value.code == 2


@pytest.mark.slow
def test_tiny_study_end_to_end_with_the_real_commands(nnssl_env: dict[str, Path], tmp_path: Path) -> None:
    """Phantoms -> the whole study at the tiny budget through the console scripts, then a rerun that reuses all."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "nnUNet_n_proc_DA": "1", "nnUNet_def_n_proc": "1", "OMP_NUM_THREADS": "1", "nnUNet_compile": "false"}
    small = ["--shape", "16", "32", "32", "--spacing", "4", "3", "-np", "1"]
    for kind, count, dataset in (("--unlabeled", "3", "500"), ("--labeled", "5", "501")):
        subprocess.run(["nnssl_make_phantoms", kind, count, "-d", dataset, *small], env=env, check=True,
                       capture_output=True)
    output = tmp_path / "bench"
    command = ["nnssl_benchmark", "-d", "501", "-pd", "500", "--labels", "2", "--folds", "0", "--budget", "tiny",
               "--holdout", "2", "--device", "cpu", "-np", "1", "--output", str(output)]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=E2E_BUDGET_S)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((output / "results.json").read_text())
    assert sorted(r["trainer"] for r in results["runs"]) == ["SSLViTTrainer", "SSLViTTrainer_scratch",
                                                             "nnUNetTrainer"]
    for run in results["runs"]:
        assert sorted(run["metrics"]["per_case"]) == results["study"]["heldout"] and len(run["train_cases"]) == 2
    report = (output / "report.md").read_text()
    assert "Pretraining saw the held-out images: **no" in report and (output / "label_efficiency.png").is_file()
    logs = [log for log in (output / "logs").glob("k002_r0__*.log") if not log.name.endswith("__no_tta.log")]
    assert len(logs) == 3 and all(log.read_text().count(f"$ {TRAIN}") == 1 for log in logs)
    no_tta = list((output / "logs").glob("k002_r0__*__no_tta.log"))
    assert len(no_tta) == 3 and all(log.read_text().count(f"$ {PREDICT}") == 1 for log in no_tta)
    for run in results["runs"]:
        assert run["compute"]["steps"] == 4 and run["compute"]["flops_per_step"] > 0  # the trainers' compute.json
        assert sorted(run["metrics_no_tta"]["per_case"]) == results["study"]["heldout"]
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=E2E_BUDGET_S)
    assert rerun.returncode == 0 and "reusing the finished pretraining" in rerun.stdout
    assert all(log.read_text().count(f"$ {TRAIN}") == 1 for log in logs)  # nothing retrained
    print(f"tiny study: {time.perf_counter() - start:.0f} s including the rerun")


def test_a_step_that_leaves_no_output_is_reported(datasets: dict[str, Path], tmp_path: Path) -> None:
    def pretrain_writes_nothing(command: Sequence[str], env: Mapping[str, str], log: Path) -> float:
        if command[0] != "nnssl_pretrain":
            return FakeCommands(datasets)(command, env, log)
        return 0.0

    with pytest.raises(NnsslError, match="pretraining: `nnssl_pretrain .*` finished but its output is incomplete"):
        run_benchmark(_config(tmp_path / "bench"), execute=pretrain_writes_nothing)


def test_matched_plans_capped_at_the_median_image_count_as_current(tmp_path: Path) -> None:
    """nnssl_transfer_plans caps the patch at the median image shape (on the grid): Sarcoma CT asked 56x192x192 and
    got 56x184x192 (median 59x184x186); that must be reused, not reported as an incomplete step."""
    checkpoint = tmp_path / "checkpoint_final.pth"
    checkpoint.write_bytes(b"weights")
    block = {"checkpoint": str(checkpoint), "sha256": file_sha256(checkpoint),
             "encoder": build_encoder("vit_tiny", 1, GRID_PATCH).config()}
    conf = {"patch_size": [56, 184, 192], "median_image_size_in_voxels": [59, 184, 186], "pretrained": block}
    (tmp_path / "nnsslPlans.json").write_text(json.dumps({"configurations": {"3d_fullres": conf}}))
    assert _matched_plans_current(tmp_path, checkpoint, [], [56, 192, 192])
    assert not _matched_plans_current(tmp_path, checkpoint, [], [56, 160, 192])  # nnU-Net planned another patch
    conf.pop("median_image_size_in_voxels")
    (tmp_path / "nnsslPlans.json").write_text(json.dumps({"configurations": {"3d_fullres": conf}}))
    assert not _matched_plans_current(tmp_path, checkpoint, [], [56, 192, 192])  # no median: no cap to explain 184
