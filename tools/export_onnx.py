"""Export a PAA detector (configs without DCN) to ONNX.

    python tools/export_onnx.py --config-file configs/paa/paa_quick_shapes.yaml \
        MODEL.WEIGHT output/paa_quick_shapes/model_final.pth --output paa.onnx

The graph takes one image [1, 3, H, W] already resized, normalised and padded as the
config's test transforms do (`--size H W`, default the config's test size rounded up to
DATALOADER.SIZE_DIVISIBILITY) and returns boxes [K, 4] (xyxy, input pixels), scores [K] and
labels [K] (1..C). Everything after preprocessing is in the graph: backbone, FPN, head,
box decoding, score threshold, per-level top-k, class-wise NMS (ONNX NonMaxSuppression),
the detections cap and score voting. Deformable convolutions have no ONNX translation here,
so configs with DCN are refused, and so is the two-stage Faster R-CNN (MODEL.PAA_ON False):
its proposal NMS (torchvision's batched_nms) and ROIAlign pooling have none either. An
--output that is the checkpoint or config it reads is refused before anything is written.
"""

import argparse
import math

import torch
from onnxscript import opset18 as op

from paa_core.checkpoint.checkpoint import DetectronCheckpointer
from paa_core.config import cfg as default_cfg
from paa_core.config.loading import load_config
from paa_core.engine.cli import InputError, run_cli
from paa_core.modeling.detector import build_detection_model
from paa_core.modeling.detector.export import DetectionsAsTensors
from paa_core.utils.miscellaneous import refuse_overwriting_inputs


def ml_nms_onnx(dets, scores, labels, iou_threshold: float, offset: float = 1.0):
    """paa_core::ml_nms in ONNX operators: indices of the kept boxes by descending score.

    NonMaxSuppression suppresses at IoU > threshold with widths x2 - x1, so the boxes get
    `offset` added to x2 and y2 (IoU with widths x2 - x1 + offset), and each label becomes
    one NMS class: a box scores -1 (below the score threshold) in every other class.
    """
    boxes = op.Concat(
        op.Slice(dets, [0], [2], [1]),
        op.Add(op.Slice(dets, [2], [4], [1]), op.CastLike(offset, dets)),
        axis=1,
    )
    labels = op.Cast(labels, to=7)  # int64
    num_classes = op.Add(
        op.ReduceMax(op.Concat(labels, op.Constant(value_ints=[0]), axis=0), keepdims=1), 1
    )
    classes = op.Range(op.Constant(value_int=0), op.Squeeze(num_classes), op.Constant(value_int=1))
    same = op.Equal(op.Unsqueeze(classes, [1]), op.Unsqueeze(labels, [0]))  # [C, N]
    class_scores = op.Where(same, op.Unsqueeze(scores, [0]), op.CastLike(-1.0, scores))
    num_boxes = op.Shape(dets, start=0, end=1)
    selected = op.NonMaxSuppression(
        op.Unsqueeze(boxes, [0]),
        op.Unsqueeze(class_scores, [0]),
        num_boxes,
        op.Constant(value_floats=[iou_threshold]),
        op.Constant(value_floats=[-0.5]),
    )
    keep = op.Gather(selected, op.Constant(value_int=2), axis=1)  # [K] box indices
    _, order = op.TopK(op.Gather(scores, keep), op.Shape(keep), axis=0, largest=1, sorted=1)
    return op.Gather(keep, order)


def check_exportable(cfg):
    """One-line InputError for a Faster R-CNN config or one with deformable convolutions."""
    if not cfg.MODEL.PAA_ON:
        raise InputError(
            "export_onnx: the config is a Faster R-CNN (MODEL.PAA_ON False); only the one-stage "
            "PAA detector exports: the RPN's proposal NMS (torchvision batched_nms) and the box "
            "head's ROIAlign have no ONNX translation here"
        )
    if any(cfg.MODEL.RESNETS.STAGE_WITH_DCN) or cfg.MODEL.PAA.USE_DCN_IN_TOWER:
        raise InputError(
            "export_onnx: the config uses deformable convolution (MODEL.RESNETS.STAGE_WITH_DCN / "
            "MODEL.PAA.USE_DCN_IN_TOWER), which has no ONNX operator translation here; "
            "export a config without DCN"
        )


def input_size(cfg, size=None):
    """(H, W) of the exported graph's input."""
    if size is None:
        size = (cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
    div = max(cfg.DATALOADER.SIZE_DIVISIBILITY, 1)
    return tuple(int(math.ceil(s / div) * div) for s in size)


def export_onnx(cfg, model, output, size=None):
    """Write `model` (a detector built from `cfg`, weights loaded) to `output` as ONNX."""
    check_exportable(cfg)
    height, width = input_size(cfg, size)
    example = torch.zeros(1, 3, height, width)
    program = torch.onnx.export(
        DetectionsAsTensors(model).cpu(),
        (example,),
        dynamo=True,
        optimize=True,
        input_names=["images"],
        output_names=["boxes", "scores", "labels"],
        custom_translation_table={torch.ops.paa_core.ml_nms.default: ml_nms_onnx},
    )
    program.save(output)
    return output


def main(argv=None):
    parser = argparse.ArgumentParser(description="Export a PAA detector to ONNX")
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument(
        "--output", default="paa.onnx", help="ONNX file to write (default paa.onnx)"
    )
    parser.add_argument(
        "--size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        default=None,
        help="input height and width (default: the config's test size)",
    )
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, help="config overrides, e.g. MODEL.WEIGHT W"
    )
    args = parser.parse_args(argv)
    cfg = default_cfg.clone()
    load_config(cfg, args.config_file, args.opts)
    cfg.MODEL.DEVICE = "cpu"
    refuse_overwriting_inputs(
        f"--output {args.output}",
        [args.output],
        {
            cfg.MODEL.WEIGHT: "the checkpoint it exports (MODEL.WEIGHT)",
            args.config_file: "its config file",
        },
    )
    check_exportable(cfg)
    model = build_detection_model(cfg)
    DetectronCheckpointer(cfg, model).load(cfg.MODEL.WEIGHT, use_latest=False)
    print(f"wrote {export_onnx(cfg, model, args.output, args.size)}")


if __name__ == "__main__":
    run_cli(main)
