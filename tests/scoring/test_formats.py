"""What hospitals send, scored end to end: a folder of PNG variants, JPEGs and DICOMs (three forms of
one picture, JPEG-compressed, unsupported ones), a text file and a hidden file, with no CSV: every
file is scored or quarantined with its reason, DICOM tags reach the fusion and metadata models, and a
model trained on synthetic data warns. Locally and from s3://."""
import numpy as np
import pytest
import torch

from tests.data.dicoms import write_mixed_folder
from tests.helpers import make_checkpoint, upload_tree
from thorax_ray.data.decode import decode_image
from thorax_ray.data.preprocess import normalise_images, preprocessing_contract
from thorax_ray.labels import FINDING_COLUMNS
from thorax_ray.scoring import ScoreConfig, read_scores
from thorax_ray.scoring.output import committed_runs, read_quarantine
from thorax_ray.scoring.score import score

SIZE = 64
DICOM_FORMS = ("mono2_8bit.dcm", "mono1_8bit.dcm", "mono2_12bit.dcm")


@pytest.fixture(scope="module")
def fusion(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fusion")
    model = make_checkpoint(folder, name="fusion", size=SIZE, backbone="small_cnn", data_origin="synthetic")
    return str(folder), model


def check_accounting(summary, expected):
    reasons = {}
    for reason in expected.values():
        if reason:
            reasons[reason] = reasons.get(reason, 0) + 1
    assert summary.input_rows == len(expected) == 13 and summary.ignored == 1
    assert (summary.scored, summary.skipped, summary.deferred) == (10, 0, 0)
    assert summary.quarantined == reasons == {"not_a_radiograph": 1, "multi_frame": 1, "unsupported_format": 1}
    assert summary.metadata_sources == {"dicom": 4, "none": 6}
    assert "out of distribution" in summary.ood_warning and "WARNING" in summary.format()


def test_mixed_folder_with_the_fusion_and_metadata_models(ray_local, fusion, tmp_path):
    checkpoint, model = fusion
    expected = write_mixed_folder(tmp_path / "incoming")
    summary = score(ScoreConfig(checkpoint=checkpoint, input=str(tmp_path / "incoming"), out=str(tmp_path / "out"),
                                batch_size=4))
    print(summary.format())
    check_accounting(summary, expected)
    frame = read_scores(str(tmp_path / "out")).set_index("image_index")
    assert sorted(frame.index) == sorted(n for n, r in expected.items() if not r)
    quarantine = read_quarantine(str(tmp_path / "out")).set_index("image_index")
    assert quarantine["reason"].to_dict() == {n: r for n, r in expected.items() if r}
    assert frame.loc[[*DICOM_FORMS, "compressed.dcm"], "metadata_source"].eq("dicom").all()
    assert frame.loc["png_gray.png", "metadata_source"] == "none" and (frame["width"] == 96).all()
    assert frame.attrs["data_origin"] == {"model": "synthetic", "input": "real", "warning": summary.ood_warning}
    assert committed_runs(str(tmp_path / "out"))[0]["data_origin"]["warning"] == summary.ood_warning

    # The three forms of one picture score alike; the tags (62 years, F, AP) reached the model.
    probabilities = frame.loc[list(DICOM_FORMS), list(FINDING_COLUMNS)].to_numpy()
    assert np.abs(probabilities - probabilities[0]).max() < 1e-3
    pixels = decode_image((tmp_path / "incoming" / DICOM_FORMS[0]).read_bytes(), SIZE).pixels
    images = normalise_images(torch.from_numpy(pixels.copy())[None, None], preprocessing_contract(SIZE),
                              device=torch.device("cpu"))
    features = torch.from_numpy(model.metadata_features.encode(
        [{"age_years": 62.0, "sex": "F", "view_position": "AP", "follow_up": None}]))
    with torch.no_grad():
        local = torch.sigmoid(model(images, features)).numpy()[0]
    np.testing.assert_allclose(probabilities[0], local, atol=1e-5)

    # The metadata MLP scores the same folder: the DICOMs' tags are its only inputs.
    mlp = tmp_path / "mlp"
    make_checkpoint(mlp, name="mlp", size=SIZE, data_origin="synthetic")
    summary = score(ScoreConfig(checkpoint=str(mlp), input=str(tmp_path / "incoming"), out=str(tmp_path / "mlp-out"),
                                batch_size=4))
    check_accounting(summary, expected)
    frame = read_scores(str(tmp_path / "mlp-out")).set_index("image_index")
    forms = frame.loc[list(DICOM_FORMS), list(FINDING_COLUMNS)].to_numpy()
    untagged = frame.loc[["png_gray.png", "export_gray.jpg"], list(FINDING_COLUMNS)].to_numpy()
    assert np.abs(forms - forms[0]).max() == 0 and np.abs(untagged - untagged[0]).max() == 0
    assert np.abs(forms[0] - untagged[0]).max() > 1e-4
    assert np.abs(frame.loc["compressed.dcm", list(FINDING_COLUMNS)].to_numpy() - forms[0]).max() > 1e-4  # 45, M, PA


def test_mixed_folder_from_s3(ray_local, fusion, s3_bucket, tmp_path):
    checkpoint, _ = fusion
    expected = write_mixed_folder(tmp_path / "incoming")
    upload_tree(tmp_path / "incoming", f"{s3_bucket}/incoming")
    upload_tree(checkpoint, f"{s3_bucket}/checkpoint")
    out = f"{s3_bucket}/scores"
    summary = score(ScoreConfig(checkpoint=f"{s3_bucket}/checkpoint", input=f"{s3_bucket}/incoming", out=out,
                                batch_size=4))
    check_accounting(summary, expected)
    frame = read_scores(out)
    assert frame["path"].str.startswith(f"{s3_bucket}/incoming/").all()
    assert frame.set_index("image_index").loc["mono1_8bit.dcm", "metadata_source"] == "dicom"
    again = score(ScoreConfig(checkpoint=f"{s3_bucket}/checkpoint", input=f"{s3_bucket}/incoming", out=out))
    assert (again.scored, again.skipped, again.quarantined_total) == (0, 10, 3)
