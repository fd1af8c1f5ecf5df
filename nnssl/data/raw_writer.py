"""Writing an nnssl raw dataset safely: per-case atomic writes, dataset.json last, resumable, nothing half-written.

Files are first written into a hidden per-run staging folder inside the dataset folder (same file system) and then
moved into ``imagesTr`` with ``os.replace``, so a killed run never leaves a partial image where nnunetv2 looks.
``dataset.json`` is written last, so a dataset without it (or whose ``numTraining`` disagrees) is visibly unfinished.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from multiprocessing import Pool
from pathlib import Path
from typing import Any, TypeVar

from tqdm import tqdm

from nnssl.config.plans import write_json_atomic
from nnssl.data.raw_dataset import DATASET_JSON, IMAGES_TR, channel_file_name
from nnssl.errors import NnsslError
from nnssl.paths import dataset_name, parse_dataset_name

STAGING_PREFIX = ".nnssl_staging-"
JSON_MODE = 0o644
ATTRIBUTION_FOLDER = "attribution"
# top-level files of a source folder that carry its licence or attribution (copied along with the images)
ATTRIBUTION_PATTERNS = ("README*", "LICENSE*", "LICENCE*", "ATTRIBUTION*", "NOTICE*", "COPYING*", "CITATION*")

Job = TypeVar("Job")
Result = TypeVar("Result")


@dataclass
class ConversionReport:
    """What a conversion run did.

    Attributes:
        dataset_folder: the written ``nnssl_raw/DatasetXXX_Name``.
        written: case ids written by this run.
        skipped: case ids already present (not rewritten).
        failed: ``(source, reason)`` for every input that could not be converted.
        ignored: files that are neither images nor DICOM.
        num_cases: cases in the dataset after the run.
    """

    dataset_folder: Path
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    ignored: list[Path] = field(default_factory=list)
    num_cases: int = 0


def map_with_progress(func: Callable[[Job], Result], jobs: Sequence[Job], num_processes: int, desc: str
                      ) -> list[Result]:
    """``[func(job) for job in jobs]`` with a tqdm bar, in ``num_processes`` workers (in-process if <= 1)."""
    if num_processes <= 1 or len(jobs) <= 1:
        return [func(job) for job in tqdm(jobs, desc=desc, unit="case")]
    with Pool(min(num_processes, len(jobs))) as pool:
        return list(tqdm(pool.imap(func, jobs), total=len(jobs), desc=desc, unit="case"))


def link_or_copy(source: Path, target: Path) -> str:
    """Place ``source`` at ``target`` (replaced atomically) as a symlink, or a copy where links fail.

    Returns:
        ``"linked"`` or ``"copied"``.
    """
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.symlink(Path(source).resolve(), tmp)
        mode = "linked"
    except OSError:  # no symlinks on this file system (or not allowed): copy instead
        shutil.copy2(source, tmp)
        mode = "copied"
    os.replace(tmp, target)
    return mode


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RawDatasetWriter:
    """Creates ``<raw_root>/DatasetXXX_Name`` and commits case files into its ``imagesTr`` one at a time.

    Args:
        raw_root: the ``nnssl_raw`` folder.
        dataset_id: 1..999; must not be taken by a dataset of another name.
        name: dataset name (letters, digits, ``_``).
        channel_names: dataset.json ``channel_names``.
        file_ending: file ending of the images.
    """

    def __init__(self, raw_root: Path, dataset_id: int, name: str, channel_names: dict[str, str],
                 file_ending: str) -> None:
        self.raw_root = Path(raw_root)
        self.folder = self.raw_root / dataset_name(dataset_id, name)
        self.images = self.folder / IMAGES_TR
        self.dataset_id = dataset_id
        self.channel_names = dict(channel_names)
        self.file_ending = file_ending
        self.staging: Path | None = None
        self._created = False

    def __enter__(self) -> RawDatasetWriter:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def open(self) -> None:
        """Check the id is free, create the folders and this run's staging folder; drop dead runs' staging.

        Raises:
            NnsslError: the id is used by a dataset of another name.
        """
        taken = [p.name for p in self.raw_root.glob(f"Dataset{self.dataset_id:03d}_*")
                 if p.is_dir() and (parsed := parse_dataset_name(p.name)) and p.name != self.folder.name
                 and parsed[0] == self.dataset_id]
        if taken:
            raise NnsslError(f"dataset id {self.dataset_id} is already used by {taken[0]} in {self.raw_root}; pick "
                             f"another -d or delete that folder")
        existing = self.folder / DATASET_JSON
        if existing.is_file():
            old = read_json_object(existing)
            if old.get("channel_names", self.channel_names) != self.channel_names or \
                    old.get("file_ending", self.file_ending) != self.file_ending:
                raise NnsslError(f"{existing} declares channel_names {old.get('channel_names')} and file_ending "
                                 f"{old.get('file_ending')!r}, not {self.channel_names} and {self.file_ending!r}; "
                                 f"pick another -d or delete {self.folder}")
        self._created = not self.folder.exists()
        self.images.mkdir(parents=True, exist_ok=True)
        for old in self.folder.glob(f"{STAGING_PREFIX}*"):
            pid = old.name[len(STAGING_PREFIX):].split("-", 1)[0]
            if pid.isdigit() and not _pid_alive(int(pid)):
                shutil.rmtree(old, ignore_errors=True)
        self.staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=self.folder))

    def close(self) -> None:
        """Remove this run's staging folder."""
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            self.staging = None

    def discard(self) -> None:
        """Undo a run that produced no case: remove the dataset folder if this run created it."""
        self.close()
        if self._created:
            shutil.rmtree(self.folder, ignore_errors=True)

    def target(self, identifier: str, channel: int = 0) -> Path:
        """Final path of one channel file: ``imagesTr/<case>_XXXX<ending>``."""
        return self.images / channel_file_name(identifier, channel, self.file_ending)

    def staged(self, identifier: str, channel: int = 0) -> Path:
        """Temporary path for a channel file; keeps the file ending so image writers pick the right format."""
        if self.staging is None:
            raise RuntimeError("RawDatasetWriter.open() must be called first")
        return self.staging / channel_file_name(identifier, channel, self.file_ending)

    def is_done(self, identifier: str) -> bool:
        """True if every channel file of the case is already in ``imagesTr``."""
        return all(self.target(identifier, c).exists() for c in range(len(self.channel_names)))

    def case_ids(self) -> list[str]:
        """Cases in ``imagesTr`` with every channel present."""
        suffix = channel_file_name("", 0, self.file_ending)
        ids = [p.name[: -len(suffix)] for p in self.images.glob(f"*{suffix}") if not p.name.startswith(".")]
        return sorted(i for i in ids if self.is_done(i))

    def copy_attribution(self, source_folder: Path) -> list[str]:
        """Link (or copy) licence/README/attribution files at the top of ``source_folder`` into ``attribution/``.

        Returns:
            The names placed there.
        """
        files = attribution_files(source_folder)
        if not files:
            return []
        folder = self.folder / ATTRIBUTION_FOLDER
        folder.mkdir(exist_ok=True)
        for path in files:
            link_or_copy(path, folder / path.name)
        return [p.name for p in files]

    def write_dataset_json(self, extra: dict[str, Any], drop: Iterable[str] = ()) -> int:
        """Write dataset.json last (atomically): existing keys, then ``extra``, then the counted cases.

        Args:
            extra: keys to set (e.g. ``name``, ``source``, licence notes).
            drop: keys to remove (e.g. ``labels`` of a linked nnU-Net dataset).

        Returns:
            numTraining, the number of complete cases in ``imagesTr``.
        """
        path = self.folder / DATASET_JSON
        content: dict[str, Any] = {}
        if path.is_file():
            try:
                content = read_json_object(path)
            except NnsslError:
                content = {}  # a broken old dataset.json is rewritten from scratch
        for key in drop:
            content.pop(key, None)
        content.update(extra)
        num_cases = len(self.case_ids())
        content.update(channel_names=self.channel_names, file_ending=self.file_ending, numTraining=num_cases)
        write_json_atomic(content, path)
        path.chmod(JSON_MODE)  # the temp file behind write_json_atomic is private (0600); others must read it
        return num_cases


def attribution_files(folder: Path) -> list[Path]:
    """Licence, README and attribution files at the top of ``folder``."""
    return sorted({p for pattern in ATTRIBUTION_PATTERNS for p in Path(folder).glob(pattern) if p.is_file()})


def read_json_object(path: Path) -> dict[str, Any]:
    """Read a JSON object; NnsslError naming the file if it is not one."""
    try:
        content = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise NnsslError(f"{path} cannot be read as JSON ({err}); fix or delete it") from None
    if not isinstance(content, dict):
        raise NnsslError(f"{path} must hold a JSON object; fix or delete it")
    return content
