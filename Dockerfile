# nnssl image for pretraining, nnU-Net fine-tuning and nnUNetv2_predict (GPU by default, runs on CPU too).
#
#   docker build -t nnssl .
#   docker run --gpus all --shm-size 8g -v /data:/data nnssl nnssl_pretrain -d 500
#   docker run --gpus all --shm-size 8g -v /data:/data -v /in:/in -v /out:/out nnssl \
#          nnUNetv2_predict -i /in -o /out -d 501 -c 3d_fullres -tr SSLViTTrainer -f 0 1 2 3 4
#
# BASE: nvidia/cuda "base" flavour = Ubuntu 24.04 + the CUDA 13.0 runtime (cudart) + the NVIDIA container-toolkit
# settings, with Python 3.12 from Ubuntu. The pinned torch 2.14.1 wheel brings its own CUDA 13 libraries (cuBLAS,
# cuDNN, NCCL... as pip packages from constraints.txt), so a "-runtime"/"-cudnn" image would only add a second copy.
# The driver comes from the host (NVIDIA container toolkit, driver >= 580 for CUDA 13).
# BASE may be another Debian/Ubuntu image with python3 >= 3.11 (the pins need it: numpy 2.4, scipy 1.17, pandas 3).
# Built and run by the tests here: a debootstrapped Debian bookworm (Python 3.11), no registry. For the default
# (Python 3.12) only a pip dry-run resolution of constraints.txt for cp312/manylinux was checked here.
# CPU-only image (no CUDA wheels; the default image is about 7 GB; not built by the tests here):
#   docker build --build-arg PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu -t nnssl:cpu .
# (pip then picks torch 2.14.1+cpu / torchvision 0.29.1+cpu, which satisfy the ==2.14.1 / ==0.29.1 pins.)
ARG BASE=nvidia/cuda:13.0.1-base-ubuntu24.04

# ---- python: the base image + a Python venv (shared by both stages below) ----
FROM ${BASE} AS python
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Python comes from the base image's distribution; its version strings differ per base, so they are not pinned here.
# hadolint ignore=DL3008
RUN if ! python3 -c "import ensurepip, venv" 2>/dev/null; then \
        apt-get update \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
            python3 python3-venv ca-certificates \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && python3 -m venv /opt/venv
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1

# ---- wheel: build the nnssl wheel from the source tree (only this stage sees the whole context) ----
FROM python AS wheel
WORKDIR /src
COPY . .
RUN pip wheel --no-deps --wheel-dir /dist . \
    && ls /dist/nnssl-*.whl

# ---- runtime ----
FROM python AS runtime
ARG NNSSL_VERSION=0.1.0
ARG NNSSL_SOURCE=""
LABEL org.opencontainers.image.title="nnssl" \
      org.opencontainers.image.description="Self-supervised pretraining of 3D ViT/Swin encoders on unlabeled CT, fine-tuned in nnU-Net v2" \
      org.opencontainers.image.version="${NNSSL_VERSION}" \
      org.opencontainers.image.source="${NNSSL_SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0"

# Optional pip sources for the build (not kept in the image): a folder of wheels mounted into the build
# (`podman build -v /opt/wheels:/wheels:ro --build-arg PIP_FIND_LINKS=/wheels`), an extra index, a CA bundle.
ARG PIP_FIND_LINKS
ARG PIP_EXTRA_INDEX_URL
ARG PIP_CERT

# The whole pinned dependency set in ONE pip resolution under constraints.txt, so pip cannot swap torch for another
# build. Only setup.py, constraints.txt and the version file are copied here, so this (large) layer is rebuilt only
# when the dependencies change, not on every source edit. The nnssl installed here is a stub replaced below.
WORKDIR /tmp/nnssl-deps
COPY setup.py constraints.txt ./
COPY nnssl/__init__.py nnssl/__init__.py
RUN touch README.md \
    && pip install --constraint constraints.txt . \
    && pip uninstall --yes nnssl \
    && rm -rf /tmp/nnssl-deps

# The package itself, non-editable and without dependency resolution (nothing can change the set above), then a
# consistency check of the installed set and a link to the nnUNet_extTrainer shim folder inside site-packages.
COPY --from=wheel /dist /tmp/dist
RUN pip install --no-deps /tmp/dist/nnssl-*.whl \
    && rm -rf /tmp/dist \
    && pip check \
    && ext="$(python -c 'import nnssl_trainers, pathlib; print(pathlib.Path(nnssl_trainers.__file__).parent / "ext")')" \
    && if [ -z "$(find "$ext" -maxdepth 1 -name '*.py' 2>/dev/null)" ]; then \
        echo "error: the wheel has no trainer shim in $ext; ship nnssl_trainers/ext (see setup.py)" >&2; exit 1; \
    fi \
    && mkdir -p /opt/nnssl \
    && ln -s "$ext" /opt/nnssl/ext

# Non-root user with a fixed id (1000 is taken by "ubuntu" in Ubuntu 24.04 images); run with
# `--user "$(id -u):$(id -g)"` to write files owned by yourself into the mounted /data instead.
ARG NNSSL_UID=10001
COPY docker/entrypoint.sh /usr/local/bin/nnssl-entrypoint
RUN groupadd --gid "${NNSSL_UID}" nnssl \
    && useradd --no-log-init --uid "${NNSSL_UID}" --gid "${NNSSL_UID}" --create-home --shell /bin/bash nnssl \
    && mkdir -p /data \
    && chown "${NNSSL_UID}:${NNSSL_UID}" /data

# Folders as in nnU-Net, all under /data (mount the host's data folder there). nnUNet_extTrainer makes
# nnUNetv2_train/-predict find the SSL trainers (-tr SSLViTTrainer). MPLCONFIGDIR: writable for any --user.
ENV nnssl_raw=/data/nnssl_raw \
    nnssl_preprocessed=/data/nnssl_preprocessed \
    nnssl_results=/data/nnssl_results \
    nnUNet_raw=/data/nnUNet_raw \
    nnUNet_preprocessed=/data/nnUNet_preprocessed \
    nnUNet_results=/data/nnUNet_results \
    nnUNet_extTrainer=/opt/nnssl/ext \
    MPLCONFIGDIR=/tmp/matplotlib \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

USER ${NNSSL_UID}:${NNSSL_UID}
WORKDIR /data
ENTRYPOINT ["/usr/local/bin/nnssl-entrypoint"]
CMD []
