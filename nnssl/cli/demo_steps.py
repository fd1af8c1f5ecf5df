"""The demo's step runner: each step is a console command run in a subprocess, exactly as a user types it.

A step prints a header and its command, writes the command's whole output to ``logs/NN_<step>.log`` and prints its
elapsed time. A step whose final artefact exists is reused instead of run, so a rerun (or a run after a failure)
continues where the last one stopped. A failing step raises an :class:`~nnssl.errors.NnsslError` that names the step
and its log file. Timings go to ``demo_steps.json`` (written atomically) for the report.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shlex
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nnssl.config.plans import write_json_atomic
from nnssl.errors import NnsslError

STEPS_FILE = "demo_steps.json"
LOG_FOLDER = "logs"
TRAINERS_PACKAGE = "nnssl_trainers"
EXT_TRAINER_SUBFOLDER = "ext"
EXT_TRAINER_VARIABLE = "nnUNet_extTrainer"
FAILED_LOG_LINES = 25  # last lines of a failed step's log shown on the console


@dataclass(frozen=True)
class Step:
    """One demo step.

    Attributes:
        name: short identifier (``pretrain``); also names the log file.
        title: one line saying what the step does.
        command: the console command and its arguments.
        artefact: the file or folder whose presence means the step finished (shown when reused).
        is_done: whether the step's final artefact exists; default: ``artefact`` exists.
        env: extra environment variables for this step only (a value of None removes the variable).
        prepare: called before the command runs, e.g. to clear a half-written output folder.
        on_success: called after the command exits with 0, e.g. to move a finished output folder into place.
    """

    name: str
    title: str
    command: Sequence[str]
    artefact: Path
    is_done: Callable[[], bool] | None = None
    env: Mapping[str, str | None] = field(default_factory=dict)
    prepare: Callable[[], None] | None = None
    on_success: Callable[[], None] | None = None

    def done(self) -> bool:
        return self.is_done() if self.is_done is not None else self.artefact.exists()


@dataclass(frozen=True)
class StepRecord:
    """What the report shows for one step: its command, how long it took when it last ran, and whether this run
    reused it."""

    name: str
    title: str
    command: str
    seconds: float | None
    reused: bool
    log: str


def trainer_extension_folder() -> Path:
    """The installed ``nnssl_trainers/ext`` folder for ``nnUNet_extTrainer``, found without importing nnssl_trainers
    (``nnssl`` never imports it; nnU-Net imports the one module in that folder itself).

    Raises:
        NnsslError: the package is not installed.
    """
    spec = importlib.util.find_spec(TRAINERS_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        folder = Path(location) / EXT_TRAINER_SUBFOLDER
        if folder.is_dir():
            return folder.resolve()
    raise NnsslError(f"the {TRAINERS_PACKAGE} package (nnU-Net trainers) is not installed in {sys.executable}; "
                     "install nnssl with `pip install -e .` in the repository")


def scripts_folder() -> Path:
    """The folder of this Python's console scripts (the venv's ``bin``), put first on the steps' PATH."""
    return Path(sys.executable).parent


class StepRunner:
    """Runs demo steps in order, logs them and records their timings.

    Args:
        output: the demo's output folder (logs and ``demo_steps.json`` go here).
        env: the base environment of every step's subprocess.
        total: number of steps, for the ``[k/total]`` headers.
        echo: also stream each command's output to the console (it always goes to the step's log).
    """

    def __init__(self, output: Path, env: Mapping[str, str], total: int, echo: bool = False) -> None:
        self.output, self.env, self.total, self.echo = Path(output), dict(env), total, echo
        self.log_folder = self.output / LOG_FOLDER
        self.records_file = self.output / STEPS_FILE
        self.index = 0
        self.state = self._load_state()

    def _load_state(self) -> dict[str, Any]:
        if not self.records_file.is_file():
            return {"steps": {}}
        try:
            state = json.loads(self.records_file.read_text())
        except json.JSONDecodeError as err:
            raise NnsslError(f"{self.records_file} is not valid JSON ({err}); delete it (timings are only for the "
                             "report) or rerun with --fresh") from None
        state.setdefault("steps", {})
        return state

    def set_meta(self, **values: Any) -> None:
        """Store run-wide facts (budget, device) in ``demo_steps.json``."""
        self.state.update(values)
        self._save()

    def _save(self) -> None:
        self.output.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.state, self.records_file)

    def records(self) -> list[StepRecord]:
        """The records of the steps handled so far, in order."""
        return [StepRecord(**record) for record in self.state["steps"].values()]

    def run(self, step: Step) -> StepRecord:
        """Reuse ``step`` if its artefact exists, else run its command; record and return what happened.

        Raises:
            NnsslError: the command is not installed or exits with a non-zero status (names the step and log).
        """
        self.index += 1
        command_text = shlex.join(str(part) for part in step.command)
        log = self.log_folder / f"{self.index:02d}_{step.name}.log"
        print(f"\n[demo {self.index}/{self.total}] {step.name}: {step.title}", flush=True)
        previous = self.state["steps"].get(step.name, {})
        if step.done():
            print(f"  reusing {step.artefact} (finished earlier)", flush=True)
            record = StepRecord(step.name, step.title, command_text, previous.get("seconds"), True,
                                previous.get("log", str(log)))
        else:
            print(f"  $ {command_text}\n  log: {log}", flush=True)
            seconds = self._execute(step, log)
            print(f"  done in {seconds:.1f} s", flush=True)
            record = StepRecord(step.name, step.title, command_text, round(seconds, 1), False, str(log))
        self.state["steps"][step.name] = asdict(record)
        self._save()
        return record

    def _step_env(self, step: Step) -> dict[str, str]:
        env = dict(self.env)
        for key, value in step.env.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env

    def _execute(self, step: Step, log: Path) -> float:
        self.log_folder.mkdir(parents=True, exist_ok=True)
        if step.prepare is not None:
            step.prepare()
        tail: deque[str] = deque(maxlen=FAILED_LOG_LINES)
        start = time.perf_counter()
        with open(log, "w", encoding="utf-8") as log_file:
            log_file.write(f"$ {shlex.join(str(part) for part in step.command)}\n")
            log_file.flush()
            try:
                process = subprocess.Popen([str(part) for part in step.command], env=self._step_env(step),
                                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                           errors="replace", bufsize=1)
            except FileNotFoundError:
                raise NnsslError(f"demo step '{step.name}' needs the command {step.command[0]!r}, which is not on "
                                 f"PATH ({scripts_folder()} first); install nnssl with its dependencies "
                                 "(`make venv`) and rerun") from None
            with process:
                assert process.stdout is not None
                for line in process.stdout:
                    log_file.write(line)
                    tail.append(line.rstrip("\n").rsplit("\r", 1)[-1])  # the last state of tqdm bars
                    if self.echo:
                        sys.stdout.write(line)
                        sys.stdout.flush()
            code = process.wait()
        seconds = time.perf_counter() - start
        if code != 0:
            print(f"  step '{step.name}' FAILED after {seconds:.1f} s (exit code {code}); last lines of {log}:",
                  file=sys.stderr)
            for line in tail:
                print(f"    {line}", file=sys.stderr)
            raise NnsslError(f"demo step '{step.name}' failed with exit code {code}; its full output is in {log}. "
                             "Fix the cause and rerun nnssl_demo (finished steps are reused) or add --fresh")
        if step.on_success is not None:
            step.on_success()
        return seconds


def subprocess_environment(folders: Mapping[str, Path]) -> dict[str, str]:
    """This process's environment with the demo's data folders, the venv's scripts first on PATH and the nnssl
    trainers on ``nnUNet_extTrainer`` (before any folder the user set)."""
    env = dict(os.environ)
    env.update({variable: str(folder) for variable, folder in folders.items()})
    env["PATH"] = os.pathsep.join(p for p in (str(scripts_folder()), env.get("PATH", "")) if p)
    ext = str(trainer_extension_folder())
    user_ext = [p for p in env.get(EXT_TRAINER_VARIABLE, "").split(os.pathsep) if p and Path(p).resolve() != Path(ext)]
    env[EXT_TRAINER_VARIABLE] = os.pathsep.join([ext, *user_ext])
    return env
