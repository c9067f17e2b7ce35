"""A scoring run over a prepared input reads its commit record once (when the input is resolved) and its
shards from that version, even when a `prepare --overwrite` swaps another version in meanwhile. The run is
the real `score()` in this process; only the Ray Data pipeline (`stream`) is replaced by one that builds
the input dataset (with Ray's reads faked) and quarantines every row instead of scoring it; no Ray starts."""
import json
import os

import pytest

import thorax_ray.scoring.score as job
from tests.data.prepared import count_commit_reads, fake_ray_reads, prepare_here
from tests.helpers import make_checkpoint
from thorax_ray.cluster import ClusterCapacity
from thorax_ray.data.preprocess import PreprocessingContract
from thorax_ray.scoring import ScoreConfig
from thorax_ray.scoring.output import ScoresWrite, committed_runs
from thorax_ray.scoring.pipeline import input_dataset
from thorax_ray.scoring.score import score

SIZE = 32
NEWER = "20990101T000000Z-ffffff"


@pytest.fixture
def prepared(synthetic_small, tmp_path):
    out = str(tmp_path / "prepared")
    return out, prepare_here(str(synthetic_small), out, size=SIZE)


class NoProgress:
    """StageProgress without its Ray actor."""

    counter = None

    def __init__(self, *args, **kwargs):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def finish(self, done):
        pass


def overwrite_commit(out: str, record: dict) -> None:
    """What a concurrent `prepare --overwrite` does last: a new prepared.json naming another version."""
    newer = {**record, "version": NEWER,
             "files": [{**f, "path": f["path"].replace(record["version"], NEWER)} for f in record["files"]]}
    with open(os.path.join(out, "prepared.json"), "w") as handle:
        json.dump(newer, handle)


def test_scoring_a_prepared_input_reads_its_commit_record_once(prepared, tmp_path, monkeypatch):
    out, record = prepared
    make_checkpoint(tmp_path / "ckpt", size=SIZE)
    streamed = []

    def stream(run, pending, gate, sink, filesystem, counter):
        overwrite_commit(out, record)  # after resolving, before the shards are read
        contract = PreprocessingContract.from_dict(run.payload.preprocessing)
        input_dataset(run.config, run.source, pending, run.model, contract, filesystem)
        streamed.append(len(pending))
        failed = pending[["image_index", "path"]].assign(stage="score", reason="not_scored_in_this_test")
        sink.result = [ScoresWrite(files=[], quarantined=failed)]

    monkeypatch.setattr(job, "stream", stream)
    monkeypatch.setattr(job, "StageProgress", NoProgress)
    shard_reads = fake_ray_reads(monkeypatch)
    reads = count_commit_reads(monkeypatch)
    summary = score(ScoreConfig(checkpoint=str(tmp_path / "ckpt"), input=out, out=str(tmp_path / "scores"),
                                batch_size=8),
                    capacity=ClusterCapacity(alive_nodes=1, resources_up={"CPU": 2.0}, local=True))
    assert reads == [out]  # once, when the input was resolved
    assert streamed == [120] and summary.input_rows == 120 and summary.quarantined_total == 120
    assert len(shard_reads) == 1 and all(f"versions/{record['version']}/" in p for p in shard_reads[0])
    assert committed_runs(str(tmp_path / "scores"))[0]["input_kind"] == "prepared"
    # the staged-output helper removed the run's folder (nothing of it committed but its quarantine rows)
    assert not list((tmp_path / "scores" / "scores").glob(f"*/run_id={summary.run_id}"))
