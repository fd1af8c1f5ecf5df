#!/usr/bin/env bash
# Sets up a daemonless, root podman for the container test, idempotently, and prints the environment to use it.
#
# Usage: tests/container/podman_env.sh            -> on success prints KEY=VALUE lines (CONTAINERS_STORAGE_CONF,
#                                                    CONTAINERS_CONF, NNSSL_PODMAN_BASE, NNSSL_PODMAN_INDEXES) on stdout
# Exit status: 0 ready; 77 podman cannot be set up here (reason on stderr: not root, apt-get/debootstrap failed...);
#              anything else: a real error.
#
# Everything is cached under NNSSL_PODMAN_HOME (default /var/tmp/nnssl-podman): the private storage.conf and
# containers.conf, the image store (so a rebuild with unchanged inputs reuses cached layers) and the Debian
# bookworm base image "localhost/debian-python:bookworm" (debootstrap minbase + python3/venv/pip + this host's CAs,
# because HTTPS to the package index is intercepted by a local CA here). A second run only checks and prints.
# Recipe: issue 5 ("what works on this machine kind"): podman + runc (crun fails on hybrid cgroups), overlay storage.
set -euo pipefail

HOME_DIR="${NNSSL_PODMAN_HOME:-/var/tmp/nnssl-podman}"
BASE_IMAGE="localhost/debian-python:bookworm"
SUITE="bookworm"
MIRROR="${NNSSL_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
NPROC_LIMIT=32768
APT_PACKAGES=(podman buildah runc debootstrap uidmap)
# pip config files that may name local package indexes (file:///.../simple) holding the 2.x GB torch/CUDA wheels.
PIP_CONFIGS=(/etc/pip.conf /etc/xdg/pip/pip.conf "$HOME/.config/pip/pip.conf" "$HOME/.pip/pip.conf")

skip() { echo "podman_env: $*" >&2; exit 77; }

[[ "$(id -u)" == "0" ]] || skip "not root (podman without a daemon needs root here)"
mkdir -p "$HOME_DIR"
exec 9>"$HOME_DIR/.lock"
flock 9  # one set-up at a time; concurrent test runs wait here

missing=()
for tool in podman buildah runc debootstrap newuidmap; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
    echo "podman_env: installing ${APT_PACKAGES[*]} (missing: ${missing[*]})" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${APT_PACKAGES[@]}"; } >"$HOME_DIR/apt.log" 2>&1 \
        || skip "apt-get install ${APT_PACKAGES[*]} failed (log: $HOME_DIR/apt.log)"
fi

storage_conf="$HOME_DIR/storage.conf"
containers_conf="$HOME_DIR/containers.conf"
nofile="$(ulimit -Hn)"
cat >"$storage_conf.tmp" <<CONF
[storage]
driver = "overlay"
runroot = "$HOME_DIR/run"
graphroot = "$HOME_DIR/storage"
CONF
cat >"$containers_conf.tmp" <<CONF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$NPROC_LIMIT:$NPROC_LIMIT"]

[engine]
runtime = "runc"
CONF
mv -f "$storage_conf.tmp" "$storage_conf"
mv -f "$containers_conf.tmp" "$containers_conf"
export CONTAINERS_STORAGE_CONF="$storage_conf" CONTAINERS_CONF="$containers_conf"

if ! podman image exists "$BASE_IMAGE" 2>/dev/null; then
    rootfs="$HOME_DIR/rootfs.tmp"
    rm -rf "$rootfs"
    echo "podman_env: debootstrap $SUITE minbase -> $BASE_IMAGE (a few minutes, once)" >&2
    debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
        "$SUITE" "$rootfs" "$MIRROR" >"$HOME_DIR/debootstrap.log" 2>&1 \
        || skip "debootstrap $SUITE failed (log: $HOME_DIR/debootstrap.log)"
    if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
        cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
    fi
    chroot "$rootfs" update-ca-certificates >>"$HOME_DIR/debootstrap.log" 2>&1
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | podman import --quiet - "$BASE_IMAGE" >/dev/null
    rm -rf "$rootfs"
fi

# Local indexes (folders with simple/) from PIP_EXTRA_INDEX_URL or the pip config: the build mounts them read-only
# and lists them as extra indexes, which pip's resolver prefers over pypi.org for the same file (no 2.5 GB download).
urls="${PIP_EXTRA_INDEX_URL:-$(grep -h -E '^[[:space:]]*extra-index-url' "${PIP_CONFIGS[@]}" 2>/dev/null \
    | cut -d= -f2- || true)}"
indexes=()
for url in $urls; do
    folder="${url#file://}"
    folder="${folder%/}"
    folder="${folder%/simple}"
    if [[ "$url" == file://* && -d "$folder/simple" ]]; then indexes+=("$folder"); fi
done

echo "CONTAINERS_STORAGE_CONF=$storage_conf"
echo "CONTAINERS_CONF=$containers_conf"
echo "NNSSL_PODMAN_BASE=$BASE_IMAGE"
echo "NNSSL_PODMAN_INDEXES=${indexes[*]}"
