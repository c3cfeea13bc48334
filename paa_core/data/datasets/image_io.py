"""Image files as the detector reads them: 8-bit RGB, upright, whatever bit depth, channels
and EXIF orientation the camera, scanner or export tool wrote (docs/DATA.md)."""

import numpy as np
from PIL import Image

from paa_core.utils.errors import InputError

EXIF_ORIENTATION = 0x0112
# EXIF orientation -> the transpose that shows the stored pixels upright.
UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# Pillow's modes of 16-bit single-channel pixels; it opens 16-bit PGM/PPM as "I" scaled to 16 bits.
SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
# Missing, empty, truncated, not an image, or too many pixels to decode safely.
READ_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def _cannot_read(path, e):
    reason = str(e).splitlines()[0] if str(e) else type(e).__name__
    return InputError(f"cannot read image {path}: {reason}")


def _orientation(img):
    """The EXIF orientation (1..8) of an open image; 1 when it has none or an invalid one."""
    orientation = img.getexif().get(EXIF_ORIENTATION, 1)
    return orientation if orientation in UPRIGHT else 1


def upright_size(size, orientation):
    """(w, h) of an image stored at `size` once turned upright by its EXIF `orientation`."""
    return (size[1], size[0]) if orientation in (5, 6, 7, 8) else tuple(size)


def to_rgb8(img, path):
    """`img` as 8-bit RGB: 16-bit pixels scaled by their depth (65535 -> 255, rounded), grey
    replicated to three channels, alpha dropped (the stored colours kept, as the reference
    reads RGBA), palette, CMYK and 1-bit images converted by Pillow. 16-bit RGB files
    Pillow already opens as 8-bit (the high byte). 32-bit and floating-point pixels have no
    range to scale by: an InputError."""
    if img.mode in SIXTEEN_BIT or (img.mode == "I" and img.format == "PPM"):
        pixels = np.asarray(img, dtype=np.int64)
        return Image.fromarray(((pixels * 255 + 32767) // 65535).astype(np.uint8)).convert("RGB")
    if img.mode in ("I", "F") or img.mode.startswith("I;"):
        raise InputError(
            f"cannot read image {path}: its pixels are 32-bit or floating-point ({img.mode}), "
            "which have no fixed range: save it with 8 or 16 bits per channel"
        )
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # Pillow's path for a palette with transparent entries
    return img.convert("RGB")


def read_rgb_image(path, size=None):
    """The image at `path` as an 8-bit RGB PIL image, turned upright as its EXIF orientation
    says (what viewers, browsers and labelling tools show), unless `size` (w, h) is given and
    only the stored pixels have it: a tool that ignored the tag annotated those. An unreadable
    file is an InputError naming it."""
    try:
        with Image.open(path) as img:
            img.load()
            orientation = _orientation(img)
            stored_only = size is not None and img.size == tuple(size)
            stored_only = stored_only and upright_size(img.size, orientation) != tuple(size)
            rgb = to_rgb8(img, path)
    except READ_ERRORS as e:
        raise _cannot_read(path, e) from None
    if orientation == 1 or stored_only:
        return rgb
    return rgb.transpose(UPRIGHT[orientation])


def read_image_size(path):
    """(w, h) of the image at `path` as shown upright, read from its header (PNG: the file)."""
    try:
        with Image.open(path) as img:
            return upright_size(img.size, _orientation(img))
    except READ_ERRORS as e:
        raise _cannot_read(path, e) from None
