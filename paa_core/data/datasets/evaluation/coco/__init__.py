from .coco_eval import do_coco_evaluation


def coco_evaluation(
    dataset,
    predictions,
    output_folder,
    iou_types=("bbox",),
    expected_results=(),
    expected_results_sigma_tol=4,
    box_only=False,
):
    return do_coco_evaluation(
        dataset=dataset,
        predictions=predictions,
        output_folder=output_folder,
        iou_types=iou_types,
        expected_results=expected_results,
        expected_results_sigma_tol=expected_results_sigma_tol,
        box_only=box_only,
    )
