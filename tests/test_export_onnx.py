"""tools/export_onnx.py: the ONNX graph run by onnxruntime gives PyTorch's detections on
rendered shapes images (same boxes within 1e-3 px, scores within 1e-4, same labels)."""

import os
import sys

import numpy as np
import onnxruntime as ort
import pytest
import torch
from helpers import CONFIGS, REPO, tiny_quick_model_and_targets
from PIL import Image

from paa_core.data.transforms.build import build_transforms
from paa_core.engine.cli import InputError

sys.path.insert(0, os.path.join(REPO, "tools"))
import export_onnx  # noqa: E402
import make_shapes_dataset as shapes  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = [
    "MODEL.RESNETS.STEM_OUT_CHANNELS",
    "8",
    "MODEL.RESNETS.RES2_OUT_CHANNELS",
    "8",
    "MODEL.RESNETS.BACKBONE_OUT_CHANNELS",
    "32",
    "MODEL.PAA.INFERENCE_TH",
    "0.001",
]


def _shapes_images(cfg, count=2):
    """Rendered shapes images (320 px), through the config's test transforms (to 288 px)."""
    rng = np.random.default_rng(5)
    transform = build_transforms(cfg, is_train=False)
    images = []
    for _ in range(count):
        bgr = shapes.render_image(rng, 320)[0]
        image, _ = transform(Image.fromarray(np.ascontiguousarray(bgr[:, :, ::-1])), None)
        images.append(image[None])
    return images


@pytest.mark.slow
def test_onnx_detections_match_pytorch(tmp_path):
    cfg, model, _ = tiny_quick_model_and_targets()
    weight = tmp_path / "tiny.pth"
    torch.save({"model": model.state_dict()}, weight)
    output = tmp_path / "paa.onnx"
    export_onnx.main(
        [
            "--config-file",
            os.path.join(CONFIGS, "paa_quick_shapes.yaml"),
            "--output",
            str(output),
            "MODEL.WEIGHT",
            str(weight),
            *TINY,
        ]
    )

    model.rpn.box_selector_test.pre_nms_thresh = 0.001
    model.eval()
    session = ort.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    for image in _shapes_images(cfg):
        assert image.shape == (1, 3, 288, 288)  # the quick config's test size
        boxes, scores, labels = session.run(None, {"images": image.numpy()})
        with torch.no_grad():
            expected = model(image)[0]
        assert len(expected) > 10 and boxes.shape == (len(expected), 4)
        np.testing.assert_array_equal(labels, expected.get_field("labels").numpy())
        np.testing.assert_allclose(boxes, expected.bbox.numpy(), rtol=0, atol=1e-3)
        np.testing.assert_allclose(scores, expected.get_field("scores").numpy(), rtol=0, atol=1e-4)


def test_dcn_config_is_refused_in_one_line():
    with pytest.raises(InputError, match="deformable convolution") as info:
        export_onnx.main(["--config-file", os.path.join(CONFIGS, "paa_dcnv2_R_101_FPN_2x.yaml")])
    assert "\n" not in str(info.value)
