"""The scoring job end to end on a local Ray: schema and metadata, size per image, incremental and
idempotent runs, quarantine accounting, s3:// in and out, prepared and metadata-only inputs."""
import dataclasses
import json
import os
import shutil
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from tests.data.pngs import write_bad_and_good
from tests.helpers import CHECKPOINT_SPLIT_HASH, make_checkpoint, upload_tree, write_text
from thorax_ray.attribution import (BOXES_TYPE, HEATMAP_METADATA_KEY, HEATMAP_SCHEMA_METADATA, decode_heatmaps,
                                    get_method, normalise_maps)
from thorax_ray.data.decode import decode_image
from thorax_ray.data.nih_csv import DATA_ENTRY_HEADER
from thorax_ray.data.preprocess import normalise_images, preprocessing_contract
from thorax_ray.labels import BOXED_FINDINGS, FINDING_COLUMNS, FINDINGS
from thorax_ray.scoring import ScoreConfig, read_scores
from thorax_ray.scoring.output import (CALIBRATED_COLUMNS, FEATURES_METADATA_KEY, SCORES_METADATA_KEY, committed_runs,
                                       output_size, read_file_metadata, read_quarantine, scored_index)
from thorax_ray.scoring.pipeline import (BLOCKS_IN_FLIGHT, IN_FLIGHT_BATCHES_PER_ACTOR, MIN_IN_FLIGHT_BYTES,
                                         bound_in_flight, in_flight_bytes, largest_read_block)
from thorax_ray.scoring.score import score
from thorax_ray.scoring.scorer import Scorer, ScorerSettings

SIZE = 64
CONTRACT = preprocessing_contract(SIZE)


# Operating points as training stores them: four boxed findings always pass, the other findings never do.
OPEN = BOXED_FINDINGS[:4]
OPERATING_POINTS = {"rule": "youden", "chosen_on": "validation",
                    "thresholds": {f: (0.0 if f in OPEN else 1.0) for f in FINDINGS}}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("checkpoint")
    return str(folder), make_checkpoint(folder, size=SIZE, payload={"operating_points": OPERATING_POINTS})


def image_paths(root):
    found = {}
    for folder, _, files in os.walk(root):
        found.update({name: os.path.join(folder, name) for name in files if name.endswith(".png")})
    return dict(sorted(found.items()))


def flat_copy(paths, folder):
    os.makedirs(folder, exist_ok=True)
    for path in paths:
        shutil.copy(path, folder)
    return str(folder)


def config(checkpoint, data, out, **kwargs):
    kwargs.setdefault("batch_size", 8)
    return ScoreConfig(checkpoint=checkpoint, input=str(data), out=str(out), **kwargs)


def parquet_files(root):
    return [os.path.join(f, n) for f, _, names in os.walk(root) for n in names if n.endswith(".parquet")]


def test_schema_metadata_round_trip_and_size(ray_local, checkpoint, synthetic_small, tmp_path):
    ckpt, model = checkpoint
    out = tmp_path / "out"
    summary = score(config(ckpt, synthetic_small, out))
    assert (summary.scored, summary.skipped, summary.quarantined_total) == (120, 0, 0)
    assert summary.compute_s > 0 and "/scores/_delta_log/" in summary.commit

    files = parquet_files(out / "scores")
    assert files and all(f"batch_date={summary.batch_date}/run_id={summary.run_id}/part-" in f for f in files)
    schema = pq.read_schema(files[0])  # a data file: batch_date is the Delta table's partition, not a column in it
    assert schema.names[:7] == ["image_index", "path", "model_id", "run_id", "scored_at", "width", "height"]
    assert schema.names[7] == "metadata_source"
    assert schema.names[8:22] == list(FINDING_COLUMNS) and schema.names[22:36] == list(CALIBRATED_COLUMNS)
    assert schema.names[36:] == ["ood_score", "heatmap", "boxes"]
    assert all(schema.field(c).type == pa.float32() for c in FINDING_COLUMNS)
    assert schema.field("heatmap").type == pa.binary() and schema.field("boxes").type == BOXES_TYPE
    assert schema.field("scored_at").type == pa.timestamp("us", tz="UTC")
    heatmap = json.loads(schema.metadata[HEATMAP_METADATA_KEY.encode()])
    # small_cnn: 64 px / 16 = 4x4 cells of the ReLU'd CAM (the default), centred where the receptive fields are:
    # (16·i + 0.5) / 64, not (i + 0.5) / 4
    centres = [(16 * i + 0.5) / 64 for i in range(4)]
    expected = HEATMAP_SCHEMA_METADATA(4, 4, "fast_cam", (centres, centres))
    assert {k: heatmap[k] for k in expected} == expected and heatmap["classes"] == list(FINDINGS)
    assert heatmap["cell_centres"]["rows"] == centres
    described = read_file_metadata(files[0])[SCORES_METADATA_KEY]
    assert described["model_id"] == summary.model_id and described["preprocessing"]["size"] == SIZE

    frame = read_scores(str(out))
    assert len(frame) == 120 and frame["image_index"].is_unique
    assert (frame["model_id"] == summary.model_id).all() and (frame["run_id"] == summary.run_id).all()
    assert (frame["width"] == 64).all() and (frame["height"] == 64).all()
    assert (frame["metadata_source"] == "csv").all()  # every image has its Data_Entry row
    assert frame.attrs["heatmap"]["shape"] == [14, 4, 4]
    assert frame.attrs["split_hash"] == CHECKPOINT_SPLIT_HASH  # what evaluation checks against its split
    # Decode round trip: the stored maps are exactly normalise_maps(default method) of the same images.
    rows = frame.sort_values("image_index").head(6)
    pixels = np.stack([decode_image(open(p, "rb").read(), SIZE).pixels for p in rows["path"]])
    images = normalise_images(torch.from_numpy(pixels).unsqueeze(1), CONTRACT, device=torch.device("cpu"))
    local = get_method("fast_cam")(model).attribute(images)
    stored = decode_heatmaps(rows["heatmap"].tolist(), (4, 4))
    assert stored.shape == (6, 14, 4, 4) and stored.dtype == np.uint8
    assert np.abs(stored.astype(int) - normalise_maps(local.maps).astype(int)).max() <= 5  # 32 stored levels
    np.testing.assert_allclose(rows[list(FINDING_COLUMNS)].to_numpy(), torch.sigmoid(local.logits).numpy(),
                               atol=1e-5)
    # Boxes: by default only boxed findings whose probability reaches the checkpoint's operating point for
    # that finding (here: OPEN always, the rest never), inside the 64x64 original frame; the metadata says so.
    for row in frame.itertuples():
        for box in row.boxes:
            assert box["finding"] in OPEN
            assert 0 <= box["x"] and box["x"] + box["w"] <= 64 and 0 <= box["y"] and box["y"] + box["h"] <= 64
    assert {box["finding"] for boxes in frame["boxes"] for box in boxes} == set(OPEN)
    gate = described["boxes"]["min_probability"]
    assert gate["kind"] == "calibrated" and gate["rule"] == "youden" and gate["thresholds"]["Mass"] == 1.0
    assert frame.attrs["boxes"]["min_probability"] == gate and frame.attrs["model_init"]["label"] == "random init"
    assert described["model_init"] == frame.attrs["model_init"]
    # Size: every Parquet file of the output, in bytes on disk, per scored image.
    total = sum(os.path.getsize(f) for f in parquet_files(out))
    assert total / len(frame) <= 2048, f"{total / len(frame):.0f} bytes per image"
    assert output_size(str(out)).bytes == sum(os.path.getsize(f) for f in files)

    # The fast path (one forward) equals Captum's per-class LayerGradCam (14 backward passes, with its ReLU
    # as fast_cam has it), end to end.
    pd.DataFrame({"path": rows["path"].head(3)}).to_parquet(tmp_path / "three.parquet")
    naive = score(config(ckpt, tmp_path / "three.parquet", tmp_path / "gradcam", method="gradcam",
                         method_options={"relu": True}))
    assert naive.method == "gradcam" and naive.scored == 3
    naive = read_scores(str(tmp_path / "gradcam")).sort_values("image_index").reset_index(drop=True)
    fast = rows.head(3).reset_index(drop=True)
    assert list(naive["image_index"]) == list(fast["image_index"])
    np.testing.assert_allclose(naive[list(FINDING_COLUMNS)], fast[list(FINDING_COLUMNS)], atol=1e-5)
    a, b = (decode_heatmaps(f["heatmap"].tolist(), (4, 4)).astype(int) for f in (fast, naive))
    assert np.abs(a - b).max() <= 9  # at most one of the 32 stored levels apart


class CrashingScorer(Scorer):
    """A model actor that dies after 8 rows (workers import it from this module: the repo is on their path)."""

    rows_before_crash = 8

    def __call__(self, table: pa.Table) -> pa.Table:
        self.rows_seen = getattr(self, "rows_seen", 0) + table.num_rows
        if self.rows_seen > self.rows_before_crash:
            raise RuntimeError(f"injected failure after {self.rows_before_crash} rows")
        return super().__call__(table)


def test_killed_run_and_next_batch_give_each_image_once(ray_local, checkpoint, synthetic_small, tmp_path,
                                                        monkeypatch):
    ckpt, _ = checkpoint
    paths = list(image_paths(synthetic_small).values())
    incoming, out = tmp_path / "incoming", tmp_path / "out"
    first = score(config(ckpt, flat_copy(paths[:20], incoming), out, batch_date="2024-01-01", max_images=12))
    assert (first.scored, first.skipped, first.deferred) == (12, 0, 8)

    flat_copy(paths[20:44], incoming)  # the next batch of images arrives
    with pytest.raises(Exception, match="injected failure"), monkeypatch.context() as crash:
        crash.setattr("thorax_ray.scoring.pipeline.Scorer", CrashingScorer)
        score(config(ckpt, incoming, out, batch_date="2024-01-02"))  # dies midway
    assert len(read_scores(str(out))) == 12 and len(committed_runs(str(out))) == 1
    committed = {run["run_id"] for run in committed_runs(str(out))}
    assert {p.name for p in out.glob("scores/batch_date=*/run_id=*")} == {f"run_id={r}" for r in committed}

    # A run killed hard leaves files without a commit record: readers never see them.
    orphan = out / "scores" / "batch_date=2024-01-02" / "run_id=20240102T000000Z-dead00"
    orphan.mkdir(parents=True)
    shutil.copy(parquet_files(out / "scores" / "batch_date=2024-01-01")[0], orphan / "part-00000-x.parquet")
    assert len(read_scores(str(out))) == 12 and len(scored_index(str(out), first.model_id)) == 12

    again = score(config(ckpt, incoming, out, batch_date="2024-01-02"))  # restarted
    assert (again.scored, again.skipped, again.quarantined_total, again.deferred) == (32, 12, 0, 0)
    assert not orphan.exists()  # older than keep_uncommitted_hours: cleaned up
    later = score(config(ckpt, incoming, out, batch_date="2024-01-03"))  # nothing new: nothing scored
    assert (later.scored, later.skipped) == (0, 44)
    frame = read_scores(str(out), model_id=first.model_id)
    assert len(frame) == 44 and frame["image_index"].is_unique
    assert sorted(frame["image_index"]) == sorted(os.path.basename(p) for p in paths[:44])
    assert frame.groupby("batch_date").size().to_dict() == {"2024-01-01": 12, "2024-01-02": 32}


def test_corrupt_inputs_quarantined_and_counts_add_up(ray_local, checkpoint, tmp_path):
    ckpt, _ = checkpoint
    data = tmp_path / "messy"
    expected = write_bad_and_good(data)  # 4 good variants, truncated, zero bytes, not a PNG, one missing
    rows = [f"{n},Effusion,0,{int(n[:8])},40,M,PA,2500,2048,0.143,0.143" for n in expected]
    write_text(str(data / "Data_Entry_2017.csv"), "\n".join([DATA_ENTRY_HEADER, *rows]) + "\n")
    out = tmp_path / "out"
    for run in range(2):
        summary = score(config(ckpt, data, out))
        assert summary.input_rows == 8
        assert summary.scored + summary.skipped + summary.quarantined_total == summary.input_rows
        assert (summary.scored, summary.skipped) == ((4, 0) if run == 0 else (0, 4))
        assert summary.quarantined == {"truncated_or_corrupt": 1, "zero_bytes": 1, "unsupported_format": 1, "missing": 1}
    quarantine = read_quarantine(str(out))
    assert len(quarantine) == 8 and quarantine["run_id"].nunique() == 2
    first = quarantine[quarantine["run_id"] == quarantine["run_id"].min()]
    assert dict(zip(first["image_index"], first["reason"])) == {n: r for n, r in expected.items() if r}
    assert first.set_index("image_index").loc["00000014_000.png", "stage"] == "locate"
    assert sorted(read_scores(str(out))["image_index"]) == sorted(n for n, r in expected.items() if not r)
    assert (read_scores(str(out))["width"] == 96).all()  # the original frame, not the 64 px scored one


def test_s3_in_and_out(ray_local, checkpoint, synthetic_small, s3_bucket, tmp_path):
    ckpt, _ = checkpoint
    paths = list(image_paths(synthetic_small).values())[:12]
    upload_tree(flat_copy(paths, tmp_path / "flat"), f"{s3_bucket}/incoming")
    upload_tree(ckpt, f"{s3_bucket}/checkpoint")
    out = f"{s3_bucket}/scores"
    summary = score(config(f"{s3_bucket}/checkpoint", f"{s3_bucket}/incoming", out))
    assert (summary.scored, summary.quarantined_total) == (12, 0)
    frame = read_scores(out)
    assert len(frame) == 12 and frame["path"].str.startswith(f"{s3_bucket}/incoming/").all()
    assert frame.attrs["heatmap"]["shape"] == [14, 4, 4]
    assert frame.attrs["split_hash"] == CHECKPOINT_SPLIT_HASH  # what evaluation checks against its split
    assert score(config(f"{s3_bucket}/checkpoint", f"{s3_bucket}/incoming", out)).skipped == 12
    assert len(read_scores(out)) == 12 and len(committed_runs(out)) == 2


def test_prepared_input(ray_local, checkpoint, tmp_path, monkeypatch):
    import thorax_ray.scoring.pipeline as job
    from thorax_ray.data.pipeline import ImageConfig
    from thorax_ray.data.prepare import PrepareConfig, prepare

    bounds = []
    monkeypatch.setattr(job, "MIN_IN_FLIGHT_BYTES", 0)
    monkeypatch.setattr(job, "bound_in_flight", lambda dataset, object_store_bytes: bounds.append(object_store_bytes))

    ckpt, _ = checkpoint
    data = tmp_path / "messy"
    expected = write_bad_and_good(data)
    rows = [f"{n},Mass,0,{int(n[:8])},40,F,AP,2500,2048,0.143,0.143" for n in expected]
    write_text(str(data / "Data_Entry_2017.csv"), "\n".join([DATA_ENTRY_HEADER, *rows]) + "\n")
    prepare(PrepareConfig(data=str(data), out=str(tmp_path / "prepared"), image=ImageConfig(size=48)))
    # a source PNG gone since prepare: its original size is unknown, so it is scored without boxes (counted),
    # never boxed in the 48 px stored frame
    gone = sorted(n for n, r in expected.items() if not r)[0]
    os.remove(image_paths(data)[gone])
    summary = score(config(ckpt, tmp_path / "prepared", tmp_path / "out", box_min_probability=None))
    assert (summary.input_rows, summary.scored, summary.quarantined_total) == (8, 4, 4)
    assert summary.unknown_size == 1 and "no boxes         1" in summary.format()
    assert committed_runs(str(tmp_path / "out"))[0]["counts"]["no_boxes_unknown_size"] == 1
    # the prepared images travel at their prepared side (48), not at the contract's (64)
    assert summary.actors == "1..1 CPU" and bounds == [IN_FLIGHT_BATCHES_PER_ACTOR * 1 * 8 * 48 * 48]
    frame = read_scores(str(tmp_path / "out"))
    assert sorted(frame["image_index"]) == sorted(n for n, r in expected.items() if not r)
    known = frame[frame["image_index"] != gone]
    assert (known["width"] == 96).all()  # read from the source PNG's header
    assert all(len(boxes) > 0 for boxes in known["boxes"])  # every boxed finding is boxed (no gate)
    missing = frame[frame["image_index"] == gone].iloc[0]
    assert pd.isna(missing["width"]) and missing["boxes"] is None and missing["heatmap"] is not None
    again = score(config(ckpt, tmp_path / "prepared", tmp_path / "out"))
    assert (again.scored, again.skipped, again.quarantined_total) == (0, 4, 4)


def test_metadata_model_writes_feature_attributions(ray_local, synthetic_small, tmp_path):
    model = make_checkpoint(tmp_path / "mlp", name="mlp", size=SIZE)
    summary = score(config(str(tmp_path / "mlp"), synthetic_small, tmp_path / "out", batch_size=64))
    assert summary.method == "metadata_ig" and summary.scored == 120
    frame = read_scores(str(tmp_path / "out"))
    assert "heatmap" not in frame.columns and "boxes" not in frame.columns
    file = parquet_files(tmp_path / "out" / "scores")[0]
    described = read_file_metadata(file)[FEATURES_METADATA_KEY]
    names = list(model.metadata_features.names)
    assert described["feature_names"] == names and described["shape"] == [14, len(names)]
    values = np.stack([np.frombuffer(v, dtype="<f4").reshape(14, len(names)) for v in frame["feature_attributions"]])
    assert np.isfinite(values).all() and np.abs(values).sum() > 0
    assert frame["width"].isna().all()


def test_boxes_traced_on_a_coarse_grid_match_full_resolution(checkpoint, synthetic_small):
    """The scorer traces boxes on a <= box_grid px grid and scales them: same boxes within a grid cell."""
    from thorax_ray.checkpoint import checkpoint_model_id

    ckpt, _ = checkpoint
    paths = list(image_paths(synthetic_small).values())[:8]
    table = pa.table({
        "image_index": [os.path.basename(p) for p in paths], "path": paths,
        "image": [decode_image(open(p, "rb").read(), SIZE).pixels.tobytes() for p in paths],
        "width": [1024] * 8, "height": [768] * 8, "ok": [True] * 8, "stage": [""] * 8, "reason": [""] * 8})
    common = dict(checkpoint_dir=ckpt, model_id=checkpoint_model_id(ckpt), method="fast_cam", stored_size=SIZE,
                  run_id="r", batch_date="2024-01-01", box_min_probability=None)

    def scorer(box_grid: int | None) -> Scorer:
        settings = ScoreConfig(checkpoint=ckpt, input="-", out="-", max_map_side=8, box_grid=box_grid)
        return Scorer(ScorerSettings.from_config(settings, **common))

    coarse = scorer(128)(table).column("boxes").to_pylist()
    full = scorer(None)(table).column("boxes").to_pylist()
    assert sum(map(len, full)) > 8
    for image_coarse, image_full in zip(coarse, full):
        largest = [{box["finding"]: box for box in reversed(boxes)} for boxes in (image_coarse, image_full)]
        assert largest[0].keys() == largest[1].keys()  # (a few-pixel second component may vanish)
        for finding, a in largest[0].items():
            b = largest[1][finding]
            assert abs(a["score"] - b["score"]) < 0.03
            assert max(abs(a[k] - b[k]) for k in "xywh") <= 2 * 1024 / 128


def test_in_flight_budget_grows_with_actors_and_batches_not_with_images():
    contract = dataclasses.replace(CONTRACT, size=224)
    one = in_flight_bytes(ScoreConfig(checkpoint="c", input="i", out="o", batch_size=128), contract, actors=1)
    eight = in_flight_bytes(ScoreConfig(checkpoint="c", input="i", out="o", batch_size=128), contract, actors=8)
    assert one == IN_FLIGHT_BATCHES_PER_ACTOR * 128 * 224 * 224 and eight == 8 * one
    tiny = in_flight_bytes(ScoreConfig(checkpoint="c", input="i", out="o", batch_size=1), contract, actors=1)
    assert tiny == MIN_IN_FLIGHT_BYTES
    given = in_flight_bytes(ScoreConfig(checkpoint="c", input="i", out="o", in_flight_mb=3), contract, actors=8)
    assert given == 3 * 2**20


def test_in_flight_budget_leaves_room_for_three_of_the_largest_read_blocks():
    """Below that, Ray Data holds the actor's finished output back and the run stalls (pipeline.in_flight_bytes)."""
    contract = dataclasses.replace(CONTRACT, size=128)
    config = ScoreConfig(checkpoint="c", input="i", out="o", batch_size=64)
    block = 4235 * 128 * 128  # the demo's largest prepared shard at 128 px (69 MB)
    assert in_flight_bytes(config, contract, actors=1, largest_block=block) == BLOCKS_IN_FLIGHT * block
    assert in_flight_bytes(config, contract, actors=1, largest_block=0) == MIN_IN_FLIGHT_BYTES
    record = {"size": 128, "files": [{"rows": 545}, {"rows": 4235}, {"rows": 1220}]}
    prepared = SimpleNamespace(kind="prepared", prepared=record)
    assert largest_read_block(prepared, contract, 128) == block
    assert largest_read_block(SimpleNamespace(kind="folder", prepared=None), contract, 128) == 0


def test_in_flight_budget_counts_images_at_the_side_they_travel_at():
    contract = dataclasses.replace(CONTRACT, size=224)
    prepared = in_flight_bytes(ScoreConfig(checkpoint="c", input="i", out="o", batch_size=128), contract, actors=1,
                               stored_size=512)
    assert prepared == IN_FLIGHT_BATCHES_PER_ACTOR * 128 * 512 * 512


def test_score_bounds_what_is_in_flight_and_a_tiny_bound_still_scores_everything(
        ray_local, checkpoint, synthetic_small, tmp_path, monkeypatch):
    import thorax_ray.scoring.pipeline as job

    bounds = []

    def recording(dataset, object_store_bytes):
        bound_in_flight(dataset, object_store_bytes)
        bounds.append((object_store_bytes, dataset.context.execution_options.resource_limits.object_store_memory))

    monkeypatch.setattr(job, "bound_in_flight", recording)
    ckpt, _ = checkpoint
    summary = score(config(ckpt, synthetic_small, tmp_path / "out", in_flight_mb=1))  # less than one block
    assert bounds == [(2**20, 2**20)]
    frame = read_scores(str(tmp_path / "out"))
    assert summary.scored == summary.input_rows == len(frame) and frame["image_index"].is_unique


@pytest.mark.parametrize("where", ["local", "s3"])
def test_two_runs_started_at_once_on_one_output_score_each_image_once(ray_local, checkpoint, synthetic_small,
                                                                       tmp_path, where, request):
    """Two scheduled runs that overlap (e.g. yesterday's still running): the output's lease makes the later
    one wait, and it then finds everything scored."""
    import threading

    ckpt, _ = checkpoint
    data = flat_copy(list(image_paths(synthetic_small).values())[:24], tmp_path / "batch")
    if where == "s3":
        bucket = request.getfixturevalue("s3_bucket")
        upload_tree(data, f"{bucket}/incoming")
        data, out = f"{bucket}/incoming", f"{bucket}/scores"
    else:
        out = str(tmp_path / "scores")
    summaries, errors = [], []

    def run():
        try:
            summaries.append(score(config(ckpt, data, out, lock_wait_s=300, method="none")))
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert sorted((s.scored, s.skipped) for s in summaries) == [(0, 24), (24, 0)]
    frame = read_scores(out)
    assert len(frame) == 24 and frame["image_index"].is_unique
    assert len(committed_runs(out)) == 2


def test_a_run_that_finds_the_output_locked_stops_naming_the_holder(ray_local, checkpoint, synthetic_small, tmp_path):
    from thorax_ray.lease import LeaseBusy, acquire_lease

    ckpt, _ = checkpoint
    out = tmp_path / "scores"
    with acquire_lease(str(out / "_lock.json"), ttl_s=60, about={"run_id": "nightly-1"}):
        with pytest.raises(LeaseBusy, match="nightly-1"):
            score(config(ckpt, synthetic_small, out, method="none"))
    assert not committed_runs(str(out))


def test_read_scores_keeps_one_row_per_image_and_model_when_commits_overlap(tmp_path):
    """Two commits holding the same image for one model (written without the lease, e.g. by an old
    version): readers see it once, from the earliest commit."""
    from tests.helpers import write_scores_commit
    from thorax_ray.scoring.output import write_table_file

    out = str(tmp_path / "scores")
    schema = pa.schema([("image_index", pa.string()), ("model_id", pa.string()), ("run_id", pa.string())])
    for run_id, images in (("20260101T000000Z-aaaaaa", ["a", "b"]), ("20260102T000000Z-bbbbbb", ["b", "c"])):
        table = pa.table({"image_index": images, "model_id": ["m"] * 2, "run_id": [run_id] * 2}, schema=schema)
        path = f"scores/batch_date=2026-01-01/run_id={run_id}/part-0.parquet"
        size = write_table_file(table, os.path.join(out, path))
        write_scores_commit(out, {"run_id": run_id, "model_id": "m", "files": [{"path": path, "rows": 2, "bytes": size}]})
    frame = read_scores(out)
    assert sorted(frame["image_index"]) == ["a", "b", "c"]
    assert frame.set_index("image_index").loc["b", "run_id"] == "20260101T000000Z-aaaaaa"
    assert list(read_scores(out, columns=["run_id"]).columns) == ["run_id"]
