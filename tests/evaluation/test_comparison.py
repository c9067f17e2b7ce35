"""The summary's plain sentences: the verb follows the CI of a - b, the number keeps its sign and is
rounded as the tables round it."""
from __future__ import annotations

import math

import pytest

from thorax_ray.evaluation.comparison import (BEATS, INDISTINGUISHABLE, TRAILS, comparison_sentence, format_signed,
                                              model_sentence, verdict)


@pytest.mark.parametrize("ci, expected", [
    ([0.007, 0.054], BEATS), ([-0.054, -0.007], TRAILS), ([-0.010, 0.018], INDISTINGUISHABLE),
    ([0.0, 0.03], INDISTINGUISHABLE), ([-0.03, 0.0], INDISTINGUISHABLE),  # an end at exactly 0: not shown apart
    ([0.0004, 0.02], BEATS),  # judged on the unrounded ends
    (None, None), ([], None), ([None, 0.1], None), ([math.nan, 0.1], None)])
def test_verdict_follows_the_ci(ci, expected):
    assert verdict(ci) == expected


@pytest.mark.parametrize("value, text", [
    (0.0294, "+0.029"), (0.0295001, "+0.030"), (-0.2134, "-0.213"), (0.0, "0.000"), (-0.0004, "0.000"),
    (0.0004, "0.000"), (None, "n/a"), (math.nan, "n/a")])
def test_format_signed(value, text):
    assert format_signed(value) == text


def test_a_model_that_is_better_beats_the_other():
    assert (comparison_sentence("fusion", "small_cnn", 0.0293, [0.0071, 0.0539])
            == "fusion beats small_cnn by +0.029 mean AUROC [0.007, 0.054].")


def test_a_model_that_is_worse_trails_the_other_with_a_negative_difference():
    assert (comparison_sentence("mlp", "fusion", -0.2711, [-0.3031, -0.2419])
            == "mlp trails fusion by -0.271 mean AUROC [-0.303, -0.242].")


def test_a_ci_that_spans_zero_is_indistinguishable_whatever_the_sign():
    assert (comparison_sentence("mlp", "mlp_fu", 0.0041, [-0.0102, 0.0183])
            == "mlp is indistinguishable from mlp_fu: +0.004 mean AUROC [-0.010, 0.018], the 95% CI spans 0.")
    assert (comparison_sentence("a", "b", -0.0004, [-0.02, 0.01], what="mean AP")
            == "a is indistinguishable from b: 0.000 mean AP [-0.020, 0.010], the 95% CI spans 0.")


def test_without_a_difference_or_ci_the_sentence_says_so():
    for delta, ci in ((None, [0.1, 0.2]), (0.1, None), (0.1, [math.nan, math.nan])):
        assert comparison_sentence("a", "b", delta, ci) == (
            "a and b could not be compared on mean AUROC (no paired difference with a CI).")


def test_a_model_in_no_pair_gets_its_mean_and_the_reason():
    assert (model_sentence("small_cnn@random", 0.8301, [0.8141, 0.8432], elsewhere=True)
            == "small_cnn@random: mean AUROC 0.830 [0.814, 0.843] on the test split (evaluated on its own test rows, "
               "not paired).")
    assert (model_sentence("m", 0.7, None, split="val", alone=True)
            == "m: mean AUROC 0.700 on the val split (no paired comparison in this report).")
    assert model_sentence("m", None, None) == "m: mean AUROC n/a on the test split."
