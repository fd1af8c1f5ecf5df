"""``SSLTrainerBase``: fine-tune an nnssl-pretrained encoder inside released nnU-Net v2 (2.8.x).

What it changes in ``nnUNetTrainer`` (small hooks only, STYLE §12):

- ``__init__``: adapts the plans (patch size on the encoder grid, architecture, ``pretrained`` block) before nnU-Net
  parses them, so ``plans.json`` in the results folder rebuilds the network on its own;
- ``build_network_architecture``: builds the network from ``configuration["architecture"]`` and the plans' patch size
  (a classmethod: nnU-Net and its predictor call it on the class with the documented signature);
- ``on_train_start``: loads the pretrained encoder before the first epoch (not on ``--c`` / ``--val``, whose
  checkpoint replaces the weights anyway, nor after nnU-Net's ``-pretrained_weights`` loaded a whole network);
- ``configure_optimizers``: AdamW over layer-wise-decayed param groups, :class:`~nnssl_trainers.lr.StagedLRScheduler`;
- ``train_step``: nnU-Net's step with a named gradient-clipping norm;
- deep supervision off, its setter a no-op (these decoders have a single output);
- the output bias starts at a 1 % foreground prior (fresh runs), so short schedules need not unlearn 50/50.
"""
from __future__ import annotations

import math
import os
from typing import Any, ClassVar

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.helpers import dummy_context
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from torch import autocast, nn
from torch.nn.parallel import DistributedDataParallel

from nnssl.errors import NnsslError
from nnssl.models.finetune_arch import DEFAULT_VIT_DECODER
from nnssl_trainers.lr import FineTuneSchedule, StagedLRScheduler, is_no_weight_decay, layer_decay_param_groups
from nnssl_trainers.plans_adaptation import adapt_plans
from nnssl_trainers.pretrained_weights import LoadReport, load_encoder_into

INITIAL_LR = 3e-4  # AdamW peak LR of the decoder (nnU-Net's Primus trainers)
WEIGHT_DECAY = 5e-2
ADAMW_BETAS = (0.9, 0.98)
GRAD_CLIP_NORM = 1.0  # nnU-Net's CNN default is 12; transformers are clipped at 1 as in nnU-Net's Primus trainers
LOG_PREFIX = "nnssl:"
# Output bias at start: each foreground class gets this probability everywhere (Lin et al. 2017, "Focal Loss",
# prior init). From a 50/50 start, AdamW moves a logit by about the LR per step, so a few hundred steps are spent only
# on learning that most voxels are background; nnU-Net's CNN escapes fast through SGD with momentum 0.99.
FOREGROUND_PRIOR = 0.01
OMP_THREADS_VARIABLE = "OMP_NUM_THREADS"
COMPILED_ORIGINAL_ATTRIBUTE = "_orig_mod"  # where torch.compile keeps the original module (no public accessor)


class SSLTrainerBase(nnUNetTrainer):
    """Common base of the SSL fine-tuning trainers; subclasses set the class attributes and the network builder.

    Class attributes:
        family: encoder family the trainer fine-tunes (``"vit"`` / ``"swin"``).
        network_classes: the classes the plans' architecture may name, by their class path.
        needs_pretrained: False for the ``_scratch`` twins (same network and schedule, random init).
        default_encoder: encoder of a ``_scratch`` run when no checkpoint is linked.
        layer_decay: layer-wise LR decay factor (1.0 = none).
        vit_decoder: decoder of the ViT network (``skip``: PrimusSkip, ``patch``: DNA Primus); Swin ignores it.
    """

    family: ClassVar[str] = ""
    network_classes: ClassVar[dict[str, type[nn.Module]]] = {}
    needs_pretrained: ClassVar[bool] = True
    default_encoder: ClassVar[str] = ""
    layer_decay: ClassVar[float] = 1.0
    vit_decoder: ClassVar[str] = DEFAULT_VIT_DECODER

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")) -> None:
        respect_thread_limit(device)
        adaptation = adapt_plans(plans, configuration, dataset_json, type(self).__name__, self.family,
                                 self.needs_pretrained, self.default_encoder, self.vit_decoder)
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.adaptation = adaptation
        self.initial_lr = INITIAL_LR
        self.weight_decay = WEIGHT_DECAY
        self.enable_deep_supervision = False
        self.pretrained_report: LoadReport | None = None
        self._initial_checksum: torch.Tensor | None = None
        for message in adaptation.messages:
            self.print_to_log_file(LOG_PREFIX, message)
        for warning in adaptation.warnings:
            self.print_to_log_file(LOG_PREFIX, "WARNING:", warning)

    # ----------------------------------------------------------------------------------------------- network
    @classmethod
    def build_network_architecture(cls, plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> nn.Module:
        """Rebuild the network from the plans alone (training, ``--val`` and ``nnUNetv2_predict`` alike).

        Raises:
            NnsslError: the plans' architecture was written for another network (e.g. Swin plans, ViT trainer).
        """
        arch = configuration_manager.configuration.get("architecture", {})
        if arch.get("network_class_name") not in cls.network_classes:
            raise NnsslError(f"{cls.__name__} builds {' or '.join(cls.network_classes)}, but plans "
                             f"{plans_manager.plans_name} configure {arch.get('network_class_name')}; use the trainer"
                             " that matches the plans or re-run nnssl_transfer_plans")
        patch_size = tuple(int(p) for p in configuration_manager.patch_size)
        return cls.build_network(cls.network_classes[arch["network_class_name"]], dict(arch["arch_kwargs"]),
                                 patch_size, num_input_channels, num_output_channels)

    @staticmethod
    def build_network(network_class: type[nn.Module], arch_kwargs: dict[str, Any], patch_size: tuple[int, ...],
                      num_input_channels: int, num_output_channels: int) -> nn.Module:
        """Family-specific constructor call."""
        raise NotImplementedError

    @classmethod
    def encoder_prefixes(cls, network: nn.Module) -> tuple[str, ...]:
        """Network keys starting with one of these belong to the pretrained encoder."""
        raise NotImplementedError

    @classmethod
    def layer_of(cls, name: str, num_layers: int) -> int:
        """Depth of a parameter for layer-wise decay: 0 stem .. ``num_layers + 1`` head (default: no decay)."""
        return num_layers + 1

    def unwrapped_network(self) -> nn.Module:
        """The network without DDP / torch.compile wrappers (as nnU-Net's ``save_checkpoint`` unwraps it)."""
        network = self.network.module if isinstance(self.network, DistributedDataParallel) else self.network
        return getattr(network, COMPILED_ORIGINAL_ATTRIBUTE, network)

    def set_deep_supervision_enabled(self, enabled: bool) -> None:
        """No-op: the Primus and Swin-UNETR decoders have a single output."""

    # ------------------------------------------------------------------------------------------------ weights
    def load_pretrained_weights(self) -> LoadReport | None:
        """Load the linked encoder into the network (no-op for ``_scratch``); the report goes to the log."""
        if not self.was_initialized:
            self.initialize()
        block = self.adaptation.block
        if not self.needs_pretrained:
            self.print_to_log_file(LOG_PREFIX, f"{type(self).__name__}: random initialization (no pretrained weights)")
            return None
        assert block is not None  # adapt_plans raised otherwise
        network = self.unwrapped_network()
        report = load_encoder_into(network, block, self.device, self.encoder_prefixes(network),
                                   self.configuration_manager.patch_size,
                                   self.plans_manager.plans.get("transpose_forward", (0, 1, 2)))
        self.print_to_log_file(LOG_PREFIX, report.summary())
        self.pretrained_report = report
        self._initial_checksum = weights_checksum(network)  # our own load is not nnU-Net's -pretrained_weights
        return report

    def initialize(self) -> None:
        super().initialize()
        # nnU-Net's -pretrained_weights loads a whole network between initialize() and on_train_start().
        self._initial_checksum = weights_checksum(self.unwrapped_network())

    def init_fresh_weights(self) -> None:
        """Start of a fresh run: the linked encoder and the output-bias prior, unless the network's weights were
        replaced since ``initialize()`` (``nnUNetv2_train -pretrained_weights``), which are then kept as loaded."""
        if not self.was_initialized:
            self.initialize()
        assert self._initial_checksum is not None, "initialize() records it"
        if not torch.equal(weights_checksum(self.unwrapped_network()), self._initial_checksum):
            self.print_to_log_file(LOG_PREFIX, "the network's weights were loaded after initialization (nnU-Net's "
                                   "-pretrained_weights): kept; no SSL encoder or output prior applied")
            return
        self.load_pretrained_weights()
        layer = init_output_prior(self.unwrapped_network(), self.label_manager.num_segmentation_heads,
                                  regions=self.label_manager.has_regions)
        self.print_to_log_file(LOG_PREFIX, f"output bias of {layer}: foreground prior {FOREGROUND_PRIOR}")

    def on_train_start(self) -> None:
        if not self.was_initialized:
            self.initialize()
        if self.current_epoch == 0:  # a fresh run; --c restored a checkpoint and --val never trains
            self.init_fresh_weights()
        super().on_train_start()

    # --------------------------------------------------------------------------------------------- optimizer
    def configure_optimizers(self) -> tuple[torch.optim.Optimizer, StagedLRScheduler]:
        network = self.unwrapped_network()
        prefixes = self.encoder_prefixes(network)
        num_layers = self.adaptation.architecture.num_layers
        groups = layer_decay_param_groups(
            network.named_parameters(), self.weight_decay, lambda name: self.layer_of(name, num_layers), num_layers,
            self.layer_decay, lambda name: name.startswith(prefixes), is_no_weight_decay)
        optimizer = torch.optim.AdamW(groups, lr=self.initial_lr, betas=ADAMW_BETAS,
                                      fused=self.device.type == "cuda")
        schedule = FineTuneSchedule.for_budget(self.num_epochs)
        self.print_to_log_file(LOG_PREFIX, f"AdamW, {len(groups)} param groups, layer decay {self.layer_decay}, "
                               f"{schedule}")
        return optimizer, StagedLRScheduler(optimizer, self.initial_lr, schedule)

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        lrs = {group["name"]: group["lr"] for group in self.optimizer.param_groups}
        encoder = [lr for name, lr in lrs.items() if name.startswith("encoder")]
        decoder = [lr for name, lr in lrs.items() if not name.startswith("encoder")]
        self.print_to_log_file(LOG_PREFIX, f"LR encoder {min(encoder, default=0):.2e}..{max(encoder, default=0):.2e}"
                               f", decoder {max(decoder, default=0):.2e}")

    def train_step(self, batch: dict) -> dict:
        """nnU-Net's step (AMP on CUDA only) with gradient clipping at :data:`GRAD_CLIP_NORM`."""
        data = batch["data"].to(self.device, non_blocking=True)
        target = batch["target"]
        target = [t.to(self.device, non_blocking=True) for t in target] if isinstance(target, list) \
            else target.to(self.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context():
            output = self.network(data)
            loss = self.loss(output, target)
        if self.grad_scaler is not None:
            self.grad_scaler.scale(loss).backward()
            self.grad_scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), GRAD_CLIP_NORM)
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), GRAD_CLIP_NORM)
            self.optimizer.step()
        return {"loss": loss.detach().cpu().numpy()}


def respect_thread_limit(device: torch.device) -> int | None:
    """On CPU, give torch the ``OMP_NUM_THREADS`` threads the user (or ``nnssl_benchmark --jobs``) asked for.

    ``nnUNetv2_train -device cpu`` sets torch to every CPU before it builds the trainer, which overrides the variable;
    concurrent runs then oversubscribe the cores and torch's threads spin-wait on each other. Returns the count set.
    """
    value = os.environ.get(OMP_THREADS_VARIABLE, "").strip()
    if torch.device(device).type != "cpu" or not value.isdigit() or int(value) < 1:
        return None
    torch.set_num_threads(int(value))
    return int(value)


def weights_checksum(network: nn.Module) -> torch.Tensor:
    """Per-parameter float64 sums (on CPU): cheap, and different after any load of other weights."""
    with torch.no_grad():  # nan_to_num: NaN != NaN would read as "loaded"
        return torch.stack([p.detach().double().sum() for p in network.parameters()]).nan_to_num().cpu()


def init_output_prior(network: nn.Module, num_outputs: int, prior: float = FOREGROUND_PRIOR,
                      regions: bool = False) -> str:
    """Set the bias of the network's last convolution with ``num_outputs`` channels so that every foreground class
    starts at probability ``prior``; returns the layer's name.

    Softmax outputs (labels): background bias 0, each of the K foreground channels ``log(p / (1 - K p))``, with ``p``
    capped at ``0.5 / K`` for datasets with many classes. Sigmoid outputs (nnU-Net regions): every channel
    ``log(p / (1 - p))``.

    Raises:
        NnsslError: no such layer with a bias.
    """
    convolutions = (nn.Conv3d, nn.ConvTranspose3d, nn.Conv2d, nn.ConvTranspose2d)
    found = [(name, m) for name, m in network.named_modules()
             if isinstance(m, convolutions) and m.out_channels == num_outputs and m.bias is not None]
    if not found:
        raise NnsslError(f"no output convolution with {num_outputs} channels and a bias in {type(network).__name__}")
    name, layer = found[-1]
    with torch.no_grad():
        if regions:
            layer.bias.fill_(math.log(prior / (1.0 - prior)))
        else:
            foreground = max(1, num_outputs - 1)
            p = min(prior, 0.5 / foreground)
            layer.bias.zero_()
            layer.bias[1:] = math.log(p / (1.0 - foreground * p))  # softmax of [0, b, ..., b] gives p each
    return name
