"""Data-parallel training with ``torch.distributed`` (launched by ``torchrun``): process groups and shared draws.

Under ``torchrun --nproc_per_node=N`` every process (rank) runs the same script.  :func:`init_distributed` reads the
launcher's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``PORT``) and starts the process
group (``gloo`` on CPU, ``nccl`` on CUDA); without a launcher it does nothing and everything runs as one process.
The :class:`~bgflow_sci.training.Trainer` then wraps its objective in ``DistributedDataParallel`` on its own.

**What is global and what is per rank.**  A batch size given to a loss is the *global* batch ``B``.  The draws
that decide *which* samples a step uses -- data row indices, latent ``z ~ prior``, context rows -- come from a
:class:`SharedStream`: a copy of the RNG state that is identical on every rank, so every rank draws the same
``B`` values and keeps its own contiguous slice of ``B / N`` (:meth:`SharedStream.part`).  The union of the ranks'
batches is therefore exactly the batch a single process with the same seed would draw, DDP's gradient average is
the single-process gradient of the global batch mean, and a deterministic flow trained on ``N`` ranks ends with the
parameters of the single-process run (to float round-off of the all-reduce).  Everything else (the noise inside
stochastic layers, an MD sampler, a user callable) uses the rank's own stream, seeded ``seed + 1000003 * (rank +
1)``: independent across ranks and reproducible.  Each rank evaluates the target energy on its own slice only.

Losses with their own batch sources that are not tensors (a ``DataLoader``: give it a ``DistributedSampler``),
and losses that do not call :func:`shared_draws` / :func:`part`, draw per rank with their full batch size; DDP
then averages ``N`` independent batches (valid data parallelism, but not the single-process run).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = [
    "DistributedContext",
    "SharedStream",
    "active_stream",
    "init_distributed",
    "is_main_process",
    "main_first",
    "part",
    "rank_seed",
    "shared_draws",
    "world",
]


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of the running process group; ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    """``True`` on rank 0 (and in a single process): the rank that writes files, logs and plots."""
    return world()[0] == 0


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s own RNG stream (rank-local randomness), distinct for every rank and seed."""
    return int(seed) + 1_000_003 * (int(rank) + 1)


@dataclass
class DistributedContext:
    """What :func:`init_distributed` found: ``rank``, ``world_size``, ``local_rank``, the ``device`` of this rank,
    and whether this call started the process group (then :meth:`shutdown` destroys it)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    started: bool = False

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shutdown(self) -> None:
        """Destroy the process group if this context started it (no barrier: rank 0 may still be evaluating)."""
        if self.started and dist.is_initialized():
            dist.destroy_process_group()
            self.started = False

    def __enter__(self) -> DistributedContext:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()


def init_distributed(device: torch.device | str = "cpu", backend: str | None = None) -> DistributedContext:
    """Start the process group described by the ``torchrun`` environment (no-op without ``WORLD_SIZE`` > 1).

    ``device``: ``"cpu"`` or ``"cuda"``; on CUDA each rank takes ``cuda:LOCAL_RANK``.  ``backend`` defaults to
    ``nccl`` on CUDA and ``gloo`` on CPU.  An already running group is used as it is (``started=False``).
    """
    device = torch.device(device)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank if world_size > 1 else 0)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if dist.is_available() and dist.is_initialized():
        rank, size = world()
        return DistributedContext(rank, size, local_rank, device, started=False)
    if world_size <= 1:
        return DistributedContext(device=device)
    if not dist.is_available():
        raise RuntimeError(f"WORLD_SIZE={world_size} but this torch build has no torch.distributed")
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise RuntimeError(f"WORLD_SIZE={world_size} but {missing} are not set: launch with torchrun")
    backend = backend or ("nccl" if device.type == "cuda" else "gloo")
    dist.init_process_group(backend=backend, device_id=device if device.type == "cuda" else None)
    return DistributedContext(dist.get_rank(), dist.get_world_size(), local_rank, device, started=True)


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Run the block on rank 0 first, then on the other ranks (e.g. generate and cache reference MD once)."""
    rank, size = world()
    if size > 1 and rank != 0:
        dist.barrier()
    try:
        yield
    finally:
        if size > 1 and rank == 0:
            dist.barrier()


class SharedStream:
    """An RNG state that is the same on every rank, for the draws that pick a step's samples.

    ``with stream.draws():`` swaps the torch CPU (and the current CUDA device's) RNG state for the shared one and
    back; :meth:`part` keeps this rank's contiguous slice of a global batch.  ``state_dict`` / ``load_state_dict``
    make it part of a trainer checkpoint.
    """

    def __init__(self, rank: int, world_size: int, device: torch.device | str = "cpu"):
        self.rank, self.world_size, self.device = int(rank), int(world_size), torch.device(device)
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None

    @contextlib.contextmanager
    def draws(self) -> Iterator[None]:
        own_cpu = torch.get_rng_state()
        own_cuda = torch.cuda.get_rng_state(self.device) if self.cuda is not None else None
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, self.device)
        try:
            yield
        finally:
            self.cpu = torch.get_rng_state()
            torch.set_rng_state(own_cpu)
            if self.cuda is not None:
                self.cuda = torch.cuda.get_rng_state(self.device)
                torch.cuda.set_rng_state(own_cuda, self.device)

    def local_size(self, n: int) -> int:
        """This rank's share ``B / N`` of a global batch of ``n``; an error if ``N`` does not divide ``n``."""
        if n % self.world_size:
            raise ValueError(
                f"global batch size {n} is not divisible by the {self.world_size} ranks: choose a multiple of "
                f"{self.world_size}"
            )
        return n // self.world_size

    def part(self, t: Tensor | None) -> Tensor | None:
        """Rows ``[r B/N, (r+1) B/N)`` of a global batch ``t`` ``(B, ...)`` on rank ``r`` of ``N``."""
        if t is None or self.world_size == 1:
            return t
        k = self.local_size(len(t))
        return t[self.rank * k : (self.rank + 1) * k]

    def state_dict(self) -> dict[str, Any]:
        return {"cpu": self.cpu.clone(), **({"cuda": self.cuda.clone()} if self.cuda is not None else {})}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.cpu = state["cpu"].cpu()
        if self.cuda is not None and "cuda" in state:
            self.cuda = state["cuda"].cpu()


_ACTIVE: list[SharedStream] = []


def active_stream() -> SharedStream | None:
    """The shared stream of the distributed training running now (``None`` outside it)."""
    return _ACTIVE[-1] if _ACTIVE else None


@contextlib.contextmanager
def using(stream: SharedStream | None) -> Iterator[None]:
    """Make ``stream`` the active shared stream inside the block (``None``: no-op)."""
    if stream is None:
        yield
        return
    _ACTIVE.append(stream)
    try:
        yield
    finally:
        _ACTIVE.pop()


def shared_draws() -> contextlib.AbstractContextManager:
    """Context for draws that must be identical on every rank (a no-op outside distributed training)."""
    stream = active_stream()
    return stream.draws() if stream is not None else contextlib.nullcontext()


def part(t: Tensor | None) -> Tensor | None:
    """This rank's slice of a global batch drawn under :func:`shared_draws` (identity outside DDP training)."""
    stream = active_stream()
    return stream.part(t) if stream is not None else t
