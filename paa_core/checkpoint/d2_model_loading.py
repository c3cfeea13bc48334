"""Read detectron2 Faster R-CNN R-50-FPN weights (its model zoo's `model_final_*.pkl`).

detectron2 names the same modules differently (`backbone.bottom_up.res2.0.conv1.norm.*`,
`backbone.fpn_lateral2`, `proposal_generator.rpn_head.objectness_logits`,
`roi_heads.box_head.fc1`, ...) and puts the background class last, with no box deltas
for it; here it is class 0 and has (unused) deltas. The renamed weights fill the
baseline config (configs/faster_rcnn/faster_rcnn_R_50_FPN_1x.yaml); the authors' fork
(PAA in the RPN) adds the IoU branch `proposal_generator.rpn_head.iou` and saves its
anchor generator's cell anchors, and fills faster_rcnn_R_50_FPN_paa_1x.yaml.

detectron2's FrozenBatchNorm2d computes weight * rsqrt(running_var + eps), ours
weight * rsqrt(running_var): eps is added to every running_var read, so that the
features are the ones detectron2 computes.
"""

import re

import numpy as np
import torch

from .model_serialization import strip_prefix_if_present

# detectron2's FrozenBatchNorm2d eps.
DETECTRON2_BN_EPS = 1e-5


def _stage(g):
    """detectron2's res2..res5 are layer1..layer4."""
    return f"backbone.body.layer{int(g[0]) - 1}.{g[1]}"


# (detectron2 key prefix, paa_core prefix from the prefix's groups), first match wins.
_RULES = [
    (r"backbone\.bottom_up\.stem\.conv1\.norm\.", lambda g: "backbone.body.stem.bn1."),
    (r"backbone\.bottom_up\.stem\.conv1\.", lambda g: "backbone.body.stem.conv1."),
    (
        r"backbone\.bottom_up\.res(\d)\.(\d+)\.shortcut\.norm\.",
        lambda g: f"{_stage(g)}.downsample.1.",
    ),
    (r"backbone\.bottom_up\.res(\d)\.(\d+)\.shortcut\.", lambda g: f"{_stage(g)}.downsample.0."),
    (r"backbone\.bottom_up\.res(\d)\.(\d+)\.conv(\d)\.norm\.", lambda g: f"{_stage(g)}.bn{g[2]}."),
    (r"backbone\.bottom_up\.res(\d)\.(\d+)\.conv(\d)\.", lambda g: f"{_stage(g)}.conv{g[2]}."),
    (r"backbone\.fpn_lateral(\d)\.", lambda g: f"backbone.fpn.fpn_inner{int(g[0]) - 1}."),
    (r"backbone\.fpn_output(\d)\.", lambda g: f"backbone.fpn.fpn_layer{int(g[0]) - 1}."),
    (r"proposal_generator\.rpn_head\.conv\.", lambda g: "rpn.head.conv."),
    (r"proposal_generator\.rpn_head\.objectness_logits\.", lambda g: "rpn.head.cls_logits."),
    (r"proposal_generator\.rpn_head\.anchor_deltas\.", lambda g: "rpn.head.bbox_pred."),
    (r"proposal_generator\.rpn_head\.iou\.", lambda g: "rpn.head.iou_pred."),
    (r"proposal_generator\.anchor_generator\.", lambda g: "rpn.anchor_generator."),
    (r"roi_heads\.box_head\.fc1\.", lambda g: "roi_heads.box.feature_extractor.fc6."),
    (r"roi_heads\.box_head\.fc2\.", lambda g: "roi_heads.box.feature_extractor.fc7."),
    (r"roi_heads\.box_predictor\.", lambda g: "roi_heads.box.predictor."),
]


def rename_detectron2_key(key):
    """paa_core's name for a detectron2 state-dict key (None for its pixel_mean/std buffers)."""
    if key in ("pixel_mean", "pixel_std"):
        return None
    for pattern, prefix in _RULES:
        m = re.match(pattern, key)
        if m:
            return prefix(m.groups()) + key[m.end() :]
    return key  # left as is: it will be reported as a key that fits no model key


def is_detectron2_state_dict(state_dict):
    """Whether the keys (`module.`-prefixed or not) are detectron2's names."""
    keys = strip_prefix_if_present(dict.fromkeys(state_dict), "module.")
    return any(k.startswith(("backbone.bottom_up.", "proposal_generator.")) for k in keys)


def convert_detectron2_weights(state_dict):
    """{detectron2 name (`module.`-prefixed or not): array or tensor} -> {paa_core name:
    tensor}; eps goes into every running_var, and the box predictor's background moves
    from the last class to class 0 (zero box deltas)."""
    out = {}
    for key, value in strip_prefix_if_present(state_dict, "module.").items():
        name = rename_detectron2_key(key)
        if name is None:
            continue
        value = torch.as_tensor(
            np.ascontiguousarray(value) if isinstance(value, np.ndarray) else value
        )
        out[name] = value + DETECTRON2_BN_EPS if name.endswith(".running_var") else value
    for kind in ("weight", "bias"):
        cls_key = f"roi_heads.box.predictor.cls_score.{kind}"
        box_key = f"roi_heads.box.predictor.bbox_pred.{kind}"
        if cls_key in out:
            out[cls_key] = torch.cat([out[cls_key][-1:], out[cls_key][:-1]])
        if box_key in out:
            out[box_key] = torch.cat(
                [out[box_key].new_zeros((4,) + out[box_key].shape[1:]), out[box_key]]
            )
    return out
