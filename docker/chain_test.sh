#!/usr/bin/env bash
# The demo-sized nnssl chain, run INSIDE the container by tests/container/test_container.py (CPU, tiny sizes):
#   phantoms -> nnssl plan/preprocess -> pretrain (tiny) -> nnU-Net plan/preprocess -> transfer plans
#   -> nnUNetv2_train (short SSL trainer) -> nnUNetv2_predict -> a non-empty segmentation in OUT.
#
# Usage: chain_test.sh [--trainer NAME] [--out DIR] [--device cpu|cuda]
#   Data goes to the nnssl_*/nnUNet_* folders of the environment (the image points them into /data).
# Output: one line "[chain] <step> ok (<s>s)" per finished step; each command's own output is shown as it runs.
# Exit status: 0 chain complete and a segmentation written; 3 chain stops at a step whose command is not installed
#              yet (the line "[chain] missing <step>: <command>" says which); anything else: a step failed.
set -euo pipefail

TRAINER="SSLViTTrainer_tiny"
OUT="/out"
DEVICE="cpu"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --trainer) TRAINER="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --device) DEVICE="$2"; shift 2 ;;
        *) echo "chain_test.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

# Demo sizes: small enough for 2 CPU cores in a few minutes, big enough that every step does real work.
PRETRAIN_ID=500
FINETUNE_ID=501
UNLABELED_CASES=4
LABELED_CASES=5
TEST_CASES=1
SHAPE=(40 64 64)          # voxels per phantom (Z Y X)
SPACING=(2.5 1.5)         # slice, in-plane spacing in mm (coarse: small resampled volumes)
PATCH=(32 32 32)          # pretraining and fine-tuning patch, one PATCH_GRID cell per axis
SEED=0
NUM_PROCESSES=2
ENCODER="vit_tiny"
METHOD="mae"
PRETRAIN_EPOCHS=1
PRETRAIN_ITERATIONS=2
PRETRAIN_BATCH=1
FOLD=0
MISSING_STEP_EXIT=3

log() { echo "[chain] $*"; }

# Runs one step: `step NAME COMMAND [ARGS...]`. Stops the chain (exit 3) if COMMAND is not installed yet, i.e. not on
# PATH or its console-script module cannot be imported (setup.py may declare a script before its module exists).
step() {
    local name="$1"; shift
    local command="$1"
    if ! command -v "$command" >/dev/null 2>&1; then
        log "missing $name: $command"; exit "$MISSING_STEP_EXIT"
    fi
    local probe
    if ! probe="$("$command" -h 2>&1)"; then
        if grep -q -E "ModuleNotFoundError|ImportError" <<<"$probe"; then
            log "missing $name: $command ($(grep -m1 -E 'ModuleNotFoundError|ImportError' <<<"$probe"))"
            exit "$MISSING_STEP_EXIT"
        fi
    fi
    log "step $name: $*"
    local start=$SECONDS
    "$@"
    log "$name ok ($((SECONDS - start))s)"
}

dataset_folder() {  # the DatasetXXX_* folder with id $2 under $1
    find "$1" -maxdepth 1 -type d -name "Dataset$(printf '%03d' "$2")_*" -print -quit
}

step phantoms_unlabeled nnssl_make_phantoms --unlabeled "$UNLABELED_CASES" -d "$PRETRAIN_ID" --seed "$SEED" \
    --shape "${SHAPE[@]}" --spacing "${SPACING[@]}" -np "$NUM_PROCESSES"
step phantoms_labeled nnssl_make_phantoms --labeled "$LABELED_CASES" --test "$TEST_CASES" -d "$FINETUNE_ID" \
    --seed "$SEED" --shape "${SHAPE[@]}" --spacing "${SPACING[@]}" -np "$NUM_PROCESSES"
step plan_and_preprocess nnssl_plan_and_preprocess -d "$PRETRAIN_ID" -np "$NUM_PROCESSES" --verify \
    --patch-size "${PATCH[@]}"
step pretrain nnssl_pretrain -d "$PRETRAIN_ID" -m "$METHOD" -e "$ENCODER" --device "$DEVICE" \
    --epochs "$PRETRAIN_EPOCHS" --iters-per-epoch "$PRETRAIN_ITERATIONS" --batch-size "$PRETRAIN_BATCH" \
    --warmup-epochs 0 -np 0 --seed "$SEED"
# nnU-Net plans only (--no_pp): the transfer step preprocesses for the nnsslPlans it writes, which training uses.
step nnunet_plan nnUNetv2_plan_and_preprocess -d "$FINETUNE_ID" -c 3d_fullres -np "$NUM_PROCESSES" --no_pp
step transfer_plans nnssl_transfer_plans -d "$FINETUNE_ID" -pd "$PRETRAIN_ID" -m "$METHOD" -e "$ENCODER" \
    -np "$NUM_PROCESSES" --patch-size "${PATCH[@]}"
step train nnUNetv2_train "$FINETUNE_ID" 3d_fullres "$FOLD" -tr "$TRAINER" -p nnsslPlans -device "$DEVICE"

raw="$(dataset_folder "${nnUNet_raw:?set nnUNet_raw (the image sets it to /data/nnUNet_raw)}" "$FINETUNE_ID")"
images="$raw/imagesTs"  # the held-out cases (--test), never seen in training
mkdir -p "$OUT"
step predict nnUNetv2_predict -i "$images" -o "$OUT" -d "$FINETUNE_ID" -c 3d_fullres -tr "$TRAINER" \
    -p nnsslPlans -f "$FOLD" -device "$DEVICE" --disable_tta

written=$(find "$OUT" -maxdepth 1 -name '*.nii.gz' -size +0 | wc -l)
if [[ "$written" -eq 0 ]]; then
    log "predict wrote no segmentation into $OUT"; exit 1
fi
log "segmentations written by nnUNetv2_predict into $OUT: $written"
ls -l "$OUT"
log "complete (trainer $TRAINER)"
