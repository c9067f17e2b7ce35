"""Every stage on s3:// through the fault-injecting proxy (tests/s3_fault_proxy.py) in front of moto: a seeded
10% of requests answered `503 SlowDown` before they reach the store, another 10% applied by the store and
then answered `500 InternalError`. Each stage must still finish with every image exactly once, within the
one retry budget (storage.s3_attempts); and train.py, whose Ray Train storage check meets a store that
answers 500 to every HeadObject, must end with one `error: storage: ...` line, not a traceback.

At a 20% fault rate a request fails all of 5 tries (the default budget) with probability 0.2**5 = 3e-4, and a
stage here sends 100-500 requests: the stage tests set the budget to 8 (`THORAX_S3_ATTEMPTS`, read on the
driver, where the clients and image configs that travel to Ray's workers are built), 3e-6 per request.
The output leases (`OUT/_lock.json` and its probe objects) are spared: thorax_ray.lease sends each of its
requests once and resolves failures itself (being rewritten meanwhile; a 500 on its conditional-write probe
ends the run today). The outputs are checked by reading moto directly (AWS_ENDPOINT_URL, no faults); each test
prints what the proxy did (`-s` shows it). Slow: these use the session's Ray (tests/conftest.py)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from tests import fault_fixtures
from tests.helpers import make_checkpoint, upload_tree
from tests.s3_fault_proxy import FAILED_AFTER_APPLY, FaultProxy
from thorax_ray import storage

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAULTS = {"slowdown": 0.1, "fail_after_apply": 0.1, "spare": ("_lock.json",)}
BUDGET = "8"
SIZE = 64

fault_proxy = fault_fixtures.fault_proxy  # fixture


def report(stage: str, proxy: FaultProxy) -> dict:
    totals = proxy.totals()
    print(f"\n[{stage}] through the proxy: {totals}; by operation: {proxy.faults()}")
    return totals


def png_names(root) -> list[str]:
    return sorted(name for _, _, names in os.walk(root) for name in names if name.endswith(".png"))


@pytest.fixture(scope="module")
def images_on_s3(s3_server, synthetic_small, tmp_path_factory):
    """synthetic_small's 120 PNGs (flat, under incoming/) and its NIH layout (under nih/) in a bucket, written
    straight to moto; and a scoring checkpoint."""
    import boto3

    bucket = "thorax-through-faults"
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").create_bucket(Bucket=bucket)
    flat = tmp_path_factory.mktemp("flat")
    for folder, _, names in os.walk(synthetic_small):
        for name in names:
            if name.endswith(".png"):
                shutil.copy(os.path.join(folder, name), flat)
    upload_tree(flat, f"s3://{bucket}/incoming")
    upload_tree(synthetic_small, f"s3://{bucket}/nih")
    checkpoint = tmp_path_factory.mktemp("checkpoint")
    make_checkpoint(checkpoint, size=SIZE)
    upload_tree(checkpoint, f"s3://{bucket}/checkpoint")
    return f"s3://{bucket}"


def test_prepare_through_faults_writes_every_image_once(ray_local, images_on_s3, synthetic_small, fault_proxy,
                                                        monkeypatch):
    from thorax_ray.data.pipeline import ImageConfig
    from thorax_ray.data.prepare import PrepareConfig, prepare
    from thorax_ray.data.shards import prepared_files

    monkeypatch.setenv(storage.S3_ATTEMPTS_ENV, BUDGET)
    proxy = fault_proxy(seed=11, **FAULTS)
    out = f"{images_on_s3}/prepared"
    summary = prepare(PrepareConfig(data=f"{images_on_s3}/nih", out=out,
                                    image=ImageConfig(size=32, endpoint_url=proxy.endpoint)))
    totals = report("prepare", proxy)
    _, files = prepared_files(out)  # straight from moto, without Ray
    rows = pd.concat([storage.read_parquet(f, columns=["image_index"]) for f in files])
    print(f"[prepare] rows out: {len(rows)}, quarantined: {summary.quarantined}")
    assert totals["slowdown"] > 0 and totals["failed_after_apply"] > 0
    assert not summary.quarantined and sum(summary.written.values()) == 120
    assert sorted(rows["image_index"]) == png_names(synthetic_small)  # every image, once


@pytest.fixture(scope="module")
def scored_through_faults(ray_local, images_on_s3, tmp_path_factory):
    from thorax_ray.scoring import ScoreConfig
    from thorax_ray.scoring.score import score

    with FaultProxy(os.environ["AWS_ENDPOINT_URL"], seed=12, **FAULTS) as proxy, pytest.MonkeyPatch.context() as patch:
        patch.setenv(storage.S3_ATTEMPTS_ENV, BUDGET)
        out = f"{images_on_s3}/scores"
        summary = score(ScoreConfig(checkpoint=f"{images_on_s3}/checkpoint", input=f"{images_on_s3}/incoming",
                                    out=out, batch_size=16, endpoint_url=proxy.endpoint))
        return out, summary, report("score", proxy)


def test_score_through_faults_scores_every_image_once(scored_through_faults, synthetic_small):
    from thorax_ray.scoring import read_scores
    from thorax_ray.scoring.output import committed_runs

    out, summary, totals = scored_through_faults
    frame = read_scores(out)  # straight from moto
    print(f"[score] rows out: {len(frame)}, scored {summary.scored}, quarantined {summary.quarantined_total}")
    assert totals["slowdown"] > 0 and totals["failed_after_apply"] > 0
    assert (summary.scored, summary.quarantined_total) == (120, 0)
    assert sorted(frame["image_index"]) == png_names(synthetic_small) and len(committed_runs(out)) == 1


def test_evaluate_through_faults_reads_and_writes_every_image_once(scored_through_faults, synthetic_small,
                                                                   fault_proxy, monkeypatch):
    from thorax_ray.evaluation.evaluate import EvaluationConfig, evaluate_scores
    from thorax_ray.scoring import read_scores

    scores, _, _ = scored_through_faults
    monkeypatch.setenv(storage.S3_ATTEMPTS_ENV, BUDGET)
    proxy = fault_proxy(seed=13, **FAULTS)
    out = f"{scores.rsplit('/', 1)[0]}/evaluation"
    config = EvaluationConfig(scores=(("cnn", scores),), data=str(synthetic_small), out=out, n_boot=20, overlays=2,
                              s3_endpoint=proxy.endpoint)
    metrics = evaluate_scores(config, lambda uri: read_scores(uri, endpoint_url=proxy.endpoint))
    totals = report("evaluate", proxy)
    predictions = storage.read_parquet(f"{out}/predictions.parquet")  # straight from moto
    print(f"[evaluate] prediction rows out: {len(predictions)}")
    assert totals["slowdown"] + totals["failed_after_apply"] > 0
    assert metrics["report"] == f"{out}/report.html" and storage.read_json(f"{out}/metrics.json")
    assert len(predictions) == 120 and not pd.Series(predictions["image_index"]).duplicated().any()


def test_training_checkpoints_through_faults(ray_local, metadata_only, s3_bucket, fault_proxy, monkeypatch):
    """Ray Train's storage check and checkpoint uploads (pyarrow, on the controller and the worker) and the
    run's metrics.json (s3fs) through the faults."""
    from thorax_ray.checkpoint import epoch_checkpoints, run_metrics
    from thorax_ray.train.config import TrainConfig
    from thorax_ray.train.train import fit

    monkeypatch.setenv(storage.S3_ATTEMPTS_ENV, BUDGET)
    proxy = fault_proxy(seed=14, **FAULTS)
    config = TrainConfig.from_dict({
        "data": {"data": str(metadata_only), "batch_size": 256, "s3_endpoint": proxy.endpoint},
        "model": {"name": "mlp"}, "optim": {"epochs": 1},
        "run": {"storage": f"{s3_bucket}/runs", "name": "mlp-faults", "workers": 1}})
    result = fit(config, progress=False)
    totals = report("train", proxy)
    assert result.error is None
    assert [epoch for epoch, _ in epoch_checkpoints(result.run_dir)] == [1]  # straight from moto
    metrics = run_metrics(result.run_dir)
    assert metrics["epochs_run"] == 1 and metrics["best_checkpoint"] and not metrics["best_checkpoint_pending"]
    assert totals["slowdown"] + totals["failed_after_apply"] > 0


def test_train_job_ends_with_one_line_when_the_storage_check_fails(ray_job_env, metadata_only, s3_bucket,
                                                                   fault_proxy):
    """Every HeadObject of Ray Train's storage check (`.validate_storage_marker`, pyarrow, in the controller)
    answered 500 after the store applied the request: the check fails after the budget, and the job says so in
    one line, exit 75, no traceback."""
    proxy = fault_proxy(always={"HeadObject": FAILED_AFTER_APPLY}, always_on=(".validate_storage_marker",))
    env = {**os.environ, **ray_job_env, storage.S3_ATTEMPTS_ENV: "2", "PYTHONPATH": REPO}
    command = [sys.executable, "jobs/train.py", "--data", str(metadata_only), "--model", "mlp", "--epochs", "1",
               "--workers", "1", "--storage", f"{s3_bucket}/runs", "--name", "head-500", "--s3-endpoint",
               proxy.endpoint]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    report("train job, HeadObject 500", proxy)
    print(result.stdout[-2000:], result.stderr[-3000:])
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: storage: HeadObject {s3_bucket}/runs/head-500/.validate_storage_marker failed "
                      "after 2 attempts: HTTP 500 (No response body.)"]
    assert result.returncode == 75
    assert "Traceback" not in result.stderr and "testing" not in result.stderr
    assert proxy.faults()["HeadObject"]["failed_after_apply"] == 2
