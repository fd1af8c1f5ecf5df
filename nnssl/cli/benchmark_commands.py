"""Running the real console commands of the study (nnssl_*, nnUNetv2_*) in subprocesses, each with a log file.

The study drives nnU-Net only through its commands (``nnUNetv2_plan_and_preprocess``, ``nnUNetv2_train``), exactly as a
user types them, so nothing private of nnunetv2 is re-implemented and ``nnssl`` never imports ``nnssl_trainers``.
"""
from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from nnssl.errors import NnsslError

EXT_TRAINER_VARIABLE = "nnUNet_extTrainer"
EXT_TRAINER_PACKAGE = "nnssl_trainers.ext"  # located, never imported: nnssl must not import nnssl_trainers
# nnU-Net's defaults start 12 data-augmentation workers per training; the study's -np applies when these are unset.
NNUNET_WORKER_VARIABLES = ("nnUNet_n_proc_DA", "nnUNet_def_n_proc")
LOG_TAIL_LINES = 15

Executor = Callable[[Sequence[str], Mapping[str, str], Path], float]


def ext_trainer_folder() -> str:
    """The folder nnU-Net's ``-tr`` search needs in ``nnUNet_extTrainer`` (the installed shim package).

    Raises:
        NnsslError: the ``nnssl_trainers`` package is not installed.
    """
    spec = importlib.util.find_spec(EXT_TRAINER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise NnsslError(f"package {EXT_TRAINER_PACKAGE} is not installed; install nnssl with "
                         "`pip install -c constraints.txt -e .` so nnU-Net finds the SSL trainers")
    return str(list(spec.submodule_search_locations)[0])


def base_environment(num_processes: int) -> dict[str, str]:
    """The current environment, with the venv's console scripts first on PATH, ``nnUNet_extTrainer`` set (printed
    when it had to be set) and nnU-Net's worker counts defaulting to ``num_processes``."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    if not env.get(EXT_TRAINER_VARIABLE, "").strip():
        env[EXT_TRAINER_VARIABLE] = ext_trainer_folder()
        print(f"nnssl: {EXT_TRAINER_VARIABLE} is not set; the nnU-Net commands use {env[EXT_TRAINER_VARIABLE]}")
    for variable in NNUNET_WORKER_VARIABLES:
        if not env.get(variable, "").strip():
            env[variable] = str(max(1, num_processes))
    return env


def run_command(command: Sequence[str], env: Mapping[str, str], log: Path) -> float:
    """Run ``command`` with its output appended to ``log``; return the wall seconds.

    Raises:
        NnsslError: the command is not installed, or it failed (naming the log, its last lines and the command).
    """
    executable = shutil.which(command[0], path=env.get("PATH"))
    if executable is None:
        raise NnsslError(f"{command[0]} is not on PATH; install nnssl and nnunetv2 into this environment "
                         "(`pip install -c constraints.txt -e .`)")
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, "a") as out:
        out.write(f"\n$ {shlex.join(command)}\n")
        out.flush()
        code = subprocess.run([executable, *command[1:]], env=dict(env), stdout=out, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL).returncode
    seconds = time.perf_counter() - start
    if code != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:])
        raise NnsslError(f"`{shlex.join(command)}` failed with exit code {code} after {seconds:.0f} s; see {log} "
                         f"(rerun nnssl_benchmark to continue). Last lines:\n{tail}")
    return seconds
