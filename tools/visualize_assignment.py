#!/usr/bin/env python
"""Show what PAA's anchor assignment does on training images.

    python tools/visualize_assignment.py --config-file F [--dataset NAME]
        [--images ID_OR_FILE,...] --output DIR [MODEL.WEIGHT W.pth] [KEY VALUE ...]

Runs the training loss evaluator (the same code as a training step, under SOLVER.AMP)
on each image, resized as in training at its largest scale and not flipped, and writes
DIR/<image>.png (the image, its GTs, each GT's candidate anchors coloured by score
with the positives outlined, and per GT the histogram of candidate scores with the
fitted mixture and the cut) and DIR/<image>.json (the numbers:
paa_core/visualization/assignment_view.py describes them). Without MODEL.WEIGHT the model has
its initial random weights (seeded by SEED): iteration 0 of training.
--images takes COCO image ids or file names of the dataset, comma- or space-separated
(default: its first two). The one-stage detector shows its head's assignment; a Faster
R-CNN with PAA in its RPN (MODEL.RPN.USE_PAA) its RPN's, whose anchor score is the
objectness BCE + L1 of the deltas.
"""

import json
import os
import re

import numpy as np
import torch

from paa_core.checkpoint.checkpoint import DetectronCheckpointer
from paa_core.config import get_cfg
from paa_core.config.loading import load_catalog, load_config
from paa_core.data.build import build_dataset
from paa_core.data.transforms import build_transforms
from paa_core.engine.cli import (
    InputError,
    check_config,
    make_parser,
    resolve_device,
    run_cli,
)
from paa_core.modeling.detector import build_detection_model
from paa_core.solver import make_amp_dtype
from paa_core.structures.image_list import to_image_list
from paa_core.utils.miscellaneous import refuse_overwriting_inputs
from paa_core.visualization.assignment_view import assignment_records, plot_assignment
from paa_core.visualization.plotting import PlottingUnavailable, pyplot


def pick_indices(dataset, wanted):
    """Dataset indices of `wanted` COCO image ids or file names (default: the first two)."""
    if not wanted:
        return list(range(min(2, len(dataset))))
    index_of_id = {img_id: i for i, img_id in enumerate(dataset.ids)}
    index_of_name = {}
    for i, img_id in enumerate(dataset.ids):
        name = dataset.coco.imgs[img_id]["file_name"]
        index_of_name[name] = index_of_name[os.path.basename(name)] = i
    indices = []
    for w in wanted:
        i = index_of_name.get(w, index_of_name.get(os.path.basename(w)))
        if i is None and w.isdigit():
            i = index_of_id.get(int(w))
        if i is None:
            raise InputError(
                f"--images: {w} is neither an image id nor a file name of the dataset "
                "(or the image has no usable box)"
            )
        indices.append(i)
    return indices


def split_images_and_opts(images, opts, config_keys):
    """--images takes "1,2" and "1 2"; from the first word that is a config key on (one of
    `config_keys`, e.g. MODEL, or under one: MODEL.WEIGHT) the words are config overrides
    that go back to `opts`. Returns (images, opts)."""
    if images is None:
        return None, opts
    words = [w for item in images for w in item.split(",") if w]
    for i, word in enumerate(words):
        if re.fullmatch(r"[A-Z][A-Z0-9_.]*", word) and word.split(".")[0] in config_keys:
            return words[:i], words[i:] + list(opts)
    return words, opts


def output_files(dataset, indices, output):
    """DIR/<image>.png and .json per image, refused if one would replace a file the tool reads."""
    stems = [
        os.path.join(
            output, os.path.splitext(os.path.basename(dataset.get_img_info(i)["file_name"]))[0]
        )
        for i in indices
    ]
    images = {
        os.path.join(dataset.root, dataset.get_img_info(i)["file_name"]): "a dataset image"
        for i in indices
    }
    refuse_overwriting_inputs(
        f"--output {output}", [s + ext for s in stems for ext in (".png", ".json")], images
    )
    return stems


def to_rgb(image, mean, std, to_bgr255):
    """The network input tensor [3, H, W] back to an H x W x 3 uint8 RGB array."""
    x = image * torch.tensor(std)[:, None, None] + torch.tensor(mean)[:, None, None]
    x = x.permute(1, 2, 0).numpy()
    x = x[..., ::-1] if to_bgr255 else x * 255
    return np.clip(x, 0, 255).astype(np.uint8)


def main():
    parser = make_parser("Draw PAA's anchor assignment on training images")
    parser.add_argument(
        "--dataset", default=None, help="a training dataset name (default: DATASETS.TRAIN[0])"
    )
    parser.add_argument(
        "--images",
        nargs="+",
        action="extend",
        default=None,
        metavar="ID_OR_FILE",
        help="image ids or file names, comma- or space-separated",
    )
    parser.add_argument("--output", required=True, help="folder for the PNG + JSON files")
    args = parser.parse_args()
    args.images, args.opts = split_images_and_opts(args.images, args.opts, set(get_cfg()))
    try:
        pyplot()  # fail before the model is built when matplotlib is missing
    except PlottingUnavailable as e:
        raise InputError(str(e)) from None
    cfg = get_cfg()
    load_config(cfg, args.config_file, args.opts)
    resolve_device(cfg)
    if not cfg.MODEL.PAA_ON and not cfg.MODEL.RPN.USE_PAA:
        raise InputError(
            f"{args.config_file}: MODEL.RPN.USE_PAA is False: this Faster R-CNN's RPN assigns "
            "anchors by IoU thresholds, there is no PAA assignment to draw"
        )
    if args.dataset:
        cfg.merge_from_list(["DATASETS.TRAIN", (args.dataset,)])
    check_config(cfg, ("TRAIN",))
    sizes = (
        cfg.INPUT.MIN_SIZE_RANGE_TRAIN
        if cfg.INPUT.MIN_SIZE_RANGE_TRAIN[0] > 0
        else cfg.INPUT.MIN_SIZE_TRAIN
    )
    cfg.merge_from_list(
        [
            "INPUT.MIN_SIZE_RANGE_TRAIN",
            (-1, -1),
            "INPUT.MIN_SIZE_TRAIN",
            (max(sizes),),
            "INPUT.HORIZONTAL_FLIP_PROB_TRAIN",
            0.0,
        ]
    )
    cfg.freeze()

    catalog = load_catalog(cfg).DatasetCatalog
    dataset = build_dataset(cfg.DATASETS.TRAIN[:1], build_transforms(cfg, True), catalog, True)[0]
    indices = pick_indices(dataset, args.images)
    categories = {
        dataset.json_category_id_to_contiguous_id[c]: n for c, n in dataset.categories.items()
    }
    stems = output_files(dataset, indices, args.output)

    torch.manual_seed(cfg.SEED)
    model = build_detection_model(cfg)
    device = torch.device(cfg.MODEL.DEVICE)
    model.to(device)
    weights = cfg.MODEL.WEIGHT
    if weights:
        DetectronCheckpointer(cfg, model).load(weights, use_latest=False)
    source = os.path.basename(weights) if weights else f"random weights (seed {cfg.SEED})"
    kind = "PAA" if cfg.MODEL.PAA_ON else "PAA RPN"

    os.makedirs(args.output, exist_ok=True)
    for idx, stem in zip(indices, stems):
        image, target, _ = dataset[idx]
        info = dataset.get_img_info(idx)
        images = to_image_list([image], cfg.DATALOADER.SIZE_DIVISIBILITY).to(device)
        record = assignment_records(
            model, images, [target.to(device)], categories, make_amp_dtype(cfg, device)
        )[0]
        record.update(
            image_id=info["id"],
            file_name=info["file_name"],
            weights=weights or None,
            dataset=cfg.DATASETS.TRAIN[0],
        )
        with open(stem + ".json", "w") as f:
            json.dump(record, f, indent=1)
        rgb = to_rgb(image, cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD, cfg.INPUT.TO_BGR255)
        plot_assignment(
            rgb, record, stem + ".png", f"{kind} assignment, {info['file_name']}, {source}"
        )
        print(
            f"{stem}.png  {stem}.json  ({len(record['gts'])} GTs, "
            f"{sum(g['num_positives'] for g in record['gts'])} positives)"
        )


if __name__ == "__main__":
    run_cli(main)
