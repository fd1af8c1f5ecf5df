"""``nnssl_pretrain``: self-supervised pretraining on a preprocessed dataset.

Single process: ``nnssl_pretrain -d 500 [-m mae] [-e primus_s] ...``. Several GPUs / processes:
``torchrun --nproc_per_node=N -m nnssl.cli.pretrain -d 500 ...`` (DDP; global batch = batch size x N x accumulate).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path
from typing import Any

from nnssl.cli.entry import cli_entry
from nnssl.config.pretrain import (
    PRETRAIN_CONFIG_FILE,
    RESUMABLE_OVERRIDES,
    DeviceKind,
    PretrainConfig,
    Schedule,
    parse_key_values,
    run_folder_name,
)
from nnssl.data.dataset import open_preprocessed
from nnssl.errors import NnsslError
from nnssl.methods.registry import check_compatible, list_methods
from nnssl.models.registry import list_encoders
from nnssl.paths import nnssl_results
from nnssl.training.distributed import init_distributed, shutdown
from nnssl.training.pretrainer import run_pretraining

_DEFAULTS = {f.name: f.default for f in dataclasses.fields(PretrainConfig) if f.default is not dataclasses.MISSING}
# CLI flag -> PretrainConfig field, for the options whose names differ.
_RENAMES = {"num_processes": "num_workers", "plans": "plans_name"}


def build_parser() -> argparse.ArgumentParser:
    d = _DEFAULTS
    epilog = (f"registered methods: {', '.join(list_methods())}\nregistered encoders: {', '.join(list_encoders())}\n"
              "global batch size = --batch-size x processes (torchrun --nproc_per_node) x --accumulate\n"
              "multi-process: torchrun --nproc_per_node=N -m nnssl.cli.pretrain -d ID ...")
    p = argparse.ArgumentParser(prog="nnssl_pretrain", description=__doc__.splitlines()[0], epilog=epilog,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                argument_default=argparse.SUPPRESS)
    p.add_argument("-d", dest="dataset", required=True, help="dataset id or DatasetXXX_Name")
    p.add_argument("-m", dest="method", help=f"SSL method (default {d['method']}; see the list below)")
    p.add_argument("-e", dest="encoder", help=f"encoder (default {d['encoder']}; see the list below)")
    p.add_argument("-p", dest="plans", help=f"plans name (default {d['plans_name']})")
    p.add_argument("--epochs", type=int, help=f"default {d['epochs']}")
    p.add_argument("--iters-per-epoch", type=int, help=f"optimizer steps per epoch (default {d['iters_per_epoch']})")
    p.add_argument("--batch-size", type=int, help=f"per process (default {d['batch_size']})")
    p.add_argument("--accumulate", type=int, help=f"gradient accumulation micro-batches (default {d['accumulate']})")
    p.add_argument("--lr", type=float, help=f"peak learning rate (default {d['lr']})")
    p.add_argument("--weight-decay", type=float, help=f"AdamW weight decay (default {d['weight_decay']})")
    p.add_argument("--warmup-epochs", type=int, help="linear warm-up epochs (default min(5, epochs // 10))")
    p.add_argument("--schedule", choices=[str(s) for s in Schedule], help=f"decay (default {d['schedule']})")
    p.add_argument("--grad-clip-norm", type=float, help=f"0 = off (default {d['grad_clip_norm']})")
    p.add_argument("--device", choices=[str(k) for k in DeviceKind], help=f"default {d['device']}")
    p.add_argument("--seed", type=int, help=f"default {d['seed']}")
    p.add_argument("-np", dest="num_processes", type=int,
                   help=f"data-loading workers per process, 0 = in-process (default {d['num_workers']})")
    p.add_argument("--patch-size", type=int, nargs=3, metavar=("Z", "Y", "X"), help="default: the planned size")
    p.add_argument("--save-every", type=int, help=f"checkpoint_latest every N epochs (default {d['save_every']})")
    p.add_argument("--preview-every", type=int, help=f"PNGs every N epochs (default {d['preview_every']})")
    p.add_argument("--no-augment", dest="augment", action="store_false", help="turn the light augmentation off")
    p.add_argument("--method-kwargs", nargs="+", metavar="KEY=VALUE", help="e.g. mask_ratio=0.6 norm_pix_loss=true")
    p.add_argument("--encoder-kwargs", nargs="+", metavar="KEY=VALUE", help="e.g. drop_path_rate=0.1")
    p.add_argument("--c", dest="continue_training", action="store_true", help="continue the run in its folder")
    return p


def config_overrides(args: dict[str, Any]) -> dict[str, Any]:
    """Explicitly passed CLI options as ``PretrainConfig`` fields."""
    out = {_RENAMES.get(key, key): value for key, value in args.items()}
    if "patch_size" in out:
        out["patch_size"] = tuple(out["patch_size"])
    for key in ("method_kwargs", "encoder_kwargs"):
        if key in out:
            out[key] = parse_key_values(out[key], "--" + key.replace("_", "-"))
    return out


def merge_for_continue(saved: PretrainConfig, overrides: dict[str, Any], source: Path) -> PretrainConfig:
    """The saved run's config with the options ``--c`` may change; any other changed option is an error."""
    current = saved.to_dict()
    wanted = PretrainConfig.from_dict({**current, **overrides}, source=str(source)).to_dict()
    changed = sorted(k for k, v in wanted.items() if current[k] != v)
    refused = [k for k in changed if k not in RESUMABLE_OVERRIDES]
    if refused:
        raise NnsslError(f"--c continues the run of {source} and cannot change {refused}; drop those options "
                         f"(changeable with --c: {sorted(RESUMABLE_OVERRIDES)}) or start a new run folder")
    return saved.replace(**{k: overrides[k] for k in changed})


def pretrain_from_args(args: dict[str, Any]) -> Path:
    """Resolve the dataset, build or restore the config and run (the typed core of the CLI)."""
    args = dict(args)
    dataset, continue_training = args.pop("dataset"), args.pop("continue_training", False)
    overrides = config_overrides(args)
    method = overrides.get("method", _DEFAULTS["method"])
    encoder = overrides.get("encoder", _DEFAULTS["encoder"])
    check_compatible(method, encoder)  # unknown names get a did-you-mean; refused pairs say why
    plans_name = overrides.get("plans_name", _DEFAULTS["plans_name"])
    preprocessed = open_preprocessed(dataset, plans_name)  # names the command to run when data is missing
    output_folder = nnssl_results() / preprocessed.root.name / run_folder_name(method, encoder, plans_name)
    saved_path = output_folder / PRETRAIN_CONFIG_FILE
    if continue_training and saved_path.is_file():
        config = merge_for_continue(PretrainConfig.load(saved_path), overrides, saved_path)
    else:
        config = PretrainConfig(dataset_name=preprocessed.root.name, **overrides)
    ctx = init_distributed(config.device)
    try:
        return run_pretraining(config, preprocessed.plans, preprocessed.folder, output_folder, ctx, continue_training)
    finally:
        shutdown(ctx)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    final = pretrain_from_args(args)
    if os.environ.get("RANK", "0") == "0":
        print(f"nnssl: pretrained encoder in {final}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
