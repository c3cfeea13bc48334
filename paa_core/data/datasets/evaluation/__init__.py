"""Dataset-specific evaluation behind one entry point."""

from .coco import coco_evaluation


def evaluate(dataset, predictions, output_folder, **kwargs):
    """Evaluate one BoxList per dataset index with the evaluator of the dataset's type.

    Every dataset with a pycocotools `.coco` ground truth (COCODataset) uses COCO
    evaluation; other dataset types have no evaluator.
    """
    if hasattr(dataset, "coco"):
        return coco_evaluation(
            dataset=dataset, predictions=predictions, output_folder=output_folder, **kwargs
        )
    raise NotImplementedError(f"no evaluator for dataset type {type(dataset).__name__}")
