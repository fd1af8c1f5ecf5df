#!/usr/bin/env bash
# The user's whole chain on real CT (issue 4 acceptance): Dataset510_SarcomaCT (+ unlabeled_ct for pretraining),
# fold 0, short schedule, CPU. Every command is the one a user types; nothing inside nnunetv2 is edited.
#
#   bash benchmarks/real_ct_chain.sh [WORKDIR]        # default benchmark_output/real_ct_chain
#
# Data come from $NNSSL_SHARED_DATA or ../shared/data (never copied: nnU-Net's raw folder links to it). Logs and a
# timing table land in WORKDIR/logs; the Dice of fold 0 is printed by nnUNetv2_evaluate_folder at the end.
# Cost on 2 CPU cores: about 1 h (two 500-step fine-tunings at 64x160x160 plus nnU-Net's validation of 8 CTs each).
# Knobs: ENCODER (vit_tiny), PRETRAIN_EPOCHS (20) x PRETRAIN_ITERS (25), TRAINER (SSLViTTrainer_short), NP (2).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
DATA=${NNSSL_SHARED_DATA:-$REPO/../shared/data}
WORK=$(realpath -m "${1:-$REPO/benchmark_output/real_ct_chain}")
ENCODER=${ENCODER:-vit_tiny}
PRETRAIN_EPOCHS=${PRETRAIN_EPOCHS:-20}
PRETRAIN_ITERS=${PRETRAIN_ITERS:-25}
TRAINER=${TRAINER:-SSLViTTrainer_short}
NP=${NP:-2}
if [[ ! -d $DATA/Dataset510_SarcomaCT || ! -d $DATA/unlabeled_ct ]]; then
    echo "skipped: $DATA/Dataset510_SarcomaCT or $DATA/unlabeled_ct is missing (set NNSSL_SHARED_DATA)" >&2
    exit 0
fi
export PATH=$REPO/.venv/bin:$PATH
export nnssl_raw=$WORK/nnssl_raw nnssl_preprocessed=$WORK/nnssl_preprocessed nnssl_results=$WORK/nnssl_results
export nnUNet_raw=$WORK/nnUNet_raw nnUNet_preprocessed=$WORK/nnUNet_preprocessed nnUNet_results=$WORK/nnUNet_results
export nnUNet_extTrainer=${nnUNet_extTrainer:-$REPO/nnssl_trainers/ext}
mkdir -p "$WORK"/logs "$nnssl_raw" "$nnssl_preprocessed" "$nnssl_results" "$nnUNet_raw" "$nnUNet_preprocessed" \
    "$nnUNet_results"
ln -sfn "$DATA/Dataset510_SarcomaCT" "$nnUNet_raw/Dataset510_SarcomaCT"
TIMES=$WORK/logs/times.tsv  # appended: a rerun adds the steps it runs

step() {  # step NAME COMMAND...: run, log, time; a finished step (marker file) is skipped on a rerun
    local name=$1; shift
    if [[ -f $WORK/logs/$name.done ]]; then echo "== $name: done before, skipped"; return; fi
    echo "== $name: $*"
    local start=$SECONDS
    "$@" > "$WORK/logs/$name.log" 2>&1 || { echo "failed: see $WORK/logs/$name.log"; tail -20 "$WORK/logs/$name.log"; exit 1; }
    printf '%s\t%s\t%s\n' "$name" "$((SECONDS - start))" "$*" | tee -a "$TIMES"
    touch "$WORK/logs/$name.done"
}

# Pretraining data: the 36 Sarcoma images (labels are not read) plus the 4 unlabeled CTs, as one nnssl dataset.
step convert nnssl_convert --from-nnunet "$DATA/Dataset510_SarcomaCT" -d 521 -n SarcomaUnlabeled
step convert_unlabeled nnssl_convert -i "$DATA/unlabeled_ct" -d 521 -n SarcomaUnlabeled
step ssl_plan nnssl_plan_and_preprocess -d 521 -np "$NP"
step ssl_pretrain nnssl_pretrain -d 521 -m mae -e "$ENCODER" --epochs "$PRETRAIN_EPOCHS" \
    --iters-per-epoch "$PRETRAIN_ITERS" --lr 1e-3 --device cpu -np 1

# The five user commands (issue 4), with the short schedule; nnU-Net's data workers set only around training.
step nnunet_plan nnUNetv2_plan_and_preprocess -d 510 -c 3d_fullres -np "$NP"
step transfer nnssl_transfer_plans -d 510 -pd 521 -np "$NP"
export nnUNet_n_proc_DA=${nnUNet_n_proc_DA:-1} nnUNet_compile=${nnUNet_compile:-false}
step train_default_plans nnUNetv2_train 510 3d_fullres 0 -tr "$TRAINER" -device cpu
step train_matched_plans nnUNetv2_train 510 3d_fullres 0 -tr "$TRAINER" -p nnsslPlans -device cpu

# Predict fold 0's validation cases from a fresh process (only the results folder + env var), then evaluate.
VAL_IMAGES=$WORK/val_images
rm -rf "$VAL_IMAGES" && mkdir -p "$VAL_IMAGES"
python - "$nnUNet_preprocessed/Dataset510_SarcomaCT/splits_final.json" "$DATA/Dataset510_SarcomaCT" "$VAL_IMAGES" <<'EOF'
import json, os, sys
splits, raw, out = sys.argv[1:]
for case in json.load(open(splits))[0]["val"]:
    os.symlink(f"{raw}/imagesTr/{case}_0000.nii.gz", f"{out}/{case}_0000.nii.gz")
EOF
step predict nnUNetv2_predict -i "$VAL_IMAGES" -o "$WORK/pred" -d 510 -c 3d_fullres -tr "$TRAINER" -p nnsslPlans \
    -f 0 -device cpu
# --chill: the reference folder holds all 36 cases, the predictions only fold 0's validation cases
step evaluate nnUNetv2_evaluate_folder "$nnUNet_preprocessed/Dataset510_SarcomaCT/gt_segmentations" "$WORK/pred" \
    -djfile "$nnUNet_preprocessed/Dataset510_SarcomaCT/dataset.json" \
    -pfile "$nnUNet_results/Dataset510_SarcomaCT/${TRAINER}__nnsslPlans__3d_fullres/plans.json" --chill
# The same model without mirroring (nnU-Net averages logits over the 8 flips, which erases the detections of an
# undertrained model that only some flips find).
step predict_no_tta nnUNetv2_predict -i "$VAL_IMAGES" -o "$WORK/pred_no_tta" -d 510 -c 3d_fullres -tr "$TRAINER" \
    -p nnsslPlans -f 0 -device cpu --disable_tta
step evaluate_no_tta nnUNetv2_evaluate_folder "$nnUNet_preprocessed/Dataset510_SarcomaCT/gt_segmentations" \
    "$WORK/pred_no_tta" -djfile "$nnUNet_preprocessed/Dataset510_SarcomaCT/dataset.json" \
    -pfile "$nnUNet_results/Dataset510_SarcomaCT/${TRAINER}__nnsslPlans__3d_fullres/plans.json" --chill
python - "$WORK" "$TRAINER" <<'EOF'
import json, sys
work, trainer = sys.argv[1:]
rows = [("nnUNetPlans (user's literal command), fold-0 validation", f"{work}/nnUNet_results/Dataset510_SarcomaCT/{trainer}__nnUNetPlans__3d_fullres/fold_0/validation/summary.json"),
        ("nnsslPlans, fold-0 validation", f"{work}/nnUNet_results/Dataset510_SarcomaCT/{trainer}__nnsslPlans__3d_fullres/fold_0/validation/summary.json"),
        ("nnsslPlans, nnUNetv2_predict + evaluate_folder", f"{work}/pred/summary.json"),
        ("nnsslPlans, nnUNetv2_predict --disable_tta + evaluate_folder", f"{work}/pred_no_tta/summary.json")]
for name, path in rows:
    summary = json.load(open(path))
    print(f"{name}: mean Dice {summary['foreground_mean']['Dice']:.3f} over {len(summary['metric_per_case'])} cases")
EOF
column -t -s $'\t' "$TIMES"
