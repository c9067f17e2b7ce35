"""What a sweep leaves behind, written where --out points: results.csv and best_config.yaml on S3 (moto's
server) as on a local disk, and the exported config read back by the training job's loader."""
import io

import pandas as pd
import pytest

from thorax_ray import storage
from thorax_ray.train.config import TrainConfig
from thorax_ray.tune.results import TrialRow, best_config, write_best_config, write_results
from thorax_ray.tune.trainable import TrialSetup


def trial_row(trial: str, auroc: float | None) -> TrialRow:
    return TrialRow(trial=trial, status="TERMINATED", sample={"optim.lr": 3e-3}, run_dir=f"runs/{trial}",
                    best_val_mean_auroc=auroc, best_epoch=1, per_class_auroc={"Hernia": auroc}, metric_value=auroc,
                    epochs_run=2, max_epochs=3, stopped_early=True, wall_time_s=12.34, executions=1, error=None)


@pytest.fixture
def setup(s3_server) -> TrialSetup:
    base = {"data": {"data": "data/demo", "s3_endpoint": s3_server}, "model": {"name": "mlp"}}
    return TrialSetup(base=base, runs_root="runs")


@pytest.mark.parametrize("where", ["local", "s3"])
def test_results_and_best_config_land_where_out_points(where, setup, s3_bucket, tmp_path):
    out = f"{s3_bucket}/sweep" if where == "s3" else str(tmp_path / "sweep")
    rows = [trial_row("t1", 0.71), trial_row("t2", 0.64)]
    csv_path = write_results(rows, out, endpoint_url=setup.endpoint_url)
    assert csv_path == storage.join(out, "results.csv")
    table = pd.read_csv(io.StringIO(storage.read_text(csv_path, endpoint_url=setup.endpoint_url)))
    assert list(table["trial"]) == ["t1", "t2"] and table["auroc_Hernia"].tolist() == [0.71, 0.64]

    best = best_config(rows, setup)
    path = write_best_config(*best, out, experiment="smoke", metric="val_mean_auroc", endpoint_url=setup.endpoint_url)
    text = storage.read_text(path, endpoint_url=setup.endpoint_url)
    assert text.startswith("# Best trial t1 of Tune experiment 'smoke': val_mean_auroc 0.7100")
    assert f"python jobs/train.py --config {path}\n" in text
    loaded = TrainConfig.from_yaml(path)  # what jobs/train.py --config does
    assert loaded == best[1] and loaded.optim.lr == 3e-3 and loaded.model.name == "mlp"


def test_setup_names_the_base_configs_endpoint():
    endpoint = "http://127.0.0.1:9"
    assert TrialSetup(base={"data": {"s3_endpoint": endpoint}}, runs_root="r").endpoint_url == endpoint
    assert TrialSetup(base={}, runs_root="r").endpoint_url is None
