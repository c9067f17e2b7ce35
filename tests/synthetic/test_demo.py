"""The demo dataset: generated once, regenerated when its generator settings change, and a folder
without the generator's record (such as the real dataset) is never touched."""
import os

from thorax_ray.synthetic.demo import ensure_demo_dataset, record_path


def test_generated_once_then_regenerated_on_new_settings(tmp_path):
    path = str(tmp_path / "demo")
    assert ensure_demo_dataset(path, images=12, size=32, difficulty=0.0) is True
    assert os.path.exists(os.path.join(path, "Data_Entry_2017.csv")) and os.path.exists(record_path(path))
    assert ensure_demo_dataset(path, images=12, size=32, difficulty=0.0) is False  # reused
    assert ensure_demo_dataset(path, images=16, size=32, difficulty=0.0) is True  # settings changed
    with open(os.path.join(path, "Data_Entry_2017.csv")) as handle:
        assert len(handle.read().strip().splitlines()) == 1 + 16


def test_a_dataset_without_the_record_is_used_as_it_is(tmp_path):
    path = tmp_path / "real"
    path.mkdir()
    (path / "Data_Entry_2017.csv").write_text("Image Index\n")
    assert ensure_demo_dataset(str(path), images=12, size=32) is False
    assert (path / "Data_Entry_2017.csv").read_text() == "Image Index\n"
