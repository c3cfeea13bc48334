"""demo/paa_demo.py, what the README's picture is drawn with: drawing, category names, and
the predictor's boxes in the input image's coordinates."""

import importlib.util
import json

import numpy as np
import pytest
import torch
from helpers import DEMO, tiny_quick_cfg
from PIL import Image

from paa_core.modeling.detector import build_detection_model
from paa_core.structures.bounding_box import BoxList


def _demo_module():
    spec = importlib.util.spec_from_file_location("paa_demo", DEMO)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_draws_only_detections_above_threshold():
    demo = _demo_module()
    image = np.zeros((60, 80, 3), np.uint8)
    dets = BoxList(torch.tensor([[10.0, 10.0, 40.0, 50.0], [50.0, 5.0, 70.0, 20.0]]), (80, 60))
    dets.add_field("scores", torch.tensor([0.9, 0.3]))
    dets.add_field("labels", torch.tensor([2, 1]))
    out, count = demo.draw_detections(image, dets, ["ellipse", "triangle"], threshold=0.5)
    assert count == 1 and image.sum() == 0  # the input is left alone
    # The kept box's bottom edge (y=50) is drawn in its class colour; the other box is not drawn.
    assert tuple(out[50, 25]) == demo.class_colour(2)
    assert out[20, 52:68].sum() == 0 and out[15:21, 68:72].sum() == 0  # its bottom and right edges


def test_demo_reads_category_names(tmp_path):
    demo = _demo_module()
    coco = {
        "categories": [{"id": 7, "name": "b"}, {"id": 3, "name": "a"}],
        "images": [],
        "annotations": [],
    }
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    (tmp_path / "names.json").write_text(json.dumps(["x", "y"]))
    (tmp_path / "bad.json").write_text(json.dumps({"x": 1}))
    assert demo.load_category_names(str(tmp_path / "coco.json")) == [
        "a",
        "b",
    ]  # sorted ids -> labels 1..K
    assert demo.load_category_names(str(tmp_path / "names.json")) == ["x", "y"]
    with pytest.raises(demo.InputError, match="bad.json"):
        demo.load_category_names(str(tmp_path / "bad.json"))
    with pytest.raises(demo.InputError, match="nowhere"):
        demo.list_images([str(tmp_path / "nowhere")])


def test_demo_predictor_returns_boxes_in_image_coordinates(tmp_path):
    demo = _demo_module()
    cfg = tiny_quick_cfg(
        "INPUT.MIN_SIZE_TEST",
        128,
        "INPUT.MAX_SIZE_TEST",
        160,
        "MODEL.PAA.INFERENCE_TH",
        0.0,
    )
    torch.manual_seed(0)
    model = build_detection_model(cfg)
    torch.save({"model": model.state_dict()}, tmp_path / "w.pth")
    predictor = demo.Predictor(cfg, str(tmp_path / "w.pth"))
    for p, q in zip(predictor.model.state_dict().values(), model.state_dict().values()):
        assert torch.equal(p, q)
    image = Image.fromarray(
        np.random.default_rng(0).integers(0, 255, (150, 200, 3), dtype=np.uint8)
    )
    dets = predictor(image)  # run at 160x120, reported at 200x150
    assert dets.size == (200, 150) and len(dets) > 0
    assert dets.bbox[:, 2].max() <= 199 and dets.bbox[:, 3].max() <= 149
    assert dets.bbox[:, 2].max() > 160  # scaled up from the network's input size
