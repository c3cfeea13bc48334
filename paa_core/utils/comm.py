"""Small helpers over `torch.distributed` that degrade to no-ops in a single process.

Losses normalise by quantities summed over all processes (docs/DESIGN.md §5), and logging
averages loss dicts over processes; both go through here so that single-process
CPU runs need no process group at all.
"""

import torch
import torch.distributed as dist


def _is_dist():
    return dist.is_available() and dist.is_initialized()


def get_world_size():
    return dist.get_world_size() if _is_dist() else 1


def get_rank():
    return dist.get_rank() if _is_dist() else 0


def is_main_process():
    return get_rank() == 0


def synchronize():
    """Barrier across all processes (no-op with one process)."""
    if get_world_size() > 1:
        dist.barrier()


def all_gather(obj):
    """List with every process's picklable `obj`, indexed by rank.

    `all_gather_object` handles pickling for both gloo and NCCL; with NCCL it
    moves the bytes through the current CUDA device, which the launcher sets.
    """
    world_size = get_world_size()
    if world_size == 1:
        return [obj]
    gathered = [None] * world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def reduce_dict(input_dict, average=True):
    """Reduce a dict of scalar tensors to rank 0 (the only rank whose result is meaningful).

    Keys are sorted so every process stacks the values in the same order.
    """
    world_size = get_world_size()
    if world_size < 2:
        return input_dict
    with torch.no_grad():
        names = sorted(input_dict.keys())
        values = torch.stack([input_dict[k] for k in names], dim=0)
        dist.reduce(values, dst=0)
        if average and dist.get_rank() == 0:
            values /= world_size
        return dict(zip(names, values))


def reduce_sum(tensor):
    """Sum of `tensor` over all processes (a new tensor; the input is left untouched)."""
    if get_world_size() < 2:
        return tensor
    tensor = tensor.clone()
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor
