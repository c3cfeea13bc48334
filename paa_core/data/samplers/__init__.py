from .distributed import DistributedSampler
from .grouped_batch_sampler import GroupedBatchSampler
from .iteration_based_batch_sampler import IterationBasedBatchSampler
from .seeded import SeededBatchSampler, SeededDataset

__all__ = [
    "DistributedSampler",
    "GroupedBatchSampler",
    "IterationBasedBatchSampler",
    "SeededBatchSampler",
    "SeededDataset",
]
