from thorax_ray.train.feeds import validation_share


def test_each_worker_keeps_its_share_of_the_encoded_validation_rows_and_together_all_of_them_once():
    """The metadata model's TensorFeed (its validation rows encoded once on the driver) shares them by name."""
    names = [f"{i:08d}_000.png" for i in range(500)]
    for world in (1, 2, 3):
        shares = [[n for n, keep in zip(names, validation_share(names, rank, world)) if keep] for rank in range(world)]
        assert sorted(n for share in shares for n in share) == names  # every row on exactly one worker
        assert min(map(len, shares)) > 500 / world / 2  # roughly even


def _save_epoch(run_dir, epoch, epochs_from=1):
    import os

    import torch

    from thorax_ray.checkpoint import CheckpointPayload, checkpoint_dir_name, save_checkpoint

    directory = os.path.join(run_dir, checkpoint_dir_name(epoch))
    os.makedirs(directory)
    save_checkpoint(directory, CheckpointPayload(model_name="m", model_build_config={}, epoch=epoch,
                                                 epochs_from=epochs_from, history=[{"epoch": epoch}],
                                                 model_state={"w": torch.full((2,), float(epoch))}))
    return directory


def test_restore_state_loads_one_checkpoint_the_newest_complete_one(monkeypatch, tmp_path):
    from thorax_ray import checkpoint
    from thorax_ray.train import loop

    loaded = []
    real_load = checkpoint.load_payload

    def counting_load(directory, **kwargs):
        loaded.append(directory.rstrip("/").rsplit("/", 1)[-1])
        return real_load(directory, **kwargs)

    monkeypatch.setattr(checkpoint, "load_payload", counting_load)  # what latest_loadable calls
    run_dir = str(tmp_path / "run")
    assert loop.restore_state(run_dir, None) is None and loaded == []  # nothing to resume from
    _save_epoch(run_dir, 1), _save_epoch(run_dir, 2)
    # epoch 2 is durable even if Ray registered only epoch 1 before a worker died: resume after epoch 2
    assert loop.restore_state(run_dir, None).epoch == 2 and loaded == ["epoch_0002"]
    torn = tmp_path / "run" / "epoch_0003"  # an upload cut short is skipped
    torn.mkdir()
    (torn / "model.pt").write_bytes(b"not a checkpoint")
    loaded.clear()
    assert loop.restore_state(run_dir, None).epoch == 2 and loaded == ["epoch_0003", "epoch_0002"]


def test_checkpoints_of_zero_based_epochs_resume_renumbered(tmp_path):
    from thorax_ray.train import loop

    run_dir = str(tmp_path / "run")
    _save_epoch(run_dir, 4, epochs_from=None)  # written by an older version: its 5th epoch
    state = loop.restore_state(run_dir, None)
    assert state.epoch == 5 and state.history == [{"epoch": 5}]


def test_augment_batch_reproducible_and_in_distribution():
    import torch

    from thorax_ray.train.augment import augment_batch
    from thorax_ray.train.config import AugmentConfig

    images = torch.rand(6, 1, 16, 16)
    config = AugmentConfig()
    first = augment_batch(images, config, torch.Generator().manual_seed(3))
    again = augment_batch(images, config, torch.Generator().manual_seed(3))
    other = augment_batch(images, config, torch.Generator().manual_seed(4))
    assert first.shape == images.shape and torch.equal(first, again) and not torch.equal(first, other)
    # flips only: every image is either itself or its mirror, and both occur for some seed
    flip_only = AugmentConfig(hflip=True, rotate_degrees=0, scale=0, translate=0, brightness=0, contrast=0)
    flipped = augment_batch(images, flip_only, torch.Generator().manual_seed(0))
    mirrored = [torch.equal(f, i.flip(-1)) for f, i in zip(flipped, images)]
    assert all(m or torch.equal(f, i) for m, f, i in zip(mirrored, flipped, images)) and any(mirrored)
    # nothing enabled: the images come back unchanged, no random numbers drawn
    none = AugmentConfig(hflip=False, rotate_degrees=0, scale=0, translate=0, brightness=0, contrast=0)
    generator = torch.Generator().manual_seed(0)
    state = generator.get_state()
    assert augment_batch(images, none, generator) is images and torch.equal(generator.get_state(), state)


def test_run_metrics_say_how_the_model_was_initialised():
    from thorax_ray.train.config import TrainConfig
    from thorax_ray.train.loop import run_summary

    info = {"run_name": "r", "split_hash": "h"}
    imagenet = TrainConfig().replace(model={"name": "densenet121", "pretrained": "imagenet"})
    assert run_summary(imagenet, info, [], None, [], uploaded=None)["init"]["label"] == "ImageNet init"
    fusion = TrainConfig().replace(model={"name": "fusion", "backbone": "small_cnn"})
    assert run_summary(fusion, info, [], None, [], uploaded=None)["init"]["label"] == "small_cnn random init"


def test_no_horizontal_flip_unless_asked():
    """A flip mirrors the heart; the default augmentation never flips, `--hflip` turns flips on."""
    import importlib.util
    import os

    import torch

    from thorax_ray.train.augment import augment_batch
    from thorax_ray.train.config import AugmentConfig

    assert AugmentConfig().hflip is False
    images = torch.rand(64, 1, 8, 8)
    default_flip_only = AugmentConfig(rotate_degrees=0, scale=0, translate=0, brightness=0, contrast=0)
    assert torch.equal(augment_batch(images, default_flip_only, torch.Generator().manual_seed(0)), images)
    spec = importlib.util.spec_from_file_location(
        "train_job", os.path.join(os.path.dirname(__file__), "..", "..", "jobs", "train.py"))
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    assert job.build_config(job.parse_args(["--hflip"])).augment.hflip is True
    assert job.build_config(job.parse_args([])).augment.hflip is False
    chosen = job.build_config(job.parse_args(["--lr-scaling", "sqrt", "--warmup-epochs", "2", "--pretrained", "imagenet"]))
    assert (chosen.optim.lr_scaling, chosen.optim.warmup_epochs, chosen.model.pretrained) == ("sqrt", 2, "imagenet")
    with_follow_up = job.build_config(job.parse_args(["--model", "mlp", "--metadata-features",
                                                      "age,sex,view_position,follow_up"]))
    assert with_follow_up.model.metadata_features == ("age", "sex", "view_position", "follow_up")


def test_output_stride_reaches_small_cnn_and_fusion_backbones():
    import pytest

    from thorax_ray.config_io import ConfigError
    from thorax_ray.models import create_model
    from thorax_ray.train.config import TrainConfig
    from thorax_ray.train.loop import model_kwargs

    config = TrainConfig().replace(model={"name": "small_cnn", "output_stride": 8})
    assert create_model("small_cnn", **model_kwargs(config)).map_stride == 8
    fusion = TrainConfig().replace(model={"name": "fusion", "backbone": "small_cnn", "output_stride": 8})
    assert create_model("fusion", **model_kwargs(fusion)).backbone.map_stride == 8
    assert model_kwargs(TrainConfig()) == {}
    with pytest.raises(ConfigError, match="output_stride applies to small_cnn"):
        TrainConfig().replace(model={"name": "densenet121", "output_stride": 8})


def test_torch_global_seed_differs_per_rank_and_is_a_function_of_seed_epoch_rank():
    """Dropout masks differ between ranks, and an epoch resumed after a restart draws what it would have drawn."""
    from thorax_ray.train.feeds import epoch_seed, rank_seed

    seeds = {rank_seed(0, epoch, rank) for epoch in range(1, 4) for rank in range(8)}
    assert len(seeds) == 24 and rank_seed(0, 2, 3) == rank_seed(0, 2, 3) != rank_seed(1, 2, 3)
    assert rank_seed(0, 1, 0) != epoch_seed(0, 1, 0)  # a stream apart from the augmentation generator's


def test_validation_summary_has_the_loss_thresholds_and_a_calibration_for_the_checkpoint():
    import numpy as np

    from thorax_ray.metrics import mean_binary_cross_entropy
    from thorax_ray.models.predict import Predictions
    from thorax_ray.train.loop import summarise_validation

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, (200, 14)).astype(np.float32)
    probabilities = np.clip(labels * 0.3 + rng.uniform(0, 0.7, (200, 14)), 0, 1).astype(np.float32)
    val, calibration = summarise_validation(Predictions([f"{i}.png" for i in range(200)], labels, probabilities))
    assert val["loss"] == mean_binary_cross_entropy(labels, probabilities) and val["mean_auroc"] > 0.6
    assert set(val["operating_points"]) and calibration["fitted_on"] == "validation"
    empty = Predictions.concatenate([])
    assert summarise_validation(empty) == ({"auroc": {}, "mean_auroc": None, "loss": None, "operating_points": None},
                                           None)
