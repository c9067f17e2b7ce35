import numpy as np
import pandas as pd
import pytest

from thorax_ray.data.splits import SplitConfig, SplitError, assign_splits, check_patient_disjoint, split_hash


def population(patients=400, seed=0):
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 8, patients)
    pids = np.repeat(np.arange(1, patients + 1), counts)
    follow = np.concatenate([np.arange(c) for c in counts])
    return pd.DataFrame({"patient_id": pids, "image_index": [f"{p:08d}_{k:03d}.png" for p, k in zip(pids, follow)]})


def test_hash_split_is_patient_disjoint_with_requested_fractions():
    frame = population()
    frame["split"] = assign_splits(frame, SplitConfig(val_fraction=0.1, test_fraction=0.2))
    check_patient_disjoint(frame)
    share = frame.groupby("split")["patient_id"].nunique() / frame["patient_id"].nunique()
    assert share["test"] == pytest.approx(0.2, abs=0.06) and share["val"] == pytest.approx(0.1, abs=0.05)


def test_split_is_stable_across_row_order_and_subsets():
    frame = population()
    first = assign_splits(frame)
    shuffled = frame.sample(frac=1.0, random_state=1)
    assert (assign_splits(shuffled).sort_index() == first).all()
    subset = frame[frame["patient_id"] <= 100]
    assert (assign_splits(subset) == first[subset.index]).all()
    assert split_hash(frame["image_index"], first) == split_hash(shuffled["image_index"], first[shuffled.index])


def test_split_hash_changes_with_seed_or_assignment():
    frame = population()
    a, b = assign_splits(frame, SplitConfig(seed=0)), assign_splits(frame, SplitConfig(seed=1))
    assert split_hash(frame["image_index"], a) != split_hash(frame["image_index"], b)


def test_official_lists_are_used_and_validation_carved_by_patient():
    frame = population()
    test_patients = set(range(1, 81))
    is_test = frame["patient_id"].isin(test_patients)
    split = assign_splits(frame, SplitConfig(val_fraction=0.25),
                          test_names=set(frame.loc[is_test, "image_index"]),
                          train_val_names=set(frame.loc[~is_test, "image_index"]))
    assert (split[is_test] == "test").all() and (split[~is_test] != "test").all()
    frame["split"] = split
    check_patient_disjoint(frame)
    val_share = frame.loc[~is_test].groupby("split")["patient_id"].nunique()["val"] / 320
    assert val_share == pytest.approx(0.25, abs=0.08)


def test_unlisted_rows_follow_their_patient():
    frame = population()
    is_test = frame["patient_id"] <= 50
    test_names = set(frame.loc[is_test, "image_index"]) - {"00000001_000.png"}
    split = assign_splits(frame, test_names=test_names, train_val_names=set(frame.loc[~is_test, "image_index"]))
    assert split[frame["image_index"] == "00000001_000.png"].item() == "test"


def test_lists_that_leak_patients_are_rejected():
    frame = population()
    names = list(frame["image_index"])
    patient_one = [n for n in names if n.startswith("00000001_")]
    if len(patient_one) < 2:
        frame = pd.concat([frame, pd.DataFrame({"patient_id": [1], "image_index": ["00000001_099.png"]})])
        patient_one = [n for n in frame["image_index"] if n.startswith("00000001_")]
    with pytest.raises(SplitError, match="patients in both test and train_val"):
        assign_splits(frame, test_names={patient_one[0]}, train_val_names=set(frame["image_index"]) - {patient_one[0]})


def test_disjointness_check_catches_leaks():
    frame = pd.DataFrame({"patient_id": [1, 1, 2], "split": ["train", "test", "val"]})
    with pytest.raises(SplitError, match="1 patients appear in more than one split"):
        check_patient_disjoint(frame)


def test_bad_fractions():
    with pytest.raises(SplitError):
        SplitConfig(val_fraction=0.6, test_fraction=0.5)


def test_a_required_split_without_patients_names_the_split_and_the_fix():
    from thorax_ray.data.splits import check_required_splits

    frame = pd.DataFrame({"patient_id": [1, 1, 2, 3], "split": ["train", "train", "test", "train"]})
    check_required_splits(frame, SplitConfig(), source="data/x")  # nothing required
    with pytest.raises(SplitError, match=r"data/x: the val split has no patients \(patients per split: "
                                         r"train 2, val 0, test 1\); raise --val-fraction \(now 0.1\)"):
        check_required_splits(frame, SplitConfig(required=("train", "val")), source="data/x")
    with pytest.raises(SplitError, match="unknown split"):
        SplitConfig(required=("validation",))


# -- the kind of split (issue 23, item 4) -----------------------------------------------------------------

def official_lists(frame, test_patients=80):
    is_test = frame["patient_id"] <= test_patients
    return {"test_names": set(frame.loc[is_test, "image_index"]),
            "train_val_names": set(frame.loc[~is_test, "image_index"])}


def test_default_split_is_unchanged():
    """Split hashes computed before SplitConfig had a kind: the default (and any seed) splits the same rows."""
    frame = population()
    assert SplitConfig().kind == "official"
    assert split_hash(frame["image_index"], assign_splits(frame)) == "ab8a66ccc6ffbf88"
    assert split_hash(frame["image_index"], assign_splits(frame, SplitConfig(seed=3))) == "b4e9d026a5478d55"


def test_an_unknown_kind_is_refused_naming_the_known_ones():
    with pytest.raises(SplitError, match=r"unknown split kind 'chexnet'; known: \['official', 'random'\]"):
        SplitConfig(kind="chexnet")


def test_split_record_and_its_description():
    from thorax_ray.data.splits import describe_split, split_record

    chexnet = split_record(SplitConfig(kind="random", val_fraction=0.1, test_fraction=0.2), official_lists=False)
    assert chexnet == {"kind": "random", "requested": "random", "val_fraction": 0.1, "test_fraction": 0.2, "seed": 0}
    assert describe_split(chexnet) == "random patient split 70/10/20 (train/val/test), seed 0"
    official = split_record(SplitConfig(seed=2), official_lists=True)
    assert official == {"kind": "official", "requested": "official", "val_fraction": 0.1, "test_fraction": None,
                        "seed": 2}
    assert describe_split(official) == "official split (NIH's test_list.txt; validation 10% of train_val patients, seed 2)"
    fallback = split_record(SplitConfig(), official_lists=False)  # asked for the lists, the dataset has none
    assert fallback["kind"] == "random" and fallback["requested"] == "official"
    assert describe_split(fallback).endswith("seed 0 (no official lists in the dataset)")
    assert describe_split(None) == describe_split({"kind": "<b>"}) == "not recorded"
