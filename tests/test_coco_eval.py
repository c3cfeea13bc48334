"""COCO evaluation: bbox.json format, AP against pycocotools run independently, empty results, checks."""

import contextlib
import io
import json

import numpy as np
import pytest
import torch
from pycocotools.cocoeval import COCOeval

from paa_core.data.datasets import COCODataset
from paa_core.data.datasets.evaluation import evaluate
from paa_core.data.datasets.evaluation.coco.coco_eval import check_expected_results
from paa_core.structures.bounding_box import BoxList

CATEGORY_IDS = (3, 7, 9)  # json ids; contiguous 1, 2, 3


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    g = np.random.RandomState(0)
    images, anns = [], []
    for image_id in (11, 5, 42, 8):
        w, h = int(g.randint(300, 640)), int(g.randint(300, 640))
        images.append({"id": image_id, "width": w, "height": h, "file_name": f"{image_id}.jpg"})
        for _ in range(g.randint(2, 6)):
            bw, bh = float(g.uniform(10, 250)), float(g.uniform(10, 250))
            x, y = float(g.uniform(0, w - bw)), float(g.uniform(0, h - bh))
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": image_id,
                    "category_id": int(g.choice(CATEGORY_IDS)),
                    "bbox": [x, y, bw, bh],
                    "area": bw * bh,
                    "iscrowd": 0,
                }
            )
    ann_file = root / "ann.json"
    ann_file.write_text(
        json.dumps(
            {
                "images": images,
                "annotations": anns,
                "categories": [{"id": c, "name": f"c{c}"} for c in CATEGORY_IDS],
            }
        )
    )
    (root / "images").mkdir()
    return COCODataset(str(ann_file), str(root / "images"), remove_images_without_annotations=False)


def predictions_from(dataset, jitter=0.0, drop=0.0, seed=0):
    """One BoxList per image in a frame at half the original size (as the network would see it),
    plus the same detections as COCO records in the original frame (the independent oracle)."""
    g = np.random.RandomState(seed)
    preds, records = [], []
    for idx in range(len(dataset)):
        image_id = dataset.id_to_img_map[idx]
        info = dataset.get_img_info(idx)
        anns = [a for a in dataset.coco.imgToAnns[image_id] if g.rand() >= drop]
        xywh = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
        xywh += g.normal(0, jitter, xywh.shape) * xywh[:, 2:].repeat(2, 1)
        xywh[:, 2:] = np.maximum(xywh[:, 2:], 2)
        scores = g.uniform(0.1, 1.0, len(anns))
        labels = [dataset.json_category_id_to_contiguous_id[a["category_id"]] for a in anns]
        # Extra false positives with random classes.
        n_fp = int(jitter > 0) * 2
        fp = np.column_stack([g.uniform(0, 100, (n_fp, 2)), g.uniform(5, 60, (n_fp, 2))])
        xywh = np.concatenate([xywh, fp])
        scores = np.concatenate([scores, g.uniform(0.1, 1.0, n_fp)])
        labels = labels + list(g.randint(1, 4, n_fp))
        # xywh -> xyxy with the +1 convention, then to the half-size frame.
        xyxy = np.column_stack([xywh[:, :2], xywh[:, :2] + xywh[:, 2:] - 1])
        half = (info["width"] / 2, info["height"] / 2)
        bl = BoxList(torch.tensor(xyxy * 0.5, dtype=torch.float32), half)
        bl.add_field("scores", torch.tensor(scores, dtype=torch.float32))
        bl.add_field("labels", torch.tensor(labels, dtype=torch.int64))
        preds.append(bl)
        records += [
            {
                "image_id": image_id,
                "category_id": dataset.contiguous_category_id_to_json_id[int(c)],
                "bbox": b.tolist(),
                "score": float(s),
            }
            for b, s, c in zip(xywh, scores, labels)
        ]
    return preds, records


def pycocotools_stats(coco_gt, records):
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(coco_gt, coco_gt.loadRes(records), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats[:6]


def test_perfect_detections_score_one(dataset, tmp_path):
    preds, _ = predictions_from(dataset)
    results = evaluate(dataset, preds, str(tmp_path))
    assert results["bbox"]["AP"] == pytest.approx(1.0)
    assert results["bbox"]["AP50"] == pytest.approx(1.0) and results["bbox"][
        "AP75"
    ] == pytest.approx(1.0)


def test_perturbed_detections_match_pycocotools(dataset, tmp_path, capsys):
    preds, records = predictions_from(dataset, jitter=0.08, drop=0.2, seed=1)
    results = evaluate(dataset, preds, str(tmp_path))["bbox"]
    want = pycocotools_stats(dataset.coco, records)
    assert 0.05 < results["AP"] < 0.95
    assert [results[k] for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")] == pytest.approx(
        list(want), abs=1e-4
    )

    written = json.loads((tmp_path / "bbox.json").read_text())
    assert len(written) == len(records)
    for got, rec in zip(written, records):
        assert got["image_id"] == rec["image_id"] and got["category_id"] == rec["category_id"]
        assert got["bbox"] == pytest.approx(rec["bbox"], abs=1e-3)  # w = x2 - x1 + 1 again
        assert got["score"] == pytest.approx(rec["score"], abs=1e-6)


def test_no_detections_give_zero_ap(dataset, tmp_path):
    preds = []
    for idx in range(len(dataset)):
        info = dataset.get_img_info(idx)
        bl = BoxList(torch.zeros(0, 4), (info["width"], info["height"]))
        bl.add_field("scores", torch.zeros(0))
        bl.add_field("labels", torch.zeros(0, dtype=torch.int64))
        preds.append(bl)
    results = evaluate(dataset, preds, str(tmp_path))["bbox"]
    assert results["AP"] == 0.0 and results["AP50"] == 0.0
    assert json.loads((tmp_path / "bbox.json").read_text()) == []


def test_expected_results_pass_and_fail(caplog):
    results = {"bbox": {"AP": 0.40, "AP50": 0.6}}
    caplog.set_level("INFO", logger="paa_core.inference")
    assert check_expected_results(results, [["bbox", "AP", 0.401, 0.001]], 4)
    assert "PASS: bbox > AP" in caplog.text
    assert not check_expected_results(
        results, [["bbox", "AP", 0.401, 0.001], ["bbox", "AP50", 0.7, 0.01]], 4
    )
    assert "FAIL: bbox > AP50: expected 0.7" in caplog.text
