"""Evaluation of thorax-ray models: classification metrics with patient-level bootstrap CIs,
Wang et al. 2017 localization accuracy, plots and a self-contained HTML report."""
from thorax_ray.evaluation.classification import (auroc_mann_whitney, average_precision, bootstrap_auroc_ci,
                                                  bootstrap_aurocs, bootstrap_image_weights, choose_thresholds,
                                                  paired_bootstrap_difference, subgroup_auroc, summarize_model,
                                                  threshold_metrics, thresholds_document, thresholds_from_document)
from thorax_ray.evaluation.comparison import comparison_ci, comparison_table, format_comparison_table
from thorax_ray.evaluation.localization import (IOBB_THRESHOLDS, IOU_THRESHOLDS, chance_localization, iobb,
                                                iobb_array, iou, iou_array, localization_accuracy, mean_accuracy,
                                                threshold_key)
from thorax_ray.evaluation.plots import plot_auroc_comparison, plot_heatmap_overlay, plot_pr_curves, plot_roc_curves
from thorax_ray.evaluation.references import (REFERENCE_AUROC, REFERENCE_LOCALIZATION_IOBB,
                                              REFERENCE_LOCALIZATION_LABEL)
from thorax_ray.evaluation.report import write_report

__all__ = [
    "IOBB_THRESHOLDS", "IOU_THRESHOLDS", "REFERENCE_AUROC", "REFERENCE_LOCALIZATION_IOBB", "REFERENCE_LOCALIZATION_LABEL",
    "auroc_mann_whitney", "average_precision", "bootstrap_auroc_ci", "bootstrap_aurocs", "bootstrap_image_weights",
    "chance_localization", "choose_thresholds", "comparison_ci", "comparison_table", "format_comparison_table", "iobb",
    "iobb_array", "iou", "iou_array", "localization_accuracy", "mean_accuracy", "paired_bootstrap_difference",
    "plot_auroc_comparison", "plot_heatmap_overlay", "plot_pr_curves", "plot_roc_curves", "subgroup_auroc",
    "summarize_model", "threshold_key", "threshold_metrics", "thresholds_document", "thresholds_from_document",
    "write_report",
]
