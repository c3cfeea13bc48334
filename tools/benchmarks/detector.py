"""Whole-detector inference, float32: PAA R-50-FPN against torchvision's RetinaNet and FCOS
R-50-FPN built alike (tools/benchmarks/models.py), from normalised images to detections.

Both models prepare their inputs before the timer and pad them inside it. With random weights
every class probability sits near the head's 0.01 prior, so the usual 0.05 threshold would
leave post-processing nothing to do; the default `--score-thresh 0` makes every (location,
class) pair a candidate, so both keep their 1000 best per level and NMS sees thousands of
boxes. The counts of candidates entering NMS and of detections leaving it are printed per
image (from one more, untimed call). Target: PAA / RetinaNet <= 0.80 (the issue's, set for
one image 512x512 on 2 CPU threads).

Run with paa_core importable (`PYTHONPATH=.` from the repository root):
`python tools/benchmarks/detector.py [--device cuda] [--size 800 1333] [--images 1] [--repeats 9]`;
the target's setting is `--size 512 512 --threads 2`.
"""

import argparse
import functools

import torch
from common import (  # beside this script
    add_model_arguments,
    check,
    finish,
    median,
    setup,
    spread,
    target,
    time_calls,
)
from models import (
    DIRECT,
    build_fcos,
    build_paa_models,
    build_retinanet,
    check_input_shapes,
    direct_summary,
    make_inputs,
    watch_input_shapes,
)

BASELINES = {"RetinaNet": build_retinanet, "FCOS": build_fcos}
LIMITS = {"RetinaNet": 0.80}  # PAA / baseline time at most


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


def level_scores(head_outputs, image):
    """One image's class scores per level as torchvision's post-processing computes them:
    RetinaNet's sigmoid, FCOS's sqrt(sigmoid(class) * sigmoid(centerness))."""
    scores = [logits[image].sigmoid() for logits in head_outputs["cls_logits"]]
    if "bbox_ctrness" in head_outputs:
        centerness = [c[image].sigmoid() for c in head_outputs["bbox_ctrness"]]
        scores = [(s * c).sqrt() for s, c in zip(scores, centerness)]
    return scores


def torchvision_counts(model, images):
    """(candidates before NMS, detections after it) per image; the candidates of a level are
    its scores above the threshold, at most `topk_candidates` of them (torchvision's rule)."""
    counts = []
    postprocess = model.postprocess_detections

    def counting(head_outputs, anchors, image_sizes):
        detections = postprocess(head_outputs, anchors, image_sizes)
        for i, found in enumerate(detections):
            passing = [int((s > model.score_thresh).sum()) for s in level_scores(head_outputs, i)]
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
    models = {name: m.eval() for name, m in build_paa_models(device, args.score_thresh).items()}
    paa_names = list(models)
    models.update({b: build(device, args.score_thresh).eval() for b, build in BASELINES.items()})
    shapes = watch_input_shapes(models)
    with torch.no_grad():
        calls = {name: functools.partial(models[name], paa_images) for name in paa_names}
        calls.update({b: functools.partial(models[b], tv_images) for b in BASELINES})
        times, outputs = time_calls(calls, args.repeats, device, clock=args.clock)
        counts = {"PAA": paa_counts(models["PAA"], paa_images)}
        counts.update({b: torchvision_counts(models[b], tv_images) for b in BASELINES})
    ratios = {b: median(times["PAA"]) / median(times[b]) for b in BASELINES}
    print(
        f"detector inference float32, {n} image(s) {h}x{w} per call, score threshold "
        f"{args.score_thresh:g}: PAA R-50-FPN {spread(times['PAA'])}, "
        + ", ".join(f"torchvision {b} R-50-FPN {spread(times[b])}" for b in BASELINES)
        + "; ratios "
        + ", ".join(f"PAA/{b} {r:.3f}" for b, r in ratios.items())
        + direct_summary(times),
        flush=True,
    )
    for name, per_image in counts.items():
        print(f"{name}: (candidates before NMS, detections after) per image: {per_image}")
    for base, limit in LIMITS.items():
        target(f"detector inference float32, PAA/{base}", ratios[base], "<=", limit)

    check_input_shapes("detector input shapes", shapes)
    found = [(r.bbox, r.get_field("scores")) for r in outputs["PAA"]]
    found += [(r["boxes"], r["scores"]) for b in BASELINES for r in outputs[b]]
    finite = all(bool(t.isfinite().all()) for pair in found for t in pair)
    check(finite, "detector outputs", f"boxes and scores of all models finite: {finite}")
    if DIRECT in outputs:
        ours, direct = (torch.cat([r.get_field("scores") for r in outputs[m]]) for m in paa_names)
        same = len(ours) == len(direct)
        gap = float((ours.sort().values - direct.sort().values).abs().max()) if same else 1.0
        check(
            gap <= 1e-4,
            "detector scores, PAA with and without Winograd convolutions",
            f"{len(ours)} and {len(direct)} detections, largest score difference {gap:.2g}",
        )
    finish("detector.py")


if __name__ == "__main__":
    main()
