"""The synthetic chest X-ray renderer: API contract, determinism, boxes and presence of every signature."""
from __future__ import annotations

import numpy as np
import pytest

from thorax_ray.synthetic.findings import FINDING_SPECS
from thorax_ray.synthetic.render import ALL_FINDINGS, BOXED_FINDINGS, Patient, render_chest_xray

PATIENTS = (Patient("M", 55.0, "PA"), Patient("F", 31.0, "AP"), Patient("F", 72.0, "PA"), Patient("M", 9.0, "AP"))
NON_BOXED = tuple(f for f in ALL_FINDINGS if f not in BOXED_FINDINGS)
# Median box (w, h) of the real BBox_List_2017.csv as a fraction of the 1024-px image.
REAL_MEDIAN_WH = {
    "Atelectasis": (171, 118), "Cardiomegaly": (478, 382), "Effusion": (208, 277), "Infiltration": (228, 265),
    "Mass": (120, 141), "Nodule": (70, 68), "Pneumonia": (229, 275), "Pneumothorax": (201, 206),
}


def render(findings, seed=0, size=128, difficulty=1.0, patient=PATIENTS[0]):
    return render_chest_xray(findings, patient, size, np.random.default_rng(seed), difficulty=difficulty)


def test_every_finding_has_a_signature():
    assert set(FINDING_SPECS) == set(ALL_FINDINGS)


@pytest.mark.parametrize("size", [64, 256, 512])
def test_shape_dtype_and_not_blank(size):
    image, boxes = render(["Nodule", "Edema"], size=size)
    assert image.shape == (size, size)
    assert image.dtype == np.uint8
    assert set(boxes) == {"Nodule"}
    assert image.std() > 20  # dark lungs and background against bright mediastinum
    c = size // 2
    corner, centre = image[: size // 16, : size // 16], image[c - 4: c + 4, c - 4: c + 4]
    assert corner.mean() < centre.mean()  # air outside the body, mediastinum in the middle


@pytest.mark.parametrize("patient", PATIENTS)
def test_deterministic_given_rng_state(patient):
    a, boxes_a = render(["Effusion", "Mass", "Fibrosis"], seed=7, size=96, patient=patient)
    b, boxes_b = render(["Effusion", "Mass", "Fibrosis"], seed=7, size=96, patient=patient)
    c, boxes_c = render(["Effusion", "Mass", "Fibrosis"], seed=8, size=96, patient=patient)
    assert a.tobytes() == b.tobytes() and boxes_a == boxes_b
    assert a.tobytes() != c.tobytes()


def test_rng_is_advanced_like_any_consumer():
    rng = np.random.default_rng(3)
    first, _ = render_chest_xray([], PATIENTS[0], 64, rng)
    second, _ = render_chest_xray([], PATIENTS[0], 64, rng)
    assert first.tobytes() != second.tobytes()


@pytest.mark.parametrize("size", [64, 256])
@pytest.mark.parametrize("finding", BOXED_FINDINGS)
def test_boxes_inside_image_with_plausible_size(finding, size):
    widths, heights = [], []
    for seed in range(8):
        _, boxes = render([finding], seed=seed, size=size, patient=PATIENTS[seed % len(PATIENTS)])
        assert set(boxes) == {finding}
        x, y, w, h = boxes[finding]
        assert all(isinstance(value, int) for value in (x, y, w, h))
        assert 0 <= x and 0 <= y and w >= 1 and h >= 1 and x + w <= size and y + h <= size
        assert max(w, h) <= 0.7 * size
        widths.append(w / size)
        heights.append(h / size)
    real_w, real_h = (value / 1024 for value in REAL_MEDIAN_WH[finding])
    assert 0.5 * real_w <= np.median(widths) <= 2.0 * real_w
    assert 0.5 * real_h <= np.median(heights) <= 2.0 * real_h


def test_same_rng_state_gives_the_same_patient_at_every_size():
    findings = ["Nodule", "Mass", "Effusion", "Cardiomegaly"]
    _, small = render(findings, seed=11, size=256)
    _, large = render(findings, seed=11, size=512)
    for name in small:
        assert np.allclose(np.array(large[name]), 2 * np.array(small[name]), atol=4), name


def test_no_boxes_without_boxed_findings():
    assert render([])[1] == {}
    assert render(["No Finding"])[1] == {}
    assert render(list(NON_BOXED))[1] == {}


def test_all_findings_together_are_all_drawn_and_boxed():
    image, boxes = render(list(ALL_FINDINGS), seed=5, size=256)
    assert set(boxes) == set(BOXED_FINDINGS)
    base, _ = render([], seed=5, size=256)
    diff = np.abs(image.astype(int) - base.astype(int))
    for name, (x, y, w, h) in boxes.items():
        assert diff[y:y + h, x:x + w].mean() > 0.5, name


def test_duplicates_and_order_do_not_matter():
    a, boxes_a = render(["Mass", "Nodule", "Mass"], seed=2)
    b, boxes_b = render(["Nodule", "Mass"], seed=2)
    assert a.tobytes() == b.tobytes() and boxes_a == boxes_b


def test_adding_a_finding_does_not_move_another():
    _, alone = render(["Nodule"], seed=4)
    _, together = render(["Nodule", "Effusion", "Pneumothorax"], seed=4)
    assert together["Nodule"] == alone["Nodule"]


@pytest.mark.parametrize("finding", ALL_FINDINGS)
def test_signature_is_drawn_where_the_box_says(finding):
    """Same RNG state with and without the finding: the images differ only by its signature."""
    for seed, patient in enumerate(PATIENTS):
        base, _ = render([], seed=seed, patient=patient)
        image, boxes = render([finding], seed=seed, patient=patient)
        diff = np.abs(image.astype(np.int32) - base.astype(np.int32))
        assert diff.mean() > 0.01 and diff.max() >= 8, (finding, patient, diff.mean(), diff.max())
        if finding in BOXED_FINDINGS:
            x, y, w, h = boxes[finding]
            inside = diff[y:y + h, x:x + w].sum() / diff.sum()
            assert inside > 0.6, (finding, patient, inside)


@pytest.mark.parametrize("finding", ["Nodule", "Effusion", "Fibrosis", "Cardiomegaly"])
def test_difficulty_scales_signature_contrast(finding):
    def signal(difficulty):
        base, _ = render([], seed=1, difficulty=difficulty)
        image, _ = render([finding], seed=1, difficulty=difficulty)
        return np.abs(image.astype(int) - base.astype(int)).mean()

    assert signal(0.0) > signal(1.0) > signal(2.0) > 0


def test_unknown_finding_raises_naming_it():
    with pytest.raises(ValueError, match="Nodules"):
        render(["Nodule", "Nodules"])
    with pytest.raises(ValueError, match="Infiltrate"):
        render(["Infiltrate"])


@pytest.mark.parametrize("size, difficulty, patient", [
    (16, 1.0, PATIENTS[0]), (128, -0.5, PATIENTS[0]), (128, 3.5, PATIENTS[0]),
    (128, 1.0, Patient("m", 50.0, "PA")), (128, 1.0, Patient("M", 50.0, "LL")),
])
def test_bad_arguments_raise(size, difficulty, patient):
    with pytest.raises(ValueError):
        render([], size=size, difficulty=difficulty, patient=patient)
