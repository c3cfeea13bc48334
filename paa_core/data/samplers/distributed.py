"""Split (optionally shuffled) dataset indices across processes."""

import torch
import torch.distributed as dist


class DistributedSampler(torch.utils.data.Sampler):
    """Rank `rank` of `num_replicas` gets one contiguous chunk of the index order.

    The order is a permutation seeded by `seed + epoch` (call `set_epoch` once per
    pass) or `0..N-1` without shuffling. Chunks never overlap and together cover the
    dataset exactly once; their lengths differ by at most one. With
    `num_replicas=1, rank=0` this is a reproducible random (or sequential) sampler.
    """

    def __init__(self, dataset, num_replicas=None, rank=None, shuffle=True, seed=0):
        if num_replicas is None:
            num_replicas = (
                dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
            )
        if rank is None:
            rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        if not 0 <= rank < num_replicas:
            raise ValueError(f"DistributedSampler rank {rank} is outside [0, {num_replicas})")
        self.dataset = dataset
        self.num_replicas = num_replicas
        self.rank = rank
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        n = len(dataset)
        self.start = n * rank // num_replicas
        self.end = n * (rank + 1) // num_replicas

    def __iter__(self):
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
            indices = torch.randperm(len(self.dataset), generator=g)[self.start : self.end]
        else:
            indices = torch.arange(self.start, self.end)
        return iter(indices.tolist())

    def __len__(self):
        return self.end - self.start

    def set_epoch(self, epoch):
        self.epoch = epoch
