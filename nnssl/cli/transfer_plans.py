"""``nnssl_transfer_plans``: nnU-Net plans for a downstream dataset that match an nnssl pretraining, then preprocess.

    nnUNetv2_plan_and_preprocess -d 501 -c 3d_fullres -np 2      # nnU-Net as usual, first
    nnssl_transfer_plans -d 501 -pd 500 [-m mae -e primus_s | --checkpoint PATH] [-p nnsslPlans] [-np 2]

Writes ``$nnUNet_preprocessed/DatasetXXX/<plans>.json`` (from ``nnUNetPlans.json``) whose ``3d_fullres`` uses the
pretraining's spacing and intensity normalization (CT statistics go to ``foreground_intensity_properties_per_channel``,
where nnU-Net's ``CTNormalization`` reads them), an encoder-compatible patch size, the fine-tuning network class and
kwargs, and a ``pretrained`` block (checkpoint path, sha256, encoder config). It links the dataset to the checkpoint
(``nnssl_pretrained.json``, read by SSL trainers started on ``nnUNetPlans``) and runs nnU-Net's preprocessing.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any

from nnssl.cli.entry import cli_entry
from nnssl.config.enums import Normalization
from nnssl.config.plans import DEFAULT_PLANS_NAME, write_json_atomic
from nnssl.config.pretrained import PRETRAINED_KEY, PretrainedBlock, file_sha256, write_link
from nnssl.errors import NnsslError
from nnssl.models.finetune_arch import cap_patch_to_median, finetune_architecture, round_patch_size
from nnssl.paths import env_folder, find_dataset, nnssl_results, parse_dataset_name
from nnssl.training.checkpoint import CHECKPOINT_FINAL, load_pretrained_encoder

NNUNET_PREPROCESSED = "nnUNet_preprocessed"
SOURCE_PLANS = "nnUNetPlans"
CONFIGURATION = "3d_fullres"
NNUNET_SCHEME = {Normalization.CT: "CTNormalization", Normalization.ZSCORE: "ZScoreNormalization"}
CT_CHANNEL_NAME = "ct"
STAGE_KEYS = ("inherits_from", "previous_stage", "next_stage")  # dropped: the new plans hold one configuration
RUN_SEPARATOR = "__"  # nnssl results runs are <method>__<encoder>__<plans>


def find_checkpoint(pretrain_dataset: str, method: str | None, encoder: str | None) -> Path:
    """``checkpoint_final.pth`` of the one finished pretraining run matching ``method`` / ``encoder``.

    Raises:
        NnsslError: no runs, no finished run, or several candidates (naming them and how to choose).
    """
    results = nnssl_results()
    try:
        root = find_dataset(results, pretrain_dataset)
    except NnsslError:
        raise NnsslError(f"no pretraining results for dataset {pretrain_dataset} in {results}; run "
                         f"`nnssl_pretrain -d {pretrain_dataset}` first or pass --checkpoint PATH") from None
    runs = sorted(p for p in root.iterdir() if p.is_dir() and len(p.name.split(RUN_SEPARATOR)) == 3)
    runs = [r for r in runs if method in (None, r.name.split(RUN_SEPARATOR)[0])
            and encoder in (None, r.name.split(RUN_SEPARATOR)[1])]
    wanted = f" with method={method or 'any'}, encoder={encoder or 'any'}"
    if not runs:
        raise NnsslError(f"no pretraining run in {root}{wanted}; run `nnssl_pretrain -d {root.name}` first or pass "
                         "--checkpoint PATH")
    finished = [r / CHECKPOINT_FINAL for r in runs if (r / CHECKPOINT_FINAL).is_file()]
    if not finished:
        names = ", ".join(r.name for r in runs)
        raise NnsslError(f"pretraining run(s) {names} in {root} have no {CHECKPOINT_FINAL} yet; finish them with "
                         "`nnssl_pretrain ... --c` or pass --checkpoint <run>/checkpoint_latest.pth")
    if len(finished) > 1:
        names = ", ".join(p.parent.name for p in finished)
        raise NnsslError(f"several finished pretraining runs in {root}: {names}; choose one with -m METHOD -e ENCODER "
                         "or --checkpoint PATH")
    return finished[0]


def transfer_configuration(source_plans: dict[str, Any], dataset_json: dict[str, Any], block: PretrainedBlock,
                           plans_name: str, configuration: str = CONFIGURATION,
                           patch_size: tuple[int, int, int] | None = None) -> tuple[dict[str, Any], list[str]]:
    """New plans: ``source_plans`` with one configuration matched to the pretraining.

    Args:
        source_plans: nnU-Net's plans dict (``nnUNetPlans.json``), not modified.
        dataset_json: the downstream ``dataset.json`` (channel names).
        block: the pretrained block (checkpoint header facts).
        plans_name: name of the new plans (file stem and ``data_identifier`` prefix).
        configuration: configuration to derive (``3d_fullres``).
        patch_size: fine-tuning patch size override (Z, Y, X, pretraining axis order).

    Returns:
        ``(plans, notes)``: the new plans dict and human-readable notes on what changed.
    """
    if configuration not in source_plans.get("configurations", {}):
        source = source_plans.get("plans_name", SOURCE_PLANS)
        raise NnsslError(f"{source}.json has no configuration {configuration!r}; run "
                         f"`nnUNetv2_plan_and_preprocess -d <id> -c {configuration} -np 2` first")
    plans = copy.deepcopy(source_plans)
    conf = _resolved(plans, configuration)
    for key in STAGE_KEYS:
        conf.pop(key, None)
    plans["plans_name"] = plans_name
    plans["configurations"] = {configuration: conf}
    pre = block.pretraining_plans()
    transpose = [int(a) for a in plans.get("transpose_forward", (0, 1, 2))]
    notes = []

    old_spacing = [float(s) for s in conf["spacing"]]
    new_spacing = [float(pre.spacing[a]) for a in transpose]
    median = [round(m * o / n) for m, o, n in zip(conf["median_image_size_in_voxels"], old_spacing, new_spacing,
                                                  strict=True)]
    conf["spacing"] = new_spacing
    conf["median_image_size_in_voxels"] = median
    conf["data_identifier"] = f"{plans_name}_{configuration}"
    notes.append(f"spacing {old_spacing} -> {new_spacing} mm (pretraining); median shape now {median}")

    channels = dataset_json.get("channel_names", dataset_json.get("modality", {}))
    schemes = list(conf["normalization_schemes"])
    stats = plans.setdefault("foreground_intensity_properties_per_channel", {})
    for index in range(len(schemes)):
        is_ct = str(channels.get(str(index), "")).lower() == CT_CHANNEL_NAME
        if pre.normalization == Normalization.CT and not is_ct:
            notes.append(f"channel {index} ({channels.get(str(index))}) is not CT: keeps {schemes[index]}")
            continue
        schemes[index] = NNUNET_SCHEME[pre.normalization]
        conf["use_mask_for_norm"][index] = False
        if pre.intensity_stats is not None:
            stats[str(index)] = {k: float(v) for k, v in vars(pre.intensity_stats).items()}
        notes.append(f"channel {index}: {schemes[index]} with the pretraining statistics "
                     f"{stats.get(str(index), 'per image')}")
    conf["normalization_schemes"] = schemes

    architecture = finetune_architecture(block.encoder)
    multiple = [architecture.patch_multiple[a] for a in transpose]
    wanted = [int(v) for v in (patch_size if patch_size is not None else pre.downstream_patch_size)]
    wanted = [wanted[a] for a in transpose]
    conf["patch_size"] = list(round_patch_size(cap_patch_to_median(wanted, median, multiple), multiple))
    notes.append(f"patch size {conf['patch_size']} (requested {wanted}, image median {median}, grid {multiple})")
    conf["architecture"] = architecture.plans_entry()
    conf[PRETRAINED_KEY] = block.to_dict()
    notes.append(f"network {architecture.network_class_name} for encoder {block.encoder_name}")
    return plans, notes


def _resolved(plans: dict[str, Any], configuration: str) -> dict[str, Any]:
    """A configuration with nnU-Net's ``inherits_from`` resolved (parent keys first)."""
    conf = copy.deepcopy(plans["configurations"][configuration])
    parent = conf.get("inherits_from")
    return {**_resolved(plans, parent), **conf} if parent else conf


def transfer_plans(dataset: str, pretrain_dataset: str | None = None, method: str | None = None,
                   encoder: str | None = None, checkpoint: Path | None = None, plans_name: str = DEFAULT_PLANS_NAME,
                   source_plans: str = SOURCE_PLANS, configuration: str = CONFIGURATION, num_processes: int = 2,
                   patch_size: tuple[int, int, int] | None = None, preprocess: bool = True) -> Path:
    """Write the matched plans and the link for ``dataset``, then preprocess; returns the plans file.

    Raises:
        NnsslError: missing nnU-Net plans, no or ambiguous checkpoint, unreadable checkpoint.
    """
    if plans_name == source_plans:
        raise NnsslError(f"-p {plans_name} would overwrite the nnU-Net plans it starts from (-sp {source_plans}); "
                         f"write the matched plans under another name, e.g. -p {DEFAULT_PLANS_NAME}")
    if checkpoint is None:
        if pretrain_dataset is None:
            raise NnsslError("name the pretraining with -pd <pretraining dataset id> or pass --checkpoint PATH")
        checkpoint = find_checkpoint(pretrain_dataset, method, encoder)
    checkpoint = Path(checkpoint).resolve()
    header, _ = load_pretrained_encoder(checkpoint)
    block = PretrainedBlock.from_header(header, checkpoint, file_sha256(checkpoint))

    root = env_folder(NNUNET_PREPROCESSED)
    hint = f"run `nnUNetv2_plan_and_preprocess -d {dataset} -c {configuration} -np {num_processes}` first"
    try:
        folder = find_dataset(root, dataset)
    except NnsslError:
        raise NnsslError(f"dataset {dataset} has no nnU-Net preprocessed folder in {root}; {hint}") from None
    source_file = folder / f"{source_plans}.json"
    if not source_file.is_file():
        raise NnsslError(f"no {source_file}; {hint}")
    plans, notes = transfer_configuration(_read_json(source_file), _read_json(folder / "dataset.json"), block,
                                          plans_name, configuration, patch_size)
    target = folder / f"{plans_name}.json"
    write_json_atomic(plans, target)
    link = write_link(folder, block)
    print(f"nnssl: checkpoint {checkpoint} ({block.encoder_name}, {block.method.get('name')})")
    for note in notes:
        print(f"nnssl: {note}")
    print(f"nnssl: wrote {target} and linked {link}")
    if preprocess:
        _preprocess(folder, plans_name, configuration, num_processes)
    parsed = parse_dataset_name(folder.name)
    dataset_id = parsed[0] if parsed else folder.name
    print(f"nnssl: done. Train with `nnUNetv2_train {dataset_id} {configuration} 0 -tr SSLViTTrainer -p {plans_name}`"
          f" (or `-tr SSLSwinTrainer` for Swin encoders); nnUNetPlans runs pick up the link")
    return target


def _preprocess(folder: Path, plans_name: str, configuration: str, num_processes: int) -> None:
    """nnU-Net's own preprocessing (``nnUNetv2_preprocess -d ID -plans_name P -c 3d_fullres -np N``)."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import preprocess_dataset

    parsed = parse_dataset_name(folder.name)
    if parsed is None:
        raise NnsslError(f"{folder.name} is not a DatasetXXX_Name folder")
    preprocess_dataset(parsed[0], plans_name, (configuration,), [num_processes])


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise NnsslError(f"{path} is missing; re-run `nnUNetv2_plan_and_preprocess` for this dataset") from None
    except json.JSONDecodeError as err:
        raise NnsslError(f"{path} is not valid JSON ({err}); re-run `nnUNetv2_plan_and_preprocess`") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nnssl_transfer_plans", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n")[1])
    p.add_argument("-d", dest="dataset", required=True, help="downstream nnU-Net dataset id or DatasetXXX_Name")
    p.add_argument("-pd", dest="pretrain_dataset", help="pretraining dataset id (in $nnssl_results)")
    p.add_argument("-m", dest="method", help="pretraining method of the run to use (when several)")
    p.add_argument("-e", dest="encoder", help="encoder of the run to use (when several)")
    p.add_argument("--checkpoint", type=Path, help="an nnssl checkpoint file instead of -pd/-m/-e")
    p.add_argument("-p", dest="plans_name", default=DEFAULT_PLANS_NAME, help="plans to write (default %(default)s)")
    p.add_argument("-sp", dest="source_plans", default=SOURCE_PLANS, help="nnU-Net plans to start from "
                   "(default %(default)s)")
    p.add_argument("-c", dest="configuration", default=CONFIGURATION, help="configuration (default %(default)s)")
    p.add_argument("-np", dest="num_processes", type=int, default=2, help="preprocessing workers (default 2)")
    p.add_argument("--patch-size", type=int, nargs=3, metavar=("Z", "Y", "X"),
                   help="fine-tuning patch size (default: the pretraining plans' downstream_patch_size)")
    p.add_argument("--no-preprocess", action="store_true", help="write plans and link only")
    return p


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    transfer_plans(args.dataset, args.pretrain_dataset, args.method, args.encoder, args.checkpoint, args.plans_name,
                   args.source_plans, args.configuration, args.num_processes,
                   tuple(args.patch_size) if args.patch_size else None, not args.no_preprocess)
    return 0
