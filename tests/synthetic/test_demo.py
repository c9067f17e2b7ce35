"""The demo dataset: generated once, regenerated when its generator settings change, and a folder
without the generator's record (such as the real dataset) is never touched."""
import os

import pytest

from thorax_ray.synthetic.dataset import RECORD_FILE, SyntheticError, recorded_settings
from thorax_ray.synthetic.demo import ensure_demo_dataset, legacy_record_path


def test_generated_once_then_regenerated_on_new_settings(tmp_path):
    path = str(tmp_path / "demo")
    assert ensure_demo_dataset(path, images=12, size=32, difficulty=0.0) is True
    assert os.path.exists(os.path.join(path, "Data_Entry_2017.csv")) and recorded_settings(path)["images"] == 12
    assert ensure_demo_dataset(path, images=12, size=32, difficulty=0.0) is False  # reused
    assert ensure_demo_dataset(path, images=16, size=32, difficulty=0.0) is True  # settings changed
    with open(os.path.join(path, "Data_Entry_2017.csv")) as handle:
        assert len(handle.read().strip().splitlines()) == 1 + 16
    assert sorted(os.listdir(tmp_path)) == ["demo", "demo_preview.png"]  # no staging folder left


def test_a_dataset_without_the_record_is_used_as_it_is(tmp_path):
    path = tmp_path / "real"
    path.mkdir()
    (path / "Data_Entry_2017.csv").write_text("Image Index\n")
    assert ensure_demo_dataset(str(path), images=12, size=32) is False
    assert (path / "Data_Entry_2017.csv").read_text() == "Image Index\n"


def test_an_interrupted_generation_leaves_no_dataset_and_is_generated_again(tmp_path, monkeypatch):
    """Before: the CSVs were written into the dataset folder first, so a generation stopped while rendering
    left a folder that the next run used as finished data."""
    import thorax_ray.synthetic.dataset as dataset

    path = str(tmp_path / "demo")

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(dataset, "_render_all", stopped)
    with pytest.raises(KeyboardInterrupt):
        ensure_demo_dataset(path, images=12, size=32)
    assert os.listdir(tmp_path) == []  # nothing at `path`, no staging folder either
    monkeypatch.undo()
    assert ensure_demo_dataset(path, images=12, size=32) is True
    assert recorded_settings(path) is not None and os.path.exists(os.path.join(path, RECORD_FILE))


def test_a_folder_of_other_files_is_an_error_and_left_alone(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(SyntheticError, match="not a complete synthetic dataset"):
        ensure_demo_dataset(str(tmp_path / "mine"), images=12, size=32)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_a_dataset_recorded_by_an_earlier_version_is_adopted_or_made_again(tmp_path):
    path = tmp_path / "demo"
    path.mkdir()
    (path / "Data_Entry_2017.csv").write_text("Image Index\n")
    with open(legacy_record_path(str(path)), "w") as handle:  # same settings: kept, its record moved inside
        handle.write('{"images": 12, "size": 32, "seed": 0, "difficulty": 0.0}')
    assert ensure_demo_dataset(str(path), images=12, size=32) is False
    assert recorded_settings(str(path))["images"] == 12 and not os.path.exists(legacy_record_path(str(path)))
    assert (path / "Data_Entry_2017.csv").read_text() == "Image Index\n"
    os.remove(path / RECORD_FILE)
    with open(legacy_record_path(str(path)), "w") as handle:  # other settings: made again
        handle.write('{"images": 10, "size": 32, "seed": 0, "difficulty": 0.0}')
    assert ensure_demo_dataset(str(path), images=12, size=32) is True
    assert recorded_settings(str(path))["images"] == 12 and not os.path.exists(legacy_record_path(str(path)))


def test_bad_settings_fail_before_anything_is_touched(tmp_path):
    path = tmp_path / "demo"
    with pytest.raises(SyntheticError, match="difficulty must be between 0 and 3"):
        ensure_demo_dataset(str(path), images=12, size=32, difficulty=-5)
    assert not path.exists()
