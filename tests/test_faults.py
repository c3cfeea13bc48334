"""Fault suite: every bad input a user's files and habits produce ends in one line,
`error: <what, where>`, exit code 1, with no input and no earlier output changed; and
interrupted training (SIGTERM, Ctrl-C, kill -9, also mid-checkpoint) resumes to a final
model bit-identical to an uninterrupted run's.

The tools run as subprocesses on a tiny model (test_tools.py's) and datasets written
here; the bad-input runs are started together and checked one test per case.
"""

import glob
import hashlib
import json
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest
import torch
from helpers import (
    DEMO,
    REPO,
    RPN_TINY,
    TEST_NET,
    TOOL_ENV,
    TRAIN_NET,
    ToyLoader,
    make_run,
    tiny_dataset,
)

from paa_core.config import get_cfg
from paa_core.data import make_data_loader
from paa_core.engine.trainer import TrainOptions, do_train
from paa_core.modeling.detector import build_detection_model
from paa_core.utils.errors import InputError
from paa_core.utils.rng import ProcessRNG

MAKE_SHAPES = os.path.join(REPO, "tools", "make_shapes_dataset.py")
EXPORT = os.path.join(REPO, "tools", "export_onnx.py")
PLOT = os.path.join(REPO, "tools", "plot_training.py")
VISUALIZE = os.path.join(REPO, "tools", "visualize_assignment.py")
# The two-stage detector on the same data: a tiny Faster R-CNN (PAA in its RPN), and its RPN alone.
FASTER_RCNN_TINY = RPN_TINY.replace(
    "RPN_ONLY: True", "RPN_ONLY: False\n  ROI_BOX_HEAD: {NUM_CLASSES: 3, MLP_HEAD_DIM: 16}"
)
# Training runs whose results are compared: flips and two input sizes draw random numbers in
# the data-loader worker, a checkpoint every iteration gives kills something to land on.
RUN_OPTS = [
    "--skip-test",
    "SOLVER.MAX_ITER",
    "8",
    "SOLVER.CHECKPOINT_PERIOD",
    "1",
    "DATALOADER.NUM_WORKERS",
    "1",
    "INPUT.MIN_SIZE_TRAIN",
    "(48, 64)",
]
# Every test here but two starts tools as processes: the module is left out of the quick loop.
pytestmark = pytest.mark.slow
HAS_UNSHARE = (
    shutil.which("unshare") is not None
    and subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode == 0
)


class ToolRun:
    """A tool run forked by tests/fork_server.py: a process with its own pid and exit code."""

    def __init__(self, pid, prefix):
        self.pid, self.prefix = pid, prefix

    def poll(self):
        """The exit code, -9 for a process killed before it could write one, None while running."""
        if os.path.exists(self.prefix + ".code"):
            return int(open(self.prefix + ".code").read())
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return -9
        return None

    def send_signal_to_group(self, signum):
        """As Ctrl-C in a terminal or a scheduler's `kill -- -PGID` do: to every process of the job."""
        os.killpg(self.pid, signum)

    def send_signal_to_each(self, signum):
        """As a scheduler that signals every process of the job by pid: the DataLoader
        workers (children of the training process) first, then the training process."""
        children = open(f"/proc/{self.pid}/task/{self.pid}/children").read().split()
        assert children, "no DataLoader worker to signal"
        for pid in [int(c) for c in children] + [self.pid]:
            os.kill(pid, signum)

    def kill(self):
        """kill -9 of the training process."""
        os.kill(self.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def server():
    proc = subprocess.Popen(
        [sys.executable, os.path.join(REPO, "tests", "fork_server.py")],
        env=TOOL_ENV,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    yield proc
    for run in STARTED:  # left running by a failed test
        if run.poll() is None:
            run.kill()
    proc.stdin.close()
    proc.wait(timeout=60)


_counter = iter(range(10**6))
STARTED = []


def start(server, args, cwd):
    prefix = os.path.join(cwd, f".run{next(_counter)}")
    server.stdin.write(json.dumps({"argv": args, "cwd": cwd, "out": prefix}) + "\n")
    server.stdin.flush()
    STARTED.append(ToolRun(int(server.stdout.readline()), prefix))
    return STARTED[-1]


def finish(run, timeout=180):
    """(exit code, stdout, stderr) once `run` ended; still running after `timeout` s, it is killed."""
    deadline = time.time() + timeout
    while run.poll() is None:
        if time.time() > deadline:
            run.kill()
        time.sleep(0.01)
    return run.poll(), open(run.prefix + ".out").read(), open(run.prefix + ".err").read()


def run_in_namespace(script, args, cwd):
    """`sh -c script sh python args...` in new user and mount namespaces (for a tmpfs)."""
    return subprocess.run(
        ["unshare", "-rm", "sh", "-c", script, "sh", sys.executable] + args,
        cwd=cwd,
        env=TOOL_ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )


def snapshot(*paths):
    """{file: sha1, folder: "folder"} of every file and folder under `paths` (files or
    folders; a path that does not exist has none)."""
    digests = {}
    for path in paths:
        files = (
            [path] if os.path.isfile(path) else glob.glob(os.path.join(path, "**"), recursive=True)
        )
        for f in files:
            if os.path.isfile(f):
                digests[f] = hashlib.sha1(open(f, "rb").read()).hexdigest()
            elif os.path.isdir(f):
                digests[f] = "folder"
    return digests


def one_error_line(stderr):
    """The single `error:` line a failed tool printed, after checking there is no traceback."""
    assert "Traceback" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr[-3000:]
    assert stderr.strip().splitlines()[-1] == errors[0]
    return errors[0]


def final_state(output_dir):
    ckpt = torch.load(os.path.join(output_dir, "model_final.pth"), weights_only=True)
    return ckpt["iteration"], ckpt["model"], ckpt["optimizer"]["state"]


def assert_identical(output_dir, reference_dir):
    iteration, model, optimizer = final_state(output_dir)
    ref_iteration, ref_model, ref_optimizer = final_state(reference_dir)
    assert iteration == ref_iteration == 8
    assert model.keys() == ref_model.keys()
    assert all(torch.equal(model[k], ref_model[k]) for k in model), [
        k for k in model if not torch.equal(model[k], ref_model[k])
    ][:3]
    for key, state in optimizer.items():
        assert all(torch.equal(v, ref_optimizer[key][name]) for name, v in state.items()), key


def png_header_only(path, width, height):
    """A PNG whose header announces width x height 1-bit pixels (its data is one empty chunk)."""

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    with open(path, "wb") as f:
        f.write(
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b""))
            + chunk(b"IEND", b"")
        )


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    data = tiny_dataset(str(tmp_path_factory.mktemp("faults")))
    datasets = f'DATASETS:\n  TRAIN: ("{data["train"]}",)\n  TEST: ("{data["val"]}",)\n'
    for name, text in (("faster_rcnn", FASTER_RCNN_TINY), ("rpn_only", RPN_TINY)):
        data[name] = os.path.join(data["root"], f"{name}.yaml")
        with open(data[name], "w") as f:
            f.write(text + datasets)
    return data


@pytest.fixture(scope="module")
def reference(data, server):
    """An uninterrupted training run (the result every interrupted one must reproduce)."""
    out = os.path.join(data["root"], "reference")
    code, stdout, stderr = finish(
        start(
            server,
            [TRAIN_NET, "--config-file", data["config"], "OUTPUT_DIR", out] + RUN_OPTS,
            data["root"],
        )
    )
    assert code == 0, stderr[-3000:]
    return out


def copy_split(data, name, corrupt):
    """A copy of the training split, changed by `corrupt(image_dir, annotations dict)`;
    returns its dataset name for DATASETS.TRAIN."""
    root = data["root"]
    image_dir = os.path.join(root, name)
    shutil.copytree(os.path.join(root, "train"), image_dir)
    with open(os.path.join(root, "train.json")) as f:
        coco = json.load(f)
    corrupt(image_dir, coco)
    ann_file = os.path.join(root, f"{name}.json")
    if not os.path.exists(ann_file):
        with open(ann_file, "w") as f:
            json.dump(coco, f)
    return f"{name}:{image_dir}:{ann_file}"


def _write(path, content, mode="w"):
    with open(path, mode) as f:
        f.write(content)


def _truncate(path, keep):
    content = open(path, "rb").read()
    _write(path, content[:keep], "wb")


# name -> fn(data, reference, tmp) -> (argv, regex of the error line, protected paths).
# Every regex names the file, key or value at fault.
def _train(data, tmp, *opts, dataset=None, config=None):
    argv = [
        TRAIN_NET,
        "--config-file",
        config or data["config"],
        "--skip-test",
        "OUTPUT_DIR",
        os.path.join(tmp, "out"),
    ]
    if dataset:
        argv += ["DATASETS.TRAIN", f"('{dataset}',)"]
    return argv + list(opts)


def case_max_iter(data, ref, tmp):
    return (
        _train(data, tmp, "SOLVER.MAX_ITER", "0"),
        r"error: SOLVER\.MAX_ITER must be positive, got 0",
        [],
    )


def case_batch(data, ref, tmp):
    return (
        _train(data, tmp, "SOLVER.IMS_PER_BATCH", "0"),
        r"error: SOLVER\.IMS_PER_BATCH must be positive, got 0",
        [],
    )


def case_device(data, ref, tmp):
    return (
        _train(data, tmp, "MODEL.DEVICE", "tpu"),
        r"error: MODEL\.DEVICE: unknown device 'tpu', expected cpu, cuda or cuda:N",
        [],
    )


def case_yaml_syntax(data, ref, tmp):
    config = os.path.join(tmp, "broken.yaml")
    _write(config, "SOLVER:\n  BASE_LR: 0.01\n   MAX_ITER: 2\n")
    return (
        _train(data, tmp, config=config),
        r"error: .*broken\.yaml: cannot parse: line 3, column 12: mapping values are not allowed here",
        [config],
    )


def case_num_classes(data, ref, tmp):
    return (
        _train(data, tmp, "MODEL.PAA.NUM_CLASSES", "2"),
        r"error: MODEL\.PAA\.NUM_CLASSES is 2 but tiny_train:.* has 2 categories: set it to 3 "
        r"\(categories \+ background\)",
        [],
    )


# The tiny config as a Faster R-CNN (its MODEL.PAA.NUM_CLASSES, 3, stays in the file).
FASTER_RCNN = ("MODEL.PAA_ON", "False", "MODEL.RPN_ONLY", "False")
FASTER_RCNN += ("MODEL.BACKBONE.CONV_BODY", "R-18-GN-FPN")


def case_num_classes_faster_rcnn(data, ref, tmp):
    return (
        _train(data, tmp, *FASTER_RCNN, "MODEL.ROI_BOX_HEAD.NUM_CLASSES", "2"),
        r"error: MODEL\.ROI_BOX_HEAD\.NUM_CLASSES is 2 but tiny_train:.* has 2 categories: "
        r"set it to 3 \(categories \+ background\)",
        [],
    )


def _ninety_categories(image_dir, coco):
    """88 more (unused) categories: 90 in all, more than COCO's 80."""
    coco["categories"] += [{"id": i, "name": f"unused{i}"} for i in range(3, 91)]


def case_num_classes_faster_rcnn_over_80(data, ref, tmp):
    dataset = copy_split(data, "ninety", _ninety_categories)
    return (
        _train(data, tmp, *FASTER_RCNN, dataset=dataset),
        r"error: MODEL\.ROI_BOX_HEAD\.NUM_CLASSES is 81 but ninety:.* has 90 categories: "
        r"set it to 91 \(categories \+ background\)",
        [dataset.split(":")[1]],
    )


def test_faster_rcnn_class_count_is_its_box_heads(data):
    """Enough MODEL.ROI_BOX_HEAD.NUM_CLASSES for 90 categories is enough for a Faster
    R-CNN, whatever MODEL.PAA.NUM_CLASSES (3 in the file) says."""
    cfg = get_cfg()
    cfg.merge_from_file(data["config"])
    dataset = copy_split(data, "ninety_accepted", _ninety_categories)
    cfg.merge_from_list(
        [*FASTER_RCNN, "MODEL.ROI_BOX_HEAD.NUM_CLASSES", 91, "DATASETS.TRAIN", (dataset,)]
    )
    loader = make_data_loader(cfg, is_train=True)
    assert len(loader.dataset.dataset.categories) == 90


def _image_case(name, corrupt, reason, *opts):
    def case(data, ref, tmp):
        dataset = copy_split(data, name, corrupt)
        image_dir = dataset.split(":")[1]
        return (
            _train(data, tmp, *opts, dataset=dataset),
            rf"error: cannot read image .*/{name}/003\.png: {reason}",
            [image_dir],
        )

    return case


case_missing_image = _image_case(
    "missing",
    lambda d, c: os.remove(os.path.join(d, "003.png")),
    r"\[Errno 2\] No such file or directory: .*003\.png'",
)
case_truncated_image = _image_case(
    "truncated", lambda d, c: _truncate(os.path.join(d, "003.png"), 60), r".+"
)
case_zero_byte_image = _image_case(
    "empty",
    lambda d, c: _write(os.path.join(d, "003.png"), ""),
    r"cannot identify image file .*003\.png'",
)
case_text_as_image = _image_case(
    "text",
    lambda d, c: _write(os.path.join(d, "003.png"), "not a picture\n"),
    r"cannot identify image file .*003\.png'",
)
case_huge_image = _image_case(
    "huge",
    lambda d, c: png_header_only(os.path.join(d, "003.png"), 30000, 30000),
    r"Image size \(900000000 pixels\) exceeds limit .*decompression bomb.*",
)
# Data-loader workers: the worker's error arrives as the same one line.
case_missing_image_in_worker = _image_case(
    "missing_w",
    lambda d, c: os.remove(os.path.join(d, "003.png")),
    r"\[Errno 2\] No such file or directory: .*003\.png'",
    "DATALOADER.NUM_WORKERS",
    "2",
)


def case_image_size(data, ref, tmp):
    def corrupt(image_dir, coco):
        coco["images"][3]["width"] = 80  # its json record now disagrees with the 64x64 file

    dataset = copy_split(data, "resized", corrupt)
    return (
        _train(data, tmp, dataset=dataset),
        r"error: .*/resized/003\.png is 64x64 but .*resized\.json says 80x64 \(width x height\)",
        [dataset.split(":")[1], dataset.split(":")[2]],
    )


def case_not_json(data, ref, tmp):
    dataset = copy_split(
        data,
        "notjson",
        lambda d, c: _write(os.path.join(data["root"], "notjson.json"), "{'images': [}"),
    )
    return (
        _train(data, tmp, dataset=dataset),
        r"error: COCODataset: cannot parse annotation file .*notjson\.json: Expecting property name .*line 1 "
        r"column 2 .*",
        [dataset.split(":")[2]],
    )


def case_unknown_category(data, ref, tmp):
    def corrupt(image_dir, coco):
        coco["annotations"][0]["category_id"] = 99

    dataset = copy_split(data, "badcat", corrupt)
    return (
        _train(data, tmp, dataset=dataset),
        r"error: .*badcat\.json: annotation 1 has category_id 99, which is not in its categories",
        [dataset.split(":")[2]],
    )


def case_no_usable_box(data, ref, tmp):
    def corrupt(image_dir, coco):
        for ann in coco["annotations"]:
            ann["bbox"][2] = 1.0

    dataset = copy_split(data, "nobox", corrupt)
    return (
        _train(data, tmp, dataset=dataset),
        r"error: DATASETS\.TRAIN: nobox:.*: no image has a usable box \(non-crowd, wider and taller than 1 "
        r"pixel\): nothing to train on",
        [dataset.split(":")[2]],
    )


def case_text_weights(data, ref, tmp):
    weights = os.path.join(tmp, "notes.pth")
    _write(weights, "these are my notes, not weights\n")
    return (
        _train(data, tmp, "MODEL.WEIGHT", weights),
        r"error: .*notes\.pth: not a readable PyTorch weight file \(truncated or another format\?\): .+",
        [weights],
    )


def case_truncated_weights(data, ref, tmp):
    weights = os.path.join(tmp, "cut.pth")
    shutil.copy(os.path.join(ref, "model_final.pth"), weights)
    _truncate(weights, os.path.getsize(weights) // 2)
    return (
        _train(data, tmp, "MODEL.WEIGHT", weights),
        r"error: .*cut\.pth: not a readable PyTorch weight file \(truncated or another format\?\): .+",
        [weights],
    )


def case_changed_run(data, ref, tmp):
    out = os.path.join(tmp, "finished")
    shutil.copytree(ref, out)
    argv = (
        [TRAIN_NET, "--config-file", data["config"], "OUTPUT_DIR", out]
        + RUN_OPTS
        + ["SOLVER.BASE_LR", "0.02"]
    )
    return (
        argv,
        r"error: OUTPUT_DIR .*/finished holds a run with other settings: SOLVER\.BASE_LR 0\.01 "
        r"\(now 0\.02\); to start afresh choose another OUTPUT_DIR, to continue that run with the new settings add "
        r"--resume-changed",
        [out],
    )


def case_eval_image_size(data, ref, tmp):
    """test_net: evaluating on an image whose size the json misstates."""
    image_dir = os.path.join(tmp, "val")
    shutil.copytree(os.path.join(data["root"], "val"), image_dir)
    coco = json.load(open(os.path.join(data["root"], "val.json")))
    coco["images"][1]["height"] = 48
    ann_file = os.path.join(tmp, "val.json")
    _write(ann_file, json.dumps(coco))
    argv = [
        TEST_NET,
        "--config-file",
        data["config"],
        "--ckpt",
        os.path.join(ref, "model_final.pth"),
        "DATASETS.TEST",
        f"('v:{image_dir}:{ann_file}',)",
        "OUTPUT_DIR",
        os.path.join(tmp, "eval"),
    ]
    return (
        argv,
        r"error: .*/val/001\.png is 64x64 but .*val\.json says 64x48 \(width x height\)",
        [image_dir, ann_file],
    )


def case_shapes_count(data, ref, tmp):
    return (
        [MAKE_SHAPES, "--output", os.path.join(tmp, "shapes"), "--num-train", "-5"],
        r"error: --num-train must be at least 0, got -5",
        [],
    )


def case_demo_overwrites_input(data, ref, tmp):
    images = os.path.join(tmp, "pictures")
    shutil.copytree(os.path.join(data["root"], "val"), images)
    argv = [
        DEMO,
        "--config-file",
        data["config"],
        "--weights",
        os.path.join(ref, "model_final.pth"),
        "--input",
        images,
        "--output",
        images,
    ]
    return (
        argv,
        r"error: --output .*/pictures: writing .*/pictures/000\.png would overwrite an input image",
        [images],
    )


def case_faster_rcnn_weights_to_one_stage(data, ref, tmp):
    cfg = get_cfg()
    cfg.merge_from_file(data["faster_rcnn"])
    weights = os.path.join(tmp, "faster_rcnn.pth")
    torch.save({"model": build_detection_model(cfg).state_dict()}, weights)
    return (
        [TEST_NET, "--config-file", data["config"], "MODEL.WEIGHT", weights, "OUTPUT_DIR", ""],
        r"error: .*/faster_rcnn\.pth: holds the weights of a Faster R-CNN but the config builds "
        r"a one-stage PAA detector \(MODEL\.PAA_ON\): give the config the checkpoint was trained with",
        [weights],
    )


def case_one_stage_weights_to_faster_rcnn(data, ref, tmp):
    weights = os.path.join(ref, "model_final.pth")
    return (
        [TEST_NET, "--config-file", data["faster_rcnn"], "MODEL.WEIGHT", weights, "OUTPUT_DIR", ""],
        r"error: .*/model_final\.pth: holds the weights of a one-stage PAA detector but the "
        r"config builds a Faster R-CNN \(MODEL\.PAA_ON\): give the config the checkpoint was trained with",
        [weights],
    )


def case_export_overwrites_its_checkpoint(data, ref, tmp):
    weights = os.path.join(ref, "model_final.pth")
    argv = [EXPORT, "--config-file", data["config"], "--output", weights, "MODEL.WEIGHT", weights]
    return (
        argv,
        r"error: --output .*/model_final\.pth: writing .*/model_final\.pth would overwrite the "
        r"checkpoint it exports \(MODEL\.WEIGHT\)",
        [weights],
    )


def case_plot_overwrites_its_metrics(data, ref, tmp):
    metrics = os.path.join(ref, "metrics.jsonl")
    return (
        [PLOT, ref, "--output", metrics],
        r"error: --output .*/metrics\.jsonl: writing .*/metrics\.jsonl would overwrite the "
        r"metrics file it draws",
        [metrics],
    )


def case_visualize_overwrites_an_image(data, ref, tmp):
    images = os.path.join(data["root"], "train")
    argv = [VISUALIZE, "--config-file", data["config"], "--images", "1", "2", "--output", images]
    return (
        argv,
        r"error: --output .*/train: writing .*/train/000\.png would overwrite a dataset image",
        [images],
    )


def case_visualize_standard_rpn(data, ref, tmp):
    argv = [VISUALIZE, "--config-file", data["faster_rcnn"], "--output", tmp]
    return (
        argv + ["MODEL.RPN.USE_PAA", "False", "MODEL.RPN.USE_IOU_PRED", "False"],
        r"error: .*/faster_rcnn\.yaml: MODEL\.RPN\.USE_PAA is False: this Faster R-CNN's RPN "
        r"assigns anchors by IoU thresholds, there is no PAA assignment to draw",
        [],
    )


def case_export_faster_rcnn(data, ref, tmp):
    return (
        [EXPORT, "--config-file", data["faster_rcnn"], "--output", os.path.join(tmp, "f.onnx")],
        r"error: export_onnx: the config is a Faster R-CNN \(MODEL\.PAA_ON False\); only the "
        r"one-stage PAA detector exports: .+ have no ONNX translation here",
        [],
    )


def case_demo_rpn_only(data, ref, tmp):
    argv = [
        DEMO,
        "--config-file",
        data["rpn_only"],
        "--weights",
        os.path.join(ref, "model_final.pth"),
    ]
    return (
        argv + ["--input", os.path.join(data["root"], "val"), "--output", tmp],
        r"error: MODEL\.RPN_ONLY True: a proposal-only Faster R-CNN finds boxes without classes, "
        r"there are no detections to draw \(its proposal recall: tools/test_net\.py\)",
        [],
    )


# Values the config alone shows to be unusable: refused before any weights are read (the
# MODEL.WEIGHT given does not exist, so reading it would be the error) and before OUTPUT_DIR
# or any other output is written.
def _refused_early(tool, config, opts, pattern):
    def case(data, ref, tmp):
        out = os.path.join(tmp, "out")
        absent = os.path.join(tmp, "absent.pth")
        argv = [tool, "--config-file", data[config], "MODEL.WEIGHT", absent, *opts]
        return argv + ["OUTPUT_DIR", out], pattern, [out]

    return case


case_tta_on_proposal_only = _refused_early(
    TEST_NET,
    "rpn_only",
    ["TEST.BBOX_AUG.ENABLED", "True"],
    r"error: TEST\.BBOX_AUG\.ENABLED: a proposal-only model \(MODEL\.RPN_ONLY\) has no "
    r"classes to merge detections by; evaluate it without test-time augmentation",
)
case_tta_keys = _refused_early(
    TEST_NET,
    "config",
    ["TEST.BBOX_AUG.ENABLED", "True", "TEST.BBOX_AUG.SCALES", "(48,)"]
    + ["TEST.BBOX_AUG.SCALE_RANGES", "((0, 64), (0, 96))", "TEST.BBOX_AUG.MERGE_TYPE", "max"],
    r"error: TEST\.BBOX_AUG\.SCALE_RANGES needs one \(min, max\) per scale: 2 ranges for 1 "
    r"SCALES; TEST\.BBOX_AUG\.MERGE_TYPE must be one of \('vote', 'soft-vote'\), got 'max'",
)
case_one_class = _refused_early(
    TRAIN_NET,
    "config",
    ["MODEL.PAA.NUM_CLASSES", "1"],
    r"error: MODEL\.PAA\.NUM_CLASSES=1: must count the background plus at least one class",
)
case_anchor_levels = _refused_early(
    TEST_NET,
    "config",
    ["MODEL.PAA.ANCHOR_SIZES", "(16, 32, 64, 128)", "MODEL.PAA.ANCHOR_STRIDES", "(8, 16, 32, 64)"],
    r"error: MODEL\.PAA\.ANCHOR_SIZES has 4 entries but the FPN has 5 levels, one entry each; "
    r"MODEL\.PAA\.ANCHOR_STRIDES has 4 entries but the FPN has 5 levels, one entry each",
)
case_box_head_thresholds = _refused_early(
    TRAIN_NET,
    "faster_rcnn",
    ["MODEL.ROI_HEADS.BG_IOU_THRESHOLD", "0.6"],
    r"error: MODEL\.ROI_HEADS\.BG_IOU_THRESHOLD=0\.6 exceeds "
    r"MODEL\.ROI_HEADS\.FG_IOU_THRESHOLD=0\.5",
)
case_solver_keys = _refused_early(
    TRAIN_NET,
    "config",
    ["--skip-test", "SOLVER.OPTIMIZER", "Adam", "SOLVER.STEPS", "(3, 1)"],
    r"error: SOLVER\.OPTIMIZER: unknown optimizer 'Adam', expected one of AdamW, SGD; "
    r"SOLVER\.STEPS=\(3, 1\): must be in increasing order",
)
case_train_size_range = _refused_early(
    TRAIN_NET,
    "config",
    ["INPUT.MIN_SIZE_RANGE_TRAIN", "(64, 32)"],
    r"error: INPUT\.MIN_SIZE_RANGE_TRAIN must be \(lo, hi\) with lo <= hi, got \(64, 32\)",
)
case_catalog_weight = _refused_early(
    TRAIN_NET,
    "config",
    ["MODEL.WEIGHT", "catalog://ImageNetPretrained/MSRA/R-77"],
    r"error: MODEL\.WEIGHT catalog://ImageNetPretrained/MSRA/R-77: model "
    r"'ImageNetPretrained/MSRA/R-77' is not in the catalog; known: .*MSRA/R-50.*",
)
VOC_CATALOG = """class DatasetCatalog:
    @staticmethod
    def get(name):
        return {"factory": "PascalVOCDataset", "args": {"data_dir": "voc", "split": name}}
"""


def case_catalog_names_another_format(data, ref, tmp):
    catalog = os.path.join(tmp, "voc_catalog.py")
    _write(catalog, VOC_CATALOG)
    argv, _, protected = _refused_early(TRAIN_NET, "config", [], "")(data, ref, tmp)
    return (
        argv + ["PATHS_CATALOG", catalog, "DATASETS.TRAIN", "('voc_2007_train',)"],
        r"error: DATASETS\.TRAIN: 'voc_2007_train': the catalog names 'PascalVOCDataset', but "
        r"paa_core reads COCO-format json only \(COCODataset\)",
        protected + [catalog],
    )


def case_visualize_amp(data, ref, tmp):
    pictures = os.path.join(tmp, "pictures")
    argv = [VISUALIZE, "--config-file", data["config"], "--output", pictures, "SOLVER.AMP", "fp8"]
    return (
        argv + ["MODEL.WEIGHT", os.path.join(tmp, "absent.pth")],
        r"error: SOLVER\.AMP: unknown value 'fp8', expected off, bf16, fp16 or auto",
        [pictures],
    )


def case_demo_model_keys(data, ref, tmp):
    pictures = os.path.join(tmp, "pictures")
    argv = [DEMO, "--config-file", data["config"], "--weights", os.path.join(tmp, "absent.pth")]
    return (
        argv
        + ["--input", os.path.join(data["root"], "val"), "--output", pictures]
        + ["MODEL.PAA.SCALES_PER_OCTAVE", "0"],
        r"error: MODEL\.PAA\.SCALES_PER_OCTAVE=0: must be >= 1",
        [pictures],
    )


def case_export_group_norm(data, ref, tmp):
    onnx = os.path.join(tmp, "paa.onnx")
    argv = [EXPORT, "--config-file", data["config"], "--output", onnx, "MODEL.FPN.USE_GN", "True"]
    return (
        argv
        + ["MODEL.GROUP_NORM.NUM_GROUPS", "24", "MODEL.WEIGHT", os.path.join(tmp, "absent.pth")],
        r"error: MODEL\.GROUP_NORM \(DIM_PER_GP -1, NUM_GROUPS 24\) for the FPN's "
        r"MODEL\.RESNETS\.BACKBONE_OUT_CHANNELS=64: 64 channels do not split into equal groups",
        [onnx],
    )


CASES = {
    name[len("case_") :]: fn for name, fn in sorted(globals().items()) if name.startswith("case_")
}


@pytest.fixture(scope="module")
def bad_runs(data, reference, server, tmp_path_factory):
    """Start every case (a few at a time), then collect (code, stderr, protected, before, after)."""
    prepared = {}
    for name, make in CASES.items():
        tmp = str(tmp_path_factory.mktemp(name))
        argv, pattern, protected = make(data, reference, tmp)
        protected = protected + [
            os.path.join(data["root"], p)
            for p in (
                "train",
                "val",
                "train.json",
                "val.json",
                "tiny.yaml",
                "faster_rcnn.yaml",
                "rpn_only.yaml",
            )
        ]
        prepared[name] = (argv, pattern, protected, snapshot(*protected), tmp)
    results, running, pending = {}, {}, list(prepared)
    while pending or running:
        while pending and len(running) < 6:
            name = pending.pop()
            running[name] = start(server, prepared[name][0], prepared[name][4])
        name = next(iter(running))
        code, _, stderr = finish(running.pop(name))
        argv, pattern, protected, before, _ = prepared[name]
        results[name] = (code, stderr, pattern, before, snapshot(*protected))
    return results


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_one_line_and_changes_nothing(bad_runs, name):
    code, stderr, pattern, before, after = bad_runs[name]
    assert code == 1, stderr[-3000:]
    line = one_error_line(stderr)
    assert re.fullmatch(pattern, line), line
    assert after == before


@pytest.mark.skipif(
    not HAS_UNSHARE, reason="needs unshare (user and mount namespaces) for a small tmpfs"
)
def test_full_disk_names_the_checkpoint_and_leaves_no_partial_file(data, tmp_path):
    """OUTPUT_DIR on a 200 KiB tmpfs: config and log fit, the first checkpoint does not."""
    out = str(tmp_path / "out")
    os.makedirs(out)
    script = f'mount -t tmpfs -o size=200k tmpfs {out} && "$@"; code=$?; echo LISTING; ls -A {out}; exit $code'
    result = run_in_namespace(
        script,
        [
            TRAIN_NET,
            "--config-file",
            data["config"],
            "OUTPUT_DIR",
            out,
            "SOLVER.CHECKPOINT_PERIOD",
            "1",
        ],
        str(tmp_path),
    )
    code, stdout, stderr = result.returncode, result.stdout, result.stderr
    assert code == 1, stderr[-3000:]
    assert (
        one_error_line(stderr)
        == f"error: no space left on device while writing {out}/model_0000001.pth"
    )
    assert stdout.split("LISTING\n")[1].split() == [
        "config.yml",
        "log.txt",
    ]  # no partial file, no last_checkpoint


@pytest.mark.skipif(
    not HAS_UNSHARE, reason="needs unshare (user and mount namespaces) for a read-only folder"
)
def test_demo_refuses_an_output_folder_it_cannot_write(data, reference, tmp_path):
    out = str(tmp_path / "readonly")
    os.makedirs(out)
    script = f'mount -t tmpfs -o ro tmpfs {out} && exec "$@"'
    result = run_in_namespace(
        script,
        [
            DEMO,
            "--config-file",
            data["config"],
            "--weights",
            os.path.join(reference, "model_final.pth"),
            "--input",
            os.path.join(data["root"], "val"),
            "--output",
            out,
        ],
        str(tmp_path),
    )
    code, stdout, stderr = result.returncode, result.stdout, result.stderr
    assert (
        code == 1
        and one_error_line(stderr) == f"error: --output {out}: the folder cannot be written"
    )
    assert "detections" not in stdout  # refused before any picture was computed


def test_demo_gives_inputs_with_one_name_their_own_pictures(data, reference, server, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for folder, source in ((a, "000.png"), (b, "001.png")):
        folder.mkdir()
        shutil.copy(os.path.join(data["root"], "val", source), folder / "x.png")
    code, stdout, stderr = finish(
        start(
            server,
            [
                DEMO,
                "--config-file",
                data["config"],
                "--weights",
                os.path.join(reference, "model_final.pth"),
                "--input",
                str(a / "x.png"),
                str(b / "x.png"),
                "--output",
                str(tmp_path / "out"),
                "--threshold",
                "0",
            ],
            str(tmp_path),
        )
    )
    assert code == 0, stderr[-3000:]
    assert sorted(os.listdir(tmp_path / "out")) == ["x.png", "x_2.png"]
    assert f"{b / 'x.png'}: " in stdout and stdout.strip().endswith(
        str(tmp_path / "out" / "x_2.png")
    )


def test_rpn_only_run_ends_with_its_recall_curve(data, server, tmp_path):
    """Training the RPN alone evaluates proposal recall and draws it where AP would be."""
    out = str(tmp_path / "out")
    argv = [TRAIN_NET, "--config-file", data["rpn_only"], "OUTPUT_DIR", out]
    code, stdout, stderr = finish(start(server, argv, str(tmp_path)))
    assert code == 0 and "Traceback" not in stderr, stderr[-3000:]
    with open(os.path.join(out, "metrics.jsonl")) as f:
        evals = [r for r in map(json.loads, f) if "dataset" in r]
    assert [(r["iteration"], "AR@100" in r, "AP" in r) for r in evals] == [(2, True, False)]
    assert os.path.getsize(os.path.join(out, "training_curves.png")) > 10000
    assert f"Training curves: {out}/training_curves.png" in stdout


def test_flags_after_overrides_and_device_warning_in_log(data, reference):
    """The reference run had --skip-test among its KEY VALUE pairs: taken as the flag, not an
    override. Its config's MODEL.DEVICE cuda fell back to the CPU, which log.txt records."""
    log = open(os.path.join(reference, "log.txt")).read()
    assert "WARNING: MODEL.DEVICE is cuda but no GPU is visible: using the CPU" in log
    assert RUN_OPTS[0] == "--skip-test" and not os.path.exists(os.path.join(reference, "inference"))


def test_non_finite_loss_names_the_last_checkpoint(tmp_path):
    class Diverging(ToyLoader):
        def __iter__(self):  # the target of iteration 3 is infinite
            for it, (images, targets, idxs) in enumerate(super().__iter__(), 1):
                yield images, [torch.tensor(float("inf"))] * 2 if it == 3 else targets, idxs

    model, opt, sched, ckpt = make_run(str(tmp_path))
    with pytest.raises(InputError) as e:
        do_train(
            model,
            Diverging(5),
            opt,
            sched,
            ckpt,
            {"iteration": 0},
            TrainOptions(torch.device("cpu"), 1),
        )
    assert str(e.value) == (
        f"non-finite loss at iteration 3: loss_a=inf; the last checkpoint is "
        f"{tmp_path / 'model_0000002.pth'}, but resuming from it with the same settings will likely diverge again "
        "(lower SOLVER.BASE_LR or lengthen SOLVER.WARMUP_ITERS)"
    )


# --------------------------------------------------------------------------- interruptions
def wait_for_iteration(out, iteration, proc, timeout=180):
    """Block until the run in `out` has logged the start of `iteration`."""
    log, deadline = os.path.join(out, "log.txt"), time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(log) and f"iteration {iteration} rank 0/1" in open(log).read():
            return
        time.sleep(0.02)
    raise AssertionError(f"iteration {iteration} never started in {out}")


@pytest.mark.parametrize(
    "signum, to_each, resume_opts",
    [
        (signal.SIGTERM, False, []),
        # Resumed with no worker process: augmentation does not depend on who loads an image.
        (signal.SIGINT, False, ["DATALOADER.NUM_WORKERS", "0"]),
        # A scheduler's `kill -TERM <pid>` of every process, the DataLoader worker included.
        (signal.SIGTERM, True, []),
    ],
)
def test_signal_saves_the_current_iteration_and_the_run_resumes_identically(
    data, reference, server, tmp_path, signum, to_each, resume_opts
):
    out = str(tmp_path / "out")
    argv = [TRAIN_NET, "--config-file", data["config"], "OUTPUT_DIR", out] + RUN_OPTS
    argv[argv.index("SOLVER.CHECKPOINT_PERIOD") + 1] = "100"  # the stop itself must save
    proc = start(server, argv, str(tmp_path))
    wait_for_iteration(out, 2, proc)
    if to_each:
        proc.send_signal_to_each(signum)
    else:
        proc.send_signal_to_group(signum)
    code, _, stderr = finish(proc)
    line = one_error_line(stderr)
    m = re.fullmatch(
        rf"error: stopped by {signal.Signals(signum).name} after iteration (\d) of 8; saved "
        rf"{re.escape(out)}/model_000000(\d)\.pth; run the same command to resume",
        line,
    )
    assert code == 1 and m and m.group(1) == m.group(2) and 2 <= int(m.group(1)) < 8, line
    assert open(os.path.join(out, "last_checkpoint")).read() == f"model_000000{m.group(1)}.pth"
    code, stdout, stderr = finish(start(server, argv + resume_opts, str(tmp_path)))
    assert code == 0, stderr[-3000:]
    assert f"Resuming from {out}/model_000000{m.group(1)}.pth" in stdout
    assert_identical(out, reference)


@pytest.mark.parametrize("seed", [11, 23])
def test_kill_9_at_random_moments_then_resume_identically(data, reference, server, tmp_path, seed):
    """Three kill -9s in a row: the first as soon as a checkpoint is being written, the
    second at a random moment, the third either way; each restart cleans up the partial
    file and resumes, and the run ends with the uninterrupted run's weights."""
    out = str(tmp_path / "out")
    argv = [TRAIN_NET, "--config-file", data["config"], "OUTPUT_DIR", out] + RUN_OPTS
    rng = random.Random(seed)
    kills = mid_write = 0
    log = os.path.join(out, "log.txt")
    for when in ["writing", "random", rng.choice(["writing", "random"])]:
        logged = os.path.getsize(log) if os.path.exists(log) else 0
        proc = start(server, argv, str(tmp_path))
        if when == "random":  # 0-0.2 s into the first or second iteration this run logs
            started = rng.randint(1, 2)
            while (
                proc.poll() is None
                and open(log).read()[logged:].count(" rank 0/1 images ") < started
            ):
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.2))
        else:
            while proc.poll() is None and not glob.glob(os.path.join(out, ".model_*.tmp")):
                time.sleep(0.001)
        if proc.poll() is None:
            proc.kill()
            kills += 1
        finish(proc)
        mid_write += bool(glob.glob(os.path.join(out, ".*.tmp")))
        if os.path.exists(os.path.join(out, "last_checkpoint")):  # it always names a complete file
            last = open(os.path.join(out, "last_checkpoint")).read()
            assert torch.load(os.path.join(out, last), weights_only=True)["model"]
    code, stdout, stderr = finish(start(server, argv, str(tmp_path)))
    assert code == 0, stderr[-3000:]
    assert kills == 3 and mid_write >= 1, (kills, mid_write)
    assert not glob.glob(os.path.join(out, ".*.tmp"))
    assert "left by a run killed while saving" in open(os.path.join(out, "log.txt")).read()
    assert_identical(out, reference)


def test_resume_restores_every_random_state(tmp_path):
    """Python's, NumPy's and torch's global generators continue where the checkpoint left them."""
    _, _, _, saving = make_run(str(tmp_path))
    _, _, _, resuming = make_run(str(tmp_path))
    saving.states["rng"] = resuming.states["rng"] = ProcessRNG()
    saving.save("model_0000001", iteration=1)
    expected = (random.random(), np.random.rand(), torch.rand(3))
    random.random(), np.random.rand(), torch.rand(5)  # drawn by a run that was then killed
    assert resuming.load() == {"iteration": 1}
    drawn = (random.random(), np.random.rand(), torch.rand(3))
    assert drawn[:2] == expected[:2] and torch.equal(drawn[2], expected[2])


def test_torchrun_worker_error_is_one_line_per_process(data, tmp_path):
    """Under torchrun (2 processes, a DataLoader worker each) every image is truncated: each
    process stops with the one line naming its image; torchrun then reports the failure."""

    def corrupt(image_dir, coco):
        for name in os.listdir(image_dir):
            _truncate(os.path.join(image_dir, name), 60)

    dataset = copy_split(data, "all_truncated", corrupt)
    before = snapshot(dataset.split(":")[1], dataset.split(":")[2])
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            TRAIN_NET,
            "--config-file",
            data["config"],
            "--skip-test",
            "OUTPUT_DIR",
            str(tmp_path / "out"),
            "DATASETS.TRAIN",
            f"('{dataset}',)",
            "DATALOADER.NUM_WORKERS",
            "1",
        ],
        cwd=str(tmp_path),
        env=TOOL_ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert 1 <= len(errors) <= 2 and not re.search(r"\[rank\d\]: Traceback", result.stderr), (
        result.stderr[-3000:]
    )
    assert all(
        re.fullmatch(r"error: cannot read image .*/all_truncated/00\d\.png: .+", e) for e in errors
    ), errors
    assert snapshot(dataset.split(":")[1], dataset.split(":")[2]) == before


def test_torchrun_error_on_one_process_ends_every_process_in_one_line(data, tmp_path):
    """Under torchrun (2 processes) one image is truncated, so one process fails on it while
    the other waits for it in a collective: the first names the image, the second says it
    stopped because a process of the run ended, neither prints gloo's traceback."""

    def corrupt(image_dir, coco):
        _truncate(os.path.join(image_dir, "002.png"), 60)

    dataset = copy_split(data, "one_truncated", corrupt)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            TRAIN_NET,
            "--config-file",
            data["config"],
            "--skip-test",
            "OUTPUT_DIR",
            str(tmp_path / "out"),
            "DATASETS.TRAIN",
            f"('{dataset}',)",
            "DATALOADER.NUM_WORKERS",
            "1",
        ],
        cwd=str(tmp_path),
        env=TOOL_ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    assert not re.search(r"\[rank\d\]: (Traceback|RuntimeError)", result.stderr), result.stderr[
        -3000:
    ]
    errors = sorted(line for line in result.stderr.splitlines() if line.startswith("error:"))
    assert len(errors) == 2, result.stderr[-3000:]
    assert re.fullmatch(r"error: cannot read image .*/one_truncated/002\.png: .+", errors[0])
    assert re.fullmatch(
        r"error: process [01] of 2 stopped: another process of the run has ended "
        r"\(its own error line says why\)",
        errors[1],
    )
