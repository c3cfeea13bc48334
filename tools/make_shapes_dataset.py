#!/usr/bin/env python
"""Writes the bundled "shapes" detection dataset in COCO format.

A small, deterministic stand-in for COCO that a CPU can learn in minutes but that is
still a detection problem: six shape categories drawn with random colours, fills,
sizes (about 8 to 300 px), aspect ratios and rotations, partly occluding each other,
on textured backgrounds with clutter that belongs to no category. Colour and size
carry no information about the category; only the outline does.

Layout (what `paths_catalog.py` expects for `shapes_train` / `shapes_val`):
    <root>/train/000001.jpg ...
    <root>/val/000001.jpg ...
    <root>/annotations/instances_train.json, instances_val.json
with <root> = $PAA_DATA_DIR/shapes, or <repo>/datasets/shapes when PAA_DATA_DIR is unset.

Every image is drawn from its own random stream seeded by (seed, split, index), so the
output does not depend on the number of worker processes.
"""

import argparse
import json
import math
import os
import sys
from multiprocessing import Pool

import cv2
import numpy as np

CATEGORIES = ("ellipse", "triangle", "rectangle", "star", "cross", "ring")
SPLIT_IDS = {"train": 0, "val": 1}

# Object side (sqrt of its unrotated box area) in pixels: log-uniform over the whole
# range for a share of the objects, over a mid range for the rest, so that (as in COCO
# photos) most objects are mid-sized but tiny and huge ones are common enough to learn.
MIN_SIDE, MAX_SIDE = 8.0, 300.0
MID_SIDES, MID_SHARE = (16.0, 160.0), 0.7
# Objects may hide at most this fraction of each other's pixels.
MAX_OCCLUDED = 0.25
# Share of objects painted in one flat colour (the rest get a texture over their colour),
# and how far (sum of |BGR difference|) an object's colour is from the background under it.
FLAT_FILL_SHARE, MIN_CONTRAST = 0.9, 220
# Written into each annotation file; a split made by another version is drawn again.
VERSION = 2
# Fixed-point bits for sub-pixel polygon filling in OpenCV.
SHIFT = 4


def default_root():
    """$PAA_DATA_DIR/shapes, else datasets/shapes in the repository."""
    data_dir = os.environ.get("PAA_DATA_DIR")
    if data_dir is None:
        data_dir = os.path.join(
            os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "datasets"
        )
    return os.path.join(data_dir, "shapes")


# ---------------------------------------------------------------------------
# Shapes: unit outlines in [-1, 1]^2, then scaled, rotated and filled into a mask
# ---------------------------------------------------------------------------
def _ellipse(n=48):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([np.cos(t), np.sin(t)], 1)


def _star(inner):
    t = np.arange(10) * np.pi / 5 - np.pi / 2
    r = np.where(np.arange(10) % 2 == 0, 1.0, inner)
    return np.stack([r * np.cos(t), r * np.sin(t)], 1)


def _cross(arm):
    a = arm
    return np.array(
        [
            [-a, -1],
            [a, -1],
            [a, -a],
            [1, -a],
            [1, a],
            [a, a],
            [a, 1],
            [-a, 1],
            [-a, a],
            [-1, a],
            [-1, -a],
            [-a, -a],
        ],
        dtype=np.float64,
    )


def _triangle(rng):
    apex = rng.uniform(-0.6, 0.6)
    return np.array([[apex, -1.0], [1.0, 1.0], [-1.0, 1.0]])


def shape_outlines(category, rng):
    """Unit polygons of one shape: (outer, hole or None), each an (N, 2) array."""
    if category == "ellipse":
        return _ellipse(), None
    if category == "triangle":
        return _triangle(rng), None
    if category == "rectangle":
        return np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]]), None
    if category == "star":
        return _star(rng.uniform(0.38, 0.55)), None
    if category == "cross":
        return _cross(rng.uniform(0.25, 0.42)), None
    if category == "ring":
        return _ellipse(), _ellipse() * rng.uniform(0.45, 0.65)
    raise ValueError(f"unknown shape category {category!r}")


def place(points, half_w, half_h, angle, cx, cy):
    """Scales unit points to half sizes (half_w, half_h), rotates by angle, moves to (cx, cy)."""
    c, s = math.cos(angle), math.sin(angle)
    x, y = points[:, 0] * half_w, points[:, 1] * half_h
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], 1)


def polygon_mask(outer, hole, height, width):
    """Binary (height, width) mask of a polygon in pixel coordinates, minus an optional hole."""
    mask = np.zeros((height, width), np.uint8)
    cv2.fillPoly(mask, [np.round(outer * (1 << SHIFT)).astype(np.int32)], 1, cv2.LINE_8, SHIFT)
    if hole is not None:
        cv2.fillPoly(mask, [np.round(hole * (1 << SHIFT)).astype(np.int32)], 0, cv2.LINE_8, SHIFT)
    return mask


# ---------------------------------------------------------------------------
# Backgrounds, fills and clutter
# ---------------------------------------------------------------------------
def random_colour(rng):
    return rng.uniform(0, 255, 3)


def value_noise(rng, height, width, cells):
    """Smooth random field in [0, 1]: bicubic upsampling of a coarse random grid."""
    grid = rng.random((cells + 1, cells + 1)).astype(np.float32)
    return np.clip(cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC), 0, 1)


def stripes(rng, height, width):
    """Sine stripes in [0, 1] at a random period and orientation."""
    period = rng.uniform(4, 40)
    angle = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    phase = (xx * math.cos(angle) + yy * math.sin(angle)) * (2 * np.pi / period)
    return 0.5 + 0.5 * np.sin(phase)


def texture(rng, height, width):
    """A random two-colour texture (H, W, 3) float32: noise, stripes or checks."""
    kind = rng.integers(3)
    if kind == 0:
        t = value_noise(rng, height, width, int(rng.integers(2, 24)))
    elif kind == 1:
        t = stripes(rng, height, width)
    else:
        cell = rng.uniform(6, 48)
        yy, xx = np.mgrid[0:height, 0:width]
        t = ((xx // cell + yy // cell) % 2).astype(np.float32)
    c0, c1 = random_colour(rng), random_colour(rng)
    mix = rng.uniform(0.1, 0.6)  # contrast of the pattern
    t = t[..., None] * mix
    return (c0 * (1 - t) + c1 * t).astype(np.float32)


def background(rng, height, width):
    """Textured background: a texture over a second one, blended by a smooth field."""
    a, b = texture(rng, height, width), texture(rng, height, width)
    alpha = value_noise(rng, height, width, int(rng.integers(1, 5)))[..., None]
    return a * alpha + b * (1 - alpha)


def fill(rng, height, width, base):
    """The paint of one object: flat colour, or a texture around it."""
    if rng.random() < FLAT_FILL_SHARE:
        return np.broadcast_to(base.astype(np.float32), (height, width, 3))
    t = texture(rng, height, width)
    return 0.3 * t + 0.7 * base.astype(np.float32)


def contrasting_colour(rng, local_mean):
    """An object colour that differs clearly from the background under it."""
    for _ in range(20):
        colour = random_colour(rng)
        if np.abs(colour - local_mean).sum() > MIN_CONTRAST:
            return colour
    return 255.0 - local_mean


def draw_clutter(rng, image, count, thin_only=False):
    """Lines, curves, letters and blobs in random colours: not any category."""
    height, width = image.shape[:2]
    for _ in range(count):
        colour = tuple(float(v) for v in random_colour(rng))
        kind = 0 if thin_only else rng.integers(4)
        if kind == 0:  # straight line
            p = rng.uniform(0, [width, height, width, height]).astype(int)
            cv2.line(
                image, (p[0], p[1]), (p[2], p[3]), colour, int(rng.integers(1, 3)), cv2.LINE_AA
            )
        elif kind == 1:  # wiggly curve
            n = int(rng.integers(4, 9))
            start = rng.uniform(0, [width, height])
            pts = start + np.cumsum(rng.normal(0, 20, (n, 2)), 0)
            cv2.polylines(
                image, [pts.astype(np.int32)], False, colour, int(rng.integers(1, 4)), cv2.LINE_AA
            )
        elif kind == 2:  # letters and digits
            text = "".join(rng.choice(list("ABDEFGKMNPRSUVWYZ2345679"), int(rng.integers(1, 4))))
            org = (int(rng.uniform(0, width * 0.9)), int(rng.uniform(10, height)))
            cv2.putText(
                image,
                text,
                org,
                int(rng.choice([0, 2, 3, 4])),
                rng.uniform(0.3, 1.2),
                colour,
                int(rng.integers(1, 3)),
                cv2.LINE_AA,
            )
        else:  # irregular blob: a noisy polygon with many vertices
            n = 14
            t = np.sort(rng.uniform(0, 2 * np.pi, n))
            r = rng.uniform(3, 14) * rng.uniform(0.4, 1.0, n)
            centre = rng.uniform(0, [width, height])
            pts = centre + np.stack([r * np.cos(t), r * np.sin(t)], 1)
            cv2.fillPoly(image, [pts.astype(np.int32)], colour, cv2.LINE_AA)


# ---------------------------------------------------------------------------
# One image
# ---------------------------------------------------------------------------
def sample_object(rng, size):
    """(category index, outline, hole or None): a random shape placed inside a size x size image."""
    label = int(rng.integers(len(CATEGORIES)))
    side_lo, side_hi = MID_SIDES if rng.random() < MID_SHARE else (MIN_SIDE, MAX_SIDE)
    side = math.exp(rng.uniform(math.log(side_lo), math.log(min(side_hi, 0.8 * size))))
    aspect = math.exp(rng.uniform(math.log(0.4), math.log(2.5)))
    half_w, half_h = 0.5 * side * math.sqrt(aspect), 0.5 * side / math.sqrt(aspect)
    angle = rng.uniform(0, 2 * np.pi)
    outer, hole = shape_outlines(CATEGORIES[label], rng)
    outer = place(outer, half_w, half_h, angle, 0.0, 0.0)
    lo, hi = outer.min(0), outer.max(0)
    if np.any(hi - lo > size - 2):  # too large for the image at this rotation: shrink
        shrink = (size - 2) / (hi - lo).max()
        outer, lo, hi = outer * shrink, lo * shrink, hi * shrink
        half_w, half_h = half_w * shrink, half_h * shrink
    cx, cy = rng.uniform(-lo, size - 1 - hi)
    outer = outer + [cx, cy]
    if hole is not None:
        hole = place(hole, half_w, half_h, angle, cx, cy)
    return label, outer, hole


def render_image(rng, size):
    """One (size, size, 3) uint8 BGR image and its objects [(label, x, y, w, h)]."""
    image = np.clip(background(rng, size, size), 0, 255).astype(np.uint8)
    draw_clutter(rng, image, int(rng.integers(2, 10)))
    owner = np.zeros((size, size), np.int32)  # which object (1-based) shows at each pixel
    full_area, boxes, labels = [0], [], []
    for _ in range(int(rng.integers(3, 11))):
        for _attempt in range(5):
            label, outer, hole = sample_object(rng, size)
            x0, y0 = np.floor(outer.min(0)).astype(int)
            x1, y1 = np.ceil(outer.max(0)).astype(int) + 1
            x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, size), min(y1, size)
            mask = polygon_mask(
                outer - [x0, y0], None if hole is None else hole - [x0, y0], y1 - y0, x1 - x0
            )
            area = int(mask.sum())
            if area < 16:
                continue
            region = owner[y0:y1, x0:x1]
            covered = np.bincount(region[mask > 0], minlength=len(full_area))
            visible = np.bincount(owner.ravel(), minlength=len(full_area))
            if np.any((visible - covered)[1:] < (1 - MAX_OCCLUDED) * np.array(full_area[1:])):
                continue
            ys, xs = np.nonzero(mask)
            local_mean = image[y0:y1, x0:x1][mask > 0].mean(0)
            paint = fill(rng, y1 - y0, x1 - x0, contrasting_colour(rng, local_mean))
            image[y0:y1, x0:x1][mask > 0] = paint[mask > 0]
            region[mask > 0] = len(full_area)
            full_area.append(area)
            labels.append(label)
            boxes.append(
                (x0 + xs.min(), y0 + ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
            )
            break
    draw_clutter(rng, image, int(rng.integers(0, 4)), thin_only=True)
    if rng.random() < 0.5:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.4, 1.0))
    image = image + rng.normal(0, rng.uniform(0, 8), image.shape)
    objects = [(label, *map(int, box)) for label, box in zip(labels, boxes)]
    return np.clip(image, 0, 255).astype(np.uint8), objects


def _render_one(job):
    """Worker: draws image `index` of `split` and writes it; returns its objects."""
    seed, split, index, size, image_dir = job
    rng = np.random.default_rng([seed, SPLIT_IDS[split], index])
    image, objects = render_image(rng, size)
    cv2.imwrite(
        os.path.join(image_dir, f"{index + 1:06d}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 92]
    )
    return objects


def write_split(root, split, count, size, seed, workers):
    """Draws `count` images of one split and writes its COCO annotation file."""
    image_dir = os.path.join(root, split)
    os.makedirs(image_dir, exist_ok=True)
    jobs = [(seed, split, i, size, image_dir) for i in range(count)]
    if workers > 1:
        with Pool(workers) as pool:
            results = pool.map(_render_one, jobs, chunksize=16)
    else:
        results = [_render_one(job) for job in jobs]
    images, annotations = [], []
    for index, objects in enumerate(results):
        images.append(
            {"id": index + 1, "file_name": f"{index + 1:06d}.jpg", "width": size, "height": size}
        )
        # No masks: "area" (which sets COCO's small/medium/large ranges) is the box area.
        for label, x, y, w, h in objects:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": index + 1,
                    "category_id": label + 1,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    coco = {
        "info": {
            "description": "paa_core synthetic shapes",
            "version": VERSION,
            "seed": seed,
            "split": split,
            "images": count,
            "size": size,
        },
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(CATEGORIES)
        ],
    }
    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    with open(os.path.join(root, "annotations", f"instances_{split}.json"), "w") as f:
        json.dump(coco, f)
    return len(annotations)


def is_complete(root, split, count, size, seed):
    """True when this split was already written by this version with the same parameters."""
    path = os.path.join(root, "annotations", f"instances_{split}.json")
    if not os.path.isfile(path):
        return False
    with open(path) as f:
        info = json.load(f).get("info", {})
    same = [info.get(k) for k in ("version", "seed", "images", "size")] == [
        VERSION,
        seed,
        count,
        size,
    ]
    return same and all(
        os.path.isfile(os.path.join(root, split, f"{i:06d}.jpg")) for i in range(1, count + 1)
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--output", default=default_root(), help="dataset root (default: %(default)s)"
    )
    parser.add_argument("--num-train", type=int, default=1600)
    parser.add_argument("--num-val", type=int, default=300)
    parser.add_argument("--size", type=int, default=320, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--force", action="store_true", help="rewrite splits that already exist")
    args = parser.parse_args(argv)
    for flag, value, least in (
        ("--size", args.size, 64),
        ("--num-train", args.num_train, 0),
        ("--num-val", args.num_val, 0),
        ("--workers", args.workers, 1),
    ):
        if value < least:
            sys.exit(f"error: {flag} must be at least {least}, got {value}")
    for split, count in (("train", args.num_train), ("val", args.num_val)):
        if not args.force and is_complete(args.output, split, count, args.size, args.seed):
            print(f"shapes/{split}: up to date in {args.output}")
            continue
        boxes = write_split(args.output, split, count, args.size, args.seed, args.workers)
        print(f"shapes/{split}: {count} images, {boxes} boxes -> {args.output}")


if __name__ == "__main__":
    main()
