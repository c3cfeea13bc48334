"""The bundled shapes dataset: deterministic, valid COCO, and a real detection problem."""

import hashlib
import json
import os
import sys

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import make_shapes_dataset as shapes  # noqa: E402  (a script, importable by name for the worker pool)


def _generate(root, seed=3, workers=1, size=128, num_train=12):
    shapes.main(
        [
            "--output",
            str(root),
            "--num-train",
            str(num_train),
            "--num-val",
            "4",
            "--size",
            str(size),
            "--seed",
            str(seed),
            "--workers",
            str(workers),
        ]
    )


def _digest(root):
    """One hash over every file of a generated dataset."""
    h = hashlib.sha256()
    for dirpath, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            h.update(name.encode())
            with open(os.path.join(dirpath, name), "rb") as f:
                h.update(f.read())
    return h.hexdigest()


def test_masks_match_the_geometry():
    rng = np.random.default_rng(0)
    # Corners on pixel centres 30..69 x 20..39 fill those pixels, borders included (the
    # "+1" convention of the boxes): 40 x 20 pixels.
    outer, hole = shapes.shape_outlines("rectangle", rng)
    rect = shapes.polygon_mask(shapes.place(outer, 19.5, 9.5, 0.0, 49.5, 29.5), None, 64, 100)
    ys, xs = np.nonzero(rect)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (30, 69, 20, 39)
    assert rect.sum() == 40 * 20
    # A ring: hole in the middle, area close to pi*a*b*(1 - r^2).
    outer, hole = shapes.shape_outlines("ring", np.random.default_rng(1))
    r = np.hypot(*hole[0])
    ring = shapes.polygon_mask(
        shapes.place(outer, 40, 25, 0.3, 60, 50), shapes.place(hole, 40, 25, 0.3, 60, 50), 100, 120
    )
    assert ring[50, 60] == 0 and ring.sum() == pytest.approx(
        np.pi * 40 * 25 * (1 - r * r), rel=0.03
    )
    # A 5-pointed star covers much less of its box than an ellipse.
    star = shapes.polygon_mask(
        shapes.place(shapes.shape_outlines("star", rng)[0], 30, 30, 0.0, 40, 40), None, 80, 80
    )
    disc = shapes.polygon_mask(
        shapes.place(shapes.shape_outlines("ellipse", rng)[0], 30, 30, 0.0, 40, 40), None, 80, 80
    )
    assert disc.sum() == pytest.approx(np.pi * 30.5**2, rel=0.01) and star.sum() < 0.6 * disc.sum()
    with pytest.raises(ValueError, match="hexagon"):
        shapes.shape_outlines("hexagon", rng)


def test_generation_is_deterministic_and_worker_independent(tmp_path):
    _generate(tmp_path / "a", workers=1)
    _generate(tmp_path / "b", workers=2)
    _generate(tmp_path / "c", seed=4)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_second_run_reuses_a_complete_split(tmp_path, capsys):
    _generate(tmp_path)
    ann = tmp_path / "annotations" / "instances_train.json"
    before = ann.stat().st_mtime_ns
    _generate(tmp_path)
    assert ann.stat().st_mtime_ns == before and "up to date" in capsys.readouterr().out
    os.remove(tmp_path / "train" / "000005.jpg")  # incomplete: written again
    _generate(tmp_path)
    assert (tmp_path / "train" / "000005.jpg").is_file() and ann.stat().st_mtime_ns != before
    # A split written by an older generator is drawn again.
    coco = json.loads(ann.read_text())
    coco["info"]["version"] -= 1
    ann.write_text(json.dumps(coco))
    _generate(tmp_path)
    assert json.loads(ann.read_text())["info"]["version"] == coco["info"]["version"] + 1


def test_valid_coco_with_varied_objects(tmp_path):
    _generate(tmp_path, size=256, num_train=40)
    coco = COCO(str(tmp_path / "annotations" / "instances_train.json"))
    assert len(coco.getCatIds()) >= 5 and len(coco.getImgIds()) == 40
    anns = coco.loadAnns(coco.getAnnIds())
    boxes = np.array([a["bbox"] for a in anns], dtype=float)
    assert len(anns) >= 40 * 3  # several objects per image
    assert np.all(boxes[:, :2] >= 0) and np.all(boxes[:, 0] + boxes[:, 2] <= 256)
    assert np.all(boxes[:, 1] + boxes[:, 3] <= 256) and np.all(boxes[:, 2:] >= 2)
    assert [a["area"] for a in anns] == list(boxes[:, 2] * boxes[:, 3])
    sides = np.sqrt(boxes[:, 2] * boxes[:, 3])
    assert sides.min() < 16 and sides.max() > 120
    aspect = boxes[:, 2] / boxes[:, 3]
    assert aspect.min() < 0.6 and aspect.max() > 1.6
    # Objects overlap: some pair in one image has box IoU above 0.1.
    from pycocotools import mask as mask_utils

    overlaps = [
        mask_utils.iou(b, b, [0] * len(b)) - np.eye(len(b))
        for b in (
            [a["bbox"] for a in coco.loadAnns(coco.getAnnIds(imgIds=i))] for i in coco.getImgIds()
        )
    ]
    assert max(o.max() for o in overlaps) > 0.1
    # Every category shows up small and large, and colour does not give it away: the
    # box-centre colours of one category spread as widely as those of all objects.
    labels = np.array([a["category_id"] for a in anns])
    colours = []
    for a in anns:
        img = cv2.imread(str(tmp_path / "train" / coco.imgs[a["image_id"]]["file_name"]))
        x, y, w, h = a["bbox"]
        colours.append(img[int(y + h / 2), int(x + w / 2)].astype(float))
    colours = np.array(colours)
    for c in coco.getCatIds():
        assert sides[labels == c].min() < 40 and sides[labels == c].max() > 60
        assert colours[labels == c].std(0).mean() > 0.5 * colours.std(0).mean()


def test_default_root_follows_paa_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("PAA_DATA_DIR", str(tmp_path))
    assert shapes.default_root() == os.path.join(str(tmp_path), "shapes")
    monkeypatch.delenv("PAA_DATA_DIR")
    assert shapes.default_root() == os.path.join(ROOT, "datasets", "shapes")


def test_categories_are_written(tmp_path):
    _generate(tmp_path)
    with open(tmp_path / "annotations" / "instances_val.json") as f:
        data = json.load(f)
    assert [c["name"] for c in data["categories"]] == list(shapes.CATEGORIES)
    assert {a["category_id"] for a in data["annotations"]} <= set(
        range(1, len(shapes.CATEGORIES) + 1)
    )
