import pytest
import torch
import torchvision
from torchvision.ops import box_iou

from paa_core.structures import box_ops
from paa_core.structures.bounding_box import FLIP_LEFT_RIGHT, FLIP_TOP_BOTTOM, BoxList
from paa_core.structures.boxlist_ops import (
    boxlist_iou,
    boxlist_ml_nms,
    cat_boxlist,
)
from paa_core.structures.image_list import ImageList, to_image_list


def make_boxlist():
    boxes = torch.tensor([[10.0, 20.0, 29.0, 59.0], [0.0, 0.0, 99.0, 79.0], [50.0, 5.0, 50.0, 5.0]])
    bl = BoxList(boxes, (100, 80))
    bl.add_field("labels", torch.tensor([3, 1, 2]))
    bl.add_field("scores", torch.tensor([0.5, 0.9, 0.1]))
    return bl


# --------------------------------------------------------------------------- BoxList
def test_malformed_input_errors():
    with pytest.raises(ValueError, match=r"\[N, 4\].*\(4,\)"):
        BoxList(torch.zeros(4), (10, 10))
    with pytest.raises(ValueError, match=r"\[N, 4\].*\(2, 3\)"):
        BoxList(torch.zeros(2, 3), (10, 10))
    with pytest.raises(ValueError, match="'xxyy'"):
        BoxList(torch.zeros(2, 4), (10, 10), mode="xxyy")
    with pytest.raises(ValueError, match="'polar'"):
        make_boxlist().convert("polar")
    with pytest.raises(ValueError, match="transpose method"):
        make_boxlist().transpose(2)
    with pytest.raises(KeyError, match="masks"):
        make_boxlist().get_field("masks")


def test_convert_plus_one_and_round_trip():
    bl = make_boxlist()
    xywh = bl.convert("xywh")
    assert xywh.mode == "xywh"
    torch.testing.assert_close(xywh.bbox[0], torch.tensor([10.0, 20.0, 20.0, 40.0]))
    torch.testing.assert_close(xywh.bbox[2], torch.tensor([50.0, 5.0, 1.0, 1.0]))
    assert torch.equal(xywh.get_field("labels"), bl.get_field("labels"))
    torch.testing.assert_close(xywh.convert("xyxy").bbox, bl.bbox)
    assert bl.convert("xyxy") is bl


def test_area_plus_one_both_modes():
    bl = make_boxlist()
    expected = torch.tensor([20.0 * 40.0, 100.0 * 80.0, 1.0])
    torch.testing.assert_close(bl.area(), expected)
    torch.testing.assert_close(bl.convert("xywh").area(), expected)


def test_flip_left_right_values_and_involution():
    bl = make_boxlist()
    flipped = bl.transpose(FLIP_LEFT_RIGHT)
    # x1' = w - x2 - 1, x2' = w - x1 - 1 with w = 100
    torch.testing.assert_close(flipped.bbox[0], torch.tensor([70.0, 20.0, 89.0, 59.0]))
    torch.testing.assert_close(flipped.bbox[1], torch.tensor([0.0, 0.0, 99.0, 79.0]))
    torch.testing.assert_close(flipped.transpose(FLIP_LEFT_RIGHT).bbox, bl.bbox)
    assert torch.equal(flipped.get_field("scores"), bl.get_field("scores"))
    torch.testing.assert_close(flipped.area(), bl.area())
    # xywh lists flip the same way and stay xywh
    fx = bl.convert("xywh").transpose(FLIP_LEFT_RIGHT)
    assert fx.mode == "xywh"
    torch.testing.assert_close(fx.convert("xyxy").bbox, flipped.bbox)


def test_flip_top_bottom_values_and_involution():
    bl = make_boxlist()
    flipped = bl.transpose(FLIP_TOP_BOTTOM)
    torch.testing.assert_close(
        flipped.bbox[0], torch.tensor([10.0, 20.0, 29.0, 59.0])
    )  # symmetric in h=80
    torch.testing.assert_close(flipped.bbox[2], torch.tensor([50.0, 74.0, 50.0, 74.0]))
    torch.testing.assert_close(flipped.transpose(FLIP_TOP_BOTTOM).bbox, bl.bbox)


def test_resize_uniform_and_anisotropic():
    bl = make_boxlist()
    r = bl.resize((200, 160))
    assert r.size == (200, 160)
    torch.testing.assert_close(r.bbox, bl.bbox * 2)
    assert torch.equal(r.get_field("labels"), bl.get_field("labels"))
    r = bl.resize((50, 160))
    torch.testing.assert_close(r.bbox[0], torch.tensor([5.0, 40.0, 14.5, 118.0]))
    rx = bl.convert("xywh").resize((50, 160))
    assert rx.mode == "xywh"
    torch.testing.assert_close(rx.convert("xyxy").bbox, r.bbox)


def test_clip_to_image():
    boxes = torch.tensor(
        [[-5.0, -5.0, 120.0, 50.0], [150.0, 10.0, 160.0, 20.0], [10.0, 10.0, 20.0, 90.0]]
    )
    bl = BoxList(boxes, (100, 80))
    bl.add_field("labels", torch.tensor([1, 2, 3]))
    kept = bl.clip_to_image(remove_empty=True)
    torch.testing.assert_close(
        kept.bbox, torch.tensor([[0.0, 0.0, 99.0, 50.0], [10.0, 10.0, 20.0, 79.0]])
    )
    assert kept.get_field("labels").tolist() == [1, 3]
    allb = bl.clip_to_image(remove_empty=False)
    torch.testing.assert_close(allb.bbox[1], torch.tensor([99.0, 10.0, 99.0, 20.0]))
    assert torch.equal(bl.bbox, boxes)  # the input is not modified


def test_indexing_follows_fields():
    bl = make_boxlist()
    sub = bl[torch.tensor([True, False, True])]
    assert len(sub) == 2 and sub.get_field("labels").tolist() == [3, 2]
    sub = bl[torch.tensor([2, 0])]
    torch.testing.assert_close(sub.bbox[0], bl.bbox[2])
    assert sub.get_field("scores").tolist() == pytest.approx([0.1, 0.5])
    sub = bl[1:]
    assert len(sub) == 2 and sub.get_field("labels").tolist() == [1, 2]
    sub = bl[1]
    assert sub.bbox.shape == (1, 4) and sub.get_field("labels").tolist() == [1]
    assert bl[-1].get_field("labels").tolist() == [2]
    assert repr(bl) == "BoxList(num_boxes=3, image_width=100, image_height=80, mode=xyxy)"


def test_copy_with_fields_and_to():
    bl = make_boxlist()
    c = bl.copy_with_fields(["labels"])
    assert c.fields() == ["labels"]
    assert bl.copy_with_fields(["labels", "masks"], skip_missing=True).fields() == ["labels"]
    with pytest.raises(KeyError, match="masks"):
        bl.copy_with_fields(["masks"])
    moved = bl.to("cpu")
    assert moved.fields() == bl.fields() and torch.equal(moved.bbox, bl.bbox)


def test_constructor_accepts_lists_and_empty():
    bl = BoxList([[0, 0, 1, 1]], (4, 4))
    assert bl.bbox.dtype == torch.float32
    assert len(BoxList(torch.zeros(0, 4), (4, 4))) == 0


# ----------------------------------------------------------------------- boxlist_ops
def test_iou_hand_computed():
    a = BoxList(torch.tensor([[0.0, 0.0, 9.0, 9.0]]), (50, 50))
    b = BoxList(
        torch.tensor([[5.0, 5.0, 14.0, 14.0], [0.0, 0.0, 9.0, 9.0], [20.0, 20.0, 30.0, 30.0]]),
        (50, 50),
    )
    iou = boxlist_iou(a, b)
    # 10x10 boxes overlapping on 5x5 pixels: 25 / (100 + 100 - 25)
    torch.testing.assert_close(iou, torch.tensor([[25.0 / 175.0, 1.0, 0.0]]))


def test_iou_matches_torchvision_with_plus_one_shift():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(30, 2, generator=g) * 80
    a = torch.cat([xy, xy + torch.rand(30, 2, generator=g) * 40], dim=1)
    xy = torch.rand(20, 2, generator=g) * 80
    b = torch.cat([xy, xy + torch.rand(20, 2, generator=g) * 40], dim=1)
    ours = boxlist_iou(BoxList(a, (128, 128)), BoxList(b, (128, 128)).convert("xywh"))
    shift = torch.tensor([0.0, 0.0, 1.0, 1.0])
    torch.testing.assert_close(ours, box_iou(a + shift, b + shift))
    assert ours.shape == (30, 20)


def test_iou_size_mismatch():
    with pytest.raises(RuntimeError, match=r"\(10, 10\).*\(10, 11\)"):
        boxlist_iou(BoxList(torch.zeros(1, 4), (10, 10)), BoxList(torch.zeros(1, 4), (10, 11)))


def _nms_input():
    boxes = torch.tensor(
        [
            [0.0, 0.0, 9.0, 9.0],
            [1.0, 0.0, 10.0, 9.0],
            [20.0, 20.0, 29.0, 29.0],
            [0.0, 0.0, 9.0, 8.0],
        ]
    )
    bl = BoxList(boxes, (40, 40))
    bl.add_field("scores", torch.tensor([0.8, 0.9, 0.7, 0.6]))
    bl.add_field("labels", torch.tensor([1, 1, 1, 2]))
    return bl


def test_boxlist_ml_nms_keeps_other_labels():
    kept = boxlist_ml_nms(_nms_input(), 0.5)
    assert kept.get_field("scores").tolist() == pytest.approx([0.9, 0.7, 0.6])
    assert kept.get_field("labels").tolist() == [1, 1, 2]


def test_cat_boxlist_and_errors():
    a, b = make_boxlist(), make_boxlist()[1:]
    c = cat_boxlist([a, b])
    assert len(c) == 5 and c.get_field("labels").tolist() == [3, 1, 2, 1, 2]
    torch.testing.assert_close(c.bbox[3:], b.bbox)
    with pytest.raises(ValueError, match="sizes differ"):
        cat_boxlist([a, BoxList(torch.zeros(1, 4), (5, 5))])
    with pytest.raises(ValueError, match="modes differ"):
        cat_boxlist([a, b.convert("xywh")])
    with pytest.raises(ValueError, match="fields differ"):
        cat_boxlist([a, b.copy_with_fields(["labels"])])
    with pytest.raises(ValueError, match="non-empty"):
        cat_boxlist([])


# ------------------------------------------------------------------------ image_list
def test_to_image_list_pads_with_zeros():
    a = torch.rand(3, 5, 7) + 1
    b = torch.rand(3, 10, 4) + 1
    il = to_image_list([a, b], size_divisible=8)
    assert il.tensors.shape == (2, 3, 16, 8)
    assert il.image_sizes == [(5, 7), (10, 4)]
    assert torch.equal(il.tensors[0, :, :5, :7], a)
    assert torch.equal(il.tensors[1, :, :10, :4], b)
    assert il.tensors[0, :, 5:].abs().sum() == 0 and il.tensors[0, :, :, 7:].abs().sum() == 0
    assert il.tensors[1, :, 10:].abs().sum() == 0 and il.tensors[1, :, :, 4:].abs().sum() == 0
    assert to_image_list([a, b]).tensors.shape == (2, 3, 10, 7)


def test_to_image_list_tensor_inputs():
    x = torch.rand(3, 30, 33)
    il = to_image_list(x, size_divisible=32)
    assert il.tensors.shape == (1, 3, 32, 64) and il.image_sizes == [(30, 33)]
    il = to_image_list(torch.rand(2, 3, 8, 8))
    assert il.tensors.shape == (2, 3, 8, 8) and il.image_sizes == [(8, 8), (8, 8)]
    assert to_image_list(il) is il
    assert isinstance(il.to("cpu"), ImageList)


def test_to_image_list_errors():
    with pytest.raises(ValueError, match=r"\(8, 8\)"):
        to_image_list(torch.rand(8, 8))
    with pytest.raises(ValueError, match="same C"):
        to_image_list([torch.rand(3, 4, 4), torch.rand(1, 4, 4)])
    with pytest.raises(TypeError, match="non-empty"):
        to_image_list([])


def test_box_ops_both_conventions():
    """offset 0 is torchvision's box_iou/box_area; offset 1 equals torchvision on boxes
    whose far corners are moved out by one pixel (the +1 widths)."""
    gen = torch.Generator().manual_seed(3)
    a = torch.rand(40, 2, generator=gen, dtype=torch.float64) * 50
    a = torch.cat([a, a + torch.rand(40, 2, generator=gen, dtype=torch.float64) * 30], dim=1)
    b = torch.rand(30, 2, generator=gen, dtype=torch.float64) * 50
    b = torch.cat([b, b + torch.rand(30, 2, generator=gen, dtype=torch.float64) * 30], dim=1)
    grow = torch.tensor([0.0, 0, 1, 1], dtype=torch.float64)
    for offset, shift in ((0, 0 * grow), (1, grow)):
        expected = torchvision.ops.box_iou(a + shift, b + shift)
        torch.testing.assert_close(
            box_ops.box_iou(a, b, offset=offset), expected, rtol=1e-12, atol=0
        )
        torch.testing.assert_close(
            box_ops.box_area(a, offset=offset), torchvision.ops.box_area(a + shift)
        )
        torch.testing.assert_close(
            box_ops.paired_iou(a[:30], b, offset=offset),
            expected[torch.arange(30), torch.arange(30)],
        )
    assert (
        (box_ops.box_iou(a, b, offset=1) > 0).sum()
        > (box_ops.box_iou(a, b, offset=0) > 0).sum()
        > 0
    )
