import json
import os
import random

import cv2
import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image
from torch.utils.data import SequentialSampler

from paa_core.config import get_cfg
from paa_core.config.paths_catalog import DatasetCatalog, ModelCatalog
from paa_core.data import make_data_loader
from paa_core.data.build import build_dataset
from paa_core.data.collate_batch import BatchCollator
from paa_core.data.datasets import COCODataset, ConcatDataset
from paa_core.data.samplers import (
    DistributedSampler,
    GroupedBatchSampler,
    IterationBasedBatchSampler,
)
from paa_core.data.transforms import (
    Compose,
    Normalize,
    RandomHorizontalFlip,
    Resize,
    ToTensor,
    build_transforms,
)
from paa_core.structures.bounding_box import BoxList
from paa_core.structures.image_list import ImageList
from paa_core.utils.errors import InputError

# (image id, file, width, height, annotations as (category id, xywh, iscrowd))
IMAGES = [
    (10, "a.png", 40, 30, [(3, [5, 5, 10, 8], 0), (7, [0, 0, 20, 20], 1), (3, [1, 1, 1, 5], 0)]),
    (2, "b.png", 20, 50, [(7, [2, 3, 10, 20], 0), (9, [15, 40, 10, 20], 0)]),
    (7, "c.png", 30, 30, []),
    (4, "d.png", 40, 30, [(9, [1, 1, 30, 20], 1)]),
    (5, "e.png", 40, 30, [(9, [3, 3, 0.5, 10], 0)]),
    (30, "f.png", 20, 50, [(12, [4, 4, 8, 8], 0)]),
]
CATEGORIES = [12, 3, 9, 7]  # not contiguous, not sorted


def _image_pixels(w, h, seed):
    rng = np.random.RandomState(seed)
    return rng.randint(0, 256, size=(h, w, 3), dtype=np.uint8)  # BGR as cv2 writes it


def make_coco(root):
    img_dir = os.path.join(root, "images")
    os.makedirs(img_dir)
    images, annotations = [], []
    for img_id, name, w, h, anns in IMAGES:
        cv2.imwrite(os.path.join(img_dir, name), _image_pixels(w, h, img_id))
        images.append({"id": img_id, "file_name": name, "width": w, "height": h})
        for cat, box, crowd in anns:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": img_id,
                    "category_id": cat,
                    "bbox": box,
                    "area": box[2] * box[3],
                    "iscrowd": crowd,
                }
            )
    ann_file = os.path.join(root, "ann.json")
    with open(ann_file, "w") as f:
        json.dump(
            {
                "images": images,
                "annotations": annotations,
                "categories": [{"id": c, "name": f"c{c}"} for c in CATEGORIES],
            },
            f,
        )
    return img_dir, ann_file


@pytest.fixture
def coco(tmp_path):
    return make_coco(str(tmp_path))


# ------------------------------------------------------------------------- dataset
def test_training_filter_and_label_mapping(coco):
    img_dir, ann_file = coco
    ds = COCODataset(ann_file, img_dir, remove_images_without_annotations=True)
    # 7: no annotation, 4: crowd only, 5: degenerate only
    assert ds.ids == [2, 10, 30]
    assert ds.json_category_id_to_contiguous_id == {3: 1, 7: 2, 9: 3, 12: 4}
    assert ds.contiguous_category_id_to_json_id == {1: 3, 2: 7, 3: 9, 4: 12}
    assert ds.id_to_img_map == {0: 2, 1: 10, 2: 30}
    assert ds.get_img_info(1)["width"] == 40 and ds.get_img_info(1)["height"] == 30

    img, target, idx = ds[1]  # image 10
    assert idx == 1 and img.size == (40, 30)
    # crowd and w = 1 boxes are gone; xywh [5, 5, 10, 8] -> xyxy with +1 widths
    torch.testing.assert_close(target.bbox, torch.tensor([[5.0, 5.0, 14.0, 12.0]]))
    assert target.get_field("labels").tolist() == [1]
    assert target.mode == "xyxy" and target.size == (40, 30)
    # pixels: cv2 wrote BGR, PIL gives RGB
    np.testing.assert_array_equal(np.asarray(img), _image_pixels(40, 30, 10)[:, :, ::-1])

    _, target, _ = ds[0]  # image 2: the second box is clipped to the image (h - 1 = 49)
    torch.testing.assert_close(
        target.bbox, torch.tensor([[2.0, 3.0, 11.0, 22.0], [15.0, 40.0, 19.0, 49.0]])
    )
    assert target.get_field("labels").tolist() == [2, 3]


def test_test_set_keeps_every_image(coco):
    img_dir, ann_file = coco
    ds = COCODataset(ann_file, img_dir, remove_images_without_annotations=False)
    assert ds.ids == [2, 4, 5, 7, 10, 30]
    _, target, _ = ds[3]  # image 7 has no annotation
    assert len(target) == 0 and target.get_field("labels").dtype == torch.int64
    _, target, _ = ds[1]  # image 4: crowd only
    assert len(target) == 0


def test_missing_paths_and_bad_images(coco, tmp_path):
    img_dir, ann_file = coco
    with pytest.raises(FileNotFoundError, match="nope.json"):
        COCODataset(str(tmp_path / "nope.json"), img_dir, True)
    with pytest.raises(FileNotFoundError, match="no_images"):
        COCODataset(ann_file, str(tmp_path / "no_images"), True)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    with pytest.raises(InputError, match="bad.json"):
        COCODataset(str(bad_json), img_dir, True)

    ds = COCODataset(ann_file, img_dir, remove_images_without_annotations=True)
    with open(os.path.join(img_dir, "a.png"), "wb") as f:
        f.write(b"this is not an image")
    with pytest.raises(InputError, match=r"a\.png"):
        ds[1]
    ok, buf = cv2.imencode(".jpg", _image_pixels(20, 50, 2))
    with open(os.path.join(img_dir, "b.png"), "wb") as f:
        f.write(buf.tobytes()[: len(buf) // 2])  # truncated
    with pytest.raises(InputError, match=r"b\.png"):
        ds[0]
    os.remove(os.path.join(img_dir, "f.png"))
    with pytest.raises(InputError, match=r"f\.png"):
        ds[2]


def test_concat_dataset_img_info(coco):
    img_dir, ann_file = coco
    a = COCODataset(ann_file, img_dir, True)
    b = COCODataset(ann_file, img_dir, False)
    cat = ConcatDataset([a, b])
    assert len(cat) == 9
    assert cat.get_img_info(3)["id"] == 2 and cat.get_img_info(8)["id"] == 30


# ----------------------------------------------------------------------- transforms
def test_resize_size_rule():
    r = Resize((800,), 1333)
    assert r.get_size((640, 480)) == (800, 1066)
    assert r.get_size((480, 640)) == (1066, 800)
    # the longer side would be 3200: the shorter one becomes round(1333 * 500 / 2000) = 333
    assert r.get_size((2000, 500)) == (333, 1332)
    assert r.get_size((1000, 800)) == (800, 1000)  # already there
    assert Resize(600, None).get_size((300, 200)) == (600, 900)


def test_resize_transforms_image_and_boxes():
    img = Image.fromarray(_image_pixels(40, 30, 0))
    target = BoxList(torch.tensor([[4.0, 2.0, 13.0, 11.0]]), (40, 30))
    target.add_field("labels", torch.tensor([5]))
    out, t = Resize((60,), 1000)(img, target)
    assert out.size == (80, 60) and t.size == (80, 60)
    torch.testing.assert_close(t.bbox, torch.tensor([[8.0, 4.0, 26.0, 22.0]]))
    assert t.get_field("labels").tolist() == [5]
    tensor_out, _ = Resize((15,), 1000)(torch.rand(3, 30, 40))
    assert tensor_out.shape == (3, 15, 20)


def test_min_size_range_draws_every_integer():
    cfg = get_cfg()
    cfg.merge_from_list(["INPUT.MIN_SIZE_RANGE_TRAIN", (20, 23), "INPUT.MAX_SIZE_TRAIN", 1000])
    resize = build_transforms(cfg, is_train=True).transforms[0]
    random.seed(0)
    shorts = {min(resize.get_size((100, 50))) for _ in range(200)}
    assert shorts == {20, 21, 22, 23}
    cfg.merge_from_list(["INPUT.MIN_SIZE_RANGE_TRAIN", (30, 20)])
    with pytest.raises(InputError, match=r"^INPUT.MIN_SIZE_RANGE_TRAIN .* got \(30, 20\)"):
        build_transforms(cfg, is_train=True)
    test_resize = build_transforms(get_cfg(), is_train=False).transforms[0]
    assert test_resize.min_size == (800,) and test_resize.max_size == 1333


def test_flip_image_and_boxes():
    pixels = _image_pixels(40, 30, 1)
    img = Image.fromarray(pixels)
    target = BoxList(torch.tensor([[4.0, 2.0, 13.0, 11.0]]), (40, 30))
    out, t = RandomHorizontalFlip(1.0)(img, target)
    np.testing.assert_array_equal(np.asarray(out), pixels[:, ::-1])
    torch.testing.assert_close(t.bbox, torch.tensor([[26.0, 2.0, 35.0, 11.0]]))
    out, t = RandomHorizontalFlip(0.0)(img, target)
    assert out is img and t is target
    # the flipped box covers the flipped pixels: pixel column x maps to w - 1 - x
    random.seed(3)
    flips = sum(
        RandomHorizontalFlip(0.5)(img, target)[1].bbox[0, 0].item() == 26.0 for _ in range(400)
    )
    assert 150 < flips < 250


def test_to_bgr255_normalisation():
    rgb = np.zeros((2, 3, 3), dtype=np.uint8)
    rgb[0, 0] = (10, 20, 30)
    img = Image.fromarray(rgb)
    mean = [102.9801, 115.9465, 122.7717]
    t = Compose([ToTensor(), Normalize(mean, [1.0, 1.0, 1.0], to_bgr255=True)])
    out, none = t(img)
    assert none is None and out.shape == (3, 2, 3)
    torch.testing.assert_close(
        out[:, 0, 0], torch.tensor([30 - mean[0], 20 - mean[1], 10 - mean[2]]), atol=1e-4, rtol=0
    )
    torch.testing.assert_close(out[:, 1, 1], -torch.tensor(mean), atol=1e-4, rtol=0)
    out, _ = Compose([ToTensor(), Normalize([0.5, 0.5, 0.5], [0.25, 0.25, 0.25], False)])(img)
    torch.testing.assert_close(out[0, 0, 0], torch.tensor((10 / 255 - 0.5) / 0.25))


# ------------------------------------------------------------------------- samplers
class ListSampler(torch.utils.data.Sampler):
    def __init__(self, order):
        self.order = order

    def __iter__(self):
        return iter(self.order)

    def __len__(self):
        return len(self.order)


def test_grouped_batch_sampler_order_and_groups():
    group_ids = [0, 1, 0, 1, 1, 0, 0, 1, 0, 0]
    batches = list(GroupedBatchSampler(SequentialSampler(range(10)), group_ids, 2))
    assert batches == [[0, 2], [1, 3], [4, 7], [5, 6], [8, 9]]
    dropped = list(
        GroupedBatchSampler(SequentialSampler(range(10)), group_ids, 4, drop_uneven=True)
    )
    assert dropped == [[0, 2, 5, 6], [1, 3, 4, 7]]
    order = [9, 4, 0, 3, 8, 1, 2, 7, 6, 5]
    sampler = GroupedBatchSampler(ListSampler(order), group_ids, 3)
    batches = list(sampler)
    assert batches == [[9, 0, 8], [4, 3, 1], [2, 6, 5], [7]]
    assert len(sampler) == 4
    with pytest.raises(TypeError, match="Sampler"):
        GroupedBatchSampler([0, 1], group_ids, 2)


def test_distributed_sampler_split():
    for n, replicas in ((10, 3), (7, 7), (5, 2), (2, 4)):
        parts = [
            list(DistributedSampler(range(n), replicas, r, shuffle=True)) for r in range(replicas)
        ]
        flat = [i for p in parts for i in p]
        assert sorted(flat) == list(range(n))  # disjoint and covering
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
        assert [len(DistributedSampler(range(n), replicas, r)) for r in range(replicas)] == list(
            map(len, parts)
        )
    s = DistributedSampler(range(50), 1, 0, shuffle=True)
    first = list(s)
    assert list(s) == first and sorted(first) == list(range(50)) and first != list(range(50))
    s.set_epoch(1)
    assert list(s) != first
    s.set_epoch(0)
    assert list(s) == first
    assert list(DistributedSampler(range(7), 2, 1, shuffle=False)) == [3, 4, 5, 6]
    with pytest.raises(ValueError, match="rank 2"):
        DistributedSampler(range(5), 2, 2)


def _iteration_sampler(n, group_ids, num_iters, start_iter, replicas=1, rank=0):
    sampler = DistributedSampler(range(n), replicas, rank, shuffle=True)
    batches = GroupedBatchSampler(sampler, group_ids, 2)
    return IterationBasedBatchSampler(batches, num_iters, start_iter)


def test_iteration_based_sampler_resumes_the_same_sequence():
    group_ids = [0, 1, 1, 0, 0, 1, 0, 1, 1, 0, 1]
    full = list(_iteration_sampler(11, group_ids, 20, 0))
    assert len(full) == 20 and len(_iteration_sampler(11, group_ids, 20, 0)) == 20
    # 6 batches per pass (5 + 6 images in groups of 2): each pass covers the dataset once
    assert sorted(i for b in full[:6] for i in b) == list(range(11))
    assert sorted(i for b in full[6:12] for i in b) == list(range(11))
    assert full[:6] != full[6:12]  # passes are reshuffled
    for start in (0, 1, 5, 6, 7, 13, 19, 20):
        assert list(_iteration_sampler(11, group_ids, 20, start)) == full[start:]
    for rank in (0, 1):
        ranked = list(_iteration_sampler(11, group_ids, 9, 0, replicas=2, rank=rank))
        assert list(_iteration_sampler(11, group_ids, 9, 4, replicas=2, rank=rank)) == ranked[4:]
    with pytest.raises(ValueError, match="start_iter"):
        IterationBasedBatchSampler([], 5, 6)


# -------------------------------------------------------------------------- catalog
def test_dataset_catalog(monkeypatch, tmp_path):
    monkeypatch.setenv("PAA_DATA_DIR", str(tmp_path))
    got = DatasetCatalog.get("coco_2017_train")
    assert got == {
        "args": {
            "root": os.path.join(str(tmp_path), "coco/train2017"),
            "ann_file": os.path.join(str(tmp_path), "coco/annotations/instances_train2017.json"),
        }
    }
    assert DatasetCatalog.get("shapes_val")["args"]["ann_file"] == os.path.join(
        str(tmp_path), "shapes/annotations/instances_val.json"
    )
    monkeypatch.delenv("PAA_DATA_DIR")
    assert DatasetCatalog.get("coco_2014_minival")["args"]["root"] == os.path.join(
        "datasets", "coco/val2014"
    )
    assert DatasetCatalog.get("mine:/x/imgs:/y/a.json")["args"] == {
        "root": "/x/imgs",
        "ann_file": "/y/a.json",
    }
    with pytest.raises(RuntimeError, match="coco_2017_val.*shapes_train"):
        DatasetCatalog.get("coco_2017_vall")
    with pytest.raises(ValueError, match="name:image_dir:annotation.json"):
        DatasetCatalog.get("mine:/x/imgs")


def test_catalog_written_for_the_reference_may_name_only_coco():
    class ReferenceStyleCatalog:
        @staticmethod
        def get(name):
            return {"factory": "PascalVOCDataset", "args": {"data_dir": "/voc", "split": "val"}}

    with pytest.raises(
        InputError, match="^DATASETS.TEST: 'voc_2007_val'.*'PascalVOCDataset'.*COCODataset"
    ):
        build_dataset(["voc_2007_val"], None, ReferenceStyleCatalog, is_train=False)


def test_model_catalog():
    assert (
        ModelCatalog.get("ImageNetPretrained/MSRA/R-50")
        == "https://dl.fbaipublicfiles.com/detectron/ImageNetPretrained/MSRA/R-50.pkl"
    )
    assert ModelCatalog.get("catalog://ImageNetPretrained/FAIR/X-152-32x8d-IN5k").endswith(
        "/ImageNetPretrained/25093814/X-152-32x8d-IN5k.pkl"
    )
    with pytest.raises(RuntimeError, match="MSRA/R-18.*MSRA/R-101"):
        ModelCatalog.get("ImageNetPretrained/MSRA/R-18")


# --------------------------------------------------------------------------- loader
def _loader_cfg(img_dir, ann_file, **extra):
    cfg = get_cfg()
    name = f"tiny:{img_dir}:{ann_file}"
    opts = {
        "DATASETS.TRAIN": (name,),
        "DATASETS.TEST": (name, name),
        "SOLVER.IMS_PER_BATCH": 2,
        "SOLVER.MAX_ITER": 5,
        "TEST.IMS_PER_BATCH": 4,
        "DATALOADER.NUM_WORKERS": 0,
        "INPUT.MIN_SIZE_TRAIN": (20,),
        "INPUT.MAX_SIZE_TRAIN": 60,
        "INPUT.MIN_SIZE_TEST": 25,
        "INPUT.MAX_SIZE_TEST": 60,
    }
    opts.update(extra)
    cfg.merge_from_list([x for kv in opts.items() for x in kv])
    return cfg


def test_train_loader_end_to_end(coco):
    img_dir, ann_file = coco
    cfg = _loader_cfg(img_dir, ann_file)
    loader = make_data_loader(cfg, is_train=True)
    assert len(loader) == 5
    batches = list(loader)
    assert len(batches) == 5
    for images, targets, idxs in batches:
        assert isinstance(images, ImageList)
        assert images.tensors.shape[-2] % 32 == 0 and images.tensors.shape[-1] % 32 == 0
        assert len(targets) == len(idxs) == len(images.image_sizes)
        # one orientation per batch (image 10 is landscape, 2 and 30 portrait)
        assert len({(h < w) for h, w in images.image_sizes}) == 1
        for (h, w), t in zip(images.image_sizes, targets):
            assert min(h, w) == 20 and t.size == (w, h)
            assert t.get_field("labels").dtype == torch.int64 and len(t) > 0
    # resuming at iteration 3 replays the last two batches' images
    resumed = list(make_data_loader(cfg, is_train=True, start_iter=3))
    assert [b[2] for b in resumed] == [b[2] for b in batches[3:]]


def test_test_loaders_end_to_end(coco):
    img_dir, ann_file = coco
    cfg = _loader_cfg(img_dir, ann_file, **{"DATALOADER.ASPECT_RATIO_GROUPING": False})
    loaders = make_data_loader(cfg, is_train=False)
    assert isinstance(loaders, list) and len(loaders) == 2
    batches = list(loaders[0])
    assert [list(b[2]) for b in batches] == [[0, 1, 2, 3], [4, 5]]
    images, targets, _ = batches[0]
    # image 0 is 20x50 (w x h): shorter side 25 -> 25 x 62 would exceed 60 -> 24 x 60
    assert images.image_sizes[0] == (60, 24)
    assert images.tensors.shape == (4, 3, 64, 64)
    # BGR255 minus the mean, zero in the padding
    assert images.tensors[0, :, 60:, :].abs().sum() == 0
    assert (
        images.tensors[0, 0].min() >= -102.9801 - 1e-3
        and images.tensors[0, 0].max() <= 255 - 102.9801 + 1e-3
    )


def test_test_loader_for_bbox_aug_yields_raw_images(coco):
    """With TEST.BBOX_AUG.ENABLED the augmentation resizes itself: PIL images at full size."""
    img_dir, ann_file = coco
    cfg = _loader_cfg(
        img_dir,
        ann_file,
        **{"DATALOADER.ASPECT_RATIO_GROUPING": False, "TEST.BBOX_AUG.ENABLED": True},
    )
    images, targets, idxs = next(iter(make_data_loader(cfg, is_train=False)[0]))
    assert list(idxs) == [0, 1, 2, 3]
    assert isinstance(images, tuple) and isinstance(images[0], Image.Image)
    # image 0 is 20 x 50 (w x h) on disk and its target keeps that frame
    assert images[0].size == (20, 50) and targets[0].size == (20, 50)


def test_loader_config_errors(coco):
    img_dir, ann_file = coco
    cfg = _loader_cfg(img_dir, ann_file, **{"SOLVER.IMS_PER_BATCH": 0})
    with pytest.raises(InputError, match="SOLVER.IMS_PER_BATCH"):
        make_data_loader(cfg, is_train=True)
    cfg = _loader_cfg(img_dir, ann_file, **{"DATASETS.TRAIN": ()})
    with pytest.raises(InputError, match="^DATASETS.TRAIN is empty"):
        make_data_loader(cfg, is_train=True)
    cfg = _loader_cfg(img_dir, ann_file, **{"DATASETS.TEST": ("no_such_set",)})
    with pytest.raises(InputError, match="^DATASETS.TEST: unknown dataset 'no_such_set'"):
        make_data_loader(cfg, is_train=False)


def test_batch_collator():
    a = (torch.ones(3, 5, 6), "t0", 4)
    b = (torch.ones(3, 7, 3), "t1", 9)
    images, targets, ids = BatchCollator(4)([a, b])
    assert images.tensors.shape == (2, 3, 8, 8) and targets == ("t0", "t1") and ids == (4, 9)


def _distributed_worker(rank, world, init_file, img_dir, ann_file, out_dir):
    torch.distributed.init_process_group(
        "gloo", init_method="file://" + init_file, rank=rank, world_size=world
    )
    try:
        cfg = _loader_cfg(img_dir, ann_file, **{"SOLVER.IMS_PER_BATCH": 3})
        try:
            make_data_loader(cfg, is_train=True, is_distributed=True)
            error = ""
        except InputError as e:
            error = str(e)
        cfg = _loader_cfg(img_dir, ann_file, **{"SOLVER.IMS_PER_BATCH": 2})
        train = [list(b[2]) for b in make_data_loader(cfg, is_train=True, is_distributed=True)]
        test = [
            i for b in make_data_loader(cfg, is_train=False, is_distributed=True)[0] for i in b[2]
        ]
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump({"error": error, "train": train, "test": test}, f)
    finally:
        torch.distributed.destroy_process_group()


def test_distributed_loaders_split_the_data(coco, tmp_path):
    img_dir, ann_file = coco
    mp.spawn(
        _distributed_worker,
        args=(2, str(tmp_path / "init"), img_dir, ann_file, str(tmp_path)),
        nprocs=2,
    )
    results = [json.load(open(tmp_path / f"rank{r}.json")) for r in range(2)]
    for r in results:
        assert "SOLVER.IMS_PER_BATCH (3)" in r["error"] and "(2)" in r["error"]
        assert len(r["train"]) == 5 and all(len(b) == 1 for b in r["train"])
    assert sorted(results[0]["test"] + results[1]["test"]) == [0, 1, 2, 3, 4, 5]
    assert results[0]["test"] == [0, 1, 2]
