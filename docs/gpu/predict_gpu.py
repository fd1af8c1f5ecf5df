"""CUDA check of prediction: Primus-S (SSLViTTrainer) against nnU-Net's default CNN on one GPU.

Prepared here, run on the lent GPU machine (its image has torch but neither nnunetv2 nor SimpleITK):
    .venv/bin/python benchmarks/predict_speed.py --shape 96 224 224 --workdir /tmp/ps_work   # once, for the case
    copy /tmp/ps_work/nnUNet_preprocessed/Dataset953_PhantomPredictBench (plans, dataset.json, phantom_0000.*) to
    $DATA953/nnUNet_preprocessed/; wheels of nnunetv2 & co. on PYTHONPATH and an import-only SimpleITK stand-in
    (file I/O is not timed); then on the GPU: OUT=... python3 docs/gpu/predict_gpu.py  (about 90 s on an H200)
Without CUDA it dry-runs on the CPU (one repeat, one window). Results: docs/gpu/h200_predict.json.

Primus-S (SSLViTTrainer, untrained stand-in weights) vs nnU-Net's default CNN (nnUNetTrainer) on one 96x224x224
phantom case with Dataset953's nnUNetPlans (patch 80x160x160): network forward (nnU-Net's CUDA protocol = fp16
autocast, and fp32), nnU-Net's sliding window + mirroring TTA, and predict_single_npy_array (preprocessing + sliding
window + export to a segmentation in memory; the command minus file I/O and start-up). Also checks that the ViT's
CUDA logits are finite and agree with CPU fp32.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import time
import traceback
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
OUT = Path(os.environ.get("OUT", HERE / "out"))
OUT.mkdir(parents=True, exist_ok=True)
WORK = Path("/tmp/pgwork")
shutil.rmtree(WORK, ignore_errors=True)
shutil.copytree(Path(os.environ.get("DATA953", HERE / "data953")), WORK)
for var in ("nnUNet_raw", "nnUNet_results", "nnssl_raw", "nnssl_preprocessed", "nnssl_results"):
    (WORK / var).mkdir(exist_ok=True)
    os.environ[var] = str(WORK / var)
os.environ |= {"nnUNet_preprocessed": str(WORK / "nnUNet_preprocessed"), "nnUNet_n_proc_DA": "4",
               "nnUNet_def_n_proc": "4", "nnUNet_extTrainer": str(REPO / "nnssl_trainers/ext")}

import nnunetv2.inference.predict_from_raw_data as _pr  # noqa: E402
import nnunetv2.run.run_training as _rt  # noqa: E402
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor  # noqa: E402
from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2  # noqa: E402

import nnssl_trainers.vit as vit  # noqa: E402

spec = importlib.util.spec_from_file_location("predict_speed", REPO / "benchmarks" / "predict_speed.py")
ps = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ps)
DEV = "cuda" if torch.cuda.is_available() else "cpu"  # cpu: a dry run of this script, one repeat, one window
REPS = 3 if DEV == "cuda" else 1
RESULT: dict = {"torch": torch.__version__, "gpu": torch.cuda.get_device_name() if DEV == "cuda" else None,
                "steps": {}}
DS = WORK / "nnUNet_preprocessed" / "Dataset953_PhantomPredictBench"


def find_class(name):
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    return nnUNetTrainer if name == "nnUNetTrainer" else getattr(vit, name)


def get_trainer_from_args(dataset, configuration, fold, name, plans_name, device=torch.device("cuda")):
    """nnU-Net's get_trainer_from_args without its class search (it once crashed on this machine)."""
    plans = json.loads((DS / f"{plans_name}.json").read_text())
    plans["continue_training"] = False
    return find_class(name)(plans, configuration, fold, json.loads((DS / "dataset.json").read_text()), device)


_rt.get_trainer_from_args = get_trainer_from_args
_pr.recursive_find_trainer_class_by_name = find_class


def step(name):
    def deco(fn):
        if os.environ.get("STEPS") and name not in os.environ["STEPS"].split(","):
            return fn
        start = time.perf_counter()
        try:
            RESULT["steps"][name] = {"ok": True, **(fn() or {})}
        except Exception as err:  # noqa: BLE001
            traceback.print_exc()
            RESULT["steps"][name] = {"ok": False, "error": f"{type(err).__name__}: {err}"[:800]}
        RESULT["steps"][name]["seconds"] = round(time.perf_counter() - start, 1)
        print(f"== {name}: {json.dumps(RESULT['steps'][name])}", flush=True)
        (OUT / "predict_gpu.json").write_text(json.dumps(RESULT, indent=2, default=str))
        return fn
    return deco


def predictor(name: str, device: str) -> nnUNetPredictor:
    p = nnUNetPredictor(device=torch.device(device), perform_everything_on_device=device == "cuda", allow_tqdm=False)
    p.initialize_from_trained_model_folder(
        str(WORK / "nnUNet_results" / "Dataset953_PhantomPredictBench" / f"{name}__nnUNetPlans__3d_fullres"),
        use_folds=(0,))
    return p


def sync() -> None:
    if DEV == "cuda":
        torch.cuda.synchronize()


def cuda_ms(fn, n=20 if DEV == "cuda" else 1) -> float:
    for _ in range(3 if DEV == "cuda" else 1):
        fn()
    sync()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    sync()
    return round((time.perf_counter() - start) / n * 1000, 2)


@step("models")
def _():
    ps.link_stand_in_pretraining(WORK, "primus_s")
    return {name: ps.write_model_folder(name) for name in ps.TRAINERS}


@step("forward_ms")
def _():
    out = {}
    patch = json.loads((DS / "nnUNetPlans.json").read_text())["configurations"]["3d_fullres"]["patch_size"]
    x = torch.randn(1, 1, *[(p // 8) * 8 for p in patch], device=DEV)
    for name in ps.TRAINERS:
        net = predictor(name, DEV).network.to(DEV).eval()
        with torch.inference_mode():
            fp32 = cuda_ms(lambda net=net: net(x))
            with torch.autocast(DEV, enabled=DEV == "cuda"):
                amp = cuda_ms(lambda net=net: net(x))
        out[name] = {"fp32_ms": fp32, "fp16_autocast_ms": amp}
    for key in ("fp16_autocast", "fp32"):
        out[f"ratio_{key}"] = round(out["SSLViTTrainer"][f"{key}_ms"] / out["nnUNetTrainer"][f"{key}_ms"], 3)
    return out


@step("fresh_vs_built_ms")
def _():
    from dynamic_network_architectures.architectures.primus import Primus
    x = torch.randn(1, 1, 80, 160, 160, device=DEV)
    fresh = Primus(1, 396, (8, 8, 8), 2, 12, 6, input_shape=(80, 160, 160)).to(DEV).eval()
    built = predictor("SSLViTTrainer", DEV).network.to(DEV).eval()
    out = {"threads": torch.get_num_threads()}
    with torch.inference_mode(), torch.autocast(DEV, enabled=DEV == "cuda"):
        for rep in range(2):
            out[f"fresh_{rep}"] = cuda_ms(lambda: fresh(x))
            out[f"built_{rep}"] = cuda_ms(lambda: built(x))
    return out


@step("sdpa_ms")
def _():
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel
    out = {}
    for head_dim in (66, 64, 72):
        dtype = torch.float16 if DEV == "cuda" else torch.float32
        qkv = [torch.randn(1, 6, 4000, head_dim, device=DEV, dtype=dtype) for _ in range(3)]
        with torch.inference_mode():
            out[f"default_hd{head_dim}"] = cuda_ms(lambda qkv=qkv: F.scaled_dot_product_attention(*qkv))
            for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION):
                try:
                    with sdpa_kernel(backend):
                        out[f"{backend.name}_hd{head_dim}"] = cuda_ms(
                            lambda qkv=qkv: F.scaled_dot_product_attention(*qkv))
                except Exception as err:  # noqa: BLE001
                    out[f"{backend.name}_hd{head_dim}"] = f"{type(err).__name__}"
    return out


@step("vit_cuda_vs_cpu")
def _():
    data = torch.from_numpy(nnUNetDatasetBlosc2(str(DS / "nnUNetPlans_3d_fullres")).load_case("phantom_0000")[0][:])
    window = data[None, :, :80, :160, :160].float().contiguous()
    cpu = predictor("SSLViTTrainer", "cpu").network.eval()
    gpu = predictor("SSLViTTrainer", DEV).network.to(DEV).eval()
    with torch.inference_mode():
        ref = cpu(window)
        with torch.autocast(DEV, enabled=DEV == "cuda"):
            got = gpu(window.to(DEV)).float().cpu()
    return {"finite": bool(torch.isfinite(got).all()), "max_abs_diff": float((got - ref).abs().max()),
            "max_abs_logit": float(ref.abs().max()),
            "argmax_agreement": float((got.argmax(1) == ref.argmax(1)).float().mean())}


@step("sliding_window_s")
def _():
    if DEV == "cpu":
        return {"skipped": "dry run on cpu (predict_single_npy_array covers the path)"}
    times = {name: [] for name in ps.TRAINERS}
    for _ in range(REPS):
        for name in ps.TRAINERS:
            times[name].append(ps.time_sliding_window(name, WORK, DEV)["wall_s"])
    best = {n: min(t) for n, t in times.items()}
    return {"times_s": times, "ratio_best": round(best["SSLViTTrainer"] / best["nnUNetTrainer"], 3)}


@step("sliding_window_compiled_s")
def _():
    """nnUNet_compile=1: nnU-Net's predictor compiles the network (compile time spent in the warm-up call)."""
    if DEV == "cpu":
        return {"skipped": "dry run on cpu"}
    os.environ["nnUNet_compile"] = "1"  # noqa: SIM112 (nnU-Net's name)
    try:
        times = {name: ps.time_sliding_window(name, WORK, DEV)["wall_s"] for name in ps.TRAINERS}
    finally:
        os.environ.pop("nnUNet_compile")
    return {"times_s": times, "ratio": round(times["SSLViTTrainer"] / times["nnUNetTrainer"], 3)}


@step("predict_single_npy_array_s")
def _():
    data, _, _, props = nnUNetDatasetBlosc2(str(DS / "nnUNetPlans_3d_fullres")).load_case("phantom_0000")
    image = np.asarray(data[:], dtype=np.float32)
    if DEV == "cpu":
        image = image[:, :80, :160, :160]
    spacing = json.loads((DS / "nnUNetPlans.json").read_text())["configurations"]["3d_fullres"]["spacing"]
    preds = {name: predictor(name, DEV) for name in ps.TRAINERS}
    times = {name: [] for name in ps.TRAINERS}
    for _ in range(REPS):
        for name, p in preds.items():
            sync()
            start = time.perf_counter()
            seg = p.predict_single_npy_array(image, {"spacing": spacing})
            times[name].append(round(time.perf_counter() - start, 3))
    best = {n: min(t) for n, t in times.items()}
    return {"times_s": times, "seg_shape": list(seg.shape),
            "ratio_best": round(best["SSLViTTrainer"] / best["nnUNetTrainer"], 3)}


print(json.dumps(RESULT, indent=2, default=str))
