"""torch.compile and torch.export see through the paa_core ops (registered with the
dispatcher: fake/Meta kernels, autograd formulas, autocast rules).

The compiled runs use the aot_eager backend: it traces the models with Dynamo and
AOTAutograd (the ops' Meta/fake kernels and backward formulas) as inductor does, without
inductor's C++ code generation, which takes minutes on a small shared CPU. The inductor
speed ratio is measured by tools/benchmarks/compile.py.
"""

import pytest
import torch
from helpers import r50_batch, r50_cfg, tiny_quick_model_and_targets

from paa_core.modeling.detector import build_detection_model
from paa_core.modeling.detector.export import DetectionsAsTensors

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]


def _quick():
    cfg, model, targets = tiny_quick_model_and_targets()
    # Untrained scores sit near the 0.01 prior: a low threshold gives detections to compare.
    model.rpn.box_selector_test.pre_nms_thresh = 0.001
    images = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(1)) * 50
    return model, images, targets


def _r50_dcn():
    torch.manual_seed(0)
    model = build_detection_model(r50_cfg(dcn=True))
    with torch.no_grad():  # zero offsets keep the random body's DCN taps inside the maps
        for name, module in model.backbone.body.named_modules():
            if name.endswith("conv2.offset"):
                module.weight.zero_()
    images, targets = r50_batch()
    return model, images, targets


def _assert_same_detections(expected, actual):
    assert len(expected) == len(actual)
    for e, a in zip(expected, actual):
        assert len(e) == len(a) > 0
        torch.testing.assert_close(a.bbox, e.bbox, rtol=0, atol=1e-4)
        for field in ("scores", "labels"):
            torch.testing.assert_close(a.get_field(field), e.get_field(field), rtol=0, atol=1e-4)


@pytest.mark.parametrize("build", [_quick, _r50_dcn], ids=["quick", "dcnv2-R-50"])
def test_compiled_model_matches_eager(build):
    model, images, targets = build()
    compiled = torch.compile(model, backend="aot_eager")

    model.eval()
    with torch.no_grad():
        _assert_same_detections(model(images), compiled(images))

    model.train()
    grads = []
    for run in (model, compiled):
        model.zero_grad()
        losses = run(images, targets)
        sum(losses.values()).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        if run is model:
            eager_losses = {k: v.detach() for k, v in losses.items()}
    for name, value in losses.items():
        torch.testing.assert_close(value.detach(), eager_losses[name], rtol=0, atol=1e-4)
    assert grads[0].keys() == grads[1].keys()
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-4, atol=1e-4)
    if build is _r50_dcn:  # the DCN weights got their gradient through the traced backward op
        assert float(grads[1]["backbone.body.layer3.0.conv2.conv.weight"].abs().sum()) > 0


def test_export_captures_inference_graph():
    model, images, _ = _quick()
    wrapped = DetectionsAsTensors(model)
    program = torch.export.export(wrapped, (images,), strict=False)
    targets = {str(node.target) for node in program.graph.nodes}
    assert "paa_core.ml_nms.default" in targets
    # The graph is not specialised to the traced input: other pixels give other boxes.
    other = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(2)) * 50
    for x in (images, other):
        expected = wrapped(x)
        actual = program.module()(x)
        assert len(actual) == len(expected) == 6
        for a, e in zip(actual, expected):
            assert a.shape == e.shape and a.dtype == e.dtype
            torch.testing.assert_close(a, e, rtol=0, atol=1e-5)
    assert not torch.equal(wrapped(other)[1], wrapped(images)[1])
