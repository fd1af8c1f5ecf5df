"""Builds the repository's Dockerfile with daemonless podman and runs nnssl inside the container on CPU.

Podman is set up (and cached) by ``tests/container/podman_env.sh``; where that is impossible (not root, apt-get or
debootstrap failing) every test here is skipped with the reason. The image is built once per session from the
working tree, reusing cached layers when nothing changed. The build and chain logs and timings are kept under
``$NNSSL_CONTAINER_LOG_DIR`` (default ``/var/tmp/nnssl-podman/logs``); the chain's step timings and the output of
``nnUNetv2_predict`` inside the container are always printed to the terminal (pytest's capture is bypassed for them).
"""
from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.container]

REPO = Path(__file__).resolve().parents[2]
PODMAN_ENV_SCRIPT = Path(__file__).with_name("podman_env.sh")
CHAIN_SCRIPT = REPO / "docker" / "chain_test.sh"
IMAGE = "localhost/nnssl:test"
SKIP_EXIT = 77  # podman_env.sh: podman cannot be set up here
CHAIN_TRAINER = "SSLViTTrainer_tiny"  # nnssl_trainers/short.py: 2 epochs x 2 iterations
LOG_DIR = Path(os.environ.get("NNSSL_CONTAINER_LOG_DIR", "/var/tmp/nnssl-podman/logs"))
SETUP_TIMEOUT_S = 900
BUILD_TIMEOUT_S = 1500
CHAIN_TIMEOUT_S = 1800
COMMAND_TIMEOUT_S = 300
CONTAINER_SHM = "2g"  # nnU-Net's data-augmentation workers share batches through /dev/shm (podman default: 64 MB)
CONTAINER_DA_PROCESSES = "2"  # nnUNet_n_proc_DA for this 2-core machine
DATA_FOLDERS = ("nnssl_raw", "nnssl_preprocessed", "nnssl_results", "nnUNet_raw", "nnUNet_preprocessed",
                "nnUNet_results")
LOG_TAIL_CHARS = 6000


@dataclass(frozen=True)
class Podman:
    """A configured podman: the environment pointing at the private storage.conf/containers.conf, and build inputs."""

    env: dict[str, str]
    base_image: str
    pip_indexes: tuple[str, ...]

    def __call__(self, *args: str, timeout: int = COMMAND_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        """Runs ``podman ARGS`` and returns the finished process (stdout and stderr merged)."""
        return subprocess.run(["podman", *args], env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=timeout, check=False)

    def run_in_image(self, image: str, *command: str, volumes: tuple[str, ...] = (),
                     timeout: int = COMMAND_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        """``podman run --rm --network host`` of ``command`` in ``image`` with the given ``-v`` volumes."""
        args = ["run", "--rm", "--network", "host", f"--shm-size={CONTAINER_SHM}",
                "-e", f"nnUNet_n_proc_DA={CONTAINER_DA_PROCESSES}"]
        for volume in volumes:
            args += ["-v", volume]
        return self(*args, image, *command, timeout=timeout)


def write_log(name: str, text: str) -> Path:
    """Keeps ``text`` as ``LOG_DIR/name`` (atomic) and returns the path."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    path = LOG_DIR / name
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def top_level_value(path: Path, name: str) -> ast.expr | None:
    """The expression assigned to the module-level variable ``name`` in the Python file ``path`` (None if absent)."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return node.value
    return None


def console_scripts() -> list[str]:
    """The console-script names declared in setup.py's ``CLI`` table."""
    table = top_level_value(REPO / "setup.py", "CLI")
    assert isinstance(table, ast.Dict), "setup.py has no CLI table"
    return [ast.literal_eval(key) for key in table.keys if key is not None]


def repo_version() -> str:
    """``__version__`` from nnssl/__init__.py."""
    match = re.search(r'__version__\s*=\s*"([^"]+)"', (REPO / "nnssl" / "__init__.py").read_text())
    assert match, "nnssl/__init__.py has no __version__"
    return match.group(1)


def pinned(package: str) -> str:
    """The exact version constraints.txt pins for ``package``."""
    match = re.search(rf"^{re.escape(package)}==(\S+)$", (REPO / "constraints.txt").read_text(), re.MULTILINE)
    assert match, f"constraints.txt does not pin {package}"
    return match.group(1)


def exported_trainer_names() -> list[str]:
    """The trainer names the nnUNet_extTrainer shim (nnssl_trainers/ext/*.py) lists in ``__all__``."""
    names: list[str] = []
    for path in sorted((REPO / "nnssl_trainers" / "ext").glob("*.py")):
        exported = top_level_value(path, "__all__")
        names += ast.literal_eval(exported) if exported is not None else []
    return sorted(set(names))


@pytest.fixture(scope="module")
def podman() -> Podman:
    """Podman ready to build and run (installed and configured once per machine); skips where it cannot be."""
    try:
        done = subprocess.run(["bash", str(PODMAN_ENV_SCRIPT)], capture_output=True, text=True,
                              timeout=SETUP_TIMEOUT_S, check=False)
    except FileNotFoundError as err:
        pytest.skip(f"podman cannot be set up here: {err}")
    if done.returncode == SKIP_EXIT:
        pytest.skip(f"podman cannot be set up here: {done.stderr.strip().splitlines()[-1]}")
    assert done.returncode == 0, f"{PODMAN_ENV_SCRIPT} failed:\n{done.stderr[-LOG_TAIL_CHARS:]}"
    settings = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    env = {**os.environ, **{k: settings[k] for k in ("CONTAINERS_STORAGE_CONF", "CONTAINERS_CONF")}}
    return Podman(env=env, base_image=settings["NNSSL_PODMAN_BASE"],
                  pip_indexes=tuple(settings["NNSSL_PODMAN_INDEXES"].split()))


@pytest.fixture(scope="module")
def image(podman: Podman) -> str:
    """The image built from the working tree (cached layers reused); build time and log kept in LOG_DIR."""
    args = ["build", "--pull=never", "--network", "host", "--layers", "--build-arg", f"BASE={podman.base_image}",
            "-t", IMAGE, "-f", str(REPO / "Dockerfile")]
    # Local package indexes (the torch/CUDA wheels) mounted read-only into the build, preferred by pip over pypi.org.
    urls = []
    for number, folder in enumerate(podman.pip_indexes):
        args += ["-v", f"{folder}:/pip-indexes/{number}:ro"]
        urls.append(f"file:///pip-indexes/{number}/simple")
    if urls:
        args += ["--build-arg", f"PIP_EXTRA_INDEX_URL={' '.join(urls)}"]
    start = time.monotonic()
    done = podman(*args, str(REPO), timeout=BUILD_TIMEOUT_S)
    seconds = time.monotonic() - start
    log = write_log("build.log", f"podman {' '.join(args)} {REPO}\n\n{done.stdout}\nbuild took {seconds:.0f}s\n")
    print(f"\n[container] image {IMAGE} built in {seconds:.0f}s (rc {done.returncode}); log: {log}")
    assert done.returncode == 0, f"podman build failed (log {log}):\n{done.stdout[-LOG_TAIL_CHARS:]}"
    podman("image", "prune", "--force")  # drop images superseded by this build; the layer cache of this one stays
    return IMAGE


def test_image_metadata(podman: Podman, image: str) -> None:
    """Labels (version = the package's, licence, source key), a numeric non-root user, env folders under /data."""
    done = podman("image", "inspect", image)
    assert done.returncode == 0, done.stdout
    config = json.loads(done.stdout)[0]["Config"]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == repo_version()
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert "org.opencontainers.image.source" in labels
    user = config["User"].split(":")[0]
    assert user.isdigit() and int(user) != 0, f"image runs as {config['User']!r}, expected a numeric non-root user"
    env = dict(item.split("=", 1) for item in config["Env"])
    for variable in DATA_FOLDERS:
        assert env[variable] == f"/data/{variable}"
    assert env["nnUNet_extTrainer"]


def test_entrypoint_without_command_lists_the_clis(podman: Podman, image: str) -> None:
    """No command: a help text naming every console script from setup.py and nnU-Net's train/predict."""
    done = podman.run_in_image(image)
    assert done.returncode == 0, done.stdout
    listed = set(done.stdout.split())
    expected = {*console_scripts(), "nnUNetv2_train", "nnUNetv2_predict", "nnUNetv2_plan_and_preprocess"}
    assert expected <= listed, f"help does not list {sorted(expected - listed)}:\n{done.stdout}"


def test_entrypoint_runs_the_given_command(podman: Podman, image: str) -> None:
    """A given command runs as the non-root user, with the pinned torch and nnssl installed non-editable."""
    probe = ("import json, os, nnssl, torch, torchvision, nnunetv2; "
             "print(json.dumps({'uid': os.getuid(), 'torch': torch.__version__, 'torchvision': torchvision.__version__,"
             " 'nnssl': nnssl.__version__, 'nnssl_file': nnssl.__file__}))")
    done = podman.run_in_image(image, "python", "-c", probe)
    assert done.returncode == 0, done.stdout
    info = json.loads(done.stdout.strip().splitlines()[-1])
    assert info["uid"] != 0
    assert info["torch"].split("+")[0] == pinned("torch")
    assert info["torchvision"].split("+")[0] == pinned("torchvision")
    assert info["nnssl"] == repo_version()
    assert "/site-packages/nnssl/" in info["nnssl_file"], f"nnssl is not installed non-editable: {info}"
    check = podman.run_in_image(image, "pip", "check")
    assert check.returncode == 0, f"pip check inside the image:\n{check.stdout}"


def test_ssl_trainers_are_found_by_nnunet(podman: Podman, image: str) -> None:
    """nnunetv2's own trainer lookup finds every trainer the shim exports, through the image's nnUNet_extTrainer."""
    names = exported_trainer_names()
    if not names:
        pytest.skip("nnssl_trainers/ext/ exports no trainers (__all__) yet")
    probe = ("import sys; from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name as find; "
             "[print('FOUND', name, find(name).__name__) for name in sys.argv[1:]]")
    done = podman.run_in_image(image, "python", "-c", probe, *names)
    assert done.returncode == 0, done.stdout[-LOG_TAIL_CHARS:]
    found = {line.split()[1] for line in done.stdout.splitlines() if line.startswith("FOUND ")}
    assert found == set(names)


def test_chain_predicts_a_segmentation_in_the_container(podman: Podman, image: str, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Inside the container on CPU: phantoms -> ... -> nnUNetv2_predict writes a segmentation to the mounted /out."""
    import SimpleITK as sitk

    data, out = tmp_path / "data", tmp_path / "out"
    for folder in (data, out):
        folder.mkdir()
        folder.chmod(0o777)  # the image's user (uid 10001) writes here
    start = time.monotonic()
    done = podman.run_in_image(
        image, "bash", "/chain/chain_test.sh", "--trainer", CHAIN_TRAINER, "--out", "/out", "--device", "cpu",
        volumes=(f"{data}:/data", f"{out}:/out", f"{CHAIN_SCRIPT.parent}:/chain:ro"), timeout=CHAIN_TIMEOUT_S)
    seconds = time.monotonic() - start
    log = write_log("chain.log", f"{done.stdout}\nchain took {seconds:.0f}s (rc {done.returncode})\n")
    steps = "\n".join(line for line in done.stdout.splitlines() if line.startswith("[chain] "))
    predict = done.stdout[done.stdout.find("[chain] step predict"):] if "[chain] step predict" in done.stdout else ""
    with capsys.disabled():  # shown in every test log, also when the test passes
        print(f"\n[container] chain ran {seconds:.0f}s in the container (rc {done.returncode}); full log: {log}\n"
              f"{steps}\n[container] nnUNetv2_predict inside the container:\n{predict[-LOG_TAIL_CHARS:]}")
    assert done.returncode == 0, f"chain failed in the container (log {log}):\n{done.stdout[-LOG_TAIL_CHARS:]}"
    assert "[chain] predict ok" in done.stdout
    segmentations = sorted(out.glob("*.nii.gz"))
    assert segmentations, f"nnUNetv2_predict wrote no segmentation into {out}"
    inputs = sorted(data.glob("nnUNet_raw/Dataset*/imagesTs/*_0000.nii.gz"))  # <case>_0000.nii.gz: channel 0
    assert inputs, f"no test images under {data}/nnUNet_raw"
    for image_path in inputs:
        path = out / image_path.name.replace("_0000.nii.gz", ".nii.gz")
        assert path.is_file(), f"nnUNetv2_predict wrote no {path.name} for {image_path.name}"
        array = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))  # (Z, Y, X)
        source = sitk.GetArrayFromImage(sitk.ReadImage(str(image_path)))  # (Z, Y, X)
        assert array.shape == source.shape, f"{path.name}: shape {array.shape} != image {source.shape}"
        with capsys.disabled():
            print(f"[container] {path.name}: shape {array.shape}, foreground voxels {int((array > 0).sum())}")
