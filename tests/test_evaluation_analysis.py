"""Per-category AP against pycocotools evaluating one category at a time, and the
false-positive kinds on hand-built cases."""

import contextlib
import io
import json
import logging
import sys

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from paa_core.data.datasets.evaluation.coco.analysis import (
    false_positive_summary,
    per_class_ap,
    per_class_table,
    report_analysis,
)

CATEGORIES = [{"id": 1, "name": "ellipse"}, {"id": 3, "name": "star"}, {"id": 7, "name": "ring"}]


def _coco(images, anns):
    coco = COCO()
    coco.dataset = {
        "images": [{"id": i, "width": 200, "height": 200} for i in images],
        "annotations": [
            dict(a, id=n + 1, area=a["bbox"][2] * a["bbox"][3], iscrowd=a.get("iscrowd", 0))
            for n, a in enumerate(anns)
        ],
        "categories": CATEGORIES,
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _evaluate(gt, dets, cat_ids=None):
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(dets)
        ev = COCOeval(gt, dt, "bbox")
        if cat_ids is not None:
            ev.params.catIds = cat_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def test_per_class_ap_equals_pycocotools_per_category():
    rng = np.random.default_rng(0)
    anns, dets = [], []
    for img in range(1, 13):
        for _ in range(rng.integers(1, 5)):
            x, y, w, h = (float(v) for v in (*rng.uniform(0, 120, 2), *rng.uniform(8, 70, 2)))
            cat = int(rng.choice([1, 3, 7]))
            anns.append({"image_id": img, "category_id": cat, "bbox": [x, y, w, h]})
            for _ in range(rng.integers(0, 3)):  # jittered, sometimes relabelled detections
                jx, jy = rng.normal(0, 0.15 * w), rng.normal(0, 0.15 * h)
                dets.append(
                    {
                        "image_id": img,
                        "category_id": cat if rng.random() < 0.8 else 3,
                        "bbox": [
                            x + jx,
                            y + jy,
                            w * rng.uniform(0.7, 1.3),
                            h * rng.uniform(0.7, 1.3),
                        ],
                        "score": float(rng.uniform(0.05, 1)),
                    }
                )
        dets.append(
            {
                "image_id": img,
                "category_id": 7,
                "bbox": [150.0, 150, 30, 30],
                "score": float(rng.uniform(0, 0.5)),
            }
        )  # background clutter
    gt = _coco(range(1, 13), anns)
    rows = per_class_ap(_evaluate(gt, dets))
    assert [r["category"] for r in rows] == ["ellipse", "star", "ring"]
    for row in rows:
        alone = _evaluate(gt, dets, [row["category_id"]]).stats
        assert (row["AP"], row["AP50"], row["AP75"]) == (alone[0], alone[1], alone[2])
        assert 0 < row["AP"] < row["AP50"] <= 1
    table = per_class_table(rows)
    assert f"| star     | {100 * rows[1]['AP']:6.2f} | {100 * rows[1]['AP50']:6.2f} |" in table


def test_false_positive_kinds_on_hand_built_cases():
    box = [20.0, 20, 40, 40]
    anns = [
        {"image_id": 1, "category_id": 1, "bbox": box},  # ellipse A
        {"image_id": 1, "category_id": 3, "bbox": [120.0, 20, 40, 40]},  # star B
        {"image_id": 1, "category_id": 7, "bbox": [20.0, 120, 40, 40]},  # ring C
        {
            "image_id": 1,
            "category_id": 3,
            "bbox": [120.0, 120, 60, 60],
            "iscrowd": 1,
        },  # crowd of stars
        {"image_id": 2, "category_id": 7, "bbox": [50.0, 50, 40, 40]},
    ]  # ring D, never detected

    def det(cat, bbox, score):
        return {"image_id": 1, "category_id": cat, "bbox": bbox, "score": score}

    dets = [
        det(1, box, 0.9),  # TP on A
        det(1, [21.0, 21, 40, 40], 0.8),  # duplicate of A (IoU .90)
        det(1, [40.0, 20, 40, 40], 0.7),  # poor localisation on A (IoU 1/3)
        det(1, [122.0, 22, 40, 40], 0.6),  # ellipse on star B: wrong class
        det(3, [120.0, 20, 40, 40], 0.95),  # TP on B
        det(7, [118.0, 18, 44, 44], 0.5),  # ring on star B: wrong class
        det(7, [100.0, 80, 10, 10], 0.5),  # nothing there: background
        det(1, [0.0, 180, 15, 15], 0.35),  # background
        det(3, [125.0, 125, 50, 50], 0.9),  # inside the crowd region: ignored
        det(7, [24.0, 124, 36, 36], 0.2),  # would be a TP on C, but below the threshold
        det(1, [150.0, 60, 30, 30], 0.1),  # below the threshold: not counted
    ]
    gt = _coco([1, 2], anns)
    summary = false_positive_summary(_evaluate(gt, dets), score_threshold=0.3)
    cats = summary["categories"]
    assert cats["ellipse"] == {
        "true_positives": 1,
        "missed": 0,
        "false_positives": {
            "duplicate": 1,
            "poor_localisation": 1,
            "wrong_class": 1,
            "background": 1,
        },
    }
    assert cats["star"] == {
        "true_positives": 1,
        "missed": 0,
        "false_positives": {
            "duplicate": 0,
            "poor_localisation": 0,
            "wrong_class": 0,
            "background": 0,
        },
    }
    assert cats["ring"] == {
        "true_positives": 0,
        "missed": 2,
        "false_positives": {
            "duplicate": 0,
            "poor_localisation": 0,
            "wrong_class": 1,
            "background": 1,
        },
    }
    # rows: detected category, columns: GT category (ellipse, star, ring)
    assert summary["confusion"] == {
        "labels": ["ellipse", "star", "ring"],
        "counts": [[0, 1, 0], [0, 0, 0], [0, 1, 0]],
    }
    # At threshold 0.15 the ring on C counts as a true positive and C is no longer missed.
    assert (
        false_positive_summary(_evaluate(gt, dets), 0.15)["categories"]["ring"]["true_positives"]
        == 1
    )
    assert false_positive_summary(_evaluate(gt, dets), 0.15)["categories"]["ring"]["missed"] == 1


def test_report_writes_json_and_pictures(tmp_path):
    pytest.importorskip("matplotlib")
    gt = _coco([1], [{"image_id": 1, "category_id": 1, "bbox": [20.0, 20, 40, 40]}])
    ev = _evaluate(
        gt,
        [
            {"image_id": 1, "category_id": 1, "bbox": [22.0, 20, 40, 40], "score": 0.9},
            {"image_id": 1, "category_id": 3, "bbox": [22.0, 20, 40, 40], "score": 0.8},
        ],
    )
    rows = report_analysis(ev, str(tmp_path))
    assert rows[0]["AP50"] == pytest.approx(1.0) and rows[1]["AP"] == -1
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "false_positives.json",
        "false_positives.png",
        "per_class_ap.json",
        "pr_curves.json",
        "pr_curves.png",
    ]
    curves = json.loads((tmp_path / "pr_curves.json").read_text())
    assert len(curves["recall"]) == 101 and curves["categories"]["star"] is None
    assert curves["categories"]["ellipse"]["iou_0.50"] == pytest.approx([1.0] * 101)
    fps = json.loads((tmp_path / "false_positives.json").read_text())
    assert fps["categories"]["star"]["false_positives"]["wrong_class"] == 1


def test_without_matplotlib_json_is_written_and_the_hint_given(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    gt = _coco([1], [{"image_id": 1, "category_id": 1, "bbox": [20.0, 20, 40, 40]}])
    ev = _evaluate(
        gt, [{"image_id": 1, "category_id": 1, "bbox": [22.0, 20, 40, 40], "score": 0.9}]
    )
    with caplog.at_level(logging.INFO, logger="paa_core.inference"):
        report_analysis(ev, str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "false_positives.json",
        "per_class_ap.json",
        "pr_curves.json",
    ]
    assert "pip install -r requirements-viz.txt" in caplog.text
    from paa_core.utils.metrics_file import append_metrics
    from paa_core.visualization.plotting import PlottingUnavailable
    from paa_core.visualization.training_plot import plot_training

    append_metrics(str(tmp_path), {"iteration": 1, "loss": 1.0})
    with pytest.raises(
        PlottingUnavailable, match="plots need matplotlib, which is not installed: pip install"
    ):
        plot_training(str(tmp_path))
