"""What several test modules share: paths, the tiny datasets and configs the tools run on,
small models and batches, the toy training run. Oracles live in oracles.py, shared
fixtures in conftest.py."""

import json
import math
import os
import subprocess

import cv2
import numpy as np
import torch
from torch import nn

from paa_core.checkpoint.checkpoint import Checkpointer
from paa_core.config import get_cfg
from paa_core.modeling.anchor_generator import make_anchor_generator_paa
from paa_core.modeling.detector import build_detection_model
from paa_core.solver import WarmupMultiStepLR
from paa_core.structures.bounding_box import BoxList
from paa_core.structures.image_list import to_image_list

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_NET = os.path.join(REPO, "tools", "train_net.py")
TEST_NET = os.path.join(REPO, "tools", "test_net.py")
DEMO = os.path.join(REPO, "demo", "paa_demo.py")
CONFIGS = os.path.join(REPO, "configs", "paa")
FIXTURES = os.path.join(REPO, "tests", "fixtures")
# The tools run in subprocesses with this checkout's paa_core, one thread each.
TOOL_ENV = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")


# --------------------------------------------------------------------------- tiny datasets


def write_split(root, split, n, seed):
    """n 64x64 images with 1-2 filled rectangles of two categories, as COCO json."""
    g = np.random.RandomState(seed)
    os.makedirs(os.path.join(root, split))
    images, anns = [], []
    for i in range(n):
        img = np.full((64, 64, 3), 40, np.uint8)
        for _ in range(g.randint(1, 3)):
            w, h = g.randint(12, 30, 2)
            x, y = g.randint(0, 64 - w), g.randint(0, 64 - h)
            cat = int(g.randint(1, 3))
            cv2.rectangle(
                img,
                (int(x), int(y)),
                (int(x + w - 1), int(y + h - 1)),
                (0, 0, 255) if cat == 1 else (255, 0, 0),
                -1,
            )
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i + 1,
                    "category_id": cat,
                    "bbox": [float(x), float(y), float(w), float(h)],
                    "area": float(w * h),
                    "iscrowd": 0,
                }
            )
        cv2.imwrite(os.path.join(root, split, f"{i:03d}.png"), img)
        images.append({"id": i + 1, "file_name": f"{i:03d}.png", "width": 64, "height": 64})
    ann_file = os.path.join(root, f"{split}.json")
    with open(ann_file, "w") as f:
        json.dump(
            {
                "images": images,
                "annotations": anns,
                "categories": [{"id": 1, "name": "red"}, {"id": 2, "name": "blue"}],
            },
            f,
        )
    return f"tiny_{split}:{os.path.join(root, split)}:{ann_file}"


def write_tiny_config(path, train, test, fixture="tiny_paa.yaml"):
    """`tests/fixtures/<fixture>` with DATASETS.TRAIN `train` and DATASETS.TEST `test`,
    written to `path`; returns `path`."""
    with open(path, "w") as f:
        f.write(fixture_text(fixture) + f'DATASETS:\n  TRAIN: ("{train}",)\n  TEST: ("{test}",)\n')
    return path


def fixture_text(name):
    """The text of `tests/fixtures/<name>`."""
    with open(os.path.join(FIXTURES, name)) as f:
        return f.read()


# A tiny proposal-only Faster R-CNN with PAA in its RPN, without DATASETS.
RPN_TINY = fixture_text("tiny_rpn.yaml")


def tiny_dataset(root):
    """8 train and 4 val images in `root` with the tiny PAA config on them:
    {"root", "config", "train", "val"}."""
    train = write_split(root, "train", 8, 0)
    val = write_split(root, "val", 4, 1)
    config = write_tiny_config(os.path.join(root, "tiny.yaml"), train, val)
    return {"root": root, "config": config, "train": train, "val": val}


def run_tool(args, cwd, **kwargs):
    """`args` run to completion in a subprocess (TOOL_ENV, 300 s at most), output captured."""
    return subprocess.run(
        args, cwd=cwd, env=TOOL_ENV, capture_output=True, text=True, timeout=300, **kwargs
    )


# --------------------------------------------------------------------------- models, batches
def quick_cfg(*opts):
    """The quick-start config with KEY VALUE overrides."""
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(CONFIGS, "paa_quick_shapes.yaml"))
    cfg.merge_from_list(list(opts))
    return cfg


def tiny_quick_cfg(*opts):
    """The quick-start config at 8/8/32 channels (tests/fixtures/quick_tiny.yaml), then `opts`."""
    cfg = quick_cfg()
    cfg.merge_from_file(os.path.join(FIXTURES, "quick_tiny.yaml"))
    cfg.merge_from_list(list(opts))
    return cfg


def tiny_quick_model_and_targets():
    """(cfg, model, targets): the tiny quick model (seeded) and targets for two 128x128 images."""
    torch.manual_seed(0)
    cfg = tiny_quick_cfg()
    model = build_detection_model(cfg)
    targets = []
    for boxes, labels in (
        ([[10, 12, 60, 50], [40, 40, 120, 110]], [1, 6]),
        ([[5, 5, 20, 30]], [3]),
    ):
        t = BoxList(torch.tensor(boxes, dtype=torch.float32), (128, 128), mode="xyxy")
        t.add_field("labels", torch.tensor(labels))
        targets.append(t)
    return cfg, model, targets


R50_NUM_CLASSES = 4  # 3 foreground classes + background


def r50_cfg(dcn=False, device="cpu", **resnets):
    """The paper's R-50-FPN config with 4 classes (optionally DCN), scoring low enough that an
    untrained model returns boxes."""
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(CONFIGS, "paa_R_50_FPN_1x.yaml"))
    cfg.MODEL.DEVICE = str(device)
    cfg.MODEL.PAA.NUM_CLASSES = R50_NUM_CLASSES
    # Untrained scores sit near the 0.01 prior: a low threshold lets eval return boxes.
    cfg.MODEL.PAA.INFERENCE_TH = 0.001
    if dcn:
        cfg.MODEL.RESNETS.STAGE_WITH_DCN = (False, True, True, True)
        cfg.MODEL.RESNETS.WITH_MODULATED_DCN = True
        cfg.MODEL.PAA.USE_DCN_IN_TOWER = True
    for key, value in resnets.items():
        cfg.MODEL.RESNETS[key] = value
    return cfg


def r50_batch(device="cpu"):
    """Two images of different sizes with three GTs of three classes (seeded)."""
    gen = torch.Generator().manual_seed(0)
    images = [
        torch.rand(3, 96, 128, generator=gen) * 255 - 110,
        torch.rand(3, 80, 112, generator=gen) * 255 - 110,
    ]
    targets = [
        BoxList(torch.tensor([[10.0, 12.0, 60.0, 70.0], [70.0, 20.0, 120.0, 90.0]]), (128, 96)),
        BoxList(torch.tensor([[5.0, 5.0, 100.0, 75.0]]), (112, 80)),
    ]
    targets[0].add_field("labels", torch.tensor([1, 3]))
    targets[1].add_field("labels", torch.tensor([2]))
    return [im.to(device) for im in images], [t.to(device) for t in targets]


def real_anchors(image_sizes):
    """Anchors of the default config for images of `image_sizes` [(h, w)] padded to 32,
    and the (h, w) of each level P3..P7 -> (per-level anchors [T_l, 4], shapes)."""
    images = to_image_list([torch.zeros(3, h, w) for h, w in image_sizes], 32)
    _, _, ph, pw = images.tensors.shape
    feats = [
        torch.zeros(len(image_sizes), 1, math.ceil(ph / s), math.ceil(pw / s))
        for s in (8, 16, 32, 64, 128)
    ]
    return make_anchor_generator_paa(get_cfg())(feats), [tuple(f.shape[-2:]) for f in feats]


# --------------------------------------------------------------------------- state dicts
MANIFESTS = "/work/shared/reference/state_dicts"
# (keys, numbers excluding the anchor buffers), from shared/reference/README.md.
REFERENCE_TOTALS = {
    "paa_R_50_FPN_1x": (329, 32_350_490),
    "paa_R_50_FPN_1.5x": (329, 32_350_490),
    "paa_R_101_FPN_2x": (584, 51_394_842),
    "paa_X_101_FPN_2x": (584, 90_398_490),
    "paa_dcnv2_R_101_FPN_2x": (648, 53_448_570),
    "paa_dcnv2_X_101_32x8d_FPN_2x": (640, 103_075_854),
    "paa_dcnv2_X_101_64x4d_FPN_2x": (640, 97_739_790),
    "paa_dcnv2_X_152_32x8d_FPN_2x": (921, 139_984_237),
}


def manifest_numbers(shapes):
    """Parameter and buffer numbers of a {key: shape} manifest, anchors left out."""
    return sum(math.prod(s) for k, s in shapes.items() if "cell_anchors" not in k)


# --------------------------------------------------------------------------- toy training run
class ToyDetector(nn.Module):
    """A two-layer regressor with the detector's training interface: forward -> loss dict."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3)
        self.head = nn.Linear(4, 1)

    def forward(self, images, targets):
        feat = self.conv(images.tensors).mean(dim=(2, 3))
        pred = self.head(feat).squeeze(1)
        target = torch.stack(targets)
        return {"loss_a": ((pred - target) ** 2).mean(), "loss_b": pred.abs().mean() * 0.1}


class ToyLoader:
    """Iteration-based like the real sampler: len is the total, iteration resumes at start_iter."""

    def __init__(self, num_iters, start_iter=0):
        self.num_iters, self.start_iter = num_iters, start_iter

    def __len__(self):
        return self.num_iters

    def __iter__(self):
        for it in range(self.start_iter, self.num_iters):
            g = torch.Generator().manual_seed(it)
            images = to_image_list([torch.rand(3, 6, 6, generator=g) for _ in range(2)])
            yield images, [torch.rand((), generator=g) for _ in range(2)], (2 * it, 2 * it + 1)


def make_run(save_dir, steps=(3, 6)):
    model = ToyDetector()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = WarmupMultiStepLR(
        opt, steps, 0.5, warmup_factor=0.25, warmup_iters=2, warmup_method="linear"
    )
    return model, opt, sched, Checkpointer(model, opt, sched, save_dir, save_to_disk=True)
