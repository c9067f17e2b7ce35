"""The training configuration: typed dataclasses, loadable from YAML, overridable by flags, turned
into a plain dict only at the Ray boundary (`to_dict` / `TrainConfig.from_dict`)."""
from __future__ import annotations

from dataclasses import dataclass, field

from thorax_ray.config import from_dict, load_yaml, merge, to_dict
from thorax_ray.losses import LossConfig
from thorax_ray.models.metadata import DEFAULT_FEATURES
# One-channel version of the ImageNet statistics (mean of the RGB values), so ImageNet stems summed to one
# channel see familiar input.
IMAGE_MEAN, IMAGE_STD = 0.449, 0.226


@dataclass(frozen=True)
class DataConfig:
    data: str = "data/demo"  # dataset folder/URI (raw PNGs or metadata only) or a prepared output (has prepared.json)
    size: int = 224
    batch_size: int = 16
    eval_batch_size: int = 64
    limit: int | None = None  # at most this many rows per split (smoke runs)
    val_cache_mb: int = 1024  # validation rows kept in rank 0's memory after the first epoch when they fit
    cache_train_mb: int = 2048  # training rows materialized once in the object store when they fit (0: always stream)
    s3_endpoint: str | None = None

    def __post_init__(self) -> None:
        if not 16 <= self.size <= 2048 or self.batch_size < 1 or self.eval_batch_size < 1:
            raise ValueError(f"bad data config: size={self.size}, batch_size={self.batch_size}")


@dataclass(frozen=True)
class AugmentConfig:
    hflip: bool = False  # CheXNet flips; off here: a flip mirrors the heart (torchxrayvision does not flip)
    rotate_degrees: float = 5.0
    scale: float = 0.05  # random zoom in [1 - scale, 1 + scale]
    translate: float = 0.03  # fraction of the side
    brightness: float = 0.05
    contrast: float = 0.05


@dataclass(frozen=True)
class ModelConfig:
    name: str = "densenet121"
    backbone: str = "densenet121"  # image part of `fusion`
    pretrained: str | None = None  # "imagenet" (torchvision's, via the torch hub cache), a path/URI, None (random)
    metadata_features: tuple[str, ...] = DEFAULT_FEATURES
    # small_cnn (or fusion on small_cnn) only: feature-map stride, a power of two up to 16 (None: 16). 8 gives
    # 16x16 heatmaps at 128 px instead of 8x8, fine enough to box small findings (2.4x the multiply-adds).
    output_stride: int | None = None

    def __post_init__(self) -> None:
        cnn = self.backbone if self.name == "fusion" else self.name
        if self.output_stride is not None and cnn != "small_cnn":
            raise ValueError(f"output_stride applies to small_cnn (or fusion with backbone small_cnn), not {cnn!r}")


@dataclass(frozen=True)
class OptimConfig:
    """Adam and its learning-rate schedule (thorax_ray/train/lr_schedule.py)."""

    epochs: int = 10
    lr: float = 1e-3  # at base_batch images per step (CheXNet: 1e-3 at 16); see lr_scaling
    betas: tuple[float, float] = (0.9, 0.999)  # Adam's (CheXNet: the defaults)
    weight_decay: float = 1e-5
    scheduler: str = "plateau"  # plateau (CheXNet: lr/10 on plateau) | cosine | none
    lr_scaling: str = "none"  # none | linear | sqrt: lr for the global batch = lr x (1 | B/base | sqrt(B/base))
    base_batch: int = 16  # the batch `lr` is meant for
    warmup_epochs: int = 0  # linear warm-up to the scaled lr over this many epochs

    def __post_init__(self) -> None:
        if self.scheduler not in ("plateau", "cosine", "none"):
            raise ValueError(f"unknown scheduler {self.scheduler!r}; expected plateau, cosine or none")
        if self.epochs < 1 or self.lr <= 0 or self.weight_decay < 0:
            raise ValueError(f"bad optimiser config: epochs={self.epochs}, lr={self.lr}, weight_decay={self.weight_decay}")
        if self.lr_scaling not in ("none", "linear", "sqrt"):
            raise ValueError(f"unknown lr_scaling {self.lr_scaling!r}; expected none, linear or sqrt")
        if self.base_batch < 1 or not 0 <= self.warmup_epochs < self.epochs:
            raise ValueError(f"bad optimiser config: base_batch={self.base_batch} (>= 1), "
                             f"warmup_epochs={self.warmup_epochs} (0 .. epochs - 1 = {self.epochs - 1})")
        betas = tuple(float(b) for b in self.betas)
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        object.__setattr__(self, "betas", betas)


@dataclass(frozen=True)
class RunSettings:
    name: str | None = None  # default: thorax-<model>
    storage: str = "runs"  # local folder or s3:// URI for checkpoints and metrics
    workers: int = 2
    use_gpu: bool | None = None  # None: use GPUs when the cluster has them
    cpus_per_worker: float = 1.0
    seed: int = 0
    max_failures: int = 2  # worker-group restarts from the latest checkpoint
    threads_per_worker: int | None = None  # torch intra-op threads (None: cpus_per_worker)
    compile: bool | None = None  # torch.compile the model: None = on when training on GPU (never on CPU)


@dataclass(frozen=True)
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    run: RunSettings = field(default_factory=RunSettings)

    @property
    def run_name(self) -> str:
        return self.run.name or f"thorax-{self.model.name}"

    def to_dict(self) -> dict:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> "TrainConfig":
        return from_dict(cls, data, where="config")

    @classmethod
    def from_yaml(cls, path: str, overrides: dict | None = None) -> "TrainConfig":
        return cls.from_dict(merge(load_yaml(path), overrides or {}))

    def replace(self, **sections: dict) -> "TrainConfig":
        """A copy with some fields of some sections replaced: `config.replace(optim={"epochs": 2})`."""
        return TrainConfig.from_dict(merge(self.to_dict(), sections))


def preprocessing_contract(size: int) -> dict:
    """What a model expects; stored with every checkpoint and applied identically when scoring."""
    return {"channels": 1, "size": size, "input_dtype": "uint8", "scale": 1 / 255.0,
            "mean": IMAGE_MEAN, "std": IMAGE_STD, "resize": "bilinear with box reduction (Pillow)"}


