"""Every seed-table config builds a model whose state dict is the reference's, key for
key and shape for shape, so the released checkpoints load strictly."""

import json
import math
import os

import pytest
import torch
from helpers import MANIFESTS, REFERENCE_TOTALS, manifest_numbers

from paa_core.config import get_cfg
from paa_core.modeling.detector import build_detection_model
from paa_core.utils.errors import InputError

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _build(name):
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(ROOT, "configs", "paa", name + ".yaml"))
    cfg.MODEL.DEVICE = "cpu"
    return cfg, build_detection_model(cfg)


@pytest.mark.parametrize("name", sorted(REFERENCE_TOTALS))
def test_state_dict_matches_manifest_and_loads_released_layout(name):
    with open(os.path.join(MANIFESTS, name + ".json")) as f:
        manifest = json.load(f)
    keys, numbers = REFERENCE_TOTALS[name]
    assert len(manifest) == keys and manifest_numbers(manifest) == numbers

    _, model = _build(name)
    state = model.state_dict()
    ours = {k: list(v.shape) for k, v in state.items()}
    assert sorted(set(ours) - set(manifest)) == []
    assert sorted(set(manifest) - set(ours)) == []
    assert {k: s for k, s in ours.items() if s != manifest[k]} == {}
    assert len(ours) == keys and manifest_numbers(ours) == numbers

    # A released checkpoint as saved from DistributedDataParallel: "module." prefixes.
    released = {
        "model": {
            "module." + k: (
                torch.full_like(v, 0.5 + i % 7) if "cell_anchors" not in k else v.clone()
            )
            for i, (k, v) in enumerate(state.items())
        }
    }
    stripped = {k[len("module.") :]: v for k, v in released["model"].items()}
    result = model.load_state_dict(stripped, strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    for key in (
        "backbone.body.stem.conv1.weight",
        "backbone.body.layer4.2.bn3.running_var",
        "rpn.head.cls_tower.9.bias" if "dcnv2" not in name else "rpn.head.cls_tower.9.conv.bias",
        "rpn.head.scales.4.scale",
    ):
        assert torch.equal(model.state_dict()[key], stripped[key])
    del released, stripped, model


def test_frozen_stages_and_widths_r50():
    cfg, model = _build("paa_R_50_FPN_1x")
    body = model.backbone.body
    assert not any(p.requires_grad for p in body.stem.parameters())
    assert not any(p.requires_grad for p in body.layer1.parameters())
    for stage in (body.layer2, body.layer3, body.layer4):
        assert all(p.requires_grad for p in stage.parameters())
    assert all(p.requires_grad for p in model.rpn.parameters())
    # MSRA: the stride sits in the 1x1 of each stage's first block.
    assert body.layer2[0].conv1.stride == (2, 2) and body.layer2[0].conv2.stride == (1, 1)
    assert body.layer1[0].conv1.stride == (1, 1)
    assert model.backbone.out_channels == 256


def test_resnext_dcn_block_layout():
    _, model = _build("paa_dcnv2_X_101_32x8d_FPN_2x")
    body = model.backbone.body
    # FAIR ResNeXt: stride in the 3x3; 32 groups of 8 * 2**(stage-1) channels.
    assert body.layer2[0].conv1.stride == (1, 1) and body.layer2[0].conv2.stride == (2, 2)
    assert body.layer2[0].conv2.groups == 32
    assert body.layer3[0].conv2.conv.weight.shape == (1024, 32, 3, 3)
    assert body.layer3[0].conv2.offset.out_channels == 27
    head = model.rpn.head
    assert head.cls_tower[9].conv.bias is not None
    # Head init as the reference: every plain conv N(0, 0.01), zero bias; the prior bias.
    assert float(head.cls_tower[0].weight.detach().std()) == pytest.approx(0.01, rel=0.05)
    assert float(head.cls_tower[9].offset.weight.detach().std()) == pytest.approx(0.01, rel=0.05)
    assert float(head.bbox_tower[9].offset.bias.detach().abs().max()) == 0.0
    assert torch.allclose(head.cls_logits.bias, torch.full((80,), -math.log(99.0)))
    assert float(head.bbox_pred.bias.detach().abs().max()) == 0.0


def test_unknown_backbone_lists_known_names():
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.CONV_BODY = "R-18-FPN"
    with pytest.raises(InputError, match="MODEL.BACKBONE.CONV_BODY .R-18-FPN.*R-50-FPN-RETINANET"):
        build_detection_model(cfg)


@pytest.mark.parametrize("key", ["STEM_FUNC", "TRANS_FUNC"])
def test_other_stem_or_block_is_refused_naming_the_key(key):
    cfg = get_cfg()
    cfg.MODEL.RESNETS[key] = "BottleneckWithGN"
    with pytest.raises(
        InputError, match=f"^MODEL.RESNETS.{key} 'BottleneckWithGN' is not supported"
    ):
        build_detection_model(cfg)


def test_unknown_meta_architecture_is_refused_naming_the_key():
    cfg = get_cfg()
    cfg.MODEL.META_ARCHITECTURE = "RetinaNet"
    with pytest.raises(
        InputError,
        match="^MODEL.META_ARCHITECTURE 'RetinaNet' is unknown \\(paa_core has GeneralizedRCNN\\)$",
    ):
        build_detection_model(cfg)
