#!/usr/bin/env bash
# CUDA + bf16 check of the pretraining engine (issue 3): a short nnssl_pretrain run on preprocessed phantoms with
# --device cuda, continued with --c, a Swin run, then benchmarks/pretrain_throughput.py --device cuda.
# Budget: < 8 min on one H100. Everything lands in "$OUT" (or benchmark_output/cuda_check/ without it).
#
#   1. here, on the CPU machine, once:   bash benchmarks/cuda_check.sh prepare
#        - downloads the wheels the GPU image lacks (py3.12, manylinux) into .whl/   (~13 MB; .whl/ is git-ignored)
#        - makes 8 phantoms and preprocesses them (64^3 patch) into benchmark_output/cuda_check_data/ (~10 MB)
#   2. on the GPU machine:               bash benchmarks/cuda_check.sh
#        device tool: run(command="bash benchmarks/cuda_check.sh", carry=[".whl", "benchmark_output/cuda_check_data"],
#                         timeout_s=540)
# The GPU image has torch/timm/einops/matplotlib/scipy but not nnunetv2, DNA, MONAI, batchgenerators(v2) or blosc2;
# they are installed from .whl/ into /tmp/site with --no-deps. SimpleITK (50 MB) is not needed there because the
# phantoms are preprocessed here.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
DATA=$REPO/benchmark_output/cuda_check_data
WHEELS=(nnunetv2==2.8.1 batchgenerators==0.25.5 batchgeneratorsv2==0.3.6 dynamic_network_architectures==0.4.4
        monai==1.6.1 nibabel==5.4.2 blosc2==4.14.1 ndindex==1.10.1 numexpr==2.14.2)

if [[ "${1:-}" == "prepare" ]]; then
    set -e
    PY=${PY:-$REPO/.venv/bin/python}
    mkdir -p .whl
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl "${WHEELS[@]}"
    rm -rf "$DATA" && mkdir -p "$DATA"/raw "$DATA"/preprocessed
    export nnssl_raw=$DATA/raw nnssl_preprocessed=$DATA/preprocessed nnssl_results=$DATA/results
    "$REPO"/.venv/bin/nnssl_make_phantoms --unlabeled 8 -d 500 -np 2
    "$REPO"/.venv/bin/nnssl_plan_and_preprocess -d 500 -np 2 --patch-size 64 64 64
    rm -rf "$DATA"/raw
    du -sh .whl "$DATA"
    echo "prepared; now run on the GPU machine: bash benchmarks/cuda_check.sh (carry .whl and ${DATA#"$REPO"/})"
    exit 0
fi

OUT=${OUT:-$REPO/benchmark_output/cuda_check}
mkdir -p "$OUT"
exec > >(tee "$OUT/cuda_check.log") 2>&1
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
PY=python3
[[ -x $REPO/.venv/bin/python ]] && PY=$REPO/.venv/bin/python
nvidia-smi > "$OUT/nvidia_smi.txt" 2>&1 || echo "nvidia-smi not available"
if ! "$PY" -c "import nnunetv2, batchgeneratorsv2, dynamic_network_architectures, monai, blosc2" 2>/dev/null; then
    files=()  # exactly our pins: .whl/ may hold other sessions' wheels too
    for spec in "${WHEELS[@]}"; do files+=(.whl/"${spec%%==*}-${spec##*==}"-*.whl); done
    echo "installing ${#files[@]} wheels from .whl/ into /tmp/site"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "${files[@]}" \
        || { echo "FAIL: wheel install (run 'bash benchmarks/cuda_check.sh prepare' here and carry .whl)"; exit 1; }
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}
"$PY" -c "import torch; c = torch.cuda.is_available(); print('torch', torch.__version__, 'cuda', c, c and torch.cuda.get_device_name(0))"

export nnssl_preprocessed=$DATA/preprocessed nnssl_results=/tmp/nnssl_results nnssl_raw=/tmp/nnssl_raw
rm -rf "$nnssl_results"
if [[ ! -d $nnssl_preprocessed ]]; then
    echo "FAIL: no preprocessed phantoms at $nnssl_preprocessed (run 'bash benchmarks/cuda_check.sh prepare' here)"
    exit 1
fi
status=0
step() {  # step NAME TIMEOUT_S COMMAND...: run, time and record pass/fail
    local name=$1 limit=$2; shift 2
    local start=$SECONDS
    echo "=== $name"
    if timeout "$limit" "$@"; then echo "=== $name: ok ($((SECONDS - start)) s)"
    else echo "=== $name: FAILED ($((SECONDS - start)) s)"; status=1; fi
}
# Overridable for a dry run on CPU: DEVICE=cpu ENCODER=vit_tiny SWIN=swin_tiny ITERS=2 BATCH=1 BENCH_ARGS=--quick
DEVICE=${DEVICE:-cuda} ENCODER=${ENCODER:-primus_s} SWIN=${SWIN:-swin_t} ITERS=${ITERS:-40} BATCH=${BATCH:-8}
BENCH_ARGS=${BENCH_ARGS:-}
RUN=$nnssl_results/Dataset500_PhantomCTUnlabeled/mae__${ENCODER}__nnsslPlans
COMMON=(-d 500 --device "$DEVICE" --iters-per-epoch "$ITERS" -np 8 --preview-every 1)
step "pretrain mae/$ENCODER on $DEVICE, 3 epochs" 120 \
    "$PY" -m nnssl.cli.pretrain "${COMMON[@]}" --batch-size "$BATCH" -e "$ENCODER" --epochs 3 --warmup-epochs 1 --lr 3e-4
step "continue with --c to epoch 4" 60 "$PY" -m nnssl.cli.pretrain -d 500 -e "$ENCODER" --c --epochs 4
step "checkpoint: weights_only on CPU, 4 epochs, loss falls" 30 "$PY" - "$RUN" <<'EOF'
import sys
from pathlib import Path
from nnssl.training.checkpoint import load_pretrained_encoder, load_checkpoint
ckpt = load_checkpoint(Path(sys.argv[1]) / "checkpoint_final.pth", map_location="cpu")
header, encoder = load_pretrained_encoder(Path(sys.argv[1]) / "checkpoint_final.pth")
loss = ckpt["history"]["epoch_loss"]
print("epochs", ckpt["epoch"], "epoch losses", [round(v, 4) for v in loss], "samples/s",
      [round(v, 1) for v in ckpt["history"]["epoch_samples_per_s"]], "encoder tensors", len(encoder))
assert ckpt["epoch"] == 4 and len(loss) == 4 and loss[-1] < loss[0], "loss did not fall"
assert all(t.device.type == "cpu" for t in encoder.values())
EOF
cp "$RUN"/training_log.txt "$OUT"/training_log_mae.txt 2>/dev/null
cp "$RUN"/progress.png "$OUT"/progress_mae.png 2>/dev/null
cp "$RUN"/recon_epoch_004.png "$OUT"/recon_mae_epoch_004.png 2>/dev/null
step "pretrain swin_ssl/$SWIN on $DEVICE, 1 epoch" 90 \
    "$PY" -m nnssl.cli.pretrain "${COMMON[@]}" --batch-size "$(( (BATCH + 1) / 2 ))" -m swin_ssl -e "$SWIN" --epochs 1 \
    --warmup-epochs 0
cp "$nnssl_results/Dataset500_PhantomCTUnlabeled/swin_ssl__${SWIN}__nnsslPlans/training_log.txt" \
    "$OUT"/training_log_swin.txt 2>/dev/null
# shellcheck disable=SC2086  # BENCH_ARGS is a word list
step "throughput benchmark --device $DEVICE" 200 \
    "$PY" benchmarks/pretrain_throughput.py --device "$DEVICE" $BENCH_ARGS --output "$OUT/pretrain_throughput_$DEVICE.json"
echo "cuda_check: $([[ $status == 0 ]] && echo PASSED || echo FAILED); outputs in $OUT"
exit $status
