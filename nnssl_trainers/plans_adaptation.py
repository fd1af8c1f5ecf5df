"""Adapt an nnU-Net plans dict to an SSL encoder before the trainer reads it.

nnU-Net copies ``self.plans_manager.plans`` into ``<results>/plans.json`` in ``on_train_start``, and the predictor
rebuilds the network from that file alone. The trainers therefore write everything that defines the network into the
plans dict *before* ``nnUNetTrainer.__init__`` parses it (``get_configuration`` deep-copies, so later edits would be
lost): the encoder-compatible patch size, the ``architecture`` (class + kwargs) and the ``pretrained`` block.

On nnU-Net's default ``nnUNetPlans`` (the user's literal ``nnUNetv2_train 501 3d_fullres 0 -tr SSLViTTrainer``) the
pretrained block comes from the link file ``nnssl_transfer_plans`` leaves in ``$nnUNet_preprocessed/DatasetXXX/``,
and differences in spacing or normalization from the pretraining are reported with numbers. Once a fold has started,
the results folder's ``plans.json`` records the encoder, and every later fold, ``--c`` and ``--val`` of that folder
keep it (a different link is refused: the folds of one model must share their encoder).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nnunetv2.paths import nnUNet_preprocessed, nnUNet_results
from nnunetv2.utilities.file_path_utilities import convert_trainer_plans_config_to_identifier
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnssl.config.enums import Normalization
from nnssl.config.pretrained import LINK_FILENAME, PRETRAINED_KEY, PretrainedBlock, read_link
from nnssl.errors import NnsslError
from nnssl.models.finetune_arch import (
    DEFAULT_VIT_DECODER,
    FinetuneArchitecture,
    finetune_architecture,
    round_patch_size,
)
from nnssl.models.registry import encoder_entry

SPACING_TOLERANCE = 0.1  # relative difference per axis before a spacing mismatch is reported
INTENSITY_TOLERANCE = 0.1  # difference of mean/std/percentiles, in units of the pretraining std
NNUNET_NORMALIZATION = {Normalization.CT: "CTNormalization", Normalization.ZSCORE: "ZScoreNormalization"}
CT_CHANNEL_NAME = "ct"
INTENSITY_KEYS = ("mean", "std", "percentile_00_5", "percentile_99_5")
TRAINER_OF_FAMILY = {"vit": "SSLViTTrainer", "swin": "SSLSwinTrainer"}


@dataclass
class Adaptation:
    """Result of :func:`adapt_plans`: what the trainer builds, and what it should tell the user."""

    architecture: FinetuneArchitecture
    block: PretrainedBlock | None
    patch_size: tuple[int, ...]
    messages: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def default_encoder_config(name: str) -> dict[str, Any]:
    """``{"name", "class", "kwargs"}`` of a registered encoder with its variant defaults (no module is built)."""
    cls = encoder_entry(name).cls
    return {"name": name, "class": f"{cls.__module__}.{cls.__qualname__}", "kwargs": {}}


def find_block(plans: dict[str, Any], configuration: str) -> tuple[PretrainedBlock | None, str]:
    """The ``pretrained`` block of ``configuration`` (after nnU-Net's inheritance), else the dataset's link file.

    Returns:
        ``(block or None, where it was looked for)``.
    """
    resolved = PlansManager(plans).get_configuration(configuration).configuration
    plans_file = f"{plans.get('plans_name', 'plans')}.json"
    if PRETRAINED_KEY in resolved:
        return PretrainedBlock.from_dict(resolved[PRETRAINED_KEY], source=f"{plans_file} [{configuration}]"), \
            plans_file
    root = nnUNet_preprocessed.get()
    if not root:
        return None, f"{plans_file} (nnUNet_preprocessed is not set, so no link file was searched)"
    folder = Path(root) / plans["dataset_name"]
    return read_link(folder), str(folder / LINK_FILENAME)


def recorded_block(plans: dict[str, Any], configuration: str, trainer_name: str) -> tuple[PretrainedBlock | None,
                                                                                           Path | None]:
    """The pretrained block in ``<nnUNet_results>/<dataset>/<trainer>__<plans>__<configuration>/plans.json`` (written
    by nnU-Net when the folder's first fold started), and that file; ``(None, None)`` before any fold ran."""
    root = nnUNet_results.get()
    if not root:
        return None, None
    folder = convert_trainer_plans_config_to_identifier(trainer_name, plans.get("plans_name"), configuration)
    path = Path(root) / plans["dataset_name"] / folder / "plans.json"
    try:
        saved = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None, None
    entry = saved.get("configurations", {}).get(configuration, {}).get(PRETRAINED_KEY)
    return (PretrainedBlock.from_dict(entry, source=str(path)), path) if entry else (None, None)


def adapt_plans(plans: dict[str, Any], configuration: str, dataset_json: dict[str, Any], trainer_name: str,
                family: str, needs_pretrained: bool, default_encoder: str,
                vit_decoder: str = DEFAULT_VIT_DECODER) -> Adaptation:
    """Write patch size, architecture and pretrained block into ``plans["configurations"][configuration]``.

    Args:
        plans: the plans dict handed to the trainer (mutated).
        configuration: e.g. ``"3d_fullres"``.
        dataset_json: the dataset's ``dataset.json`` (channel names).
        trainer_name: for messages.
        family: ``"vit"`` or ``"swin"``: the encoder family this trainer fine-tunes.
        needs_pretrained: False for ``_scratch`` trainers.
        default_encoder: encoder used by ``_scratch`` trainers when no checkpoint is linked.
        vit_decoder: decoder of the ViT network (``skip`` or ``patch``, see ``finetune_arch.ViTDecoder``).

    Raises:
        NnsslError: no pretraining linked (for pretrained trainers), or an encoder of the other family.
    """
    block, where = find_block(plans, configuration)
    dataset = plans["dataset_name"]
    recorded, record = recorded_block(plans, configuration, trainer_name)
    if recorded is not None:
        if block is not None and block.sha256 != recorded.sha256:
            raise NnsslError(f"{record.parent} holds {trainer_name} folds fine-tuned from {recorded.checkpoint} "
                             f"(sha256 {recorded.sha256[:12]}), but {where} now names {block.checkpoint} (sha256 "
                             f"{block.sha256[:12]}); the folds of one model must share their encoder. Link the "
                             f"original again (`nnssl_transfer_plans -d {dataset} --checkpoint {recorded.checkpoint}`)"
                             f" or move {record.parent} away to fine-tune the new encoder")
        block, where = recorded, str(record)
    if block is not None and not needs_pretrained and finetune_architecture(block.encoder).family != family:
        block = None  # a _scratch trainer only borrows the linked encoder's architecture, and only its own family's
    if block is None and needs_pretrained:
        raise NnsslError(f"{trainer_name} needs a pretrained encoder, but none is linked to {dataset} (looked in "
                         f"{where}); link one with `nnssl_transfer_plans -d {dataset} -pd <pretraining dataset id>`,"
                         f" or train {trainer_name.replace('Trainer', 'Trainer_scratch', 1)} from random init")
    encoder_config = block.encoder if block is not None else default_encoder_config(default_encoder)
    architecture = finetune_architecture(encoder_config, vit_decoder=vit_decoder)
    if architecture.family != family:
        raise NnsslError(f"{trainer_name} fine-tunes {family.upper()} encoders, but the checkpoint linked in {where} "
                         f"holds {encoder_config['name']!r} ({encoder_config['class']}, a {architecture.family} "
                         f"encoder); use {TRAINER_OF_FAMILY[architecture.family]} (or its variants) or link a "
                         f"{family} checkpoint")
    conf = plans["configurations"][configuration]
    resolved = PlansManager(plans).get_configuration(configuration).configuration
    if len(resolved["patch_size"]) != 3:
        raise NnsslError(f"{trainer_name} fine-tunes a 3D encoder, but configuration {configuration!r} of "
                         f"{plans.get('plans_name')} is {len(resolved['patch_size'])}D; train 3d_fullres (or "
                         "3d_lowres)")
    transpose = [int(a) for a in plans.get("transpose_forward", (0, 1, 2))]
    multiple = [architecture.patch_multiple[a] for a in transpose]
    old_patch = [int(p) for p in resolved["patch_size"]]
    patch = list(round_patch_size(old_patch, multiple))
    out = Adaptation(architecture, block, tuple(patch))
    if patch != old_patch:
        out.messages.append(f"patch size {old_patch} -> {patch} (multiple of the {encoder_config['name']} grid "
                            f"{multiple}); written to the saved plans.json")
    conf["patch_size"] = patch
    conf["architecture"] = architecture.plans_entry()
    if block is None:
        out.messages.append(f"no pretrained encoder linked; {encoder_config['name']} from random init")
        return out
    conf[PRETRAINED_KEY] = block.to_dict()
    if not needs_pretrained:
        out.messages.append(f"architecture of the linked {block.encoder_name}, weights from random init")
        return out
    out.messages.append(f"pretrained encoder {block.encoder_name} ({block.method.get('name')}) from "
                        f"{block.checkpoint}")
    out.warnings += _compare_with_pretraining(plans, resolved, dataset_json, block, transpose)
    if transpose != [0, 1, 2]:
        out.warnings.append(f"the plans transpose the axes ({transpose}): the stem kernel and the learned position "
                            "embedding are permuted, but RoPE axes and Swin's relative-position tables are not, so "
                            "part of the pretrained spatial knowledge is misaligned")
    return out


def _compare_with_pretraining(plans: dict[str, Any], resolved: dict[str, Any], dataset_json: dict[str, Any],
                              block: PretrainedBlock, transpose: list[int]) -> list[str]:
    """Warnings (with numbers) where the fine-tuning data differs from what the encoder saw."""
    warnings = []
    pre = block.pretraining_plans()
    pre_spacing = [pre.spacing[a] for a in transpose]
    spacing = [float(s) for s in resolved["spacing"]]
    if any(abs(s - p) > SPACING_TOLERANCE * p for s, p in zip(spacing, pre_spacing, strict=True)):
        warnings.append(f"spacing {spacing} mm differs from the pretraining spacing {pre_spacing} mm by more than "
                        f"{SPACING_TOLERANCE:.0%}; run `nnssl_transfer_plans` and train with `-p nnsslPlans` to "
                        "match it")
    channels = dataset_json.get("channel_names", dataset_json.get("modality", {}))
    if len(channels) != pre.num_input_channels:
        warnings.append(f"{len(channels)} input channels vs {pre.num_input_channels} in pretraining; the stem is "
                        "adapted (channel mean of the pretrained kernel)")
    expected = NNUNET_NORMALIZATION[pre.normalization]
    schemes = list(resolved.get("normalization_schemes", []))
    stats = plans.get("foreground_intensity_properties_per_channel", {})
    for index, scheme in enumerate(schemes):
        name = str(channels.get(str(index), "")).lower()
        if pre.normalization == Normalization.CT and name != CT_CHANNEL_NAME:
            continue
        if scheme != expected:
            warnings.append(f"channel {index} uses {scheme}, the pretraining used {expected}")
        elif pre.intensity_stats is not None and str(index) in stats:
            ours, theirs = stats[str(index)], pre.intensity_stats
            scale = max(theirs.std, 1e-8)
            off = {k: (round(float(ours[k]), 1), round(float(getattr(theirs, k)), 1)) for k in INTENSITY_KEYS
                   if abs(float(ours[k]) - float(getattr(theirs, k))) > INTENSITY_TOLERANCE * scale}
            if off:
                warnings.append(f"channel {index} CT statistics (this dataset, pretraining) differ: {off}; inputs are"
                                " normalized differently from pretraining (use `-p nnsslPlans` to match)")
    return warnings
