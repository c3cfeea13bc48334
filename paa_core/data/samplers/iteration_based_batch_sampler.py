"""Turn an epoch-based batch sampler into a fixed number of iterations."""

from torch.utils.data.sampler import BatchSampler


class IterationBasedBatchSampler(BatchSampler):
    """Yields batches `start_iter .. num_iterations - 1` of an endless stream of epochs.

    Pass e (0, 1, ...) calls `batch_sampler.sampler.set_epoch(e)` when the sampler has
    it, so every pass has its own reproducible order. Starting at `start_iter` skips
    exactly the batches an uninterrupted run would have consumed, which makes a
    resumed run see the same sequence of batches. `len()` is `num_iterations`, the
    value of the last iteration (what the trainer loops to).
    """

    def __init__(self, batch_sampler, num_iterations, start_iter=0):
        if start_iter < 0 or start_iter > num_iterations:
            raise ValueError(
                f"start_iter {start_iter} must lie in [0, num_iterations={num_iterations}]"
            )
        self.batch_sampler = batch_sampler
        self.num_iterations = num_iterations
        self.start_iter = start_iter

    def _set_epoch(self, epoch):
        sampler = getattr(self.batch_sampler, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)

    def __iter__(self):
        iteration = 0
        epoch = 0
        while iteration < self.num_iterations:
            self._set_epoch(epoch)
            epoch += 1
            n = len(self.batch_sampler)
            if n == 0:
                raise RuntimeError("IterationBasedBatchSampler: the batch sampler yields no batch")
            if iteration + n <= self.start_iter:  # a whole pass before the start: skip it
                iteration += n
                continue
            for batch in self.batch_sampler:
                if iteration >= self.start_iter:
                    yield batch
                iteration += 1
                if iteration >= self.num_iterations:
                    return

    def __len__(self):
        return self.num_iterations
