"""Reading an nnssl raw dataset (nnU-Net raw layout, images only).

Layout::

    nnssl_raw/DatasetXXX_Name/
        dataset.json                     # channel_names, file_ending, numTraining (labels optional)
        imagesTr/<case>_0000<ending>     # one file per channel: _0000, _0001, ...

Files are read with the reader nnunetv2 picks for the file ending (``SimpleITKIO`` for ``.nii.gz``).
"""
from __future__ import annotations

import contextlib
import functools
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from nnunetv2.imageio.base_reader_writer import BaseReaderWriter
from nnunetv2.imageio.reader_writer_registry import LIST_OF_IO_CLASSES, determine_reader_writer_from_file_ending

from nnssl.data.image_checks import check_image_array, check_image_file
from nnssl.errors import NnsslError

DATASET_JSON = "dataset.json"
IMAGES_TR = "imagesTr"
REQUIRED_KEYS = ("channel_names", "file_ending")
CHANNEL_DIGITS = 4  # nnU-Net's _XXXX channel suffix
# parts of ITK/SimpleITK exception text that say nothing to a user: C++ locations, object addresses, library tags
_ITK_NOISE = re.compile(r"(sitk::|ITK )?ERROR:|\w+\(0x[0-9a-f]+\):|\[\w+\] \w+:")
_ITK_SKIP_PREFIXES = ("Exception thrown in", "Reason:", "trouble")


@dataclass(frozen=True)
class RawCase:
    """One case of a raw dataset.

    Attributes:
        identifier: case id, the file name without ``_XXXX<ending>``.
        files: one file per channel, in channel order.
    """

    identifier: str
    files: tuple[Path, ...]


def channel_file_name(identifier: str, channel: int, file_ending: str) -> str:
    """``("case1", 0, ".nii.gz")`` -> ``"case1_0000.nii.gz"``."""
    return f"{identifier}_{channel:0{CHANNEL_DIGITS}d}{file_ending}"


def load_dataset_json(dataset_folder: Path) -> dict:
    """Read and check ``dataset.json`` of a raw dataset.

    Raises:
        NnsslError: the file is missing, not JSON, or lacks ``channel_names``/``file_ending``.
    """
    path = Path(dataset_folder) / DATASET_JSON
    if not path.is_file():
        raise NnsslError(f"{path} is missing; create the dataset with nnssl_convert (or write a dataset.json with "
                         f"channel_names, file_ending and numTraining)")
    try:
        content = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise NnsslError(f"{path} is not valid JSON ({err}); fix or regenerate it with nnssl_convert") from None
    if not isinstance(content, dict):
        raise NnsslError(f"{path} must hold a JSON object; regenerate it with nnssl_convert")
    missing = [key for key in REQUIRED_KEYS if key not in content]
    if missing:
        raise NnsslError(f"{path} lacks {', '.join(missing)}; add e.g. "
                         f"\"channel_names\": {{\"0\": \"CT\"}}, \"file_ending\": \".nii.gz\"")
    channels = content["channel_names"]
    if not isinstance(channels, dict) or not channels:
        raise NnsslError(f"{path}: channel_names must be a non-empty mapping like {{\"0\": \"CT\"}}")
    if sorted(channels) != [str(i) for i in range(len(channels))]:
        raise NnsslError(f"{path}: channel_names keys must be \"0\", \"1\", ... without gaps, got {sorted(channels)}")
    return content


def list_raw_cases(dataset_folder: Path) -> list[RawCase]:
    """List the cases of a raw dataset, checking its structure (not the voxels; see ``verify_dataset``).

    Args:
        dataset_folder: ``nnssl_raw/DatasetXXX_Name``.

    Returns:
        Cases sorted by identifier, each with one file per channel of ``channel_names``.

    Raises:
        NnsslError: missing dataset.json or imagesTr, empty dataset, files not named ``<case>_XXXX<ending>``,
            a case missing a channel or having extra channels, or ``numTraining`` disagreeing with imagesTr.
            All structure problems are listed in one message.
    """
    dataset_folder = Path(dataset_folder)
    meta = load_dataset_json(dataset_folder)
    images = dataset_folder / IMAGES_TR
    if not images.is_dir():
        raise NnsslError(f"{images} is missing; put the images there as <case>_0000{meta['file_ending']} "
                         f"(nnssl_convert does this)")
    ending = meta["file_ending"]
    num_channels = len(meta["channel_names"])
    pattern = re.compile(rf"^(?P<case>.+)_(?P<channel>\d{{{CHANNEL_DIGITS}}}){re.escape(ending)}$")
    by_case: dict[str, dict[int, Path]] = {}
    problems: list[str] = []
    for path in sorted(images.iterdir()):
        if path.name.startswith("."):
            continue  # hidden files (editors, OS) are not cases
        match = pattern.match(path.name)
        if match is None:
            problems.append(f"{path.name} is not named <case>_XXXX{ending} (rename it or remove it)")
            continue
        by_case.setdefault(match["case"], {})[int(match["channel"])] = path
    if not by_case and not problems:
        raise NnsslError(f"{images} holds no images (empty dataset); add <case>_0000{ending} files with nnssl_convert")
    cases = []
    for identifier, channels in sorted(by_case.items()):
        missing = [c for c in range(num_channels) if c not in channels]
        extra = sorted(c for c in channels if c >= num_channels)
        if missing:
            names = ", ".join(channel_file_name(identifier, c, ending) for c in missing)
            problems.append(f"case {identifier} lacks {names} (dataset.json declares {num_channels} channel(s))")
        if extra:
            names = ", ".join(channel_file_name(identifier, c, ending) for c in extra)
            problems.append(f"case {identifier} has extra channel file(s) {names} beyond the {num_channels} in "
                            f"dataset.json channel_names (fix channel_names or remove them)")
        if not missing and not extra:
            cases.append(RawCase(identifier, tuple(channels[c] for c in range(num_channels))))
    expected = meta.get("numTraining")
    if expected is not None and not problems and expected != len(cases):
        problems.append(f"dataset.json numTraining is {expected} but imagesTr holds {len(cases)} case(s) "
                        f"(an interrupted nnssl_convert? rerun it, or fix numTraining)")
    if problems:
        raise NnsslError(f"{dataset_folder} has {len(problems)} structure problem(s): " + "; ".join(problems))
    return cases


def file_ending_of(path: Path) -> str:
    """The longest file ending any nnunetv2 reader knows that ``path`` has (``".nii.gz"``, not ``".gz"``).

    Raises:
        NnsslError: no nnunetv2 reader handles this ending.
    """
    name = Path(path).name.lower()
    endings = {e for io_class in LIST_OF_IO_CLASSES for e in io_class.supported_file_endings}
    matches = [e for e in endings if name.endswith(e)]
    if not matches:
        raise NnsslError(f"{path}: no nnunetv2 reader handles this file type; convert it to .nii.gz with "
                         f"nnssl_convert")
    return max(matches, key=len)


@functools.cache
def reader_for(file_ending: str) -> type[BaseReaderWriter]:
    """The reader/writer class nnunetv2 uses for ``file_ending`` (e.g. ``SimpleITKIO`` for ``.nii.gz``)."""
    return determine_reader_writer_from_file_ending(file_ending, verbose=False)


def describe_read_error(err: BaseException, printed: str = "") -> str:
    """A reader exception (multi-line ITK text with C++ file names and addresses) as one short line."""
    lines = []
    for line in f"{err}\n{printed}".splitlines():
        line = _ITK_NOISE.sub("", line).strip(" :")
        if line and not line.startswith(_ITK_SKIP_PREFIXES):
            lines.append(line)
    if not lines:
        return type(err).__name__
    return lines[0] if len(lines) == 1 else f"{lines[0]}: {lines[-1]}"


def read_case(case: RawCase) -> tuple[np.ndarray, dict]:
    """Read one case with nnunetv2's reader for its file ending and check it.

    Args:
        case: the case; its files are its channels.

    Returns:
        ``(data, properties)``: data float32 (C, Z, Y, X) with C = ``len(case.files)``; nnunetv2's properties dict
        (``spacing`` (Z, Y, X) in mm, ``sitk_stuff`` with the SimpleITK geometry for ``SimpleITKIO``).

    Raises:
        NnsslError: a missing, unreadable or truncated file, channels of different geometry, or any problem
            ``check_image_array`` finds; the message names the file.
    """
    for path in case.files:
        if not path.is_file():
            raise NnsslError(f"{path} does not exist (a broken link?); restore it or rerun nnssl_convert")
        check_image_file(path)
    source = str(case.files[0]) if len(case.files) == 1 else f"case {case.identifier} ({case.files[0].parent})"
    reader = reader_for(file_ending_of(case.files[0]))()
    printed = io.StringIO()
    try:
        # nnunetv2's readers print their errors to stdout before raising a bare RuntimeError
        with contextlib.redirect_stdout(printed):
            data, properties = reader.read_images([str(p) for p in case.files])
    except Exception as err:  # SimpleITK/nibabel raise RuntimeError, OSError, ValueError, ... for broken files
        raise NnsslError(f"{source}: cannot be read ({describe_read_error(err, printed.getvalue())}); "
                         f"re-export or remove it") from None
    check_image_array(data, properties["spacing"], source, expected_channels=len(case.files))
    return data, properties
