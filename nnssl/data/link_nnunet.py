"""``nnssl_convert --from-nnunet``: register an nnU-Net raw dataset's images as unlabeled nnssl data.

Images are symlinked (copied only where links fail), labels are ignored, and dataset.json is rewritten without
labels. Every image is read through its link and checked before it is committed.
"""
from __future__ import annotations

from pathlib import Path

from nnssl import __version__
from nnssl.data.raw_dataset import IMAGES_TR, RawCase, list_raw_cases, load_dataset_json, read_case
from nnssl.data.raw_writer import ConversionReport, RawDatasetWriter, link_or_copy, map_with_progress
from nnssl.errors import NnsslError
from nnssl.paths import env_folder, find_dataset, nnssl_raw, parse_dataset_name

NNUNET_RAW = "nnUNet_raw"
# dataset.json keys that describe labels (meaningless for unlabeled data)
LABEL_KEYS = ("labels", "regions_class_order")
# dataset.json keys carried over from the nnU-Net dataset (attribution and provenance)
KEPT_KEYS = ("description", "reference", "licence", "license", "release", "citation",
             "overwrite_image_reader_writer")


def resolve_nnunet_dataset(path_or_id: str) -> Path:
    """An nnU-Net raw dataset folder from a path, or an id/name looked up in ``$nnUNet_raw``.

    Raises:
        NnsslError: the path does not exist, ``nnUNet_raw`` is unset, or no/several datasets match.
    """
    candidate = Path(path_or_id).expanduser()
    if candidate.is_dir():
        return candidate.resolve()
    key = str(path_or_id).strip()
    if key.isdigit() or parse_dataset_name(key) is not None:
        return find_dataset(env_folder(NNUNET_RAW), key)
    raise NnsslError(f"--from-nnunet {path_or_id}: no such folder, and not a dataset id or DatasetXXX_Name; pass "
                     f"the nnU-Net raw dataset folder or its id in ${NNUNET_RAW}")


def _link_job(job: tuple[RawCase, tuple[Path, ...], tuple[Path, ...]]) -> tuple[str | None, str]:
    """Link one case's channel files via the staging folder, read them back, then commit them.

    Returns:
        ``(problem or None, "linked" | "copied")``. Runs in worker processes.
    """
    case, staged, targets = job
    modes = set()
    try:
        for source, tmp in zip(case.files, staged, strict=True):
            modes.add(link_or_copy(source, tmp))
        read_case(RawCase(case.identifier, staged))  # reading through the link proves it resolves and is valid
        for tmp, target in zip(staged, targets, strict=True):
            tmp.replace(target)
    except NnsslError as err:
        return str(err).replace(str(staged[0].parent), str(case.files[0].parent)), "/".join(sorted(modes))
    except OSError as err:
        return f"{case.files[0]}: cannot link or copy it ({err}); fix permissions or free space", ""
    finally:
        for tmp in staged:
            tmp.unlink(missing_ok=True)
    return None, "/".join(sorted(modes))


def link_nnunet_dataset(path_or_id: str, dataset_id: int, name: str | None = None, num_processes: int = 2,
                        overwrite: bool = False) -> ConversionReport:
    """Register the images of an nnU-Net raw dataset as ``$nnssl_raw/DatasetXXX_Name`` (links, labels ignored).

    Args:
        path_or_id: the nnU-Net raw dataset folder, or its id/name in ``$nnUNet_raw``.
        dataset_id: the nnssl dataset id (1..999).
        name: the nnssl dataset name; default: the nnU-Net dataset's name.
        num_processes: worker processes reading the images (1 = in this process).
        overwrite: link cases again even if present.

    Returns:
        What was linked, skipped and failed (with reasons).

    Raises:
        NnsslError: env var unset, unknown dataset, broken structure (missing imagesTr, empty, channel mismatch),
            the id taken, or no image usable.
    """
    raw_root = nnssl_raw()
    source_folder = resolve_nnunet_dataset(path_or_id)
    if not (source_folder / IMAGES_TR).is_dir():
        raise NnsslError(f"{source_folder / IMAGES_TR} is missing; --from-nnunet needs an nnU-Net raw dataset "
                         f"folder (dataset.json + imagesTr/<case>_0000<ending>)")
    meta = load_dataset_json(source_folder)
    cases = list_raw_cases(source_folder)
    if name is None:
        parsed = parse_dataset_name(source_folder.name)
        name = parsed[1] if parsed else source_folder.name
    writer = RawDatasetWriter(raw_root, dataset_id, name, meta["channel_names"], meta["file_ending"])
    report = ConversionReport(writer.folder)
    num_channels = len(meta["channel_names"])
    with writer:
        todo = [c for c in cases if overwrite or not writer.is_done(c.identifier)]
        todo_ids = {c.identifier for c in todo}
        report.skipped = [c.identifier for c in cases if c.identifier not in todo_ids]
        jobs = [(c, tuple(writer.staged(c.identifier, ch) for ch in range(num_channels)),
                 tuple(writer.target(c.identifier, ch) for ch in range(num_channels))) for c in todo]
        results = map_with_progress(_link_job, jobs, num_processes, desc=f"linking into {writer.folder.name}")
        modes = set()
        for case, (problem, mode) in zip(todo, results, strict=True):
            if problem is None:
                report.written.append(case.identifier)
                modes.add(mode)
            else:
                report.failed.append((str(case.files[0]), problem))
        if not writer.case_ids():
            writer.discard()
            raise NnsslError(f"no usable image in {source_folder}: " + "; ".join(r for _, r in report.failed))
        attribution = writer.copy_attribution(source_folder)
        extra = {key: meta[key] for key in KEPT_KEYS if key in meta}
        extra.update(
            name=writer.folder.name,
            source={"nnunet_raw_dataset": str(source_folder),
                    "note": f"images {'/'.join(sorted(modes))} by nnssl_convert {__version__} "
                            f"--from-nnunet; labels ignored"},
        )
        if attribution:
            extra["attribution"] = (f"licence and attribution files of {source_folder} are in "
                                    f"{writer.folder.name}/attribution/: {', '.join(attribution)}; keep them with "
                                    f"the data and cite as they ask")
        report.num_cases = writer.write_dataset_json(extra, drop=LABEL_KEYS)
    return report
