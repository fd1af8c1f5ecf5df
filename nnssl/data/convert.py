"""``nnssl_convert``'s engine: CT files and DICOM series found in a folder -> an nnssl raw dataset.

Every readable 3D CT volume becomes ``nnssl_raw/DatasetXXX_Name/imagesTr/<case>_0000.nii.gz`` (voxels, pixel type
and geometry unchanged). Files are found by ending (``.nii``, ``.nii.gz``, ``.nrrd``, ``.nhdr``, ``.mha``,
``.mhd``); every other file is offered to GDCM, which groups DICOM files into series (one volume per series, several
per folder allowed). A file that cannot be used is reported with the reason and the rest is still converted.
"""
from __future__ import annotations

import contextlib
import locale
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnssl import __version__
from nnssl.config.enums import StrEnum
from nnssl.data.image_checks import check_image_array, check_image_file
from nnssl.data.raw_dataset import describe_read_error
from nnssl.data.raw_writer import ConversionReport, RawDatasetWriter, attribution_files, map_with_progress
from nnssl.errors import NnsslError
from nnssl.paths import nnssl_raw

IMAGE_FILE_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
DETACHED_HEADER_ENDINGS = (".mhd", ".nhdr")  # their voxels live in a companion file of the same stem
COMPANION_ENDINGS = (".raw", ".zraw", ".raw.gz")
OUTPUT_FILE_ENDING = ".nii.gz"
CT_CHANNEL_NAMES = {"0": "CT"}
CHANNEL0_SUFFIX = "_0000"  # inputs already named like nnU-Net images lose it: lung_0000.nii.gz -> case "lung"
IMAGE_POSITION_TAG = "0020|0032"  # DICOM Image Position (Patient)
SLICE_STEP_RTOL = 0.01  # DICOM slice steps may differ from their mean by 1 % (rounded header values)
DEFAULT_NUM_PROCESSES = 2


class SourceKind(StrEnum):
    """Where a volume comes from."""

    FILE = "file"
    DICOM_SERIES = "dicom_series"


@dataclass(frozen=True)
class SourceImage:
    """One input volume.

    Attributes:
        identifier: the case id it will get (sanitized, unique).
        description: what to name in messages (the file, or the folder and series number).
        files: the image file, or the DICOM files of the series.
        kind: file or DICOM series.
    """

    identifier: str
    description: str
    files: tuple[Path, ...]
    kind: SourceKind


def sanitize_identifier(text: str) -> str:
    """A case id from a file or folder name: letters, digits, ``-`` and ``_`` only (``"a b.1"`` -> ``"a_b_1"``)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_") or "case"


def _make_unique(names: list[str]) -> list[str]:
    """Append ``_2``, ``_3``... to repeated names (case-insensitively, for case-insensitive file systems)."""
    seen: set[str] = set()
    unique = []
    for name in names:
        candidate, k = name, 1
        while candidate.lower() in seen:
            k += 1
            candidate = f"{name}_{k}"
        seen.add(candidate.lower())
        unique.append(candidate)
    return unique


def _image_ending(path: Path) -> str | None:
    name = path.name.lower()
    return next((e for e in IMAGE_FILE_ENDINGS if name.endswith(e)), None)


def _relative_id(relative: Path, root_name: str) -> str:
    """``sub/dir/scan_0000`` -> ``sub_dir_scan``; the root folder itself -> its name."""
    text = "_".join(relative.parts) or root_name
    return sanitize_identifier(text.removesuffix(CHANNEL0_SUFFIX))


def discover_sources(input_folder: Path) -> tuple[list[SourceImage], list[Path]]:
    """Find image files and DICOM series below ``input_folder`` (recursively, hidden entries skipped).

    Returns:
        ``(sources, ignored)``: volumes in path order with unique ids; files that are neither.
    """
    root = Path(input_folder)
    found: list[tuple[str, str, tuple[Path, ...], SourceKind]] = []
    ignored: list[Path] = []
    for folder, names in sorted((Path(d), sorted(ns)) for d, _, ns in _walk(root)):
        others = []
        header_stems = {n[: -len(e)] for n in names for e in DETACHED_HEADER_ENDINGS if n.lower().endswith(e)}
        for name in names:
            path = folder / name
            ending = _image_ending(path)
            if ending is None:
                companion = any(name.lower().endswith(e) and name[: -len(e)] in header_stems for e in COMPANION_ENDINGS)
                if not companion:
                    others.append(path)
                continue
            ident = _relative_id(path.relative_to(root).with_name(path.name[: -len(ending)]), root.name)
            found.append((ident, str(path), (path,), SourceKind.FILE))
        if not others:
            continue
        with keep_locale():
            series_ids = sorted(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
        claimed: set[Path] = set()
        for k, series_id in enumerate(series_ids, start=1):
            with keep_locale():
                files = tuple(Path(f) for f in sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_id))
            claimed.update(files)
            ident = _relative_id(folder.relative_to(root), root.name)
            suffix = f"_series{k}" if len(series_ids) > 1 else ""
            description = f"{folder} (DICOM series {k} of {len(series_ids)}, {len(files)} files)"
            found.append((ident + suffix, description, files, SourceKind.DICOM_SERIES))
        ignored.extend(p for p in others if p not in claimed)
    ids = _make_unique([f[0] for f in found])
    return [SourceImage(i, d, files, kind) for i, (_, d, files, kind) in zip(ids, found, strict=True)], ignored


@contextlib.contextmanager
def keep_locale() -> Iterator[None]:
    """Restore the process locale after a GDCM call: GDCM switches it to "C", after which Python's default text
    encoding becomes ASCII for the rest of the process (``Path.read_text`` then fails on any non-ASCII file)."""
    saved = locale.setlocale(locale.LC_ALL)
    try:
        yield
    finally:
        locale.setlocale(locale.LC_ALL, saved)


def _walk(root: Path) -> Iterator[tuple[str, list[str], list[str]]]:
    """``os.walk`` without hidden files and folders."""
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        yield folder, dirs, [n for n in names if not n.startswith(".")]


def _read_file(source: SourceImage) -> sitk.Image:
    check_image_file(source.files[0])
    return sitk.ReadImage(str(source.files[0]))


def _read_dicom_series(source: SourceImage) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(f) for f in source.files])
    reader.MetaDataDictionaryArrayUpdateOn()
    with keep_locale():
        image = reader.Execute()
    _check_slice_steps(reader, image, source.description)
    return image


def _check_slice_steps(reader: sitk.ImageSeriesReader, image: sitk.Image, description: str) -> None:
    """Refuse series with missing or unevenly spaced slices (ITK would silently assume an even step)."""
    num_slices = len(reader.GetFileNames())
    if image.GetDimension() != 3 or num_slices < 3:
        return
    if not all(reader.HasMetaDataKey(i, IMAGE_POSITION_TAG) for i in range(num_slices)):
        return
    positions = np.array([[float(v) for v in reader.GetMetaData(i, IMAGE_POSITION_TAG).split("\\")]
                          for i in range(num_slices)])  # (S, 3) mm
    normal = np.array(image.GetDirection()).reshape(3, 3)[:, 2]  # the slice axis in patient space
    steps = np.diff(np.sort(positions @ normal))  # (S - 1,)
    mean_step = float(steps.mean())
    if mean_step <= 0 or np.max(np.abs(steps - mean_step)) > SLICE_STEP_RTOL * mean_step:
        raise NnsslError(f"{description}: slices are not evenly spaced (steps {steps.min():.3g} to "
                         f"{steps.max():.3g} mm: missing or duplicate slices?); export the complete series")


_READERS = {SourceKind.FILE: _read_file, SourceKind.DICOM_SERIES: _read_dicom_series}


def read_source(source: SourceImage) -> sitk.Image:
    """Read one input volume as a SimpleITK image.

    Raises:
        NnsslError: unreadable, truncated or (DICOM) unevenly sliced; the message names the source.
    """
    try:
        return _READERS[source.kind](source)
    except NnsslError:
        raise
    except Exception as err:  # SimpleITK raises RuntimeError with multi-line ITK text
        raise NnsslError(f"{source.description}: cannot be read ({describe_read_error(err)}); re-export or remove "
                         f"it") from None


def image_to_czyx(image: sitk.Image) -> tuple[np.ndarray, tuple[float, ...]]:
    """A SimpleITK image as nnunetv2 lays it out.

    Returns:
        ``(data, spacing)``: a view (C, Z, Y, X) -- a 2D image gives Z = 1, a 4D image one channel per volume --
        and the spacing (Z, Y, X) in mm.
    """
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise NnsslError(f"image has {image.GetNumberOfComponentsPerPixel()} components per voxel (RGB/vector); "
                         f"CT must be grayscale")
    array = sitk.GetArrayViewFromImage(image)  # (Z, Y, X) for 3D; (Y, X) 2D; (T, Z, Y, X) 4D
    spacing = tuple(float(s) for s in reversed(image.GetSpacing()))
    if image.GetDimension() == 2:
        return array[None, None], (1.0, *spacing)  # (1, 1, Y, X); check_image_array reports it as 2D
    if image.GetDimension() == 3:
        return array[None], spacing  # (1, Z, Y, X)
    return array, spacing[1:]  # (T, Z, Y, X): ITK's 4th axis as channels


def _convert_job(job: tuple[SourceImage, Path, Path]) -> str | None:
    """Convert one volume to ``target`` via ``staged``; the problem as text, or None. Runs in worker processes."""
    source, staged, target = job
    try:
        image = read_source(source)
        try:
            data, spacing = image_to_czyx(image)
        except NnsslError as err:
            raise NnsslError(f"{source.description}: {err}") from None
        check_image_array(data, spacing, source.description, expected_channels=len(CT_CHANNEL_NAMES))
        sitk.WriteImage(image, str(staged), True)
        staged.replace(target)
    except NnsslError as err:
        return str(err)
    except OSError as err:  # disk full, permissions
        return f"{source.description}: cannot write {target} ({err}); free space or fix permissions and rerun"
    finally:
        staged.unlink(missing_ok=True)
    return None


def convert_folder(input_folder: Path, dataset_id: int, name: str, num_processes: int = DEFAULT_NUM_PROCESSES,
                   overwrite: bool = False) -> ConversionReport:
    """Convert every CT volume below ``input_folder`` into ``$nnssl_raw/DatasetXXX_Name``.

    Cases already in ``imagesTr`` are skipped unless ``overwrite``; licence/README files at the top of the input
    are linked into ``attribution/``; dataset.json is written last.

    Args:
        input_folder: folder with image files and/or DICOM series folders (searched recursively).
        dataset_id: 1..999.
        name: dataset name.
        num_processes: worker processes (1 = in this process).
        overwrite: convert cases again even if present.

    Returns:
        What was written, skipped, failed (with reasons) and ignored.

    Raises:
        NnsslError: ``nnssl_raw`` unset, input not a folder or without images, the id taken, or nothing converted.
    """
    writer = RawDatasetWriter(nnssl_raw(), dataset_id, name, CT_CHANNEL_NAMES, OUTPUT_FILE_ENDING)
    input_folder = Path(input_folder).expanduser().resolve()
    if not input_folder.is_dir():
        raise NnsslError(f"{input_folder} is not a folder; pass -i a folder holding CT files or DICOM series")
    sources, ignored = discover_sources(input_folder)
    if not sources:
        raise NnsslError(f"no CT images found in {input_folder} (looked recursively for {', '.join(IMAGE_FILE_ENDINGS)}"
                         f" files and DICOM series); point -i at the folder that holds them")
    notices = set(attribution_files(input_folder))
    report = ConversionReport(writer.folder, ignored=[p for p in ignored if p not in notices])
    with writer:
        todo = [s for s in sources if overwrite or not writer.is_done(s.identifier)]
        todo_ids = {s.identifier for s in todo}
        report.skipped = [s.identifier for s in sources if s.identifier not in todo_ids]
        jobs = [(s, writer.staged(s.identifier), writer.target(s.identifier)) for s in todo]
        problems = map_with_progress(_convert_job, jobs, num_processes, desc=f"converting to {writer.folder.name}")
        for source, problem in zip(todo, problems, strict=True):
            if problem is None:
                report.written.append(source.identifier)
            else:
                report.failed.append((source.description, problem))
        if not writer.case_ids():
            writer.discard()
            reasons = "; ".join(reason for _, reason in report.failed)
            raise NnsslError(f"nothing could be converted from {input_folder}: {reasons}")
        attribution = writer.copy_attribution(input_folder)
        by_source = {s.identifier: str(s.files[0] if s.kind == SourceKind.FILE else s.files[0].parent)
                     for s in sources if s.identifier in report.written or s.identifier in report.skipped}
        extra = {
            "name": writer.folder.name,
            "description": f"unlabeled CT converted by nnssl_convert {__version__} from {input_folder}",
            "source": {"input": str(input_folder), "cases": by_source},
        }
        if attribution:
            extra["attribution"] = (f"licence and attribution files of {input_folder} are in "
                                    f"{writer.folder.name}/attribution/: {', '.join(attribution)}; keep them with "
                                    f"the data and cite as they ask")
        report.num_cases = writer.write_dataset_json(extra)
    return report
