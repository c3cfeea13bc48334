"""The detector as a function of tensors only, for torch.export and ONNX."""

from torch import Tensor, nn


class DetectionsAsTensors(nn.Module):
    """Wraps a detector in eval mode: forward(images [N, 3, H, W], normalised and padded to
    the size divisibility; every image is taken as H x W) returns, per image, boxes [K, 4]
    (xyxy, in input pixels), scores [K] and labels [K] (1..C), flattened into one tuple.
    K varies with the image: the traced graph keeps it symbolic."""

    def __init__(self, detector: nn.Module):
        super().__init__()
        self.detector = detector
        self.eval()

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        outputs = []
        for boxlist in self.detector(images):
            outputs += [boxlist.bbox, boxlist.get_field("scores"), boxlist.get_field("labels")]
        return tuple(outputs)
