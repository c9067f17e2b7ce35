"""Test-time augmentation and lossless maps in scoring, the Scorer run in-process without Ray: probability
columns (and the calibrated ones) are the TTA mean while maps and boxes stay from the un-augmented view (or
are the flipped-back mean with tta_heatmaps); --heatmap-bits 8 stores maps lossless (a 32x32 raw CAM unpooled
with --max-map-side 0, the levels 60 and 180 exactly); what was done is recorded and read back; metadata-only
models are refused before Ray. The end-to-end run (job, Ray, schema metadata) is in tests/scoring/test_cli.py."""
from __future__ import annotations

import dataclasses
import os

import numpy as np
import pyarrow as pa
import pytest
import torch

from tests.helpers import make_checkpoint, shifting_calibration, write_scores_commit
from tests.jobs.test_help import job_module
from thorax_ray.attribution import decode_heatmaps, get_method, normalise_maps
from thorax_ray.calibration import apply_calibration
from thorax_ray.checkpoint import checkpoint_model_id
from thorax_ray.cluster import ClusterCapacity
from thorax_ray.data.preprocess import normalise_images, preprocessing_contract
from thorax_ray.labels import FINDING_COLUMNS, NUM_FINDINGS
from thorax_ray.models.tta import hflip_mean_centres, tta_probabilities
from thorax_ray.scoring import ScoreConfig, read_scores
from thorax_ray.scoring.output import CALIBRATED_COLUMNS, write_table_file
from thorax_ray.scoring.score import score, tta_record
from thorax_ray.scoring.scorer import Scorer, ScorerSettings, heatmap_description, map_centres
from thorax_ray.scoring.summary import ScoreSummary

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SIZE = 64


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tta-checkpoint")
    calibration = shifting_calibration()
    model = make_checkpoint(folder, size=SIZE, payload={"calibration": calibration})
    return str(folder), model, calibration


def _pixels(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Smooth random images (blobs), uint8 (n, size, size)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    images = np.zeros((n, size, size))
    for i in range(n):
        for cy, cx, r in rng.uniform(0.1, 0.9, size=(3, 3)):
            images[i] += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (0.02 + 0.05 * r))
    return np.rint(255 * images / images.max(axis=(1, 2), keepdims=True)).astype(np.uint8)


def _table(pixels: np.ndarray) -> pa.Table:
    n = len(pixels)
    return pa.table({"image_index": [f"{i:08d}_000.png" for i in range(n)], "path": [f"/x/{i}.png" for i in range(n)],
                     "image": [p.tobytes() for p in pixels], "width": [1024] * n, "height": [1024] * n,
                     "ok": [True] * n, "stage": [""] * n, "reason": [""] * n})


def _scorer(ckpt: str, config: ScoreConfig, method: str = "fast_cam", size: int = SIZE) -> Scorer:
    return Scorer(ScorerSettings.from_config(
        config, checkpoint_dir=ckpt, model_id=checkpoint_model_id(ckpt), method=method, stored_size=size,
        run_id="r", batch_date="2024-01-01", box_min_probability=None))


def _config(ckpt: str, **kwargs) -> ScoreConfig:
    kwargs.setdefault("heatmap_bits", 8)  # lossless: stored maps compared exactly
    kwargs.setdefault("max_map_side", None)
    return ScoreConfig(checkpoint=ckpt, input="-", out="-", **kwargs)


def _columns(table: pa.Table, columns) -> np.ndarray:
    return np.column_stack([table.column(c).to_numpy() for c in columns])


@pytest.mark.parametrize("kind", ["hflip", "tencrop"])
def test_probabilities_are_the_tta_mean_and_maps_and_boxes_the_unaugmented_views(checkpoint, kind):
    ckpt, model, calibration = checkpoint
    pixels = _pixels(6, SIZE)
    plain = _scorer(ckpt, _config(ckpt))(_table(pixels))
    augmented = _scorer(ckpt, _config(ckpt, tta=kind))(_table(pixels))
    images = normalise_images(torch.from_numpy(pixels).unsqueeze(1), preprocessing_contract(SIZE),
                              device=torch.device("cpu"))
    with torch.no_grad():
        expected = tta_probabilities(model, images, kind=kind).numpy()
    probabilities = _columns(augmented, FINDING_COLUMNS)
    np.testing.assert_allclose(probabilities, expected, atol=1e-6)
    assert not np.allclose(probabilities, _columns(plain, FINDING_COLUMNS), atol=1e-4)
    np.testing.assert_allclose(_columns(augmented, CALIBRATED_COLUMNS),
                               apply_calibration(calibration, probabilities.astype(np.float64)), atol=1e-6)
    assert augmented.column("heatmap").to_pylist() == plain.column("heatmap").to_pylist()
    assert augmented.column("boxes").to_pylist() == plain.column("boxes").to_pylist()


@pytest.mark.parametrize("kind, heatmaps, passes", [("none", False, 1), ("hflip", False, 2), ("hflip", True, 2),
                                                     ("tencrop", False, 11)])
def test_views_the_attribution_passes_already_ran_are_not_run_again(checkpoint, kind, heatmaps, passes):
    """The maps' pass over the un-augmented images is also the "image" view (and with --tta-heatmaps the flipped
    pass the "hflip" view): hflip costs two passes of the network, not three (or four)."""
    ckpt, _, _ = checkpoint
    scorer = _scorer(ckpt, _config(ckpt, tta=kind, tta_heatmaps=heatmaps))
    seen = []
    hook = scorer.model.target_layer.register_forward_hook(lambda *args: seen.append(1))
    try:
        scorer(_table(_pixels(2, SIZE)))
    finally:
        hook.remove()
    assert len(seen) == passes


def test_tta_heatmaps_are_the_mean_of_the_maps_and_the_flipped_maps_flipped_back(checkpoint):
    ckpt, model, _ = checkpoint
    pixels = _pixels(4, SIZE, seed=1)
    config = _config(ckpt, tta="hflip", tta_heatmaps=True)
    scorer = _scorer(ckpt, config)
    table = scorer(_table(pixels))
    images = normalise_images(torch.from_numpy(pixels).unsqueeze(1), preprocessing_contract(SIZE),
                              device=torch.device("cpu"))
    method = get_method("fast_cam")(model)
    maps = (method.attribute(images).maps.float() + method.attribute(images.flip(-1)).maps.float().flip(-1)) / 2
    stored = decode_heatmaps(table.column("heatmap"), (4, 4))
    np.testing.assert_array_equal(stored, normalise_maps(maps))
    assert not np.array_equal(stored, normalise_maps(method.attribute(images).maps))
    # the averaged columns sit between the two views' receptive-field centres: here the bin centres
    rows, cols = map_centres(model, preprocessing_contract(SIZE), "fast_cam", None)
    assert scorer.centres == (rows, hflip_mean_centres(cols)) and scorer.centres[1] == pytest.approx(
        [(j + 0.5) / 4 for j in range(4)])
    described = heatmap_description(model, preprocessing_contract(SIZE), "fast_cam", None, heatmap_bits=8,
                                    tta_heatmaps=True)
    assert described["cell_centres"]["cols"] == list(scorer.centres[1]) and "flipped back" in described["views"]


def test_max_map_side_0_and_8_bits_store_a_32x32_raw_cam_unpooled_and_lossless(tmp_path):
    model = make_checkpoint(tmp_path, size=256, output_stride=8)
    job = job_module("score")
    config = job.build_config(job.parse_args(["--checkpoint", str(tmp_path), "--input", "-", "--out", "-",
                                              "--max-map-side", "0", "--heatmap-bits", "8", "--method", "cam"]))
    assert (config.max_map_side, config.heatmap_bits, config.method) == (None, 8, "cam")
    pixels = _pixels(2, 256, seed=2)
    table = _scorer(str(tmp_path), config, method="cam", size=256)(_table(pixels))
    images = normalise_images(torch.from_numpy(pixels).unsqueeze(1), preprocessing_contract(256),
                              device=torch.device("cpu"))
    expected = normalise_maps(get_method("cam")(model).attribute(images).maps)
    assert expected.shape == (2, NUM_FINDINGS, 32, 32)
    assert [len(v) for v in table.column("heatmap").to_pylist()] == [1 + NUM_FINDINGS * 32 * 32] * 2
    np.testing.assert_array_equal(decode_heatmaps(table.column("heatmap"), (32, 32)), expected)
    described = heatmap_description(model, preprocessing_contract(256), "cam", None, heatmap_bits=8,
                                    tta_heatmaps=False)
    assert described["shape"] == [NUM_FINDINGS, 32, 32] and described["pooling"] == "none"
    assert (described["encoding"], described["levels"]) == ("planar8", "lossless")
    assert "256 levels (lossless)" in described["layout"]


@pytest.mark.parametrize("bits, exact", [(8, True), (5, False)])
def test_levels_60_and_180_come_back_exactly_with_8_bits_only(checkpoint, bits, exact):
    ckpt, _, _ = checkpoint
    scorer = _scorer(ckpt, _config(ckpt, heatmap_bits=bits, max_map_side=16))
    levels = torch.tensor([[0.0, 60.0, 180.0, 255.0]] * 4)
    maps = levels.expand(2, NUM_FINDINGS, 4, 4).clone()
    logits = torch.zeros(2, NUM_FINDINGS)
    original = scorer.method.attribute
    scorer.method.attribute = lambda images, features=None: dataclasses.replace(original(images, features),
                                                                               maps=maps, logits=logits)
    stored = decode_heatmaps(scorer(_table(_pixels(2, SIZE))).column("heatmap"), (4, 4))
    assert np.array_equal(stored, maps.numpy().astype(np.uint8)) is exact
    if not exact:  # 32 levels: 60 -> 58, 180 -> 181
        assert sorted(set(stored.ravel().tolist())) == [0, 58, 181, 255]


def test_tta_is_recorded_and_read_back_with_the_scores(tmp_path):
    config = ScoreConfig(checkpoint="c", input="i", out=str(tmp_path), tta="tencrop")
    record = tta_record(config, preprocessing_contract(224), maps=True)
    assert record["kind"] == "tencrop" and record["resized_to"] == 256 and len(record["views"]) == 10
    assert record["heatmaps"] == "the un-augmented image (the attribution method's own pass)"
    assert "un-augmented validation predictions" in record["calibration"]
    hflip = tta_record(dataclasses.replace(config, tta="hflip", tta_heatmaps=True), preprocessing_contract(224),
                       maps=True)
    assert "flipped back" in hflip["heatmaps"]
    write_scores_commit(str(tmp_path), {"run_id": "20260101T000000Z-aaaaaa", "model_id": "m", "files": [],
                                        "tta": record})
    assert read_scores(str(tmp_path)).attrs.get("tta") is None  # no rows: nothing to describe
    path = "scores/batch_date=2026-01-01/run_id=20260102T000000Z-bbbbbb/part-0.parquet"
    size = write_table_file(pa.table({"image_index": ["a"], "model_id": ["m"]}), os.path.join(tmp_path, path))
    write_scores_commit(str(tmp_path), {"run_id": "20260102T000000Z-bbbbbb", "model_id": "m", "tta": record,
                                        "files": [{"path": path, "rows": 1, "bytes": size}]})
    assert read_scores(str(tmp_path)).attrs["tta"] == record


def test_summary_names_the_tta():
    summary = ScoreSummary(out="o", input="i", run_id="r", batch_date="2026-01-01", model_id="m", model_name="cnn",
                           method="fast_cam", input_rows=1, scored=1, skipped=0, quarantined={}, deferred=0, files=1,
                           bytes=10, elapsed_s=1.0, compute_s=1.0, model_s=1.0, actors="1")
    assert "tta" not in summary.format().splitlines()[0]
    line = dataclasses.replace(summary, tta="tencrop").format().splitlines()[0]
    assert line.endswith("method fast_cam, tta tencrop (probabilities: mean over its views)")


def test_a_metadata_model_with_tta_is_refused_before_ray_and_before_actors(tmp_path, monkeypatch):
    make_checkpoint(tmp_path / "mlp", name="mlp", size=SIZE)
    ckpt = str(tmp_path / "mlp")
    message = r"^--tta hflip: model 'mlp' takes metadata only, no image to augment; use --tta none$"
    with pytest.raises(ValueError, match=message):
        _scorer(ckpt, ScoreConfig(checkpoint=ckpt, input="-", out="-", tta="hflip"), method="metadata_ig")
    local = ClusterCapacity(alive_nodes=1, resources_up={"CPU": 2.0}, local=True)
    with pytest.raises(ValueError, match=message):  # score() itself, before resolving the input or any actor
        score(ScoreConfig(checkpoint=ckpt, input=str(tmp_path / "nowhere"), out=str(tmp_path / "out"), tta="hflip"),
              capacity=local)
    job = job_module("score")

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was started")

    monkeypatch.setattr(job, "init_ray", no_ray)
    with pytest.raises(ValueError, match=message):  # run_main prints it as `error: ...`, exit 2
        job.main(["--checkpoint", ckpt, "--input", str(tmp_path), "--out", str(tmp_path / "out"), "--tta", "hflip"])
