import numpy as np
import pandas as pd
import pytest

from thorax_ray.labels import FINDINGS
from thorax_ray.synthetic.population import REAL_STATISTICS, PopulationConfig, sample_population


@pytest.fixture(scope="module")
def population():
    return sample_population(PopulationConfig(images=30_000, seed=5))


def test_exact_count_and_index_format(population):
    assert len(population) == 30_000 and population["image_index"].is_unique
    first = population.iloc[0]
    assert first["image_index"] == f"{first['patient_id']:08d}_{first['follow_up']:03d}.png"


def test_several_images_per_patient(population):
    per_patient = population.groupby("patient_id").size()
    assert per_patient.mean() > 2.5 and per_patient.max() >= 20


def test_prevalences_follow_the_real_data(population):
    labels = np.stack(population["labels"])
    for i, finding in enumerate(FINDINGS):
        real = REAL_STATISTICS[finding][0]
        assert labels[:, i].mean() == pytest.approx(real, rel=0.3, abs=0.002), finding
    assert (labels.sum(axis=1) == 0).mean() == pytest.approx(0.538, abs=0.06)
    assert (population["view_position"] == "AP").mean() == pytest.approx(0.40, abs=0.05)
    assert (population["sex"] == "M").mean() == pytest.approx(0.565, abs=0.03)


def test_metadata_carries_weak_signal(population):
    labels = pd.DataFrame(np.stack(population["labels"]), columns=FINDINGS)
    ap = population["view_position"] == "AP"
    assert ap[labels["Edema"] == 1].mean() > 0.6 > ap[labels.sum(axis=1) == 0].mean()  # AP films are sicker
    age = population["age"].where(population["age"] <= 120)
    assert age[labels["Hernia"] == 1].mean() > age.mean() + 8
    follow = population["follow_up"]
    assert follow[labels["Consolidation"] == 1].mean() > 1.5 * follow[labels.sum(axis=1) == 0].mean()


def test_deterministic_for_a_seed():
    a = sample_population(PopulationConfig(images=500, seed=1))
    b = sample_population(PopulationConfig(images=500, seed=1))
    c = sample_population(PopulationConfig(images=500, seed=2))
    pd.testing.assert_frame_equal(a.drop(columns="labels"), b.drop(columns="labels"))
    assert not a["finding_labels"].equals(c["finding_labels"])
