"""Multi-process pretraining: torchrun set-up, DDP wrapping and an all-gather that keeps gradients.

``torchrun --nproc_per_node=N -m learner pretrain ...`` starts N processes with ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` set; :func:`distributed` reads them and joins the process
group (nccl on GPU, gloo on CPU). ``srun --ntasks=N learner pretrain ...`` (a SLURM step) works the same
way: :func:`slurm_environment` derives those variables from SLURM's. Launched any other way it is a no-op
and every helper here degrades to the
single-process identity, so the training loop has one code path.

Why gather with gradients: the contrastive terms of Alg. 1 rank every pair in the batch, so each rank must see
the GLOBAL batch. Each rank gathers embeddings, predictions and standardised scores from all ranks and
evaluates the same objective on the concatenated batch; :func:`all_gather_with_grad` returns to each rank's
local slice the SUM of the gradients every rank computed for it, and DDP then AVERAGES parameter gradients
over the ranks. Sum × mean = the gradient of the single-process loss on the concatenated batch (tested).
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn

from learner.errors import LearnerError

T = TypeVar("T")

COLLECTIVE_TIMEOUT = timedelta(minutes=60)
"""How long a rank waits at a collective: long enough for rank 0 to decode a cold scan cache alone."""

TORCHRUN_VARIABLES: tuple[str, ...] = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job; ``DistInfo(0, 1, 0)`` is a plain single process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes files, logs and the progress bar."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


SLURM_PORT_BASE = 15000
"""``MASTER_PORT`` of an ``srun`` step when not set: ``SLURM_PORT_BASE + SLURM_JOB_ID % 20000`` (the same on
every task of the job, and different for jobs that share a node)."""


def slurm_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The torchrun variables of an ``srun`` task of a multi-task step, from SLURM's own: ``RANK`` ←
    ``SLURM_PROCID``, ``WORLD_SIZE`` ← ``SLURM_STEP_NUM_TASKS`` (else ``SLURM_NTASKS``), ``LOCAL_RANK`` ←
    ``SLURM_LOCALID``, ``MASTER_ADDR`` ← the first host of ``SLURM_STEP_NODELIST`` (else
    ``SLURM_JOB_NODELIST``), ``MASTER_PORT`` ← derived from ``SLURM_JOB_ID``; any of them already set wins.
    Empty outside such a step (no ``SLURM_STEP_ID``: a batch script itself is one process whatever
    ``--ntasks`` says) and for a one-task step. torchrun's own variables, when ``RANK`` is set, win."""
    env = os.environ if environ is None else environ
    if "RANK" in env or "SLURM_STEP_ID" not in env or "SLURM_PROCID" not in env:
        return {}
    world = env.get("SLURM_STEP_NUM_TASKS", env.get("SLURM_NTASKS", "1"))
    if int(world) <= 1:
        return {}
    nodes = env.get("SLURM_STEP_NODELIST", env.get("SLURM_JOB_NODELIST", "127.0.0.1"))
    derived = {
        "RANK": env["SLURM_PROCID"],
        "WORLD_SIZE": world,
        "LOCAL_RANK": env.get("SLURM_LOCALID", "0"),
        "MASTER_ADDR": first_host(nodes),
        "MASTER_PORT": str(SLURM_PORT_BASE + int(env.get("SLURM_JOB_ID", "0")) % 20000),
    }
    return {name: env.get(name, value) for name, value in derived.items()}


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list: ``gpu[03-05,07],cpu1`` → ``gpu03``."""
    head = nodelist.split(",")[0] if "[" not in nodelist.split(",")[0] else nodelist.split("]")[0] + "]"
    if "[" not in head:
        return head
    prefix, ranges = head.rstrip("]").split("[", 1)
    return prefix + ranges.split(",")[0].split("-")[0]


def launcher_world_size() -> int:
    """The number of processes this one was started among (torchrun's or an ``srun`` step's; 1 alone)."""
    return int(os.environ.get("WORLD_SIZE") or slurm_environment().get("WORLD_SIZE") or 1)


def init_distributed(device_type: str) -> DistInfo:
    """Join the torchrun process group (nccl for ``device_type == "cuda"``, else gloo) or do nothing.

    Returns the rank information; an already-initialised process group is reused as it is. A task of a
    multi-task ``srun`` step gets the torchrun variables from SLURM's first (:func:`slurm_environment`). A
    process started neither way (no ``RANK``/``WORLD_SIZE`` in the environment) gets ``DistInfo(0, 1, 0)``.

    Raises:
        LearnerError: torchrun variables are only partly set (names the missing ones).
    """
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    os.environ.update(slurm_environment())  # an srun task: SLURM's variables as torchrun's
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistInfo()
    missing = [name for name in TORCHRUN_VARIABLES if name not in os.environ]
    if missing:
        raise LearnerError(f"incomplete torchrun environment: {', '.join(missing)} not set")
    info = DistInfo(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"]))
    if device_type == "cuda":
        torch.cuda.set_device(info.local_rank)
    backend = "nccl" if device_type == "cuda" else "gloo"
    dist.init_process_group(backend, rank=info.rank, world_size=info.world_size, timeout=COLLECTIVE_TIMEOUT)
    return info


class PeerLostError(LearnerError):
    """A collective of a multi-process run failed because another rank went away (killed, crashed, its node
    lost) or stalled: the surviving ranks each say so in one line; the rank that stopped says why."""


PEER_GONE = ("Connection reset by peer", "Connection closed by peer", "Broken pipe", "Connection refused",
             "ncclRemoteError", "remote process exited")  # fmt: skip
"""What gloo, NCCL and the rendezvous store say when the other end of a connection went away."""


def peer_failure(exc: BaseException) -> str | None:
    """Why a collective failed when ``exc`` says another rank stopped (``lost connection to a peer``) or
    never came (``a collective timed out``), else None: any other error, from a collective or not, is this
    rank's own and keeps its message. A collective's error is torch's ``DistError`` or a RuntimeError from
    the gloo or NCCL backend (DDP's reducer and gloo raise plain RuntimeErrors)."""
    if not isinstance(exc, RuntimeError):
        return None
    text = str(exc)
    if not (isinstance(exc, dist.DistError) or "gloo" in text or "NCCL" in text):
        return None
    if isinstance(exc, dist.DistNetworkError | dist.DistStoreError) or any(m in text for m in PEER_GONE):
        return "lost connection to a peer"
    return "a collective timed out" if "timed out" in text.lower() else None


@contextmanager
def distributed(device_type: str) -> Iterator[DistInfo]:
    """:func:`init_distributed` for the duration of a block; tears down only a group it created itself.

    Anything holding the group (a DDP model's reducer) must be gone before the group is destroyed: a gloo
    group destroyed from such an owner joins its worker threads while holding the GIL, which deadlocks when
    a worker still needs the GIL to free a finished collective's tensors (pytorch/pytorch#56297). On an
    exception the traceback would keep the block's locals (the model) alive, so its frames are cleared first.
    A block that ends normally waits at a barrier first, so that no rank closes its connections while
    another still uses them (a rank aborted with "terminate called without an active exception" when its
    peer tore the group down first).

    Raises:
        PeerLostError: with several ranks, a collective failed because another rank stopped
            (:func:`peer_failure`): one line instead of the backend's error.
    """
    created = dist.is_available() and not dist.is_initialized()
    info = init_distributed(device_type)
    try:
        yield info
    except BaseException as exc:
        traceback.clear_frames(exc.__traceback__)
        cause = peer_failure(exc) if info.is_distributed else None
        if cause is not None:
            where = f"rank {info.rank} of {info.world_size}"
            raise PeerLostError(f"{where}: another rank stopped ({cause}); see that rank's output") from exc
        raise
    else:
        if created and info.world_size > 1:
            dist.barrier()
    finally:
        if created and dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


class _AllGatherWithGrad(torch.autograd.Function):
    """Forward: all-gather ``(b, ...)`` → ``(world·b, ...)``. Backward: all-reduce (SUM) the incoming
    gradient and return this rank's slice, i.e. the sum over ranks of every rank's gradient for it."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.rank, ctx.local = dist.get_rank(), x.shape[0]  # type: ignore[attr-defined]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        total = grad.contiguous().clone()  # all_reduce is in place; autograd owns ``grad``
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        start = ctx.rank * ctx.local  # type: ignore[attr-defined]
        return total[start : start + ctx.local]  # type: ignore[attr-defined]


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` of shape ``(b, ...)`` from every rank in rank order → ``(world·b, ...)``.

    Gradients flow back to the local slice (summed over ranks, see the module docstring). Every rank must pass
    the same ``b`` (train loaders use ``drop_last``). Identity when not distributed.

    Raises:
        ValueError: ranks passed different batch sizes.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    sizes = [torch.zeros(1, dtype=torch.long, device=x.device) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, torch.tensor([x.shape[0]], device=x.device))
    if len({int(size) for size in sizes}) != 1:
        raise ValueError(
            f"all_gather_with_grad needs equal batch sizes on every rank, got {[int(s) for s in sizes]}"
        )
    gathered: torch.Tensor = _AllGatherWithGrad.apply(x)  # type: ignore[no-untyped-call]  # untyped in torch
    return gathered


def wrap_model(
    model: nn.Module, info: DistInfo, device: torch.device, *, find_unused_parameters: bool = False
) -> nn.Module:
    """DDP-wrap ``model`` when distributed (SyncBatchNorm on GPU so BN sees the global batch too).

    ``find_unused_parameters`` must be set when the loss leaves part of the model without a gradient
    (a contrastive-only objective never reaches the regression head); DDP would otherwise stall.
    """
    if not info.is_distributed:
        return model
    if device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # type: ignore[no-untyped-call]  # untyped in torch
        return nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index], find_unused_parameters=find_unused_parameters
        )
    return nn.parallel.DistributedDataParallel(model, find_unused_parameters=find_unused_parameters)


def mean_over_ranks(x: torch.Tensor) -> torch.Tensor:
    """The element-wise mean of ``x`` over the ranks (a new tensor; ``x`` itself when not distributed).
    Every rank must pass the same shape."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    total = x.clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)  # gloo has no AVG
    return total / dist.get_world_size()


def broadcast_object(obj: T) -> T:
    """Rank 0's ``obj`` on every rank (a small picklable value such as a metrics row); identity otherwise."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    """Wait for every rank (no-op when not distributed): rank 0 validates and saves while the others wait."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
