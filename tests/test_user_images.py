"""Image files as users bring them (cameras, scanners, export tools): the 8-bit RGB pixels
each decodes to, EXIF orientation against the annotation's width/height, and the one-line
errors for what cannot be read, also from a DataLoader worker (docs/DATA.md)."""

import json
import os
import warnings

import cv2
import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from paa_core.data.datasets import COCODataset
from paa_core.data.datasets.image_io import EXIF_ORIENTATION, read_image_size, read_rgb_image
from paa_core.utils.errors import InputError

# 16-bit values and what they mean on 8 bits: v * 255 / 65535, rounded.
SIXTEEN = np.array([[0, 257 * 10, 65535, 32768, 1000, 65534]], dtype=np.uint16)
EIGHT = [0, 10, 255, 128, 4, 255]


def grey(path):
    """The image as read, checked to be grey (three equal channels); returns one channel."""
    rgb = np.asarray(read_rgb_image(str(path)))
    assert rgb.dtype == np.uint8 and rgb.shape[2] == 3
    np.testing.assert_array_equal(rgb[..., 0], rgb[..., 1])
    np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])
    return rgb[..., 0]


def test_sixteen_bit_grey_is_scaled_by_its_depth_not_clipped(tmp_path):
    """PNG (Pillow mode I;16), big-endian TIFF (I;16B) and PGM (I): the same eight-bit values;
    before, everything above 255 came out white."""
    Image.fromarray(SIXTEEN).save(tmp_path / "g.png")
    Image.fromarray(SIXTEEN.astype(">u2")).save(tmp_path / "g.tif")
    cv2.imwrite(str(tmp_path / "g.pgm"), SIXTEEN)
    for name, mode in (("g.png", "I;16"), ("g.tif", "I;16B"), ("g.pgm", "I")):
        assert Image.open(tmp_path / name).mode == mode
        assert grey(tmp_path / name).tolist() == [EIGHT], name


def test_sixteen_bit_colour_keeps_the_high_byte(tmp_path):
    bgr = np.zeros((1, 3, 3), np.uint16)
    bgr[0, :, 2] = [65535, 2570, 1000]  # red
    bgr[0, :, 1] = [0, 32768, 65535]  # green
    cv2.imwrite(str(tmp_path / "c.png"), bgr)
    rgb = np.asarray(read_rgb_image(str(tmp_path / "c.png")))
    assert rgb[0].tolist() == [[255, 0, 0], [10, 128, 0], [3, 255, 0]]


def test_grey_one_bit_alpha_palette_and_cmyk(tmp_path):
    Image.fromarray(np.array([[0, 10, 200]], np.uint8)).save(tmp_path / "l.png")
    assert grey(tmp_path / "l.png").tolist() == [[0, 10, 200]]
    Image.fromarray(np.array([[False, True, True]])).save(tmp_path / "b.png")
    assert grey(tmp_path / "b.png").tolist() == [[0, 255, 255]]
    # alpha is dropped: the stored colours stay, transparent or not
    rgba = np.array([[[200, 30, 0, 0], [200, 30, 0, 128], [5, 6, 7, 255]]], np.uint8)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    assert np.asarray(read_rgb_image(str(tmp_path / "rgba.png")))[0].tolist() == [
        [200, 30, 0],
        [200, 30, 0],
        [5, 6, 7],
    ]
    Image.fromarray(rgba[..., [0, 3]]).save(tmp_path / "la.png")
    assert Image.open(tmp_path / "la.png").mode == "LA"
    assert grey(tmp_path / "la.png").tolist() == [[200, 200, 5]]
    # a palette with transparent entries: its colours, without Pillow's warning
    palette = Image.new("P", (3, 1))
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0])
    palette.putdata([0, 1, 2])
    palette.save(tmp_path / "p.png", transparency=bytes([0, 128, 255]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rgb = np.asarray(read_rgb_image(str(tmp_path / "p.png")))
    assert rgb[0].tolist() == [[0, 0, 0], [255, 0, 0], [0, 255, 0]]
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=95)
    red = np.asarray(read_rgb_image(str(tmp_path / "cmyk.jpg"))).reshape(-1, 3)
    assert np.abs(red.astype(int) - [255, 0, 0]).max() <= 2


def test_thirty_two_bit_and_float_pixels_are_one_line_errors(tmp_path):
    Image.fromarray(SIXTEEN.astype(np.float32)).save(tmp_path / "f.tif")
    Image.fromarray(SIXTEEN.astype(np.int32)).save(tmp_path / "i.tif")
    for name, mode in (("f.tif", "F"), ("i.tif", "I")):
        with pytest.raises(InputError) as e:
            read_rgb_image(str(tmp_path / name))
        assert str(e.value) == (
            f"cannot read image {tmp_path / name}: its pixels are 32-bit or floating-point "
            f"({mode}), which have no fixed range: save it with 8 or 16 bits per channel"
        )


def save_with_orientation(path, pixels, orientation, **kwargs):
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    Image.fromarray(pixels).save(path, exif=exif, **kwargs)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_turns_the_image_as_viewers_do(tmp_path, orientation):
    """Pillow's own exif_transpose is the oracle; the stored image is 5 x 3, all pixels differ."""
    pixels = np.arange(5 * 3 * 3, dtype=np.uint8).reshape(3, 5, 3) * 5
    path = str(tmp_path / "o.png")
    save_with_orientation(path, pixels, orientation)
    with Image.open(path) as img:
        want = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
    np.testing.assert_array_equal(np.asarray(read_rgb_image(path)), want)
    assert read_image_size(path) == (want.shape[1], want.shape[0])
    assert (want.shape[1], want.shape[0]) == ((3, 5) if orientation >= 5 else (5, 3))
    # annotated at the stored size 5 x 3: flips and half turns keep it, so the image is
    # still shown upright; quarter turns do not, so the stored pixels are what was annotated
    as_stored = np.asarray(read_rgb_image(path, (5, 3)))
    np.testing.assert_array_equal(as_stored, pixels if orientation >= 5 else want)


# A camera JPEG stored 64 x 32 (w x h) with a white 16 x 8 block in its top-left corner,
# tagged "turn 90 degrees clockwise" (6): upright it is 32 x 64 with the block at x 24..31,
# y 0..15.
STORED = np.zeros((32, 64, 3), np.uint8)
STORED[:8, :16] = 255


def camera_dataset(root, image_record, bbox):
    """One EXIF-rotated JPEG and a json whose image record is `image_record` (plus id and
    file_name) with one annotation `bbox`."""
    os.makedirs(root / "img", exist_ok=True)
    save_with_orientation(str(root / "img" / "cam.jpg"), STORED, 6, quality=100)
    image = {"id": 1, "file_name": "cam.jpg", **image_record}
    ann = {"id": 1, "image_id": 1, "category_id": 1, "bbox": bbox, "area": 1.0, "iscrowd": 0}
    (root / "a.json").write_text(
        json.dumps(
            {"images": [image], "annotations": [ann], "categories": [{"id": 1, "name": "x"}]}
        )
    )
    return COCODataset(str(root / "a.json"), str(root / "img"), True)


def block_inside(img, target):
    """Mean brightness inside the target box and outside it."""
    pixels = np.asarray(img)[..., 0].astype(float)
    x1, y1, x2, y2 = (int(v) for v in target.bbox[0].tolist())
    inside = np.zeros(pixels.shape, bool)
    inside[y1 : y2 + 1, x1 : x2 + 1] = True
    return pixels[inside].mean(), pixels[~inside].mean()


def test_exif_rotated_photo_annotated_upright(tmp_path):
    """As CVAT, Label Studio, labelme and browsers show it: width/height and box upright."""
    ds = camera_dataset(tmp_path, {"width": 32, "height": 64}, [24, 0, 8, 16])
    img, target, _ = ds[0]
    assert img.size == (32, 64)
    torch.testing.assert_close(target.bbox, torch.tensor([[24.0, 0.0, 31.0, 15.0]]))
    inside, outside = block_inside(img, target)
    assert inside > 240 and outside < 15


def test_exif_rotated_photo_annotated_as_stored(tmp_path):
    """A tool that ignored the tag: the json's width/height are the stored ones."""
    ds = camera_dataset(tmp_path, {"width": 64, "height": 32}, [0, 0, 16, 8])
    img, target, _ = ds[0]
    assert img.size == (64, 32)
    inside, outside = block_inside(img, target)
    assert inside > 240 and outside < 15


def test_exif_rotated_photo_without_size_is_measured_upright(tmp_path):
    ds = camera_dataset(tmp_path, {}, [24, 0, 8, 16])
    assert (ds.get_img_info(0)["width"], ds.get_img_info(0)["height"]) == (32, 64)
    img, target, _ = ds[0]
    assert img.size == (32, 64) and block_inside(img, target)[0] > 240


def test_image_of_neither_size_is_an_error(tmp_path):
    """Neither upright nor stored: the boxes' frame is unknown, nothing is trained on."""
    ds = camera_dataset(tmp_path, {"width": 64, "height": 64}, [0, 0, 16, 8])
    with pytest.raises(InputError) as e:
        ds[0]
    assert str(e.value) == (
        f"{tmp_path / 'img' / 'cam.jpg'} is 32x64 but {tmp_path / 'a.json'} says 64x64 "
        "(width x height)"
    )


def test_sixteen_bit_image_through_the_dataset(tmp_path):
    (tmp_path / "img").mkdir()
    Image.fromarray(np.repeat(SIXTEEN, 4, axis=0)).save(tmp_path / "img" / "scan.png")
    ann = {"id": 1, "image_id": 3, "category_id": 1, "bbox": [0, 0, 4, 3], "area": 12}
    (tmp_path / "a.json").write_text(
        json.dumps(
            {
                "images": [{"id": 3, "file_name": "scan.png"}],
                "annotations": [ann],
                "categories": [{"id": 1, "name": "x"}],
            }
        )
    )
    img, _, _ = COCODataset(str(tmp_path / "a.json"), str(tmp_path / "img"), False)[0]
    assert np.asarray(img)[:, :, 1].tolist() == [EIGHT] * 4


def test_worker_error_reaches_the_user_as_one_line(tmp_path):
    """A DataLoader worker's InputError arrives as the worker's one line, file named."""
    (tmp_path / "img").mkdir()
    Image.fromarray(SIXTEEN.astype(np.float32)).save(tmp_path / "img" / "depth.tif")
    (tmp_path / "a.json").write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "depth.tif", "width": 6, "height": 1}],
                "annotations": [],
                "categories": [{"id": 1, "name": "x"}],
            }
        )
    )
    ds = COCODataset(str(tmp_path / "a.json"), str(tmp_path / "img"), False)
    loader = torch.utils.data.DataLoader(ds, num_workers=1, collate_fn=list)
    with pytest.raises(InputError) as e:
        next(iter(loader))
    assert str(e.value) == (
        f"cannot read image {tmp_path / 'img' / 'depth.tif'}: its pixels are 32-bit or "
        "floating-point (F), which have no fixed range: save it with 8 or 16 bits per channel"
    )
