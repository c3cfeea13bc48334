"""COCO annotation files as converters and labelling tools write them, read in one pass at load
time: what would train or evaluate wrongly is refused in one line naming the file and the
entry, what pycocotools needs but tools leave out is filled in (docs/DATA.md)."""

import contextlib
import io
import json
import logging
import math
import os

import numpy as np
from pycocotools.coco import COCO

from paa_core.utils.errors import InputError

from .image_io import read_image_size

logger = logging.getLogger("paa_core.data")


def load_coco(ann_file, root):
    """The annotations of `ann_file`, checked and completed, as a pycocotools COCO; images
    are under `root` (read only for the sizes a file leaves out)."""
    data = _parse(ann_file)
    categories = _check_categories(data, ann_file)
    images = _check_images(data["images"], ann_file, root)
    anns = data["annotations"]
    _check_references(anns, ann_file, images, categories)
    boxes = _box_array(anns, ann_file)
    _check_placement(anns, boxes, ann_file, images)
    _complete_crowd(anns, ann_file)
    _complete_area(anns, boxes, ann_file)
    _number_annotations(anns, ann_file)
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    return coco


def _is_int(value):
    return type(value) is int


def _is_number(value):
    return type(value) in (int, float) and math.isfinite(value)


def _is_whole(value):
    return _is_number(value) and value == int(value)


def _parse(ann_file):
    """The json object, with "images", "annotations" (none: an image list to predict on) and
    "categories" lists."""
    try:
        # utf-8-sig: tools on Windows may start the file with a byte-order mark
        with open(ann_file, encoding="utf-8-sig") as f:
            data = json.load(f)
    except ValueError as e:  # not json, or not UTF-8
        raise InputError(
            f"COCODataset: cannot parse annotation file {ann_file}: {str(e).splitlines()[0]}"
        ) from None
    if not isinstance(data, dict):
        raise InputError(
            f"{ann_file}: not a COCO annotation file: its top level is a {type(data).__name__}, "
            'not an object with "images", "annotations" and "categories"'
        )
    data.setdefault("annotations", [])
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            fault = "is not a list" if key in data else "is missing"
            raise InputError(f'{ann_file}: not a COCO annotation file: "{key}" {fault}')
    return data


def _check_categories(data, ann_file):
    """{id: name}: integer ids, each with one name; repeats of the same entry are dropped."""
    names, unique = {}, []
    for i, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or not _is_int(cat.get("id")) or "name" not in cat:
            raise InputError(f'{ann_file}: categories[{i}] needs an integer "id" and a "name"')
        if cat["id"] in names and names[cat["id"]] != cat["name"]:
            raise InputError(
                f"{ann_file}: category id {cat['id']} is listed twice, as "
                f"{names[cat['id']]!r} and {cat['name']!r}"
            )
        if cat["id"] not in names:
            names[cat["id"]] = cat["name"]
            unique.append(cat)
    if not names:
        raise InputError(
            f'{ann_file}: no categories: list them as "categories": [{{"id", "name"}}]'
        )
    data["categories"] = unique
    shared = {}
    for cat_id, name in names.items():
        shared.setdefault(name, []).append(cat_id)
    for name, ids in shared.items():
        if len(ids) > 1:
            logger.warning(
                "%s: categories %s are all named %r: they are trained and evaluated as "
                "different classes",
                ann_file,
                ids,
                name,
            )
    return names


def _check_images(images, ann_file, root):
    """{id: image record}: unique integer ids, a file name each (Windows separators turned
    into /), positive whole sizes; sizes a tool left out are read from the files."""
    records, measured = {}, 0
    for i, img in enumerate(images):
        if not (isinstance(img, dict) and _is_int(img.get("id"))):
            raise InputError(f'{ann_file}: images[{i}] has no integer "id"')
        if img["id"] in records:
            raise InputError(
                f"{ann_file}: image id {img['id']} is used twice, by "
                f"{records[img['id']].get('file_name')!r} and {img.get('file_name')!r}"
            )
        name = img.get("file_name")
        if not (isinstance(name, str) and name):
            raise InputError(f'{ann_file}: image {img["id"]} has no "file_name"')
        img["file_name"] = name.replace("\\", "/")
        if img.get("width") is None or img.get("height") is None:
            img["width"], img["height"] = read_image_size(os.path.join(root, img["file_name"]))
            measured += 1
        elif not all(_is_whole(img[k]) and img[k] > 0 for k in ("width", "height")):
            raise InputError(
                f"{ann_file}: image {img['id']} ({name}): width and height must be positive "
                f"whole numbers, got {img['width']!r} x {img['height']!r}"
            )
        img["width"], img["height"] = int(img["width"]), int(img["height"])
        records[img["id"]] = img
    if measured:
        logger.info(
            "%s: %d image(s) have no width/height: read from their files", ann_file, measured
        )
    return records


def _check_references(anns, ann_file, images, categories):
    """Every annotation names an image and a category of the file (by integer id)."""
    for i, ann in enumerate(anns):
        if not isinstance(ann, dict):
            raise InputError(f"{ann_file}: annotations[{i}] is not an object")
        if not (_is_int(ann.get("image_id")) and ann["image_id"] in images):
            raise InputError(
                f"{ann_file}: annotation {ann.get('id')} has image_id {ann.get('image_id')!r}, "
                "which is not in its images"
            )
        if not (_is_int(ann.get("category_id")) and ann["category_id"] in categories):
            raise InputError(
                f"{ann_file}: annotation {ann.get('id')} has category_id "
                f"{ann.get('category_id')!r}, which is not in its categories"
            )


def _numbers(values, shape):
    """`values` as a float64 array of `shape`, or None when one is not a number (e.g. a
    string, None) or the shape differs."""
    try:
        array = np.array(values) if values else np.zeros(shape)
    except ValueError:  # ragged
        return None
    if array.shape != shape or array.dtype.kind not in "iuf":
        return None
    return array.astype(np.float64)


def _is_box(bbox):
    return isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)


def _box_array(anns, ann_file):
    """The bboxes as [N, 4] float64 [x, y, w, h]: four finite numbers each, w and h >= 0."""
    boxes = _numbers([ann.get("bbox") for ann in anns], (len(anns), 4))
    if boxes is None or not np.isfinite(boxes).all():
        bad = next(ann for ann in anns if not _is_box(ann.get("bbox")))
        raise InputError(
            f"{ann_file}: annotation {bad.get('id')}: bbox {bad.get('bbox')!r} is not four "
            "finite numbers [x, y, width, height]"
        )
    negative = np.flatnonzero((boxes[:, 2:] < 0).any(axis=1))
    if len(negative):
        bad = anns[negative[0]]
        raise InputError(
            f"{ann_file}: annotation {bad.get('id')}: bbox {bad['bbox']} has a negative width "
            f"or height ({len(negative)} annotation(s) do): COCO boxes are [x, y, width, height] "
            "from the top-left corner"
        )
    return boxes


def _check_placement(anns, boxes, ann_file, images):
    """Refuse boxes with no pixel inside their image (a box in another image's frame or
    scale); warn of zero-size boxes, which nothing can match."""
    image_ids = np.array(list(images), dtype=np.int64)
    order = np.argsort(image_ids)
    rows = order[np.searchsorted(image_ids[order], [a["image_id"] for a in anns])]
    sizes = np.array([(i["width"], i["height"]) for i in images.values()], dtype=np.float64)
    sizes = sizes.reshape(-1, 2)[rows]
    x, y, w, h = boxes.T
    empty = (w == 0) | (h == 0)
    off = ~empty & ((x >= sizes[:, 0]) | (y >= sizes[:, 1]) | (x + w <= 0) | (y + h <= 0))
    if off.any():
        first = int(np.flatnonzero(off)[0])
        bad, image = anns[first], images[anns[first]["image_id"]]
        raise InputError(
            f"{ann_file}: annotation {bad.get('id')}: bbox {bad['bbox']} lies outside its image "
            f"{image['file_name']} ({image['width']}x{image['height']}); "
            f"{int(off.sum())} annotation(s) do"
        )
    if empty.any():
        logger.warning(
            "%s: %d annotation(s) have a zero width or height (the first: annotation %s): "
            "never a training target; evaluation counts them as missed, as pycocotools does",
            ann_file,
            int(empty.sum()),
            anns[int(np.flatnonzero(empty)[0])].get("id"),
        )


def _complete_crowd(anns, ann_file):
    """iscrowd as the integer 0 or 1; true/false accepted, missing or null taken as 0."""
    crowd = [ann.get("iscrowd") for ann in anns]
    valid = [c in (None, 0, 1) for c in crowd]  # True and False compare equal to 1 and 0
    if not all(valid):
        bad = anns[valid.index(False)]
        raise InputError(
            f"{ann_file}: annotation {bad.get('id')}: iscrowd must be 0 or 1, got "
            f"{bad['iscrowd']!r}"
        )
    if {type(c) for c in crowd} - {int}:
        for ann, c in zip(anns, crowd):
            ann["iscrowd"] = int(c or 0)


def _complete_area(anns, boxes, ann_file):
    """A missing area becomes the bbox's width x height, which pycocotools' small, medium
    and large ranges then read; a given one must be a number >= 0."""
    missing = [i for i, ann in enumerate(anns) if ann.get("area") is None]
    for i in missing:
        anns[i]["area"] = float(boxes[i, 2] * boxes[i, 3])
    areas = _numbers([ann["area"] for ann in anns], (len(anns),))
    if areas is None or not (np.isfinite(areas) & (areas >= 0)).all():
        bad = next(a for a in anns if not (_is_number(a["area"]) and a["area"] >= 0))
        raise InputError(
            f"{ann_file}: annotation {bad.get('id')}: area {bad['area']!r} is not a number >= 0"
        )
    if missing:
        logger.warning(
            "%s: %d annotation(s) have no area: their bbox width x height is used",
            ann_file,
            len(missing),
        )


def _number_annotations(anns, ann_file):
    """Annotation ids must be unique and positive: pycocotools' COCOeval looks annotations up
    by id and takes id 0 for "no match". Otherwise all are renumbered 1..N in file order."""
    ids = [ann.get("id") for ann in anns]
    if all(_is_int(i) and i > 0 for i in ids) and len(set(ids)) == len(ids):
        return
    logger.warning(
        "%s: annotation ids are not unique positive integers, which pycocotools' evaluation "
        "misreads: they are renumbered 1..%d in file order",
        ann_file,
        len(anns),
    )
    for number, ann in enumerate(anns, 1):
        ann["id"] = number
