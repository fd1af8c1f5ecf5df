#!/usr/bin/env bash
# Container entrypoint: runs whatever command it is given (nnssl_*, nnUNetv2_*, python, bash...) as PID 1 via exec;
# with no command, or -h/--help, prints what the image is and the command-line tools it holds.
set -euo pipefail

# Create the nnssl_*/nnUNet_* folders the environment points at, where the mounted /data lets us (first run).
for variable in nnssl_raw nnssl_preprocessed nnssl_results nnUNet_raw nnUNet_preprocessed nnUNet_results; do
    folder="${!variable:-}"
    if [[ -n "$folder" && ! -d "$folder" && -w "$(dirname "$folder")" ]]; then
        mkdir -p "$folder"
    fi
done

if [[ $# -gt 0 && "$1" != "-h" && "$1" != "--help" ]]; then
    exec "$@"
fi

version="$(python -c 'import nnssl; print(nnssl.__version__)')"
cat <<HELP
nnssl ${version}: self-supervised pretraining of 3D ViT/Swin encoders on unlabeled CT, fine-tuned in nnU-Net v2.

Usage: docker run [--gpus all] --shm-size 8g -v /host/data:/data nnssl COMMAND [ARGS...]

Data folders (inside the container, all under the mounted /data):
  nnssl_raw=${nnssl_raw:-}  nnssl_preprocessed=${nnssl_preprocessed:-}  nnssl_results=${nnssl_results:-}
  nnUNet_raw=${nnUNet_raw:-}  nnUNet_preprocessed=${nnUNet_preprocessed:-}  nnUNet_results=${nnUNet_results:-}
  nnUNet_extTrainer=${nnUNet_extTrainer:-} (SSL trainers for nnUNetv2_train/-predict -tr ...)

Examples:
  nnssl_pretrain -d 500
  nnUNetv2_train 501 3d_fullres 0 -tr SSLViTTrainer
  nnUNetv2_predict -i /in -o /out -d 501 -c 3d_fullres -tr SSLViTTrainer -f 0 1 2 3 4

Commands (each takes -h):
HELP
bin_dir="$(dirname "$(command -v python)")"
for pattern in 'nnssl_*' 'nnUNetv2_*'; do
    find "$bin_dir" -maxdepth 1 -name "$pattern" -printf '%f\n' | sort | paste -sd ' ' | fold -s -w 110 \
        | sed 's/^/  /'
done
