"""The evaluation with its output on S3 (moto's server): every file it writes lands in the bucket, the report
embeds the plots it reads back from there, and jobs/evaluate.py takes `--out s3://...`. No Ray."""
from __future__ import annotations

import base64
import importlib.util
import io
import json
import os
import re

import boto3
import pandas as pd

from tests.evaluation.test_evaluate import fake_scores
from thorax_ray.data.manifest import build_manifest
from thorax_ray.data.nih_csv import read_bbox_list
from thorax_ray.evaluation.evaluate import EvaluationConfig, evaluate_scores, write_thresholds

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def bucket_files(s3_server: str, uri: str) -> dict[str, bytes]:
    """key under `uri` (s3://bucket/prefix) -> its bytes."""
    bucket, prefix = uri[len("s3://"):].split("/", 1)
    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    keys = [item["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for item in page.get("Contents", [])]
    return {key[len(prefix) + 1:]: client.get_object(Bucket=bucket, Key=key)["Body"].read() for key in keys}


def scores_of(synthetic_small) -> dict[str, pd.DataFrame]:
    manifest, _ = build_manifest(str(synthetic_small))
    boxes = read_bbox_list(str(synthetic_small / "BBox_List_2017.csv"))
    return {"good": fake_scores(manifest, boxes, noise=0.1, seed=1, with_maps=True),
            "weak": fake_scores(manifest, boxes, noise=0.6, seed=2, with_maps=False)}


def test_evaluation_writes_every_file_to_s3(synthetic_small, s3_server, s3_bucket):
    scores = scores_of(synthetic_small)
    out = f"{s3_bucket}/eval"
    config = EvaluationConfig(scores=(("good", "good-uri"), ("weak", "weak-uri")), data=str(synthetic_small),
                              out=out, n_boot=20, overlays=2, s3_endpoint=s3_server)
    metrics = evaluate_scores(config, lambda uri: scores[uri.split("-")[0]])
    files = bucket_files(s3_server, out)
    overlays = sorted(k for k in files if k.startswith("overlays/"))
    assert len(overlays) == 2 and all(k.endswith(".png") for k in overlays)
    assert set(files) == {"metrics.json", "report.html", "predictions.parquet", "roc_curves.png", "pr_curves.png",
                          "auroc.png", "thresholds/good.v1.json", "thresholds/weak.v1.json", "reliability_good.png",
                          "reliability_weak.png", *overlays}
    assert all(files[k].startswith(PNG_MAGIC) for k in files if k.endswith(".png"))
    assert not os.path.exists("s3:")  # no local folder named after the URI

    saved = json.loads(files["metrics.json"])
    assert set(saved["models"]) == {"good", "weak"} and saved["models"]["good"]["mean_auroc"] > 0.9
    assert json.loads(files["thresholds/good.v1.json"])["thresholds"] == saved["models"]["good"]["thresholds"]
    assert len(pd.read_parquet(io.BytesIO(files["predictions.parquet"]))) == 120

    assert metrics["report"] == f"{out}/report.html"
    html = files["report.html"].decode("utf-8")
    embedded = [base64.b64decode(u) for u in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]
    plots = {files[k] for k in ("roc_curves.png", "pr_curves.png", "auroc.png", "reliability_good.png",
                                "reliability_weak.png", *overlays)}
    # the job's files, plus what the report draws itself: the headline chart and the overlays' thumbnails
    assert len(embedded) == 7 + 1 + len(overlays) and plots <= set(embedded)  # read back from the bucket

    # thresholds versioned by listing the bucket: the same thresholds keep v1, changed ones become v2
    good = saved["models"]["good"]
    keep = dict(split_hash=saved["split_hash"], rule="youden", endpoint_url=s3_server)
    same = write_thresholds(f"{out}/thresholds", "good", good["thresholds"], **keep)
    assert same == f"{out}/thresholds/good.v1.json"
    changed = dict(good["thresholds"], Mass=0.123)
    assert write_thresholds(f"{out}/thresholds", "good", changed, **keep) == f"{out}/thresholds/good.v2.json"


def test_evaluate_job_takes_an_s3_out(synthetic_small, s3_server, s3_bucket, tmp_path, monkeypatch, capsys):
    """jobs/evaluate.py --scores ... --out s3://...: its main in-process, the scores reader stubbed (the scores
    folders exist, as the job checks before it starts)."""
    import thorax_ray.scoring

    scores = scores_of(synthetic_small)
    for name in scores:
        (tmp_path / name).mkdir()
    monkeypatch.setattr(thorax_ray.scoring, "read_scores",
                        lambda uri, endpoint_url=None: scores[os.path.basename(uri)])
    spec = importlib.util.spec_from_file_location("job_evaluate_s3", os.path.join(REPO, "jobs", "evaluate.py"))
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    out = f"{s3_bucket}/job"
    assert job.main(["--scores", f"good={tmp_path / 'good'}", "--scores", f"weak={tmp_path / 'weak'}",
                     "--data", str(synthetic_small), "--out", out, "--bootstrap", "20",
                     "--s3-endpoint", s3_server]) == 0
    printed = capsys.readouterr().out
    assert f"metrics: {out}/metrics.json\nreport: {out}/report.html" in printed
    files = bucket_files(s3_server, out)
    assert {"metrics.json", "report.html", "roc_curves.png", "pr_curves.png", "auroc.png"} <= set(files)
    assert any(k.startswith("overlays/") for k in files)
