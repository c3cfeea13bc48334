from .coco import COCODataset
from .concat_dataset import ConcatDataset

__all__ = ["COCODataset", "ConcatDataset"]
