"""Whole-detector inference, float32: PAA R-50-FPN against torchvision's RetinaNet R-50-FPN
built alike (tools/benchmarks/models.py), from normalised images to detections.

Both models prepare their inputs before the timer and pad them inside it. With random weights
every class probability sits near the head's 0.01 prior, so the usual 0.05 threshold would
leave post-processing nothing to do; the default `--score-thresh 0` makes every (location,
class) pair a candidate, so both keep their 1000 best per level and NMS sees thousands of
boxes. The counts of candidates entering NMS and of detections leaving it are printed per
image (from one more, untimed call).

Run with paa_core importable (`PYTHONPATH=.` from the repository root):
`python tools/benchmarks/detector.py [--device cuda] [--size 800 1333] [--images 1] [--repeats 9]`.
"""

import argparse

import torch
from common import (  # beside this script
    add_model_arguments,
    check,
    finish,
    median,
    setup,
    spread,
    time_calls,
)
from models import build_paa, build_retinanet, check_input_shapes, make_inputs, watch_input_shapes


def paa_counts(model, images):
    """(candidates before NMS, detections after it) per image."""
    selector = model.rpn.box_selector_test
    counts = []

    def select(candidates):
        detections = type(selector).select_over_all_levels(selector, candidates)
        counts.append((len(candidates), len(detections)))
        return detections

    selector.select_over_all_levels = select
    try:
        model(images)
    finally:
        del selector.select_over_all_levels  # back to the class's method
    return counts


def retinanet_counts(model, images):
    """(candidates before NMS, detections after it) per image; the candidates of a level are
    its scores above the threshold, at most `topk_candidates` of them (torchvision's rule)."""
    counts = []
    postprocess = model.postprocess_detections

    def counting(head_outputs, anchors, image_sizes):
        detections = postprocess(head_outputs, anchors, image_sizes)
        for i, found in enumerate(detections):
            passing = [
                int((logits[i].sigmoid() > model.score_thresh).sum())
                for logits in head_outputs["cls_logits"]
            ]
            counts.append(
                (sum(min(n, model.topk_candidates) for n in passing), len(found["boxes"]))
            )
        return detections

    model.postprocess_detections = counting
    try:
        model(images)
    finally:
        del model.postprocess_detections
    return counts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser, images=1, per="forward call")
    parser.add_argument("--score-thresh", type=float, default=0.0)
    parser.add_argument("--repeats", type=int, default=9, help="timed calls of each model")
    args = parser.parse_args(argv)
    device = setup("detector.py", args)
    (h, w), n = args.size, args.images
    paa_images, _, tv_images, _ = make_inputs(n, h, w, device)
    paa = build_paa(device, args.score_thresh).eval()
    retinanet = build_retinanet(device, args.score_thresh).eval()
    shapes = watch_input_shapes({"PAA": paa, "RetinaNet": retinanet})
    with torch.no_grad():
        calls = {"PAA": lambda: paa(paa_images), "RetinaNet": lambda: retinanet(tv_images)}
        times, outputs = time_calls(calls, args.repeats, device)
        counts = {
            "PAA": paa_counts(paa, paa_images),
            "RetinaNet": retinanet_counts(retinanet, tv_images),
        }
    ours, theirs = times["PAA"], times["RetinaNet"]
    print(
        f"detector inference float32, {n} image(s) {h}x{w} per call, score threshold "
        f"{args.score_thresh:g}: PAA R-50-FPN {spread(ours)}, torchvision RetinaNet R-50-FPN "
        f"{spread(theirs)}, ratio {median(ours) / median(theirs):.3f}",
        flush=True,
    )
    for name, per_image in counts.items():
        print(f"{name}: (candidates before NMS, detections after) per image: {per_image}")

    check_input_shapes("detector input shapes", shapes)
    found = [(r.bbox, r.get_field("scores")) for r in outputs["PAA"]]
    found += [(r["boxes"], r["scores"]) for r in outputs["RetinaNet"]]
    finite = all(bool(t.isfinite().all()) for pair in found for t in pair)
    check(finite, "detector outputs", f"boxes and scores of both models finite: {finite}")
    finish("detector.py")


if __name__ == "__main__":
    main()
