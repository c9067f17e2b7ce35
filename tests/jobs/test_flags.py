"""Every job's config is built from its flags by one shared function (thorax_ray.config_io.config_from_flags)
and is exactly what the job's hand-written construction built before (redesign issue, item 5). The
expected configs below were printed by that old construction for the same command lines, and are compared
by repr, so an int where a float was (or a list where a tuple was) fails too. No Ray is started."""
import argparse

import pytest

from tests.jobs.test_help import job_module
from thorax_ray.cli import field_default, show_config_defaults, zero_means_none
from thorax_ray.config_io import Flag, config_from_flags, overrides_from_flags
from thorax_ray.data.pipeline import ImageConfig
from thorax_ray.data.prepare import PrepareConfig
from thorax_ray.data.splits import SplitConfig
from thorax_ray.evaluation.evaluate import EvaluationConfig
from thorax_ray.losses import LossConfig
from thorax_ray.scoring import ScoreConfig
from thorax_ray.synthetic.dataset import SyntheticConfig
from thorax_ray.train.config import AugmentConfig, DataConfig, ModelConfig, OptimConfig, RunSettings, TrainConfig

SCORE_REQUIRED = ["--checkpoint", "ck", "--input", "in", "--out", "o"]
SCORE_EVERY_FLAG = SCORE_REQUIRED + [
    "--metadata", "m.csv", "--method", "gradcam", "--batch-size", "7", "--min-actors", "2", "--max-actors", "3",
    "--gpus-per-actor", "0.5", "--actor-cpus", "2", "--box-min-probability", "0.3", "--box-threshold", "100",
    "--max-boxes", "2", "--box-grid", "0", "--max-map-side", "0", "--max-images", "50", "--in-flight-mb", "99",
    "--batch-date", "2024-01-02", "--overlays", "ov", "--limit", "3", "--overlay-threshold", "none",
    "--wait-for-lock", "5", "--keep-uncommitted-hours", "2", "--s3-endpoint", "http://e", "--verbose",
    "--address", "auto", "--use-gpu", "false", "--cluster-config", "c.yaml", "--shared-fs", "--heatmap-bits", "8",
    "--tta", "hflip", "--tta-heatmaps", "--placement-timeout", "30"]
SCORE_CONVERSIONS = SCORE_REQUIRED + [
    "--box-grid", "64", "--max-map-side", "8", "--use-gpu", "true", "--box-min-probability", "calibrated",
    "--overlay-threshold", "-1", "--limit", "0", "--wait-for-lock", "0", "--tta", "tencrop"]


def build(job: str, argv: list[str]):
    module = job_module(job)
    return module.build_config(module.parse_args(argv))


@pytest.mark.parametrize("argv, expected", [
    (SCORE_REQUIRED, ScoreConfig(
        checkpoint='ck', input='in', out='o', metadata=None, method=None, method_options={}, batch_size=32,
        use_gpu='auto', gpus_per_actor=1.0, min_actors=1, max_actors=None, actor_cpus=None, placement_timeout_s=300.0,
        cluster_config=None,
        shared_fs=False, lock_wait_s=0.0, lock_ttl_s=60.0, max_map_side=16, heatmap_bits=5, tta='none',
        tta_heatmaps=False, box_min_probability='calibrated',
        box_threshold=180, max_boxes=2, box_grid=128, max_images=None, rows_per_file=8192, compression='zstd',
        read_attempts=None, decode_cpus=1.0, in_flight_mb=None, keep_uncommitted_hours=24.0, run_id=None,
        batch_date=None, overlays=None, overlay_limit=8, overlay_threshold='calibrated', endpoint_url=None)),
    (SCORE_EVERY_FLAG, ScoreConfig(
        checkpoint='ck', input='in', out='o', metadata='m.csv', method='gradcam', method_options={}, batch_size=7,
        use_gpu='false', gpus_per_actor=0.5, min_actors=2, max_actors=3, actor_cpus=2.0, placement_timeout_s=30.0,
        cluster_config='c.yaml',
        shared_fs=True, lock_wait_s=5.0, lock_ttl_s=60.0, max_map_side=None, heatmap_bits=8, tta='hflip',
        tta_heatmaps=True, box_min_probability=0.3,
        box_threshold=100.0, max_boxes=2, box_grid=None, max_images=50, rows_per_file=8192, compression='zstd',
        read_attempts=None, decode_cpus=1.0, in_flight_mb=99, keep_uncommitted_hours=2.0, run_id=None,
        batch_date='2024-01-02', overlays='ov', overlay_limit=3, overlay_threshold=None, endpoint_url='http://e')),
    (SCORE_CONVERSIONS, ScoreConfig(
        checkpoint='ck', input='in', out='o', metadata=None, method=None, method_options={}, batch_size=32,
        use_gpu='true', gpus_per_actor=1.0, min_actors=1, max_actors=None, actor_cpus=None, placement_timeout_s=300.0,
        cluster_config=None,
        shared_fs=False, lock_wait_s=0.0, lock_ttl_s=60.0, max_map_side=8, heatmap_bits=5, tta='tencrop',
        tta_heatmaps=False, box_min_probability='calibrated',
        box_threshold=180, max_boxes=2, box_grid=64, max_images=None, rows_per_file=8192, compression='zstd',
        read_attempts=None, decode_cpus=1.0, in_flight_mb=None, keep_uncommitted_hours=24.0, run_id=None,
        batch_date=None, overlays=None, overlay_limit=0, overlay_threshold=None, endpoint_url=None)),
], ids=["defaults", "every-flag", "conversions"])
def test_score_config(argv, expected):
    assert repr(build("score", argv)) == repr(expected)


TRAIN_EVERY_FLAG = [
    "--data", "d", "--model", "fusion", "--backbone", "small_cnn", "--pretrained", "imagenet", "--metadata-features",
    "age,follow_up", "--output-stride", "8", "--epochs", "3", "--workers", "2", "--storage", "st", "--name", "nm",
    "--size", "96", "--batch-size", "8", "--lr", "0.01", "--lr-scaling", "sqrt", "--warmup-epochs", "1", "--hflip",
    "--weight-decay", "0.001", "--loss", "bce", "--limit", "20", "--seed", "4", "--max-failures", "2", "--keep-checkpoints", "0",
    "--s3-endpoint", "http://e", "--verbose", "--address", "auto", "--use-gpu", "false", "--cluster-config",
    "c.yaml", "--shared-fs"]


@pytest.mark.parametrize("argv, expected", [
    ([], TrainConfig(
        data=DataConfig(data='data/demo', size=512, batch_size=None, eval_batch_size=64, limit=None, val_cache_mb=1024,
                        cache_train_mb=2048, shuffle_buffer_rows=2048, shuffle=True, s3_endpoint=None),
        model=ModelConfig(name='densenet121', backbone='densenet121', pretrained=None,
                          metadata_features=('age', 'sex', 'view_position'), output_stride=None),
        loss=LossConfig(kind='bce', pos_weight_scale=1.0, per_class_pos_weight=None, focal_gamma=2.0, focal_alpha=None),
        optim=OptimConfig(epochs=10, lr=0.001, betas=(0.9, 0.999), weight_decay=1e-05, scheduler='plateau',
                          lr_scaling='none', base_batch=16, warmup_epochs=0),
        augment=AugmentConfig(hflip=False, rotate_degrees=5.0, scale=0.05, translate=0.03, brightness=0.05,
                              contrast=0.05),
        run=RunSettings(name=None, storage='runs', workers=2, use_gpu='auto', cluster_config=None, shared_fs=False,
                        cpus_per_worker=1.0, seed=0, max_failures=2, keep_checkpoints=3, threads_per_worker=None, compile=None))),
    (TRAIN_EVERY_FLAG, TrainConfig(
        data=DataConfig(data='d', size=96, batch_size=8, eval_batch_size=64, limit=20, val_cache_mb=1024,
                        cache_train_mb=2048, shuffle_buffer_rows=2048, shuffle=True, s3_endpoint='http://e'),
        model=ModelConfig(name='fusion', backbone='small_cnn', pretrained='imagenet',
                          metadata_features=('age', 'follow_up'), output_stride=8),
        loss=LossConfig(kind='bce', pos_weight_scale=1.0, per_class_pos_weight=None, focal_gamma=2.0, focal_alpha=None),
        optim=OptimConfig(epochs=3, lr=0.01, betas=(0.9, 0.999), weight_decay=0.001, scheduler='plateau',
                          lr_scaling='sqrt', base_batch=16, warmup_epochs=1),
        augment=AugmentConfig(hflip=True, rotate_degrees=5.0, scale=0.05, translate=0.03, brightness=0.05,
                              contrast=0.05),
        run=RunSettings(name='nm', storage='st', workers=2, use_gpu='false', cluster_config='c.yaml', shared_fs=True,
                        cpus_per_worker=1.0, seed=4, max_failures=2, keep_checkpoints=None, threads_per_worker=None, compile=None))),
], ids=["defaults", "every-flag"])
def test_train_config(argv, expected):
    assert repr(build("train", argv)) == repr(expected)


@pytest.mark.parametrize("argv, expected", [
    (["--space", "s.yaml"], {}),
    (["--space", "s.yaml", "--data", "d", "--trials", "3", "--storage", "st", "--name", "n", "--out", "o", "--epochs",
      "2", "--workers", "1", "--limit", "10", "--max-concurrent", "2", "--top", "3", "--s3-endpoint", "http://e",
      "--verbose", "--address", "auto", "--use-gpu", "true", "--cluster-config", "c.yaml", "--shared-fs"],
     {'data': {'data': 'd', 'limit': 10, 's3_endpoint': 'http://e'}, 'optim': {'epochs': 2},
      'run': {'workers': 1, 'use_gpu': 'true', 'cluster_config': 'c.yaml', 'shared_fs': True}}),
], ids=["defaults", "every-flag"])
def test_tune_base_overrides(argv, expected):
    job = job_module("tune")
    assert repr(overrides_from_flags(job.parse_args(argv), job.FLAGS)) == repr(expected)


@pytest.mark.parametrize("argv, expected", [
    (["--data", "d", "--out", "o"], PrepareConfig(
        data='d', out='o', metadata=None,
        image=ImageConfig(size=512, batch_size=32, read_attempts=None, io_threads=8, expected_source_size=None,
                          endpoint_url=None),
        split=SplitConfig(val_fraction=0.1, test_fraction=0.2, seed=0, required=('train', 'val')), overwrite=False,
        keep_previous_hours=72.0, seed=0, lock_ttl_s=60.0, shared_fs=False, target_file_mb=256, compression='none')),
    (["--data", "d", "--out", "o", "--metadata", "m.csv", "--size", "64", "--overwrite", "--read-attempts", "5",
      "--expected-source-size", "1024", "--target-file-mb", "16", "--val-fraction", "0.25", "--test-fraction",
      "0.15", "--seed", "3", "--keep-previous-hours", "1.5", "--s3-endpoint", "http://e", "--verbose", "--address",
      "auto", "--cluster-config", "c.yaml", "--shared-fs"], PrepareConfig(
        data='d', out='o', metadata='m.csv',
        image=ImageConfig(size=64, batch_size=32, read_attempts=5, io_threads=8, expected_source_size=1024,
                          endpoint_url='http://e'),
        split=SplitConfig(val_fraction=0.25, test_fraction=0.15, seed=0, required=('train', 'val')), overwrite=True,
        keep_previous_hours=1.5, seed=3, lock_ttl_s=60.0, shared_fs=True, target_file_mb=16, compression='none')),
    (["--data", "d", "--out", "o", "--split", "random", "--split-seed", "5"], PrepareConfig(
        data='d', out='o', metadata=None,
        image=ImageConfig(size=512, batch_size=32, read_attempts=None, io_threads=8, expected_source_size=None,
                          endpoint_url=None),
        split=SplitConfig(val_fraction=0.1, test_fraction=0.2, seed=5, required=('train', 'val'), kind='random'),
        overwrite=False, keep_previous_hours=72.0, seed=0, lock_ttl_s=60.0, shared_fs=False, target_file_mb=256,
        compression='none')),
], ids=["defaults", "every-flag", "split-random"])
def test_prepare_config(argv, expected):
    assert repr(build("prepare", argv)) == repr(expected)


@pytest.mark.parametrize("argv, expected", [
    (["--scores", "x=y", "--data", "d", "--out", "o"], EvaluationConfig(
        scores=(('x', 'y'),), data='d', out='o', split='test', n_boot=1000, threshold_rule='youden', overlays=8,
        dataset_kind='synthetic', s3_endpoint=None)),
    (["--scores", "a=s3://b/a", "--scores", "s3://b/c/", "--data", "d", "--split", "val", "--out", "o", "--bootstrap",
      "10", "--threshold-rule", "f1", "--dataset-kind", "real", "--s3-endpoint", "http://e", "--verbose",
      "--address", "auto", "--beside", "out/eval-random", "--beside", "s3://b/eval"], EvaluationConfig(
        scores=(('a', 's3://b/a'), ('c', 's3://b/c/')), data='d', out='o', split='val', n_boot=10,
        threshold_rule='f1', overlays=8, dataset_kind='real', s3_endpoint='http://e',
        beside=('out/eval-random', 's3://b/eval'))),
], ids=["defaults", "every-flag"])
def test_evaluate_scores_config(argv, expected):
    assert repr(build("evaluate", argv)) == repr(expected)


@pytest.mark.parametrize("argv, split", [(["--checkpoint", "ck", "--data", "d", "--out", "o"], "test"),
                                         (["--checkpoint", "ck", "--data", "d", "--out", "o", "--split", "val"], "val")])
def test_evaluate_checkpoint_split(argv, split):
    job = job_module("evaluate")
    assert job.evaluated_split(job.parse_args(argv)) == split


def test_evaluate_tta_goes_with_checkpoint_and_is_refused_with_scores(capsys):
    job = job_module("evaluate")
    assert job.parse_args(["--checkpoint", "ck", "--data", "d", "--out", "o", "--tta", "tencrop"]).tta == "tencrop"
    assert job.parse_args(["--checkpoint", "ck", "--data", "d", "--out", "o"]).tta is None  # main: tta.NO_TTA
    with pytest.raises(SystemExit) as done:
        job.parse_args(["--scores", "x=y", "--data", "d", "--out", "o", "--tta", "hflip"])
    error = capsys.readouterr().err
    assert done.value.code == 2 and error.count("\n") == 1 and error.startswith("error: --tta hflip applies to --checkpoint")


@pytest.mark.parametrize("extra, message", [
    (["--tta", "tencrop", "--tta-heatmaps"], "^--tta-heatmaps: ten-crop's maps"),
    (["--tta-heatmaps"], "^--tta-heatmaps needs --tta hflip"),
])
def test_score_tta_heatmaps_refused_where_there_is_no_map_to_average(extra, message):
    with pytest.raises(ValueError, match=message):  # jobs print it as `error: ...`, exit 2 (cli.run_main)
        build("score", SCORE_REQUIRED + extra)


@pytest.mark.parametrize("argv, expected", [
    (["--data", "d", "--out", "o"], SplitConfig(val_fraction=0.1, test_fraction=0.2, seed=0, required=('train', 'val'))),
    (["--data", "d", "--out", "o", "--metadata", "m.csv", "--val-fraction", "0.3", "--test-fraction", "0.1",
      "--split-seed", "7", "--s3-endpoint", "http://e"],
     SplitConfig(val_fraction=0.3, test_fraction=0.1, seed=7, required=('train', 'val'))),
], ids=["defaults", "every-flag"])
def test_manifest_split_config(argv, expected):
    assert repr(build("manifest", argv)) == repr(expected)


@pytest.mark.parametrize("argv, expected", [
    (["--out", "o"], SyntheticConfig(out='o', images=2000, size=1024, seed=0, difficulty=1.0, test_fraction=0.2,
                                     workers=0, metadata_only=False)),
    (["--out", "o", "--images", "40", "--size", "64", "--seed", "2", "--difficulty", "0.5", "--workers", "3",
      "--metadata-only", "--preview", "p.png"],
     SyntheticConfig(out='o', images=40, size=64, seed=2, difficulty=0.5, test_fraction=0.2, workers=3,
                     metadata_only=True)),
], ids=["defaults", "every-flag"])
def test_make_synthetic_config(argv, expected):
    assert repr(build("make_synthetic", argv)) == repr(expected)


# -- the shared pieces ------------------------------------------------------------------------------------

def test_overrides_follow_dotted_paths_and_convert_only_given_values():
    flags = {"size": "image.size", "grid": Flag("grid", zero_means_none), "seed": "split.seed"}
    args = argparse.Namespace(size=64, grid=0, seed=None)
    assert overrides_from_flags(args, flags) == {"image": {"size": 64}, "grid": None}


def test_config_from_flags_builds_nested_dataclasses_and_keeps_their_errors():
    flags = {"size": "image.size", "val": "split.val_fraction", "data": "data", "out": "out"}
    config = config_from_flags(PrepareConfig, argparse.Namespace(size=64, val=None, data="d", out="o"), flags,
                               fixed={"split": {"required": ("train", "val")}})
    assert config.image == ImageConfig(size=64) and config.split == SplitConfig(required=("train", "val"))
    with pytest.raises(ValueError, match="^image size must be between 1 and"):  # ImageConfig's own message
        config_from_flags(PrepareConfig, argparse.Namespace(size=0, val=None, data="d", out="o"), flags)
    with pytest.raises(TypeError, match="no field"):
        config_from_flags(SplitConfig, argparse.Namespace(x=1), {"x": "nope"})


def test_field_defaults_come_from_the_fields_not_an_instance():
    assert field_default(ScoreConfig, "box_grid") == 128  # ScoreConfig has required fields: no instance
    assert field_default(PrepareConfig, "image.size") == ImageConfig.size
    assert field_default(EvaluationConfig, "scores") is field_default(SyntheticConfig, "out")  # MISSING
    parser = argparse.ArgumentParser()
    parser.add_argument("--grid", help="grid")
    parser.add_argument("--out", help="out")
    parser.add_argument("--seed", help="seed (default: stated here)")
    show_config_defaults(parser, {"grid": Flag("box_grid", zero_means_none), "out": "out", "seed": "run_id"},
                         ScoreConfig)
    helps = {a.dest: a.help for a in parser._actions}
    assert (helps["grid"], helps["out"], helps["seed"]) == ("grid (default: 128)", "out", "seed (default: stated here)")
