"""The training configuration: typed dataclasses, loadable from YAML, overridable by flags, turned
into a plain dict only at the Ray boundary (`to_dict` / `TrainConfig.from_dict`)."""
from __future__ import annotations

from dataclasses import dataclass, field

from thorax_ray.cluster import DEFAULT_PLACEMENT_TIMEOUT_S, parse_use_gpu
from thorax_ray.config_io import from_dict, load_yaml, merge, to_dict
from thorax_ray.data.sources import DataConfig
from thorax_ray.losses import LossConfig
from thorax_ray.models import MetadataFeatures, get_model_spec, list_models
from thorax_ray.models.features import DEFAULT_FEATURES
from thorax_ray.names import safe_name

# Per-worker batch size when data.batch_size is not set: CheXNet's 16 for models that read images; the
# metadata MLP's step is tiny, so small batches would leave it dominated by per-step overhead.
DEFAULT_BATCH_SIZE = {"image": 16, "both": 16, "metadata": 256}


@dataclass(frozen=True)
class AugmentConfig:
    hflip: bool = False  # CheXNet flips; off here: a flip mirrors the heart (torchxrayvision does not flip)
    rotate_degrees: float = 5.0
    scale: float = 0.05  # random zoom in [1 - scale, 1 + scale]
    translate: float = 0.03  # fraction of the side
    brightness: float = 0.05
    contrast: float = 0.05


SMALL_CNN_OUTPUT_STRIDE = 8  # small_cnn's default: 16x16 maps at 128 px (its builder's own default, 16, rebuilds old runs)


@dataclass(frozen=True)
class ModelConfig:
    name: str = "densenet121"
    backbone: str = "densenet121"  # image part of `fusion`
    pretrained: str | None = None  # "imagenet" (torchvision's, via the torch hub cache), a path/URI, None (random)
    metadata_features: tuple[str, ...] = DEFAULT_FEATURES
    # small_cnn (or fusion on small_cnn) only: feature-map stride, a power of two up to 16; None: SMALL_CNN_OUTPUT_STRIDE.
    # 8 gives 16x16 heatmaps at 128 px (a cell: 64 px of the 1024-px original), fine enough to box small
    # findings; 16 gives 8x8 (128 px cells) for 1/2.4 of the multiply-adds.
    output_stride: int | None = None

    def __post_init__(self) -> None:
        """Names checked against the model registry, so a typo fails before Ray starts."""
        cnn = self.backbone if self.name == "fusion" else self.name
        if self.output_stride is not None and cnn != "small_cnn":
            raise ValueError(f"output_stride applies to small_cnn (or fusion with backbone small_cnn), not {cnn!r}")
        if self.output_stride is None and cnn == "small_cnn":
            object.__setattr__(self, "output_stride", SMALL_CNN_OUTPUT_STRIDE)
        if self.name not in list_models():
            raise ValueError(f"unknown architecture {self.name!r}; registered: {list_models()}")
        if self.backbone not in list_models("image"):
            raise ValueError(f"unknown fusion backbone {self.backbone!r}; image CNNs: {list_models('image')}")
        try:
            MetadataFeatures(tuple(self.metadata_features))
        except ValueError as error:
            raise ValueError(f"metadata_features: {error}") from None


SELECT_BY = ("val_mean_auroc", "val_loss")  # validation metrics that can drive the plateau and the best epoch
LOWER_IS_BETTER = ("val_loss",)


@dataclass(frozen=True)
class OptimConfig:
    """Adam and its learning-rate schedule (thorax_ray/train/lr_schedule.py)."""

    epochs: int = 10
    lr: float = 1e-3  # at base_batch images per step (CheXNet: 1e-3 at 16); see lr_scaling
    betas: tuple[float, float] = (0.9, 0.999)  # Adam's (CheXNet: the defaults)
    eps: float = 1e-8  # Adam's (torch's default)
    weight_decay: float = 1e-5
    scheduler: str = "plateau"  # plateau (CheXNet: lr/10 on plateau) | cosine | none
    patience: int = 1  # plateau: epochs without improvement before lr /10 (CheXNet: 1)
    # The validation metric that drives the plateau and picks the best checkpoint: val_mean_auroc (higher is
    # better) | val_loss (mean unweighted BCE over the 14 findings, lower is better; CheXNet's choice).
    select_by: str = "val_mean_auroc"
    lr_scaling: str = "none"  # none | linear | sqrt (Adam's square-root rule): see lr_schedule.py
    base_batch: int = 16  # the batch lr, betas and eps are meant for
    warmup_epochs: int = 0  # linear warm-up to the scaled lr over this many epochs

    def __post_init__(self) -> None:
        if self.scheduler not in ("plateau", "cosine", "none"):
            raise ValueError(f"unknown scheduler {self.scheduler!r}; expected plateau, cosine or none")
        if self.epochs < 1 or self.lr <= 0 or self.weight_decay < 0:
            raise ValueError(f"bad optimiser config: epochs={self.epochs}, lr={self.lr}, weight_decay={self.weight_decay}")
        if self.select_by not in SELECT_BY:
            raise ValueError(f"unknown select_by {self.select_by!r}; expected one of {list(SELECT_BY)}")
        if self.patience < 0 or not 0 < self.eps < 1:
            raise ValueError(f"bad optimiser config: patience={self.patience} (>= 0), eps={self.eps} (0 < eps < 1)")
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
    # auto: one GPU per worker when the cluster has GPUs or its autoscaler can launch GPU nodes; true: GPUs
    # (an error at start when the cluster can never provide them); false: CPUs.
    use_gpu: str | bool = "auto"
    cluster_config: str | None = None  # autoscaler config (default: $THORAX_CLUSTER_CONFIG, ~/ray_bootstrap_config.yaml)
    shared_fs: bool = False  # local --storage/--data paths are on a filesystem every node mounts (NFS, EFS)
    placement_timeout_s: float = DEFAULT_PLACEMENT_TIMEOUT_S  # exit 75 when the workers are not placed by then (0: never)
    cpus_per_worker: float = 1.0
    seed: int = 0
    max_failures: int = 2  # worker-group restarts from the latest checkpoint
    # checkpoints kept: the best `keep_checkpoints` by optim.select_by, plus the latest (resumes); None: all
    keep_checkpoints: int | None = 3
    threads_per_worker: int | None = None  # torch intra-op threads (None: cpus_per_worker)
    compile: bool | None = None  # torch.compile the model: None = on when training on GPU (never on CPU)

    def __post_init__(self) -> None:
        object.__setattr__(self, "use_gpu", parse_use_gpu(self.use_gpu))
        if self.name is not None:
            safe_name("run name", self.name)
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1 (Ray Train workers), got {self.workers}")
        if self.cpus_per_worker <= 0 or (self.threads_per_worker is not None and self.threads_per_worker < 1):
            raise ValueError(f"cpus_per_worker must be > 0 and threads_per_worker >= 1, got "
                             f"{self.cpus_per_worker} and {self.threads_per_worker}")
        if self.max_failures < -1:
            raise ValueError(f"max_failures must be >= 0 (or -1: no limit), got {self.max_failures}")
        if self.keep_checkpoints is not None and self.keep_checkpoints < 2:
            raise ValueError(f"keep_checkpoints must be >= 2 (the best and the one before it, which metrics.json "
                             f"names while the best uploads) or None (all), got {self.keep_checkpoints}")


@dataclass(frozen=True)
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    run: RunSettings = field(default_factory=RunSettings)

    @property
    def batch_size(self) -> int:
        """The per-worker training batch: data.batch_size, else the model kind's default."""
        return self.data.batch_size or DEFAULT_BATCH_SIZE[get_model_spec(self.model.name).input_kind]

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
