"""Several training datasets seen as one (e.g. coco_2014_train + coco_2014_valminusminival)."""

import bisect

from torch.utils.data import ConcatDataset as _ConcatDataset


class ConcatDataset(_ConcatDataset):
    """`torch.utils.data.ConcatDataset` that also answers `get_img_info(idx)`."""

    def get_idxs(self, idx):
        dataset_idx = bisect.bisect_right(self.cumulative_sizes, idx)
        sample_idx = idx if dataset_idx == 0 else idx - self.cumulative_sizes[dataset_idx - 1]
        return dataset_idx, sample_idx

    def get_img_info(self, idx):
        dataset_idx, sample_idx = self.get_idxs(idx)
        return self.datasets[dataset_idx].get_img_info(sample_idx)
