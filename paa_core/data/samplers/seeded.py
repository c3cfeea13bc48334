"""Per-sample random streams for training augmentation (flips, size choices).

A DataLoader worker's random state depends on which batches that worker loaded
before, so it differs between a run and the same run resumed from a checkpoint, and
with the number of workers. Seeding every sample from (seed, rank, iteration, slot)
instead makes the augmentation a function of the sample's place in the schedule.
"""

import numpy as np
from torch.utils.data import Dataset
from torch.utils.data.sampler import BatchSampler

from paa_core.utils.rng import seeded


class SeededBatchSampler(BatchSampler):
    """Yields `[(index, seed), ...]` for the batches of an IterationBasedBatchSampler
    started at `start_iter`; the seed of slot s of iteration i (1-based) on `rank`
    comes from `SeedSequence([seed, rank, i, s])`."""

    def __init__(self, batch_sampler, seed, rank=0, start_iter=0):
        self.batch_sampler = batch_sampler
        self.seed, self.rank, self.start_iter = seed, rank, start_iter

    def __iter__(self):
        for iteration, batch in enumerate(self.batch_sampler, self.start_iter + 1):
            seeds = np.random.SeedSequence([self.seed, self.rank, iteration]).spawn(len(batch))
            yield [(index, int(s.generate_state(1)[0])) for index, s in zip(batch, seeds)]

    def __len__(self):
        return len(self.batch_sampler)


class SeededDataset(Dataset):
    """`dataset[index]` computed under the RNG seed given with the index."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __getitem__(self, index_and_seed):
        index, seed = index_and_seed
        with seeded(seed):
            return self.dataset[index]

    def __len__(self):
        return len(self.dataset)
