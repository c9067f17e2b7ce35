"""The data origin of datasets, prepared outputs and manifests, and the out-of-distribution check."""
import shutil

from tests.helpers import upload_tree
from thorax_ray.data.locate import SYNTHETIC_RECORD
from thorax_ray.data.manifest import build_manifest, write_manifest
from thorax_ray.data.origin import data_origin, ood_check


def test_synthetic_datasets_carry_their_record_and_others_are_real(synthetic_small, tmp_path, s3_bucket):
    assert data_origin(str(synthetic_small)) == "synthetic"
    copy = tmp_path / "copy"
    shutil.copytree(synthetic_small, copy)
    (copy / SYNTHETIC_RECORD).unlink()
    assert data_origin(str(copy)) == "real" and build_manifest(str(copy))[1].data_origin == "real"
    frame, summary = build_manifest(str(synthetic_small))
    assert summary.data_origin == "synthetic" and "data origin      synthetic" in summary.format()
    write_manifest(frame, str(tmp_path / "manifest.parquet"), summary)
    assert data_origin(str(tmp_path / "manifest.parquet")) == "synthetic"
    upload_tree(synthetic_small, f"{s3_bucket}/nih")
    assert data_origin(f"{s3_bucket}/nih") == "synthetic"


def test_ood_check():
    assert ood_check("synthetic", "real")["warning"].startswith("out of distribution")
    assert ood_check("synthetic", "synthetic") == {"model": "synthetic", "input": "synthetic", "warning": None}
    assert ood_check("real", "real")["warning"] is None
    assert ood_check(None, "real") == {"model": "unknown", "input": "real", "warning": None}
