"""``nnssl_convert``: CT files / DICOM series, or an nnU-Net raw dataset, -> ``$nnssl_raw/DatasetXXX_Name``."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import SimpleITK as sitk

from nnssl.cli.entry import cli_entry
from nnssl.data.convert import DEFAULT_NUM_PROCESSES, IMAGE_FILE_ENDINGS, convert_folder
from nnssl.data.link_nnunet import link_nnunet_dataset
from nnssl.data.raw_writer import ConversionReport
from nnssl.errors import NnsslError

MAX_IGNORED_SHOWN = 5


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnssl_convert",
        description="Convert unlabeled CT into $nnssl_raw/DatasetXXX_Name/imagesTr/<case>_0000.nii.gz + dataset.json. "
                    f"Reads {', '.join(IMAGE_FILE_ENDINGS)} files and DICOM series (one volume per series, searched "
                    "recursively), or links the images of an nnU-Net raw dataset (--from-nnunet). Reruns skip "
                    "cases already written.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("-i", "--input", help="folder with CT files and/or DICOM series folders")
    source.add_argument("--from-nnunet", metavar="PATH_OR_ID",
                        help="nnU-Net raw dataset folder, or its id/name in $nnUNet_raw: its images are linked "
                             "(copied where links fail), labels ignored")
    parser.add_argument("-d", "--dataset-id", type=int, required=True, help="nnssl dataset id, 1..999")
    parser.add_argument("-n", "--name", help="dataset name (letters, digits, _); required with -i, defaults to the "
                                             "nnU-Net dataset's name with --from-nnunet")
    parser.add_argument("-np", "--num-processes", type=int, default=DEFAULT_NUM_PROCESSES,
                        help=f"worker processes (default {DEFAULT_NUM_PROCESSES}; 1 = no workers)")
    parser.add_argument("--overwrite", action="store_true", help="convert cases again even if already written")
    return parser


def print_report(report: ConversionReport) -> None:
    """Summary on stdout; every failure (with its reason) and the ignored files on stderr."""
    print(f"{report.dataset_folder}: {report.num_cases} case(s); {len(report.written)} written now, "
          f"{len(report.skipped)} already there, {len(report.failed)} failed")
    if report.ignored:
        shown = ", ".join(p.name for p in report.ignored[:MAX_IGNORED_SHOWN])
        more = f" and {len(report.ignored) - MAX_IGNORED_SHOWN} more" if len(report.ignored) > MAX_IGNORED_SHOWN else ""
        print(f"ignored {len(report.ignored)} file(s) that are neither images nor DICOM: {shown}{more}",
              file=sys.stderr)
    if report.failed:
        print(f"nnssl: could not convert {len(report.failed)} input(s) (the rest was converted):", file=sys.stderr)
        for _, reason in report.failed:
            print(f"  {reason}", file=sys.stderr)


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.num_processes < 1:
        raise NnsslError(f"-np must be at least 1, got {args.num_processes}")
    sitk.ProcessObject_SetGlobalWarningDisplay(False)  # ITK warnings would tear the progress bar; errors still raise
    if args.input is not None:
        if args.name is None:
            raise NnsslError("-n NAME is required with -i (e.g. -n LungCTUnlabeled)")
        report = convert_folder(args.input, args.dataset_id, args.name, args.num_processes, args.overwrite)
    else:
        report = link_nnunet_dataset(args.from_nnunet, args.dataset_id, args.name, args.num_processes,
                                     args.overwrite)
    print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
