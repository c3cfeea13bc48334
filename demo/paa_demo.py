#!/usr/bin/env python
"""Draws a detector's (PAA or Faster R-CNN) detections on image files: boxes, class names and scores.

    python demo/paa_demo.py --config-file configs/paa/paa_quick_shapes.yaml \\
        --weights output/paa_quick_shapes/model_final.pth \\
        --input datasets/shapes/val --output output/demo [--threshold 0.5] [KEY VALUE ...]

`--input` takes image files and/or folders (every image in a folder). Each picture is
written to `--output` under its own name (`name_2.png`, ... when two inputs share a
name); an `--output` that would overwrite an input, or cannot be written, is refused
before any work. Class names come from `--categories` (a COCO
annotation json, whose categories in id order are labels 1..K, or a json list of
names) or, by default, from the annotation file of the config's first DATASETS.TEST.
"""

import argparse
import colorsys
import json
import os
import sys

import cv2
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paa_core.checkpoint.checkpoint import DetectronCheckpointer  # noqa: E402
from paa_core.config import get_cfg  # noqa: E402
from paa_core.config.detector import class_count  # noqa: E402
from paa_core.config.loading import load_catalog, load_config  # noqa: E402
from paa_core.data.build import dataset_args  # noqa: E402
from paa_core.data.datasets.coco import read_rgb_image  # noqa: E402
from paa_core.data.transforms import build_transforms  # noqa: E402
from paa_core.engine.cli import InputError, resolve_device, run_cli  # noqa: E402
from paa_core.modeling.detector import build_detection_model  # noqa: E402
from paa_core.modeling.detector.detectors import check_buildable  # noqa: E402
from paa_core.structures.image_list import to_image_list  # noqa: E402
from paa_core.utils.miscellaneous import refuse_overwriting_inputs  # noqa: E402

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def load_category_names(path):
    """Names of labels 1..K from a COCO annotation json or a json list of names."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: cannot read categories: {e}") from None
    if isinstance(data, list) and all(isinstance(n, str) for n in data):
        return list(data)
    if isinstance(data, dict) and "categories" in data:
        # COCODataset maps the sorted category ids to 1..K.
        return [c["name"] for c in sorted(data["categories"], key=lambda c: c["id"])]
    raise InputError(f"{path}: expected a COCO annotation file or a json list of category names")


def default_categories_file(cfg):
    if not cfg.DATASETS.TEST:
        raise InputError(
            "no --categories given and DATASETS.TEST is empty: cannot name the classes"
        )
    catalog = load_catalog(cfg).DatasetCatalog
    return dataset_args(catalog, "TEST", cfg.DATASETS.TEST[:1])[0]["ann_file"]


def list_images(inputs):
    paths = []
    for item in inputs:
        if os.path.isdir(item):
            paths += sorted(
                os.path.join(item, n)
                for n in os.listdir(item)
                if n.lower().endswith(IMAGE_EXTENSIONS)
            )
        elif os.path.isfile(item):
            paths.append(item)
        else:
            raise InputError(f"--input: no such file or folder: {item}")
    if not paths:
        raise InputError(f"--input: no images found in {', '.join(inputs)}")
    return paths


def output_paths(paths, output):
    """Where each picture goes: `output/<name>`, numbered when names repeat. Refuses an
    `output` that is not a writable folder or where a picture would replace an input."""
    if os.path.exists(output) and not os.path.isdir(output):
        raise InputError(f"--output {output}: exists and is not a folder")
    try:
        os.makedirs(output, exist_ok=True)
    except OSError as e:
        raise InputError(f"--output {output}: cannot create it: {e.strerror}") from None
    if not os.access(output, os.W_OK | os.X_OK):
        raise InputError(f"--output {output}: the folder cannot be written")
    targets, taken = [], set()
    for path in paths:
        stem, ext = os.path.splitext(os.path.basename(path))
        name, n = stem + ext, 1
        while name in taken:
            n += 1
            name = f"{stem}_{n}{ext}"
        taken.add(name)
        targets.append(os.path.join(output, name))
    refuse_overwriting_inputs(f"--output {output}", targets, dict.fromkeys(paths, "an input image"))
    return targets


class Predictor:
    """A model in eval mode plus the test-time transform of its config."""

    def __init__(self, cfg, weights):
        self.device = torch.device(cfg.MODEL.DEVICE)
        self.model = build_detection_model(cfg).to(self.device).eval()
        DetectronCheckpointer(cfg, self.model).load(weights, use_latest=False)
        self.transform = build_transforms(cfg, is_train=False)
        self.size_divisible = cfg.DATALOADER.SIZE_DIVISIBILITY

    @torch.no_grad()
    def __call__(self, image):
        """Detections (BoxList with "scores", "labels") in the coordinates of the PIL `image`."""
        tensor, _ = self.transform(image)
        batch = to_image_list([tensor], self.size_divisible).to(self.device)
        return self.model(batch)[0].to("cpu").resize(image.size)


def class_colour(label):
    """A distinct, stable BGR colour per class."""
    r, g, b = colorsys.hsv_to_rgb((label * 0.618034) % 1.0, 0.85, 1.0)
    return int(255 * b), int(255 * g), int(255 * r)


def draw_detections(image_bgr, detections, names, threshold):
    """A copy of the image with the detections scoring >= threshold drawn on it."""
    out = image_bgr.copy()
    scores = detections.get_field("scores")
    keep = torch.nonzero(scores >= threshold).flatten()
    order = keep[scores[keep].argsort()]  # best drawn last, on top
    boxes = detections.bbox[order].round().int().tolist()
    for (x1, y1, x2, y2), label, score in zip(
        boxes, detections.get_field("labels")[order].tolist(), scores[order].tolist()
    ):
        colour = class_colour(label)
        name = names[label - 1] if 1 <= label <= len(names) else str(label)
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, 2)
        text = f"{name} {score:.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)
        ty = max(y1, th + base)
        cv2.rectangle(out, (x1, ty - th - base), (x1 + tw + 2, ty), colour, -1)
        cv2.putText(
            out, text, (x1 + 1, ty - base), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA
        )
    return out, len(order)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument(
        "--weights", required=True, metavar="FILE", help="checkpoint (.pth/.pkl, URL)"
    )
    parser.add_argument("--input", required=True, nargs="+", metavar="IMG_OR_DIR")
    parser.add_argument("--output", required=True, metavar="DIR")
    parser.add_argument("--threshold", type=float, default=0.5, help="lowest score drawn")
    parser.add_argument(
        "--categories", metavar="JSON", help="COCO annotation file or json list of names"
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE pairs")
    args = parser.parse_args()

    cfg = get_cfg()
    load_config(cfg, args.config_file, args.opts)
    device_warning = resolve_device(cfg)
    if device_warning:
        print(f"warning: {device_warning}", file=sys.stderr)
    cfg.freeze()
    check_buildable(cfg)
    classes = class_count(cfg)
    if classes is None:
        raise InputError(
            "MODEL.RPN_ONLY True: a proposal-only Faster R-CNN finds boxes without classes, "
            "there are no detections to draw (its proposal recall: tools/test_net.py)"
        )
    names = load_category_names(args.categories or default_categories_file(cfg))
    if len(names) != classes.num_classes - 1:
        raise InputError(
            f"{len(names)} category names but {classes.key} is {classes.num_classes} "
            "(classes + background)"
        )
    paths = list_images(args.input)
    targets = output_paths(paths, args.output)
    predictor = Predictor(cfg, args.weights)
    for path, target in zip(paths, targets):
        image = read_rgb_image(path)
        picture, count = draw_detections(
            np.ascontiguousarray(np.asarray(image)[:, :, ::-1]),
            predictor(image),
            names,
            args.threshold,
        )
        if not cv2.imwrite(target, picture):
            raise InputError(f"cannot write {target}")
        print(f"{path}: {count} detections >= {args.threshold} -> {target}")


if __name__ == "__main__":
    run_cli(main)
