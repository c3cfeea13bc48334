"""COCO files as converters and labelling tools write them: fields left out, repeated or
filled oddly are completed or refused in one line at load time, and evaluation reports
what pycocotools computes on a valid file (docs/DATA.md). The last tests run the tools."""

import contextlib
import copy
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from helpers import TEST_NET, TOOL_ENV, TRAIN_NET, run_tool, write_split, write_tiny_config
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from paa_core.data.build import build_dataset
from paa_core.data.datasets import COCODataset
from paa_core.data.datasets.evaluation import evaluate
from paa_core.structures.bounding_box import BoxList
from paa_core.utils.errors import InputError

# Three 60 x 40 images, their boxes as (annotation id, image id, category id, xywh);
# annotations as converters leave them: no segmentation.
BOXES = [(1, 1, 1, [5, 5, 20, 10]), (2, 2, 2, [10, 10, 30, 20]), (3, 3, 1, [30, 5, 20, 30])]
BASE = {
    "images": [{"id": i, "file_name": f"{i}.png", "width": 60, "height": 40} for i in (1, 2, 3)],
    "annotations": [
        {"id": i, "image_id": m, "category_id": c, "bbox": b, "area": b[2] * b[3], "iscrowd": 0}
        for i, m, c, b in BOXES
    ],
    "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
}


def write(root, change=None):
    """The images and BASE changed by `change(dict)` under `root`: (ann_file, image dir)."""
    os.makedirs(root / "img", exist_ok=True)
    for i in (1, 2, 3):
        cv2.imwrite(str(root / "img" / f"{i}.png"), np.full((40, 60, 3), 50 * i, np.uint8))
    data = copy.deepcopy(BASE)
    if change:
        change(data)
    (root / "a.json").write_text(json.dumps(data))
    return str(root / "a.json"), str(root / "img")


def load(root, change=None, train=False):
    return COCODataset(*write(root, change), remove_images_without_annotations=train)


def refused(root, change):
    """The message of the InputError that loading BASE changed by `change` raises."""
    with pytest.raises(InputError) as e:
        load(root, change)
    assert "\n" not in str(e.value)
    return str(e.value).replace(str(root / "a.json"), "a.json")


def detections(ds, records):
    """One BoxList per dataset index in the original frame from COCO result records."""
    preds = []
    for idx in range(len(ds)):
        info = ds.get_img_info(idx)
        mine = [r for r in records if r["image_id"] == ds.id_to_img_map[idx]]
        xywh = torch.tensor([r["bbox"] for r in mine], dtype=torch.float32).reshape(-1, 4)
        boxes = BoxList(xywh, (info["width"], info["height"]), "xywh").convert("xyxy")
        boxes.add_field("scores", torch.tensor([r["score"] for r in mine]))
        labels = [ds.json_category_id_to_contiguous_id[r["category_id"]] for r in mine]
        boxes.add_field("labels", torch.tensor(labels, dtype=torch.int64))
        preds.append(boxes)
    return preds


def gt_records(ds, score=0.9):
    """Perfect detections: one result record per non-crowd annotation."""
    return [
        {
            "image_id": a["image_id"],
            "category_id": a["category_id"],
            "bbox": a["bbox"],
            "score": score,
        }
        for a in ds.coco.dataset["annotations"]
        if not a["iscrowd"]
    ]


def paa_stats(ds, records, out):
    with contextlib.redirect_stdout(io.StringIO()):
        return evaluate(ds, detections(ds, records), str(out))["bbox"]


def pycocotools_stats(ann_file, records):
    """COCOeval run directly on a file pycocotools can read (the independent oracle)."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(ann_file)
        ev = COCOeval(gt, gt.loadRes(records), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return dict(zip(("AP", "AP50", "AP75", "APs", "APm", "APl"), ev.stats[:6]))


# --------------------------------------------------------------------- fields left out
def test_missing_area_is_the_box_area_which_the_size_ranges_read(tmp_path, caplog):
    """Before: KeyError 'area' in COCOeval. The 10 x 10 box is small, the 40 x 40 medium:
    missing only the small one gives APs 0, APm 1."""

    def no_area(d):
        d["images"] = d["images"][:2]
        d["annotations"] = d["annotations"][:2]
        d["annotations"][0]["bbox"] = [5, 5, 10, 10]
        d["annotations"][1]["bbox"] = [10, 0, 40, 40]
        for a in d["annotations"]:
            del a["area"]

    with caplog.at_level(logging.WARNING, logger="paa_core.data"):
        ds = load(tmp_path, no_area)
    assert [a["area"] for a in ds.coco.dataset["annotations"]] == [100.0, 1600.0]
    assert "2 annotation(s) have no area: their bbox width x height is used" in caplog.text
    stats = paa_stats(ds, gt_records(ds)[1:], tmp_path)
    assert (stats["APs"], stats["APm"], stats["APl"]) == pytest.approx((0.0, 1.0, -1.0))
    assert stats["AP"] == pytest.approx(0.5)


def test_iscrowd_missing_null_or_bool(tmp_path):
    """Before: KeyError 'iscrowd' in COCOeval when missing. A crowd box is no training target,
    and a detection on it is no false positive."""

    def crowds(d):
        d["annotations"][0].pop("iscrowd")
        d["annotations"][1]["iscrowd"] = None
        d["annotations"][2]["iscrowd"] = False
        d["annotations"].append(
            {"id": 4, "image_id": 1, "category_id": 1, "bbox": [30, 10, 25, 25], "iscrowd": True}
        )

    ds = load(tmp_path, crowds)
    assert [a["iscrowd"] for a in ds.coco.dataset["annotations"]] == [0, 0, 0, 1]
    assert all(type(a["iscrowd"]) is int for a in ds.coco.dataset["annotations"])
    torch.testing.assert_close(ds[0][1].bbox, torch.tensor([[5.0, 5.0, 24.0, 14.0]]))
    on_crowd = {"image_id": 1, "category_id": 1, "bbox": [30, 10, 25, 25], "score": 0.99}
    assert paa_stats(ds, gt_records(ds) + [on_crowd], tmp_path)["AP"] == pytest.approx(1.0)


def test_iscrowd_other_than_0_or_1_and_area_not_a_number_are_refused(tmp_path):
    assert refused(tmp_path, lambda d: d["annotations"][1].update(iscrowd="0")) == (
        "a.json: annotation 2: iscrowd must be 0 or 1, got '0'"
    )
    assert refused(tmp_path, lambda d: d["annotations"][2].update(area="big")) == (
        "a.json: annotation 3: area 'big' is not a number >= 0"
    )


def test_missing_width_height_are_read_from_the_files(tmp_path, caplog):
    """Before: KeyError 'width' when batching by aspect ratio and in evaluation."""

    def no_size(d):
        for img in d["images"]:
            del img["width"], img["height"]

    with caplog.at_level(logging.INFO, logger="paa_core.data"):
        ds = load(tmp_path, no_size)
    assert [(i["width"], i["height"]) for i in ds.coco.dataset["images"]] == [(60, 40)] * 3
    assert "3 image(s) have no width/height: read from their files" in caplog.text
    assert paa_stats(ds, gt_records(ds), tmp_path)["AP"] == pytest.approx(1.0)


def test_file_names_with_subfolders_and_windows_separators(tmp_path):
    """Before: sub\\2.png was not found."""
    os.makedirs(tmp_path / "img" / "sub")

    def moved(d):
        d["images"][0]["file_name"] = "sub/1.png"
        d["images"][1]["file_name"] = "sub\\2.png"
        d["images"][2]["file_name"] = str(tmp_path / "img" / "3.png")  # absolute: as it is

    ann_file, img_dir = write(tmp_path, moved)
    for i in (1, 2):
        os.replace(os.path.join(img_dir, f"{i}.png"), os.path.join(img_dir, "sub", f"{i}.png"))
    ds = COCODataset(ann_file, img_dir, False)
    assert ds.get_img_info(1)["file_name"] == "sub/2.png"
    assert [np.asarray(ds[i][0])[0, 0, 0] for i in range(3)] == [50, 100, 150]


def test_byte_order_mark_and_top_level_list(tmp_path):
    ann_file, img_dir = write(tmp_path)
    with open(ann_file, encoding="utf-8") as f:
        text = f.read()
    with open(ann_file, "w", encoding="utf-8-sig") as f:  # as Windows tools may write it
        f.write(text)
    assert len(COCODataset(ann_file, img_dir, False)) == 3
    (tmp_path / "tasks.json").write_text("[]")  # e.g. a labelling tool's own json export
    with pytest.raises(InputError) as e:
        COCODataset(str(tmp_path / "tasks.json"), img_dir, False)
    assert str(e.value) == (
        f"{tmp_path / 'tasks.json'}: not a COCO annotation file: its top level is a list, "
        'not an object with "images", "annotations" and "categories"'
    )


# ------------------------------------------------------------------- ids and references
def test_annotation_ids_of_zero_or_repeated_are_renumbered(tmp_path, caplog):
    """pycocotools on such a file scores perfect detections below 1 (id 0 reads as "no
    match", a repeated id hides annotations); paa_core renumbers them and scores 1."""
    for name, ids, raw_ap in (("zero", [0, 1, 2], 0.6262), ("repeated", [7, 7, 7], 0.1683)):
        root = tmp_path / name
        with caplog.at_level(logging.WARNING, logger="paa_core.data"):
            ds = load(
                root, lambda d, ids=ids: [a.update(id=i) for a, i in zip(d["annotations"], ids)]
            )
        assert [a["id"] for a in ds.coco.dataset["annotations"]] == [1, 2, 3]
        records = gt_records(ds)
        assert paa_stats(ds, records, root)["AP"] == pytest.approx(1.0)
        assert pycocotools_stats(str(root / "a.json"), records)["AP"] == pytest.approx(
            raw_ap, abs=1e-4
        )
    assert "annotation ids are not unique positive integers" in caplog.text


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda d: d["images"][1].update(id=1),
            "a.json: image id 1 is used twice, by '1.png' and '2.png'",
        ),
        (
            lambda d: d["annotations"][0].update(image_id=99),
            "a.json: annotation 1 has image_id 99, which is not in its images",
        ),
        (
            lambda d: d["annotations"][0].update(image_id="1"),
            "a.json: annotation 1 has image_id '1', which is not in its images",
        ),
        (
            lambda d: d["annotations"][0].update(category_id=[1]),
            "a.json: annotation 1 has category_id [1], which is not in its categories",
        ),
        (
            lambda d: [img.update(id=str(img["id"])) for img in d["images"]],
            'a.json: images[0] has no integer "id"',
        ),
        (lambda d: d["images"][2].pop("file_name"), 'a.json: image 3 has no "file_name"'),
        (
            lambda d: d["images"][2].update(width="60"),
            "a.json: image 3 (3.png): width and height must be positive whole numbers, "
            "got '60' x 40",
        ),
    ],
    ids=[
        "image id twice",
        "no such image",
        "image_id a string",
        "category_id a list",
        "image ids strings",
        "no file_name",
        "width a string",
    ],
)
def test_image_ids_and_references(tmp_path, change, message):
    """Before: a repeated image id or an annotation of no image was silently dropped, string
    ids left every image without boxes, a missing file_name was a KeyError."""
    assert refused(tmp_path, change) == message


# --------------------------------------------------------------------------- categories
def test_zero_based_gapped_category_ids_round_trip(tmp_path):
    """Category ids 0, 5, 2 train as labels 1..3 in id order and come back in bbox.json."""

    def ids(d):
        d["categories"] = [{"id": 0, "name": "a"}, {"id": 5, "name": "b"}, {"id": 2, "name": "c"}]
        for a, c in zip(d["annotations"], (0, 5, 2)):
            a["category_id"] = c

    ds = load(tmp_path, ids)
    assert ds.json_category_id_to_contiguous_id == {0: 1, 2: 2, 5: 3}
    assert [ds[i][1].get_field("labels").tolist() for i in range(3)] == [[1], [3], [2]]
    assert paa_stats(ds, gt_records(ds), tmp_path)["AP"] == pytest.approx(1.0)
    written = json.loads((tmp_path / "bbox.json").read_text())
    assert [r["category_id"] for r in written] == [0, 5, 2]


def test_categories_missing_empty_or_conflicting(tmp_path, caplog):
    assert refused(tmp_path / "1", lambda d: d.pop("categories")) == (
        'a.json: not a COCO annotation file: "categories" is missing'
    )
    assert refused(tmp_path / "2", lambda d: d.update(categories=[])) == (
        'a.json: no categories: list them as "categories": [{"id", "name"}]'
    )
    assert refused(tmp_path / "3", lambda d: d["categories"].append({"id": 1, "name": "z"})) == (
        "a.json: category id 1 is listed twice, as 'a' and 'z'"
    )
    assert refused(tmp_path / "4", lambda d: d["categories"].append({"name": "z"})) == (
        'a.json: categories[2] needs an integer "id" and a "name"'
    )
    # the same entry twice is one category; one name for two ids is two classes, said so
    with caplog.at_level(logging.WARNING, logger="paa_core.data"):
        ds = load(tmp_path / "5", lambda d: d["categories"].append({"id": 2, "name": "b"}))
        assert ds.categories == {1: "a", 2: "b"}
        ds = load(tmp_path / "6", lambda d: d["categories"].append({"id": 4, "name": "a"}))
    assert ds.categories == {1: "a", 2: "b", 4: "a"}
    assert "categories [1, 4] are all named 'a'" in caplog.text


def test_unused_category_and_its_detections_leave_ap_alone(tmp_path):
    """pycocotools averages over the categories that have ground truth: a category no image
    shows (and the false positives predicted for it) does not count."""
    ds = load(tmp_path, lambda d: d["categories"].append({"id": 9, "name": "unused"}))
    assert ds.json_category_id_to_contiguous_id == {1: 1, 2: 2, 9: 3}
    fp = {"image_id": 1, "category_id": 9, "bbox": [40, 20, 10, 10], "score": 0.99}
    stats = paa_stats(ds, gt_records(ds) + [fp], tmp_path)
    assert stats["AP"] == pytest.approx(1.0)
    assert stats == pytest.approx(
        pycocotools_stats(str(tmp_path / "a.json"), gt_records(ds) + [fp])
    )


# -------------------------------------------------------------------------------- boxes
@pytest.mark.parametrize(
    "bbox",
    [[float("nan"), 10, 5, 5], ["10", "10", "5", "5"], None, [1, 2, 3], "missing"],
    ids=["nan", "strings", "null", "three numbers", "missing"],
)
def test_bbox_that_is_not_four_numbers_is_refused(tmp_path, bbox):
    """Before: NaN boxes silently vanished, the others were tracebacks."""

    def change(d):
        if bbox == "missing":
            del d["annotations"][1]["bbox"]
        else:
            d["annotations"][1]["bbox"] = bbox

    shown = "None" if bbox == "missing" else repr(bbox)
    assert refused(tmp_path, change) == (
        f"a.json: annotation 2: bbox {shown} is not four finite numbers [x, y, width, height]"
    )


def test_negative_or_off_image_boxes_are_refused(tmp_path):
    """Before: silently dropped from training and counted as missed by evaluation."""
    assert refused(
        tmp_path / "1", lambda d: d["annotations"][1].update(bbox=[40, 30, -30, -20])
    ) == (
        "a.json: annotation 2: bbox [40, 30, -30, -20] has a negative width or height "
        "(1 annotation(s) do): COCO boxes are [x, y, width, height] from the top-left corner"
    )
    assert refused(tmp_path / "2", lambda d: d["annotations"][1].update(bbox=[60, 0, 10, 10])) == (
        "a.json: annotation 2: bbox [60, 0, 10, 10] lies outside its image 2.png (60x40); "
        "1 annotation(s) do"
    )


def test_box_partly_outside_is_clipped_for_training(tmp_path):
    ds = load(tmp_path, lambda d: d["annotations"][1].update(bbox=[50, 30, 30, 30]), train=True)
    torch.testing.assert_close(ds[1][1].bbox, torch.tensor([[50.0, 30.0, 59.0, 39.0]]))


def test_zero_size_box_is_warned_of_and_scored_as_pycocotools_does(tmp_path, caplog):
    """COCO train2017 has two such boxes: no training target, a miss for evaluation."""
    with caplog.at_level(logging.WARNING, logger="paa_core.data"):
        ds = load(tmp_path, lambda d: d["annotations"][1].update(bbox=[10, 10, 0, 20]), train=True)
    assert "1 annotation(s) have a zero width or height (the first: annotation 2)" in caplog.text
    assert ds.ids == [1, 3]
    ds = COCODataset(str(tmp_path / "a.json"), str(tmp_path / "img"), False)
    records = gt_records(ds)
    stats = paa_stats(ds, records, tmp_path)
    assert stats == pytest.approx(pycocotools_stats(str(tmp_path / "a.json"), records))


# ------------------------------------------------------------------------ evaluation
def test_images_without_annotations_count_their_false_positives(tmp_path):
    """Image 3 has no annotation: it is evaluated, and a confident box on it costs AP."""
    ds = load(tmp_path, lambda d: d["annotations"].pop())
    assert ds.ids == [1, 2, 3] and len(ds[2][1]) == 0
    fp = {"image_id": 3, "category_id": 1, "bbox": [30, 5, 20, 30], "score": 0.99}
    records = gt_records(ds) + [fp]
    stats = paa_stats(ds, records, tmp_path)
    assert stats["AP"] == pytest.approx(0.75, abs=0.01)
    assert stats == pytest.approx(pycocotools_stats(str(tmp_path / "a.json"), records))
    assert {r["image_id"] for r in json.loads((tmp_path / "bbox.json").read_text())} == {1, 2, 3}


class Catalog:
    """A dataset catalog that knows one name."""

    def __init__(self, ann_file, img_dir):
        self.args = {"ann_file": ann_file, "root": img_dir}

    def get(self, name):
        return {"args": self.args}


def test_empty_test_set_is_refused_and_one_without_annotations_warned_of(tmp_path, caplog):
    """Before: test_net printed a table of n/a and exited 0."""
    catalog = Catalog(*write(tmp_path / "1", lambda d: d.update(images=[], annotations=[])))
    with pytest.raises(InputError) as e:
        build_dataset(["mine_val"], None, catalog, is_train=False)
    assert str(e.value) == "DATASETS.TEST: mine_val: it lists no images: nothing to evaluate"
    catalog = Catalog(*write(tmp_path / "2", lambda d: d.pop("annotations")))
    with caplog.at_level(logging.WARNING, logger="paa_core.data"):
        (ds,) = build_dataset(["mine_val"], None, catalog, is_train=False)
    assert len(ds) == 3
    assert "DATASETS.TEST: mine_val has no annotations: its detections are written" in caplog.text


# ------------------------------------------------------------------------------ tools
def converter_export(root):
    """The tiny training split as a converter might export it: 16-bit PNGs, a camera JPEG
    rotated by its EXIF tag and annotated upright, 0-based gapped category ids, annotation
    ids from 0, no area, iscrowd as booleans; returns its dataset name."""
    name = write_split(str(root), "export", 8, 0)
    image_dir, ann_file = name.split(":")[1:]
    data = json.load(open(ann_file))
    for img in data["images"][:4]:
        path = os.path.join(image_dir, img["file_name"])
        pixels = cv2.imread(path)[:, :, ::-1]
        Image.fromarray(pixels[:, :, 0].astype(np.uint16) * 257).save(path)  # red, 16 bits
    first = data["images"][4]
    exif = Image.Exif()
    exif[0x0112] = 8  # stored turned 90 degrees clockwise; upright = turned back
    stored = np.ascontiguousarray(
        np.rot90(cv2.imread(os.path.join(image_dir, first["file_name"]))[:, :, ::-1], -1)
    )
    first["file_name"] = "camera.jpg"
    Image.fromarray(stored).save(os.path.join(image_dir, "camera.jpg"), exif=exif, quality=95)
    data["categories"] = [{"id": 0, "name": "red"}, {"id": 7, "name": "blue"}]
    for i, ann in enumerate(data["annotations"]):
        ann.update(id=i, category_id={1: 0, 2: 7}[ann["category_id"]], iscrowd=False)
        del ann["area"]
    json.dump(data, open(ann_file, "w"))
    return name


def finish(proc):
    """The stderr of `proc` once it ended; one still running after 120 s is killed (it hung)."""
    try:
        return proc.communicate(timeout=120)[1]
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two iterations of train_net (a DataLoader worker) and its evaluation on the export,
    scoring low enough that the barely trained model returns boxes."""
    root = tmp_path_factory.mktemp("export")
    name = converter_export(root)
    config = write_tiny_config(str(root / "tiny.yaml"), name, name)
    out = root / "out"
    opts = ["OUTPUT_DIR", str(out), "DATALOADER.NUM_WORKERS", "1"]
    opts += ["MODEL.PAA.INFERENCE_TH", "0.001"]
    result = run_tool([sys.executable, TRAIN_NET, "--config-file", config] + opts, str(root))
    assert result.returncode == 0, result.stderr[-3000:]
    return {"root": root, "config": config, "out": out, "log": result.stdout}


@pytest.mark.slow
def test_tools_train_and_evaluate_a_converter_export(trained):
    assert "annotation ids are not unique positive integers" in trained["log"]
    assert "annotation(s) have no area: their bbox width x height is used" in trained["log"]
    written = json.loads((trained["out"] / "inference" / "tiny_export" / "bbox.json").read_text())
    assert written and {r["category_id"] for r in written} <= {0, 7}
    assert {r["image_id"] for r in written} <= set(range(1, 9))


def _no_images(data, image_dir):
    data.update(images=[], annotations=[])


def _negative_height(data, image_dir):
    data["annotations"][2]["bbox"][3] = -4.0


def _float_image(data, image_dir):
    pixels = np.zeros((64, 64), np.float32)
    Image.fromarray(pixels).save(os.path.join(image_dir, "000.png"), format="TIFF")


# name -> (change to the export's json and images, regex of the error line)
BROKEN = {
    "empty": (
        _no_images,
        r"error: DATASETS\.TEST: empty:.*: it lists no images: nothing to evaluate",
    ),
    "negative": (
        _negative_height,
        r"error: .*negative\.json: annotation 2: bbox \[.*, -4\.0\] has a negative width or "
        r"height \(1 annotation\(s\) do\): COCO boxes are \[x, y, width, height\] .*",
    ),
    "float": (
        _float_image,
        r"error: cannot read image .*/float/000\.png: its pixels are 32-bit or floating-point "
        r"\(F\), which have no fixed range: save it with 8 or 16 bits per channel",
    ),
}


@pytest.mark.slow
def test_tools_end_bad_user_data_in_one_line(trained, tmp_path):
    """test_net on broken copies of the export: one `error:` line each, exit code 1; the
    unreadable image is read in DataLoader workers (before, the tool then waited forever for
    them at exit)."""
    data = json.load(open(trained["root"] / "export.json"))
    procs = {}
    for name, (change, _) in BROKEN.items():
        image_dir, ann_file = tmp_path / name, tmp_path / f"{name}.json"
        shutil.copytree(trained["root"] / "export", image_dir)
        broken = copy.deepcopy(data)
        change(broken, image_dir)
        ann_file.write_text(json.dumps(broken))
        args = [TEST_NET, "--config-file", trained["config"], "--ckpt"]
        args += [str(trained["out"] / "model_final.pth"), "OUTPUT_DIR", str(tmp_path / name)]
        args += ["DATASETS.TEST", f"('{name}:{image_dir}:{ann_file}',)"]
        procs[name] = subprocess.Popen(
            [sys.executable] + args + ["DATALOADER.NUM_WORKERS", "2"],
            env=TOOL_ENV,
            text=True,
            cwd=str(tmp_path),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
    for name, proc in procs.items():
        stderr = finish(proc)
        assert proc.returncode == 1 and "Traceback" not in stderr, (name, stderr[-3000:])
        errors = [line for line in stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and stderr.strip().splitlines()[-1] == errors[0], stderr[-3000:]
        assert re.fullmatch(BROKEN[name][1], errors[0]), errors[0]
