"""COCO-format detection dataset (boxes and labels only)."""

import os

import torch

from paa_core.structures.bounding_box import BoxList
from paa_core.utils.errors import InputError

from .coco_json import load_coco
from .image_io import read_rgb_image


def _is_usable(obj):
    """A non-crowd box that keeps some area in the +1 convention (w > 1 and h > 1).

    Boxes with w or h <= 1 would have x2 <= x1 after xywh -> xyxy and are removed
    by `clip_to_image`, so an image whose boxes are all like that has no target.
    """
    w, h = obj["bbox"][2:]
    return obj["iscrowd"] == 0 and w > 1 and h > 1


class COCODataset(torch.utils.data.Dataset):
    """Images of a COCO json with their boxes.

    `__getitem__(idx)` -> (image, target, idx): `image` is a PIL RGB image passed
    through `transforms`; `target` a BoxList (xyxy) with a "labels" field holding
    contiguous ids 1..K (K = number of json categories, in sorted json id order).
    Crowd and degenerate boxes are never targets; with
    `remove_images_without_annotations` (training) images left with no target are
    skipped, otherwise (testing) every image is kept.
    """

    def __init__(self, ann_file, root, remove_images_without_annotations, transforms=None):
        if not os.path.isfile(ann_file):
            raise FileNotFoundError(f"COCODataset: annotation file not found: {ann_file}")
        if not os.path.isdir(root):
            raise FileNotFoundError(f"COCODataset: image folder not found: {root}")
        self.coco = load_coco(ann_file, root)
        self.root = root
        self.ann_file = ann_file

        ids = sorted(self.coco.imgs.keys())
        if remove_images_without_annotations:
            ids = [
                img_id
                for img_id in ids
                if any(_is_usable(obj) for obj in self.coco.imgToAnns.get(img_id, []))
            ]
        self.ids = ids

        cat_ids = sorted(self.coco.getCatIds())
        self.categories = {c: self.coco.cats[c]["name"] for c in cat_ids}
        self.json_category_id_to_contiguous_id = {c: i + 1 for i, c in enumerate(cat_ids)}
        self.contiguous_category_id_to_json_id = {
            v: k for k, v in self.json_category_id_to_contiguous_id.items()
        }
        self.id_to_img_map = dict(enumerate(self.ids))
        self._transforms = transforms

    def __len__(self):
        return len(self.ids)

    def get_img_info(self, idx):
        """The json image record (has "height", "width", "file_name", "id")."""
        return self.coco.imgs[self.id_to_img_map[idx]]

    def _load_image(self, img_id):
        """The image, which must have the size its json record gives (upright, or as stored
        when only that matches): the boxes are in that frame and evaluation maps detections
        back to it."""
        info = self.coco.imgs[img_id]
        path = os.path.join(self.root, info["file_name"])
        img = read_rgb_image(path, (info["width"], info["height"]))
        if img.size != (info["width"], info["height"]):
            raise InputError(
                "{} is {}x{} but {} says {}x{} (width x height)".format(
                    path, img.size[0], img.size[1], self.ann_file, info["width"], info["height"]
                )
            )
        return img

    def __getitem__(self, idx):
        img_id = self.id_to_img_map[idx]
        img = self._load_image(img_id)
        anno = [obj for obj in self.coco.imgToAnns.get(img_id, []) if obj["iscrowd"] == 0]

        boxes = torch.as_tensor([obj["bbox"] for obj in anno], dtype=torch.float32).reshape(-1, 4)
        target = BoxList(boxes, img.size, mode="xywh").convert("xyxy")
        labels = [self.json_category_id_to_contiguous_id[obj["category_id"]] for obj in anno]
        target.add_field("labels", torch.tensor(labels, dtype=torch.int64))
        target = target.clip_to_image(remove_empty=True)

        if self._transforms is not None:
            img, target = self._transforms(img, target)
        return img, target, idx
