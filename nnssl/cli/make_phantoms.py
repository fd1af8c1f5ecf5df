"""``nnssl_make_phantoms``: write procedural thorax CT phantoms as an unlabeled nnssl or a labeled nnU-Net dataset.

Examples::

    nnssl_make_phantoms --unlabeled 40 -d 500                 # $nnssl_raw/Dataset500_PhantomCTUnlabeled
    nnssl_make_phantoms --labeled 20 --test 5 -d 501          # $nnUNet_raw/Dataset501_PhantomLungTumour
    nnssl_make_phantoms --labeled 4 -d 502 --shape 32 48 48 --spacing 2 0.8 --preview /tmp/p.png
    nnssl_make_phantoms --labeled 24 -d 501 --shape 32 48 48 --spacing 4 3 --tumour-mm 15 40   # the study phantoms
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from nnssl.cli.entry import cli_entry
from nnssl.data.phantom_tumours import DIAMETER_RANGE_MM
from nnssl.data.phantoms import DEFAULT_SHAPE, FILE_ENDING, SpacingRange, write_phantom_dataset
from nnssl.errors import NnsslError
from nnssl.paths import RAW, dataset_name, env_folder

NNUNET_RAW = "nnUNet_raw"
DEFAULT_NAMES = {False: "PhantomCTUnlabeled", True: "PhantomLungTumour"}
PREVIEW_WINDOW_HU = (-1000, 400)


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``nnssl_make_phantoms``."""
    parser = argparse.ArgumentParser(prog="nnssl_make_phantoms", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    kind = parser.add_mutually_exclusive_group(required=True)
    kind.add_argument("--unlabeled", type=int, metavar="N", help=f"N image-only cases into ${RAW}")
    kind.add_argument("--labeled", type=int, metavar="N", help=f"N cases with tumour labels into ${NNUNET_RAW}")
    parser.add_argument("-d", dest="dataset_id", type=int, required=True, help="dataset id, e.g. 500")
    parser.add_argument("-n", dest="name", default=None,
                        help=f"dataset name (default {DEFAULT_NAMES[False]} / {DEFAULT_NAMES[True]})")
    parser.add_argument("--test", type=int, default=0, metavar="K", help="K held-out labeled cases (imagesTs)")
    parser.add_argument("--seed", type=int, default=0, help="base seed; the same seed gives identical images")
    parser.add_argument("--shape", type=int, nargs=3, default=list(DEFAULT_SHAPE), metavar=("Z", "Y", "X"),
                        help="voxels per case (default %(default)s)")
    default = SpacingRange()
    parser.add_argument("--spacing", nargs=2, metavar=("SLICE", "INPLANE"), default=None,
                        help="slice and in-plane spacing in mm, each fixed (2.0) or a range drawn per case "
                             f"(1.5:3); default {_show(default.slice_mm)} {_show(default.inplane_mm)}")
    parser.add_argument("--tumour-mm", type=float, nargs=2, default=list(DIAMETER_RANGE_MM), metavar=("MIN", "MAX"),
                        help="range of the tumours' nominal diameters in mm, drawn log-uniformly (default "
                             "%(default)s; at least 2 slices across whatever you ask)")
    parser.add_argument("-np", dest="num_processes", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--output-root", type=Path, default=None,
                        help=f"write here instead of ${RAW} (unlabeled) / ${NNUNET_RAW} (labeled)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")
    parser.add_argument("--preview", type=Path, default=None, metavar="PNG",
                        help="also save the mid slices of the first case as a PNG")
    return parser


def parse_spacing(values: list[str] | None) -> SpacingRange:
    """``["1.5:3", "0.8"]`` -> ``SpacingRange((1.5, 3.0), (0.8, 0.8))``; None -> the default ranges."""
    if values is None:
        return SpacingRange()
    ranges = []
    for value in values:
        try:
            low, _, high = value.partition(":")
            ranges.append((float(low), float(high or low)))
        except ValueError:
            raise NnsslError(f"--spacing value {value!r} is not a number or a LOW:HIGH range in mm") from None
    return SpacingRange(slice_mm=ranges[0], inplane_mm=ranges[1])


@cli_entry
def main(argv: list[str] | None = None) -> int:
    """Write the dataset the arguments ask for (``argv`` defaults to ``sys.argv[1:]``)."""
    args = build_parser().parse_args(argv)
    labeled = args.labeled is not None
    count = args.labeled if labeled else args.unlabeled
    root = args.output_root or env_folder(NNUNET_RAW if labeled else RAW)
    folder = root / dataset_name(args.dataset_id, args.name or DEFAULT_NAMES[labeled])
    write_phantom_dataset(folder, count, labeled, args.seed, num_test=args.test, num_processes=args.num_processes,
                          shape=tuple(args.shape), spacing=parse_spacing(args.spacing), overwrite=args.overwrite,
                          tumour_mm=tuple(args.tumour_mm))
    print(f"wrote {count} {'labeled' if labeled else 'unlabeled'} phantoms"
          f"{f' + {args.test} test cases' if args.test else ''} to {folder}")
    if args.preview is not None:
        first = sorted((folder / "imagesTr").glob(f"*{FILE_ENDING}"))[0]
        save_preview(first, args.preview)
        print(f"preview of {first.name}: {args.preview}")
    return 0


def save_preview(image_file: Path, png: Path) -> None:
    """Axial, coronal and sagittal mid slices of a CT file in a lung window, with true aspect ratios."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import SimpleITK as sitk

    image = sitk.ReadImage(str(image_file))
    array = sitk.GetArrayFromImage(image)  # (Z, Y, X)
    sx, sy, sz = image.GetSpacing()
    z, y, x = (n // 2 for n in array.shape)
    views = [(array[z], sy / sx, "axial"), (np.flipud(array[:, y]), sz / sx, "coronal"),
             (np.flipud(array[:, :, x]), sz / sy, "sagittal")]
    figure, axes = plt.subplots(1, 3, figsize=(15, 5))
    for axis, (view, aspect, title) in zip(axes, views, strict=True):
        axis.imshow(view, cmap="gray", vmin=PREVIEW_WINDOW_HU[0], vmax=PREVIEW_WINDOW_HU[1], aspect=aspect)
        axis.set_title(f"{image_file.name} {title}")
        axis.axis("off")
    figure.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png, dpi=80)
    plt.close(figure)


def _show(span: tuple[float, float]) -> str:
    return f"{span[0]:g}:{span[1]:g}"
