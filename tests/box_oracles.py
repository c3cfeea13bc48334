"""Plain-Python box arithmetic that tests compare the vectorised code against."""


def iou_plus1(a, b):
    """IoU of two xyxy boxes [x1, y1, x2, y2] with the legacy +1 widths."""
    iw = min(a[2], b[2]) - max(a[0], b[0]) + 1
    ih = min(a[3], b[3]) - max(a[1], b[1]) + 1
    inter = max(iw, 0) * max(ih, 0)

    def area(x):
        return (x[2] - x[0] + 1) * (x[3] - x[1] + 1)

    return inter / (area(a) + area(b) - inter)
