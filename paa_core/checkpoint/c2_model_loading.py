"""Read the Caffe2 (Detectron) ImageNet backbones (`R-50.pkl`, `X-101-32x8d.pkl`, ...).

Their blobs are named like `res2_0_branch2a_w` / `res2_0_branch2a_bn_s`; they are renamed to
the body's state-dict names (`layer1.0.conv1.weight` / `layer1.0.bn1.weight`). The affine
batch norm of these files is already folded into scale (`_bn_s`) and shift (`_bn_b`), so the
FrozenBatchNorm2d statistics are set neutral (mean 0, var 1).
"""

import pickle
import re

import numpy as np
import torch

from .d2_model_loading import convert_detectron2_weights, is_detectron2_state_dict

# res<stage>_<block>_branch<...>: stage 2..5 is layer 1..4.
_BLOCK = re.compile(r"^res(\d+)_(\d+)_(branch1|branch2a|branch2b|branch2c)_(w|b|bn_s|bn_b)$")
_BRANCH = {
    "branch1": ("downsample.0", "downsample.1"),
    "branch2a": ("conv1", "bn1"),
    "branch2b": ("conv2", "bn2"),
    "branch2c": ("conv3", "bn3"),
}
_STEM = {
    "conv1_w": "stem.conv1.weight",
    "conv1_b": "stem.conv1.bias",
    "res_conv1_bn_s": "stem.bn1.weight",
    "res_conv1_bn_b": "stem.bn1.bias",
}
_PARAM = {"w": "weight", "b": "bias", "bn_s": "weight", "bn_b": "bias"}
# Blobs that are not backbone weights: solver state and the ImageNet classifier.
_SKIP = re.compile(r"(_momentum$|^fc1000_|^pred_)")


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles only dicts of numpy arrays: a weight file cannot run code when loaded."""

    _ALLOWED = {
        ("collections", "OrderedDict"),
        ("_codecs", "encode"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
    }

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a weight pickle")
        return super().find_class(module, name)


def rename_c2_key(key):
    """Our name for a Caffe2 blob name, or None when the blob is not a backbone weight."""
    if _SKIP.search(key):
        return None
    if key in _STEM:
        return _STEM[key]
    m = _BLOCK.match(key)
    if m is None:
        return key  # left as is: it will be reported as a key that fits no model key
    stage, block, branch, param = m.groups()
    conv, bn = _BRANCH[branch]
    module = bn if param.startswith("bn_") else conv
    return f"layer{int(stage) - 1}.{block}.{module}.{_PARAM[param]}"


def convert_c2_weights(blobs):
    """{c2 name: array} -> {our name: tensor}, with neutral running stats for each BN."""
    state = {}
    for key, value in sorted(blobs.items()):
        name = rename_c2_key(key)
        if name is None:
            continue
        state[name] = torch.as_tensor(np.ascontiguousarray(value))
    for name in [n for n in state if n.endswith(".weight") and (".bn" in n or "downsample.1" in n)]:
        prefix = name[: -len("weight")]
        state[prefix + "running_mean"] = torch.zeros_like(state[name])
        state[prefix + "running_var"] = torch.ones_like(state[name])
    return state


def load_c2_format(path):
    """Load a Detectron `.pkl` (with or without the "blobs" wrapper), or a detectron2
    model-zoo `.pkl` (its weights under "model"), as {"model": state dict}."""
    with open(path, "rb") as f:
        data = _ArrayUnpickler(f, encoding="latin1").load()
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a dict of weight arrays, found {type(data).__name__}")
    if isinstance(data.get("model"), dict) and is_detectron2_state_dict(data["model"]):
        return {"model": convert_detectron2_weights(data["model"])}
    blobs = data.get("blobs", data)
    return {"model": convert_c2_weights(blobs)}
