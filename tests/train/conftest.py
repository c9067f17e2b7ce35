import pytest

from thorax_ray.data.pipeline import ImageConfig
from thorax_ray.data.prepare import PrepareConfig, prepare
from thorax_ray.splits import SplitConfig
from thorax_ray.synthetic.dataset import SyntheticConfig, write_synthetic_dataset


@pytest.fixture(scope="session")
def learnable_images(tmp_path_factory, ray_local):
    """900 images with clearly drawn findings (difficulty 0.5), prepared as 64 px shards."""
    root = tmp_path_factory.mktemp("learnable")
    write_synthetic_dataset(SyntheticConfig(out=str(root / "raw"), images=900, size=96, seed=21, difficulty=0.5),
                            progress=False)
    prepare(PrepareConfig(data=str(root / "raw"), out=str(root / "prepared"), image=ImageConfig(size=64),
                          split=SplitConfig(val_fraction=0.25)))
    return root


@pytest.fixture(scope="session")
def metadata_only(tmp_path_factory):
    """A metadata-only dataset (CSV and split lists, no PNG at all)."""
    root = tmp_path_factory.mktemp("metadata_only")
    write_synthetic_dataset(SyntheticConfig(out=str(root), images=5000, seed=8, metadata_only=True), progress=False)
    return root
