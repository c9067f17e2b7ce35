"""Evaluation of thorax-ray models: classification metrics with patient-level bootstrap CIs
(`classification`), paired comparisons (`comparison`), Wang et al. 2017 localization accuracy
(`localization`), plots and a self-contained HTML report; `run` evaluates scores, `checkpoint` a checkpoint."""
