"""Processes under ``torchrun``: the process group and the collectives training and search share.

``Dist.from_env`` joins the group torchrun describes (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``,
``MASTER_ADDR``/``MASTER_PORT``); without them it is one process and every helper is a no-op.
Training wraps the net in ``DistributedDataParallel`` (``Dist.wrap``); evaluation splits a loader's
batches over the ranks (``shard``) and adds up the counts (``Dist.sum``).
"""
from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass, field
from functools import cached_property

import torch
import torch.distributed as torch_dist
from torch import nn
from torch.utils.data import DataLoader, RandomSampler

from .data import DataError
from .errors import ConfigError


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str = "gloo"
    timeout: _dt.timedelta | None = field(default=None, repr=False)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device_kind: str, timeout: _dt.timedelta | None = None) -> Dist:
        """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; without them this is a single process. CUDA ranks
        join over NCCL, one GPU each (``LOCAL_RANK``); CPU ranks over gloo. ``timeout``: how long a
        collective waits for the other ranks (torch's default without it)."""
        world = int(os.environ.get("WORLD_SIZE", 1))
        if world == 1:
            return cls()
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        backend = "nccl" if device_kind == "cuda" else "gloo"
        if backend == "nccl":
            if not torch.cuda.is_available():
                raise ConfigError(f"device=cuda on {world} processes (NCCL) but no CUDA device is available; "
                                  "use device=cpu (gloo) or device=auto")
            if local_rank >= torch.cuda.device_count():
                raise ConfigError(f"LOCAL_RANK={local_rank} but this node has {torch.cuda.device_count()} CUDA "
                                  f"device(s): run at most {torch.cuda.device_count()} processes per node "
                                  "(torchrun --nproc_per_node)")
            torch.cuda.set_device(local_rank)
        options = {} if timeout is None else {"timeout": timeout}
        torch_dist.init_process_group(backend, **options)
        return cls(torch_dist.get_rank(), world, local_rank, backend, timeout)

    def wrap(self, net: nn.Module) -> nn.Module | None:
        """``DistributedDataParallel`` around ``net`` when there are several ranks, else None.

        Every rank runs the same subnets, so the same parameters take part on every rank; which ones
        changes from subnet to subnet (``find_unused_parameters``). A sandwich step runs its first
        subnets under ``no_sync()``: their gradients add up locally and DDP reduces the sums in
        buckets, overlapped with the last subnet's backward. Batch-norm statistics stay per rank
        (rank 0's are saved), as they were before DDP."""
        if self.world == 1:
            return None
        device_ids = [self.local_rank] if next(net.parameters()).is_cuda else None
        return nn.parallel.DistributedDataParallel(net, device_ids=device_ids, find_unused_parameters=True,
                                                   broadcast_buffers=False)

    def close(self) -> None:
        """Leaves the process group (the end of a run on every rank)."""
        if self.world > 1 and torch_dist.is_initialized():
            torch_dist.destroy_process_group()

    @property
    def device(self) -> torch.device:
        """Where the tensors of a collective live: the rank's GPU under NCCL, else the CPU."""
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")

    def any(self, flag: bool) -> bool:
        if self.world == 1:
            return flag
        t = torch.tensor([float(flag)], device=self.device)
        torch_dist.all_reduce(t)
        return bool(t.item() > 0)

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """The element-wise sum of ``t`` over the ranks (``t`` itself with one process)."""
        if self.world == 1:
            return t
        t = t.to(self.device)
        torch_dist.all_reduce(t)
        return t

    def gather_batches(self, rows: list[torch.Tensor], seen: int, width: int,
                       dtype: torch.dtype) -> tuple[list[torch.Tensor], int]:
        """Every rank's ``rows`` (one 1-d tensor of ``width`` per batch of its ``shard``), in the batch
        order of one process's loader, and the images all ranks have seen."""
        if self.world == 1:
            return rows, seen
        counts = torch.tensor([len(rows), seen], dtype=torch.int64, device=self.device)
        all_counts = [torch.empty_like(counts) for _ in range(self.world)]
        torch_dist.all_gather(all_counts, counts)
        per_rank = [int(c[0]) for c in all_counts]
        n = sum(per_rank)
        if per_rank != [len(range(r, n, self.world)) for r in range(self.world)]:
            raise ValueError(f"gather_batches: the ranks hold {per_rank} batches, not shard's round robin of {n}")
        local = torch.zeros(max(per_rank), width, dtype=dtype, device=self.device)
        if rows:
            local[:len(rows)] = torch.stack(rows).to(self.device)
        gathered = [torch.empty_like(local) for _ in range(self.world)]
        torch_dist.all_gather(gathered, local)
        return [gathered[i % self.world][i // self.world] for i in range(n)], sum(int(c[1]) for c in all_counts)

    def broadcast(self, obj=None):
        """Rank 0's ``obj`` (any picklable value) on every rank. It travels over a gloo group even
        under NCCL: a waiting rank then sleeps on a socket instead of spinning a GPU kernel."""
        if self.world == 1:
            return obj
        box = [obj]
        torch_dist.broadcast_object_list(box, src=0, group=self._control)
        return box[0]

    @cached_property
    def _control(self):
        """The group of ``broadcast`` (made on the first one, which every rank calls)."""
        if self.backend == "gloo":
            return None  # the default group
        options = {} if self.timeout is None else {"timeout": self.timeout}
        return torch_dist.new_group(backend="gloo", **options)


def shard(loader: DataLoader, dist: Dist, what: str | None = None) -> DataLoader:
    """This rank's share of ``loader``'s batches: batch ``i`` goes to rank ``i % world``.

    The batches are the ones one process reads (same images, same boundaries, the last one short),
    so every image is read exactly once over the ranks, no padding repeats any (unlike
    ``DistributedSampler``), and a rank computes each batch exactly as one process would: counts
    summed over the ranks equal one process's to the last image. ``loader`` must not shuffle. With
    ``what`` (e.g. ``"split=val"``), fewer batches than ranks is refused, naming it; without, a rank
    may get none (a calibration set smaller than the world)."""
    if dist.world == 1:
        return loader
    if isinstance(loader.sampler, RandomSampler):
        raise ValueError("shard: the loader shuffles; every rank would draw its own order")
    batches = list(loader.batch_sampler)
    if what is not None and len(batches) < dist.world:
        raise DataError(f"{dist.world} processes but {what} has {len(loader.dataset)} images, {len(batches)} "
                        f"batch(es) of {loader.batch_size}: every process needs a batch; run at most "
                        f"{len(batches)} process{'es' if len(batches) > 1 else ''} or lower the batch size "
                        "(eval_batch_size)")
    mine = batches[dist.rank::dist.world]
    workers = loader.num_workers if mine else 0
    return DataLoader(loader.dataset, batch_sampler=mine, num_workers=workers, collate_fn=loader.collate_fn,
                      pin_memory=loader.pin_memory, persistent_workers=workers > 0 and loader.persistent_workers)
