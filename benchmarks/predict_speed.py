"""Time ``nnUNetv2_predict`` with ``SSLViTTrainer`` against nnU-Net's default ``nnUNetTrainer`` on the same case.

Both models are set up on the same phantom dataset and the same ``nnUNetPlans`` (the ViT rounds the patch to its
8-voxel grid), and both predictions run in this one call, as subprocesses typed as a user types them (sliding window,
mirroring TTA, fold 0, one export worker). Weights are untrained: inference time does not depend on their values, so
no training is spent here. Prints a table and the ratio (goal: SSLViTTrainer <= 0.5x nnUNetTrainer) and writes
``benchmark_output/predict_speed.json``.

    .venv/bin/python benchmarks/predict_speed.py                      # CPU or the GPU if present, primus_s
    .venv/bin/python benchmarks/predict_speed.py --encoder primus_b --shape 96 160 160 --repeats 3
    .venv/bin/python benchmarks/predict_speed.py --shape 96 224 224 --repeats 0 --diagnose  # networks only, ~3 min

Wall time includes process start-up (identical for both); CPU time (user + system of the command and its workers)
is reported too and is the steadier number on a shared machine. The network's own forward pass on one patch
(nnU-Net's protocol: fp32 on CPU, fp16 autocast on CUDA; best of 3 alternating runs) is the architecture-level ratio.
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import nnssl_trainers.ext
from nnssl.config.enums import Normalization
from nnssl.config.plans import IntensityStats, Plans, write_json_atomic
from nnssl.config.pretrained import PretrainedBlock, file_sha256, write_link
from nnssl.data.phantoms import SpacingRange, write_phantom_dataset
from nnssl.models.registry import build_encoder
from nnssl.training.checkpoint import CHECKPOINT_FINAL, FORMAT_VERSION, build_header, save_checkpoint

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DEFAULT_OUTPUT = REPO / "benchmark_output" / "predict_speed.json"
DATASET_ID, DATASET_NAME = 953, "PhantomPredictBench"
NUM_TRAIN, NUM_TEST = 5, 1  # nnU-Net plans need a few cases; one case is predicted
DEFAULT_SHAPE = (64, 128, 128)  # voxels (Z, Y, X) of each phantom
SPACING_MM = (2.0, 1.0, 1.0)
PRETRAIN_PATCH = (64, 64, 64)  # of the stand-in pretraining checkpoint; the trainer interpolates its pos-embed
TRAINERS = ("nnUNetTrainer", "SSLViTTrainer")
GOAL_RATIO = 0.5
SEED = 0
# nnunetv2 2.8.1 crashes with nnUNet_n_proc_DA=0; prediction itself uses -npp/-nps.
QUIET_ENV = {"nnUNet_n_proc_DA": "1", "nnUNet_def_n_proc": "2"}
STAND_IN_STATS = IntensityStats(mean=-350.0, std=420.0, median=-200.0, percentile_00_5=-1000.0,
                                percentile_99_5=700.0, min=-1024.0, max=1800.0)


def setup_environment(root: Path) -> dict[str, str]:
    """nnU-Net / nnssl folders under ``root``, exported into this process and returned for the subprocesses."""
    env = dict(os.environ)
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnssl_raw", "nnssl_preprocessed",
                "nnssl_results"):
        (root / var).mkdir(parents=True, exist_ok=True)
        env[var] = str(root / var)
    env |= QUIET_ENV | {"nnUNet_extTrainer": nnssl_trainers.ext.FOLDER,
                        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}"}
    os.environ.update(env)
    return env


def prepare_dataset(root: Path, shape: tuple[int, int, int]) -> Path:
    """Phantoms + nnU-Net's own fingerprint, plans and preprocessing (3d_fullres)."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprints, plan_experiments, preprocess

    raw = root / "nnUNet_raw" / f"Dataset{DATASET_ID}_{DATASET_NAME}"
    spacing = SpacingRange(slice_mm=(SPACING_MM[0],) * 2, inplane_mm=(SPACING_MM[1],) * 2)
    write_phantom_dataset(raw, NUM_TRAIN, True, SEED, num_test=NUM_TEST, num_processes=2, shape=shape,
                          spacing=spacing, progress=False)
    extract_fingerprints([DATASET_ID], num_processes=2, verbose=False)
    plan_experiments([DATASET_ID])
    preprocess([DATASET_ID], configurations=("3d_fullres",), num_processes=[2], show_progress_bar=False)
    return raw


def link_stand_in_pretraining(root: Path, encoder: str) -> Path:
    """An untrained ``encoder`` saved through nnssl's checkpoint API and linked to the dataset, as
    ``nnssl_transfer_plans`` would link a real pretraining."""
    module = build_encoder(encoder, 1, PRETRAIN_PATCH)
    plans = Plans(dataset_name="Dataset000_StandIn", spacing=SPACING_MM, normalization=Normalization.CT,
                  intensity_stats=STAND_IN_STATS, patch_size=PRETRAIN_PATCH, downstream_patch_size=PRETRAIN_PATCH,
                  median_shape=PRETRAIN_PATCH, original_median_spacing=SPACING_MM)
    header = build_header({"name": "none", "class": "untrained", "kwargs": {}}, module.config(), plans.to_dict(),
                          module.transfer.to_dict(), PRETRAIN_PATCH, module.token_size, 1)
    path = root / "nnssl_results" / CHECKPOINT_FINAL
    save_checkpoint({"format_version": FORMAT_VERSION, "header": header, "encoder_state_dict": module.state_dict()},
                    path)
    block = PretrainedBlock.from_header(header, path, file_sha256(path))
    write_link(root / "nnUNet_preprocessed" / f"Dataset{DATASET_ID}_{DATASET_NAME}", block)
    return path


def write_model_folder(trainer_name: str) -> dict:
    """``<results>/<trainer>__nnUNetPlans__3d_fullres/`` with plans, dataset.json and fold_0's final checkpoint."""
    from nnunetv2.run.run_training import get_trainer_from_args

    trainer = get_trainer_from_args(str(DATASET_ID), "3d_fullres", 0, trainer_name, "nnUNetPlans",
                                    device=torch.device("cpu"))
    trainer.initialize()
    trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()  # sets the TTA mirror axes
    base = Path(trainer.output_folder_base)
    write_json_atomic(trainer.plans_manager.plans, base / "plans.json")
    write_json_atomic(trainer.dataset_json, base / "dataset.json")
    trainer.save_checkpoint(str(Path(trainer.output_folder) / CHECKPOINT_FINAL))
    network = trainer.network
    return {"trainer": trainer_name, "network": type(network).__name__,
            "parameters": sum(p.numel() for p in network.parameters()),
            "patch_size": list(trainer.configuration_manager.patch_size)}


def time_predict(trainer_name: str, raw: Path, out: Path, device: str, env: dict[str, str]) -> dict:
    command = ["nnUNetv2_predict", "-i", str(raw / "imagesTs"), "-o", str(out), "-d", str(DATASET_ID), "-c",
               "3d_fullres", "-tr", trainer_name, "-f", "0", "-device", device, "-npp", "1", "-nps", "1"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{(result.stdout + result.stderr)[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"command": " ".join(command), "wall_s": round(wall, 2), "cpu_s": round(cpu, 2)}


def load_predictor(root: Path, trainer_name: str, device: str):
    """nnU-Net's predictor for the trainer's fold-0 model, as ``nnUNetv2_predict`` sets it up."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(device=torch.device(device), perform_everything_on_device=device == "cuda",
                                allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(model_folder(root, trainer_name)), use_folds=(0,))
    return predictor


def load_networks(root: Path, device: str) -> dict[str, tuple[torch.nn.Module, tuple[int, ...]]]:
    """Each trainer's network on ``device`` in eval mode, with its patch size."""
    out = {}
    for name in TRAINERS:
        predictor = load_predictor(root, name, device)
        out[name] = (predictor.network.to(device).eval(), tuple(predictor.configuration_manager.patch_size))
    return out


def time_forward(networks: dict[str, tuple[torch.nn.Module, tuple[int, ...]]], device: str,
                 repeats: int = 3) -> dict[str, dict]:
    """Each network on one random patch as nnU-Net's predictor runs it; best of ``repeats`` alternating runs."""
    nets = {name: net for name, (net, _) in networks.items()}
    patches = {name: patch for name, (_, patch) in networks.items()}
    times: dict[str, list[float]] = {name: [] for name in TRAINERS}
    with torch.inference_mode(), torch.autocast(device, enabled=device == "cuda"):
        for repeat in range(repeats + 1):  # the first round warms up (allocator, cuDNN autotune)
            for name, net in nets.items():
                x = torch.randn(1, 1, *patches[name], device=device)
                start = time.perf_counter()
                net(x)
                if device == "cuda":
                    torch.cuda.synchronize()
                if repeat:
                    times[name].append(time.perf_counter() - start)
    return {name: {"best_s": round(min(t), 4), "runs_s": [round(v, 4) for v in t], "patch_size": list(patches[name])}
            for name, t in times.items()}


def forward_diagnostics(networks: dict[str, tuple[torch.nn.Module, tuple[int, ...]]], device: str) -> dict:
    """Where the ViT's time goes and what lower precision would do (CPU): bf16-autocast forward of both networks
    (best of 2) and the attention share of the ViT's fp32 forward (torch.profiler, self CPU time)."""
    from torch.profiler import ProfilerActivity, profile

    out: dict = {}
    for name, (net, patch) in networks.items():
        x = torch.randn(1, 1, *patch, device=device)
        with torch.inference_mode():
            times = []
            with torch.autocast(device, dtype=torch.bfloat16):
                for _ in range(3):  # the first warms up
                    start = time.perf_counter()
                    net(x)
                    times.append(time.perf_counter() - start)
            out[name] = {"bf16_autocast_s": round(min(times[1:]), 4)}
            if name == "SSLViTTrainer":
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    net(x)
                events = prof.key_averages()
                total = sum(e.self_cpu_time_total for e in events)
                attention = sum(e.self_cpu_time_total for e in events if "scaled_dot_product" in e.key)
                out["vit_attention_share"] = round(attention / total, 3)
    out["ratio_bf16_autocast"] = round(out["SSLViTTrainer"]["bf16_autocast_s"] /
                                       out["nnUNetTrainer"]["bf16_autocast_s"], 3)
    return out


def model_folder(root: Path, trainer_name: str) -> Path:
    return root / "nnUNet_results" / f"Dataset{DATASET_ID}_{DATASET_NAME}" / f"{trainer_name}__nnUNetPlans__3d_fullres"


def time_sliding_window(trainer_name: str, root: Path, device: str) -> dict:
    """In process: nnU-Net's predictor on the preprocessed test-sized case (sliding window + mirroring TTA only,
    no start-up, no resampling or export): the network's share of the command's time."""
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2

    predictor = load_predictor(root, trainer_name, device)
    dataset = nnUNetDatasetBlosc2(str(root / "nnUNet_preprocessed" / f"Dataset{DATASET_ID}_{DATASET_NAME}" /
                                      "nnUNetPlans_3d_fullres"))
    data = torch.from_numpy(dataset.load_case(dataset.identifiers[0])[0][:])  # (C, Z, Y, X)
    if device == "cuda":
        predictor.predict_sliding_window_return_logits(data)  # warm-up (cuDNN autotune, allocator)
        torch.cuda.synchronize()
    cpu_start, start = time.process_time(), time.perf_counter()
    predictor.predict_sliding_window_return_logits(data)
    if device == "cuda":
        torch.cuda.synchronize()
    return {"wall_s": round(time.perf_counter() - start, 3), "cpu_s": round(time.process_time() - cpu_start, 3),
            "case_shape": list(data.shape[1:])}


def _num(value: float | None, width: int, digits: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="primus_s", help="ViT encoder of SSLViTTrainer (default %(default)s)")
    parser.add_argument("--shape", type=int, nargs=3, default=list(DEFAULT_SHAPE), metavar=("Z", "Y", "X"))
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--repeats", type=int, default=1,
                        help="alternating command runs per trainer, the median counts; 0: network timings only")
    parser.add_argument("--diagnose", action="store_true",
                        help="also: bf16-autocast forward of both networks and the ViT's attention share")
    parser.add_argument("--no-sliding-window", action="store_true",
                        help="skip the in-process sliding-window timing (halves the run; the command is still timed)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep data and models here (default: temp)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    if args.repeats < 0:
        parser.error("--repeats must be 0 or more")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    with tempfile.TemporaryDirectory(prefix="nnssl_predict_speed_") as tmp:
        root = args.workdir or Path(tmp)
        env = setup_environment(root)
        raw = prepare_dataset(root, tuple(args.shape))
        link_stand_in_pretraining(root, args.encoder)
        models = {name: write_model_folder(name) for name in TRAINERS}
        runs: dict[str, list[dict]] = {name: [] for name in TRAINERS}
        windows: dict[str, list[dict]] = {name: [] for name in TRAINERS}
        for repeat in range(args.repeats):
            order = TRAINERS if repeat % 2 == 0 else TRAINERS[::-1]
            for name in order:
                runs[name].append(time_predict(name, raw, root / f"pred_{name}_{repeat}", device, env))
                if not args.no_sliding_window:
                    windows[name].append(time_sliding_window(name, root, device))
        networks = load_networks(root, device)
        forward = time_forward(networks, device)
        diagnostics = forward_diagnostics(networks, device) if args.diagnose else None
    wall = {n: statistics.median(r["wall_s"] for r in runs[n]) if runs[n] else None for n in TRAINERS}
    cpu = {n: statistics.median(r["cpu_s"] for r in runs[n]) if runs[n] else None for n in TRAINERS}
    ratio_wall = wall["SSLViTTrainer"] / wall["nnUNetTrainer"] if runs["nnUNetTrainer"] else None
    ratio_cpu = cpu["SSLViTTrainer"] / cpu["nnUNetTrainer"] if runs["nnUNetTrainer"] else None
    net = {n: statistics.median(w["wall_s"] for w in windows[n]) if windows[n] else None for n in TRAINERS}
    ratio_net = net["SSLViTTrainer"] / net["nnUNetTrainer"] if windows["nnUNetTrainer"] else None
    ratio_forward = forward["SSLViTTrainer"]["best_s"] / forward["nnUNetTrainer"]["best_s"]
    print(f"\nnnUNetv2_predict, 1 case {tuple(args.shape)} voxels, device {device}, encoder {args.encoder}, "
          f"{args.repeats} run(s) each")
    print(f"{'trainer':<16}{'network':<15}{'params (M)':>11}{'patch':>17}{'command wall s':>16}{'cpu s':>8}"
          f"{'sliding window s':>18}{'forward s':>11}")
    for name in TRAINERS:
        m = models[name]
        print(f"{name:<16}{m['network']:<15}{m['parameters'] / 1e6:>11.1f}{str(tuple(m['patch_size'])):>17}"
              f"{_num(wall[name], 16, 1)}{_num(cpu[name], 8, 1)}{_num(net[name], 18, 2)}"
              f"{forward[name]['best_s']:>11.3f}")
    command = "" if ratio_wall is None else f"nnUNetv2_predict wall {ratio_wall:.2f}x (cpu {ratio_cpu:.2f}x), "
    window = "" if ratio_net is None else f"sliding window + TTA {ratio_net:.2f}x, "
    verdict = "not timed" if ratio_wall is None else "met" if ratio_wall <= GOAL_RATIO else "NOT met"
    print(f"ratio SSLViTTrainer / nnUNetTrainer: {command}{window}network forward {ratio_forward:.2f}x "
          f"(goal <= {GOAL_RATIO}x for the command: {verdict})")
    if diagnostics:
        print(f"bf16 autocast forward: nnUNetTrainer {diagnostics['nnUNetTrainer']['bf16_autocast_s']:.3f} s, "
              f"SSLViTTrainer {diagnostics['SSLViTTrainer']['bf16_autocast_s']:.3f} s, ratio "
              f"{diagnostics['ratio_bf16_autocast']:.2f}x; attention is {diagnostics['vit_attention_share']:.0%} "
              "of the ViT's fp32 forward")
    report = {"device": device, "gpu": torch.cuda.get_device_name() if device == "cuda" else None,
              "host": platform.node(), "cpu_count": os.cpu_count(), "shape": list(args.shape),
              "encoder": args.encoder, "repeats": args.repeats, "models": models, "runs": runs,
              "sliding_window": windows, "median_wall_s": wall, "median_cpu_s": cpu,
              "median_sliding_window_s": net, "ratio_sliding_window": ratio_net and round(ratio_net, 3),
              "forward": forward, "ratio_forward": round(ratio_forward, 3), "diagnostics": diagnostics,
              "ratio_wall": ratio_wall and round(ratio_wall, 3), "ratio_cpu": ratio_cpu and round(ratio_cpu, 3),
              "goal_ratio": GOAL_RATIO, "goal_met": None if ratio_wall is None else ratio_wall <= GOAL_RATIO}
    write_json_atomic(report, args.output)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
