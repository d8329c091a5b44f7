"""The runner's processes under ``torchrun``: process group from the environment, batch slices, rank-0-only work.

``torchrun --nproc_per_node=K -m phi_hig run …`` (multi-node through torchrun's own ``--nnodes`` / rendezvous
options) starts K processes with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` set.
`init_from_environment` joins them into one process group — gloo on CPU, NCCL on CUDA with one GPU per rank from
``LOCAL_RANK`` — whose collectives time out after ``PHI_HIG_COLLECTIVE_TIMEOUT`` seconds (default 60), so a rank
that dies ends the job with an error instead of a hang (torchrun itself also stops every worker once one
fails). Rank 0 evaluates, writes checkpoints, metrics and reports; the other ranks wait for it in a barrier of a
second (gloo) group with a long timeout (``PHI_HIG_ROOT_WORK_TIMEOUT``, default 6 h), since an evaluation may
take longer than a collective may.

Each rank trains on a contiguous slice of the global batch, in rank order (`local_rows`): the example stream is
the global sequence of one process, so results do not depend on the number of processes beyond floating-point
reassociation.
"""
from __future__ import annotations

import datetime
import os
from typing import Optional

import torch

from .errors import InvalidInputError

__all__ = ['init_from_environment', 'shutdown', 'launched', 'world_size', 'rank', 'is_root', 'local_rows',
           'wait_for_root', 'agree_max', 'all_true', 'refuse_together', 'broadcast_object', 'all_mean', 'data_parallel',
           'TIMEOUT_ENV', 'ROOT_TIMEOUT_ENV']

TIMEOUT_ENV = 'PHI_HIG_COLLECTIVE_TIMEOUT'
ROOT_TIMEOUT_ENV = 'PHI_HIG_ROOT_WORK_TIMEOUT'
_control_group = None  # gloo, the collectives' timeout: per-step agreement on CPU scalars and small objects
_root_group = None     # gloo, a long timeout: only the barrier after rank-0-only work


def _dist():
    import torch.distributed as dist
    return dist if dist.is_available() and dist.is_initialized() else None


def launched() -> bool:
    """True in a process started by torchrun (even with one process) or by any launcher setting ``WORLD_SIZE`` > 1."""
    return 'TORCHELASTIC_RUN_ID' in os.environ or int(os.environ.get('WORLD_SIZE', '1') or 1) > 1


def _seconds(env: str, default: float) -> float:
    text = os.environ.get(env)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        raise InvalidInputError(f"{env} must be a number of seconds, got {text!r}") from None
    if not value > 0:
        raise InvalidInputError(f"{env} must be > 0 seconds, got {text!r}")
    return value


def init_from_environment(device: str = 'cpu') -> str:
    """Join the process group torchrun describes in the environment (a no-op for one process).

    Args:
        device: the run's device: 'cpu' → gloo; 'cuda' (or 'cuda:N') → NCCL with ``cuda:LOCAL_RANK``.

    Returns:
        The device this rank trains on.

    Raises:
        InvalidInputError: a CUDA device without CUDA, more ranks on a node than GPUs, or bad timeouts.
    """
    global _root_group, _control_group
    if not launched() or _dist() is not None:
        return device
    import torch.distributed as dist
    timeout = datetime.timedelta(seconds=_seconds(TIMEOUT_ENV, 60.0))
    root_timeout = datetime.timedelta(seconds=_seconds(ROOT_TIMEOUT_ENV, 6 * 3600.0))
    cuda = torch.device(device).type == 'cuda'
    if cuda:
        local = int(os.environ.get('LOCAL_RANK', '0'))
        if not torch.cuda.is_available() or local >= torch.cuda.device_count():
            raise InvalidInputError(f"device {device!r} under torchrun needs one GPU per rank: LOCAL_RANK {local}, "
                                    f"{torch.cuda.device_count() if torch.cuda.is_available() else 0} GPU(s) visible")
        torch.cuda.set_device(local)
        device = f'cuda:{local}'
    dist.init_process_group('nccl' if cuda else 'gloo', timeout=timeout)
    _control_group = dist.new_group(backend='gloo', timeout=timeout)
    _root_group = dist.new_group(backend='gloo', timeout=root_timeout)
    return device


def shutdown() -> None:
    """Leave the process group (if this process joined one). Unreachable DDP reducers and their gloo work are
    collected first, while the interpreter is whole (freed during its shutdown they can abort the process)."""
    global _root_group, _control_group
    dist = _dist()
    if dist is not None:
        import gc
        gc.collect()
        dist.destroy_process_group()
    _root_group = _control_group = None


def world_size() -> int:
    """Number of processes of the run (1 without a process group)."""
    dist = _dist()
    return dist.get_world_size() if dist is not None else 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    dist = _dist()
    return dist.get_rank() if dist is not None else 0


def is_root() -> bool:
    """True on rank 0, the rank that evaluates and writes."""
    return rank() == 0


def local_rows(n: int) -> slice:
    """This rank's contiguous slice of a global batch of ``n`` examples (``n`` divisible by the world size)."""
    k, r = world_size(), rank()
    per = n // k
    return slice(r * per, (r + 1) * per)


def wait_for_root() -> None:
    """Barrier after rank-0-only work (evaluation): the long-timeout gloo group, not the collectives' timeout."""
    dist = _dist()
    if dist is not None:
        dist.barrier(group=_root_group)


def _reduced(value: float, op: str, device=None) -> float:
    """``value`` reduced over the ranks with ``op`` ('MAX', 'MIN' or 'SUM'), on every rank. Uses the runner's
    control group when this process joined one through `init_from_environment`, else the default group (a
    user's own ``torch.distributed`` program) with a tensor on ``device``."""
    dist = _dist()
    if dist is None:
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device='cpu' if _control_group is not None else device)
    dist.all_reduce(t, op=getattr(dist.ReduceOp, op), group=_control_group)
    return float(t)


def agree_max(value: float) -> float:
    """The largest ``value`` over the ranks, on every rank (e.g. training time, so that all stop together)."""
    return _reduced(value, 'MAX')


def all_true(flag: bool, device=None) -> bool:
    """True on every rank when ``flag`` is True on every rank (so that all ranks refuse a step together)."""
    return _reduced(1.0 if flag else 0.0, 'MIN', device) == 1.0


def refuse_together(ok: bool, network, device=None) -> bool:
    """Whether every rank may go on with a step: ``ok`` on every rank when ``network`` is a
    ``DistributedDataParallel`` wrapper (whose backward pass waits for all ranks, so that all ranks refuse a step
    together and none is left waiting), else ``ok`` itself."""
    from torch.nn.parallel import DistributedDataParallel
    if isinstance(network, DistributedDataParallel):
        return all_true(ok, device)
    return bool(ok)


def data_parallel(net: torch.nn.Module, device) -> torch.nn.Module:
    """``net`` wrapped in ``DistributedDataParallel`` across this run's processes (gradients averaged over the ranks
    in every backward pass), or ``net`` itself in a run of one process."""
    if world_size() == 1:
        return net
    from torch.nn.parallel import DistributedDataParallel
    device = torch.device(device)
    return DistributedDataParallel(net, device_ids=[device.index] if device.type == 'cuda' else None)


def all_mean(value: float) -> float:
    """The mean of ``value`` over the ranks (a batch-mean loss of equal local batches → the global mean)."""
    return _reduced(value, 'SUM') / world_size()


def broadcast_object(obj: Optional[object]) -> object:
    """Rank 0's ``obj`` on every rank (pickled over the gloo group: for small control data, e.g. a resumed
    checkpoint or an error message)."""
    dist = _dist()
    if dist is None:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, group=_control_group)
    return box[0]
