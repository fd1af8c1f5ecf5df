"""torchrun / DDP plumbing: which rank am I, on which device, and the few collectives the loop needs.

Launch: ``torchrun --nproc_per_node=N -m nnssl.cli.pretrain -d 500 ...``. Backend NCCL on CUDA, gloo otherwise. Each
rank draws its own samples (the sample index includes the rank, see ``nnssl.data.loader``), only rank 0 logs and writes
files. Global batch = batch_size x world_size x accumulate.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from nnssl.config.pretrain import DeviceKind
from nnssl.errors import NnsslError


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the run."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(kind: DeviceKind, local_rank: int = 0) -> torch.device:
    """Map ``--device`` to a torch device; raise a clear error when the hardware is missing."""
    if kind == DeviceKind.AUTO:
        kind = DeviceKind.CUDA if torch.cuda.is_available() else DeviceKind.CPU
    if kind == DeviceKind.CUDA:
        if not torch.cuda.is_available():
            raise NnsslError("--device cuda was requested but torch sees no CUDA GPU; use --device cpu or check the "
                             "driver / CUDA_VISIBLE_DEVICES")
        return torch.device("cuda", local_rank)
    if kind == DeviceKind.MPS:
        if not torch.backends.mps.is_available():
            raise NnsslError("--device mps was requested but MPS is not available here; use --device cpu")
        return torch.device("mps")
    return torch.device("cpu")


def init_distributed(kind: DeviceKind) -> DistributedContext:
    """Read torchrun's env (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) and join the process group when there are several
    processes. Without torchrun this is a single-process context."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(kind, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def mean_over_ranks(value: torch.Tensor, ctx: DistributedContext) -> torch.Tensor:
    """Average a tensor over all ranks (identity in a single process)."""
    if not ctx.is_distributed:
        return value
    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / ctx.world_size


def barrier(ctx: DistributedContext) -> None:
    if ctx.is_distributed:
        dist.barrier()


def broadcast_object(obj: object, ctx: DistributedContext) -> object:
    """Rank 0's ``obj`` on every rank (used to share a rank-0 error or decision)."""
    if not ctx.is_distributed:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def shutdown(ctx: DistributedContext) -> None:
    if ctx.is_distributed and dist.is_initialized():
        dist.destroy_process_group()
