"""Multi-process training inside one job (torchrun): process group, device per rank, helpers.

Launched with ``torchrun --nproc_per_node N -m uncerda_core <stage> ...`` (the
workflow does this when ``train.processes`` > 1). Each process takes its share
of one sample stream (:class:`uncerda_core.data.datasets.BatchStream`), so
weighted source sampling stays exactly the single-process draw, split across
ranks. ``train.batch_size`` is the batch of one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: torch.device) -> tuple[DistInfo, torch.device]:
    """Join the process group torchrun describes (env RANK, WORLD_SIZE, LOCAL_RANK); no-op alone."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo(), device
    info = DistInfo(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        torch.cuda.set_device(info.local_rank)
        device = torch.device("cuda", info.local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return info, device


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_true(info: DistInfo, flag: bool, device: torch.device) -> bool:
    """True when ``flag`` holds on every rank (so all ranks stop together on a bad loss)."""
    if not info.enabled:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item() > 0)


def sum_counts(info: DistInfo, counts: np.ndarray, device: torch.device) -> np.ndarray:
    """Element-wise sum of an integer array over the processes (alone: the array itself)."""
    if not info.enabled:
        return counts
    total = torch.from_numpy(np.ascontiguousarray(counts, dtype=np.int64)).to(device)
    dist.all_reduce(total)
    return total.cpu().numpy()


def broadcast_buffers(info: DistInfo, module: torch.nn.Module) -> None:
    """Rank 0's buffers (BatchNorm's running statistics) on every process, as DDP gives its replicas before each
    forward pass; for a module DDP does not wrap (the online teacher)."""
    if not info.enabled:
        return
    # one collective per dtype (float statistics, the int64 batch counters), not one per buffer: this runs
    # every iteration
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for buffer in module.buffers():
        by_dtype.setdefault(buffer.dtype, []).append(buffer)
    for buffers in by_dtype.values():
        flat = torch.cat([b.reshape(-1) for b in buffers])
        dist.broadcast(flat, src=0)
        for b, part in zip(buffers, flat.split([b.numel() for b in buffers])):
            b.copy_(part.view_as(b))


def gather_objects(info: DistInfo, obj) -> list:
    """Every process's ``obj`` (picklable), in rank order, on every process (alone: ``[obj]``)."""
    if not info.enabled:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def wrap(module: torch.nn.Module, info: DistInfo, device: torch.device) -> torch.nn.Module:
    if not info.enabled:
        return module
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(module, device_ids=ids)


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
