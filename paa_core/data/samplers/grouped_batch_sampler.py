"""Batches whose images all belong to one group (e.g. landscape vs portrait)."""

import torch
from torch.utils.data.sampler import BatchSampler, Sampler


class GroupedBatchSampler(BatchSampler):
    """Wraps `sampler` so that every batch holds indices of a single group.

    Within a group, indices keep the sampler's order and are cut into batches of
    `batch_size` (the last one may be short unless `drop_uneven`); batches are then
    ordered by the sampler position of their first element, so the stream follows
    the sampler as closely as grouping allows. Images of one orientation batched
    together need little zero padding.
    """

    def __init__(self, sampler, group_ids, batch_size, drop_uneven=False):
        if not isinstance(sampler, Sampler):
            raise TypeError(
                f"sampler must be a torch.utils.data.Sampler, got {type(sampler).__name__}"
            )
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.sampler = sampler
        self.group_ids = torch.as_tensor(group_ids, dtype=torch.int64)
        if self.group_ids.dim() != 1:
            raise ValueError(f"group_ids must be 1-D, got shape {tuple(self.group_ids.shape)}")
        self.batch_size = batch_size
        self.drop_uneven = drop_uneven

    def _prepare_batches(self):
        sampled = torch.as_tensor(list(self.sampler), dtype=torch.int64)
        if sampled.numel() == 0:
            return []
        groups = self.group_ids[sampled]
        batches = []  # (position of first element in the sampled order, batch positions)
        for g in torch.unique(groups).tolist():
            positions = (groups == g).nonzero().squeeze(1)  # ascending = sampler order
            for chunk in positions.split(self.batch_size):
                if self.drop_uneven and len(chunk) < self.batch_size:
                    continue
                batches.append((int(chunk[0]), chunk))
        batches.sort(key=lambda b: b[0])
        return [sampled[chunk].tolist() for _, chunk in batches]

    def __iter__(self):
        return iter(self._prepare_batches())

    def __len__(self):
        # Recomputed from the sampler's current order (it may change with set_epoch).
        return len(self._prepare_batches())
