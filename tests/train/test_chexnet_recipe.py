"""The shipped CheXNet recipe (configs/chexnet.yaml) is CheXNet's (Rajpurkar et al. 2017, section 3.1), step by
step, read as the training job reads it (`jobs/train.py --config`), and its 8-GPU version applies Adam's
square-root scaling rule (Malladi et al. 2022) inside the range where that rule holds. No Ray is started."""
import math
import os

import pytest
import torch

from tests.jobs.test_help import job_module
from thorax_ray.losses import build_loss
from thorax_ray.train.config import OptimConfig
from thorax_ray.train.lr_schedule import adam_settings, build_scheduler, lr_rule_problem

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECIPE = os.path.join(REPO, "configs", "chexnet.yaml")
MULTI_GPU = os.path.join(REPO, "configs", "chexnet-8gpu.yaml")


def effective(path: str, *flags: str):
    """The TrainConfig `python jobs/train.py --config PATH FLAGS` trains with."""
    job = job_module("train")
    return job.build_config(job.parse_args(["--config", path, *flags]))


@pytest.fixture(scope="module")
def recipe():
    return effective(RECIPE)


def test_architecture_densenet121_from_imagenet_weights(recipe):
    assert recipe.model.name == "densenet121" and recipe.model.pretrained == "imagenet"


def test_input_224_pixels(recipe):
    assert recipe.data.size == 224


def test_augmentation_random_horizontal_flip_only(recipe):
    augment = recipe.augment
    assert augment.hflip is True
    others = (augment.rotate_degrees, augment.scale, augment.translate, augment.brightness, augment.contrast)
    assert others == (0,) * 5


def test_optimiser_adam_lr_1e3_standard_betas(recipe):
    global_batch = recipe.batch_size * recipe.run.workers
    settings = adam_settings(recipe.optim, global_batch)
    assert (settings.lr, settings.betas, settings.eps) == (1e-3, (0.9, 0.999), 1e-8)
    assert recipe.optim.weight_decay == 0.0  # the paper states none


def test_split_random_70_10_20_by_patient(recipe):
    from thorax_ray.data.splits import SplitConfig

    assert recipe.data.split == SplitConfig(kind="random", val_fraction=0.1, test_fraction=0.2, seed=0)


def test_batch_16_on_one_device(recipe):
    assert recipe.batch_size == 16 and recipe.run.workers == 1


def test_loss_unweighted_binary_cross_entropy_over_14_findings(recipe):
    loss = build_loss(recipe.loss, label_counts=torch.tensor([1.0] * 14).numpy(), num_samples=100)
    logits, labels = torch.randn(8, 14), torch.randint(0, 2, (8, 14)).float()
    unweighted = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
    torch.testing.assert_close(loss(logits, labels), unweighted)


def test_lr_divided_by_10_when_validation_loss_plateaus_patience_1(recipe):
    assert (recipe.optim.scheduler, recipe.optim.patience, recipe.optim.select_by) == ("plateau", 1, "val_loss")
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    schedule = build_scheduler(recipe.optim, optimizer)
    lrs = []
    for val_loss in (0.30, 0.25, 0.26, 0.27, 0.20):  # improves, improves, stalls (patience 1), stalls again: /10
        schedule.step(val_loss)
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs == pytest.approx([1e-3, 1e-3, 1e-3, 1e-4, 1e-4])


def test_best_checkpoint_is_the_lowest_validation_loss(recipe):
    from thorax_ray.train.loop import improves

    best = None
    for epoch, val in enumerate(({"loss": 0.30, "mean_auroc": 0.70}, {"loss": 0.25, "mean_auroc": 0.69},
                                 {"loss": 0.27, "mean_auroc": 0.80}), 1):
        if improves(val, best, recipe.optim.select_by):
            best = {"epoch": epoch, "val": val}
    assert best["epoch"] == 2  # lowest loss, not highest AUROC


def test_multi_gpu_recipe_applies_the_square_root_rule_within_its_range():
    config = effective(MULTI_GPU)
    global_batch = config.batch_size * config.run.workers
    assert (config.batch_size, config.run.workers, global_batch) == (16, 8, 128)  # CheXNet's batch per GPU
    settings = adam_settings(config.optim, global_batch)
    assert settings.lr == pytest.approx(1e-3 * math.sqrt(8))
    assert settings.betas == pytest.approx((1 - 8 * 0.1, 1 - 8 * 0.001))
    assert settings.eps == pytest.approx(1e-8 / math.sqrt(8))
    assert lr_rule_problem(config.optim, global_batch) is None
    single = effective(RECIPE)  # the same recipe otherwise
    assert (config.model, config.loss, config.augment, config.data.size) == (single.model, single.loss,
                                                                             single.augment, single.data.size)


def test_outside_the_rules_range_the_job_stops_with_one_line():
    job = job_module("train")
    config = effective(MULTI_GPU, "--workers", "16")
    with pytest.raises(ValueError, match=r"global batch 256 is 16 x base_batch 16, outside the range .*kappa < "):
        job.check_inputs(config, job.parse_args(["--config", MULTI_GPU, "--workers", "16"]))
    linear = OptimConfig(lr_scaling="linear")
    assert "derived for SGD" in lr_rule_problem(linear, 64) and lr_rule_problem(linear, 16) is None
