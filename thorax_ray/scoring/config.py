"""The settings of one scoring run (`jobs/score.py` makes its flags from them): defaults stated once, here."""
from __future__ import annotations

from dataclasses import dataclass, field

from thorax_ray.attribution import DEFAULT_HEATMAP_BITS, DEFAULT_MAX_BOXES, DEFAULT_THRESHOLD, PLANAR_BITS
from thorax_ray.cluster import DEFAULT_PLACEMENT_TIMEOUT_S
from thorax_ray.lease import DEFAULT_TTL_S
from thorax_ray.models.tta import NO_TTA, check_tta
from thorax_ray.scoring.gate import CALIBRATED


@dataclass(frozen=True)
class ScoreConfig:
    checkpoint: str  # checkpoint folder, or a training run folder (its best checkpoint)
    input: str  # any kind thorax_ray.data.inputs.resolve_input accepts
    out: str
    metadata: str | None = None  # metadata CSV of a folder input (default: found by its usual names)
    method: str | None = None  # fast_cam (default for image models) | cam (raw CAM) | gradcam
    #                            | integrated_gradients | occlusion
    #                            | metadata_ig (default for the metadata MLP) | none (probabilities only)
    method_options: dict = field(default_factory=dict)
    batch_size: int = 32
    use_gpu: str | bool = "auto"  # auto: GPU actors when the cluster has or can launch GPUs | true | false
    gpus_per_actor: float = 1.0  # when on GPUs (fractions share a GPU between actors)
    min_actors: int = 1  # the actor pool grows from min to max with the work queued (the autoscaler adds nodes)
    max_actors: int | None = None  # default: GPUs up or launchable / gpus_per_actor on GPUs, else 1
    actor_cpus: float | None = None  # CPUs (= torch threads) per actor; None: sized from the scoring node type
    #                                  (a quarter of the CPUs that come with its GPUs, 1 to 8), else 1
    placement_timeout_s: float = DEFAULT_PLACEMENT_TIMEOUT_S  # exit 75 when the first actors are not placed by then
    cluster_config: str | None = None  # autoscaler config (default: $THORAX_CLUSTER_CONFIG, ~/ray_bootstrap_config.yaml)
    shared_fs: bool = False  # local --input/--out paths are on a filesystem every node mounts
    lock_wait_s: float = 0.0  # wait this long for another run on the same --out to finish (then: LeaseBusy)
    lock_ttl_s: float = DEFAULT_TTL_S  # a crashed run's lease is taken over after this long without renewal
    #                                    (heartbeat every ttl/3)
    max_map_side: int | None = 16  # pool larger maps to this many cells per side (None: keep; storage budget)
    # Bits per stored map value (thorax_ray.attribution.encode, "planar<bits>"): 5 = 32 levels (the stored maps
    # cut at Wang et al.'s 60 and 180 act as cuts at 62 and 177 of the exact maps); 8 = 256 levels, lossless.
    heatmap_bits: int = DEFAULT_HEATMAP_BITS
    # Test-time augmentation of the probability columns (thorax_ray.models.tta): none | hflip | tencrop.
    tta: str = NO_TTA
    tta_heatmaps: bool = False  # hflip only: maps = mean of the image's and the flipped image's (flipped back)
    # Which findings get boxes (thorax_ray/scoring/gate.py): "calibrated" = the checkpoint's per-finding operating
    # points chosen on validation; a probability = the same gate for every finding; None = every boxed finding.
    box_min_probability: float | str | None = CALIBRATED
    box_threshold: float = DEFAULT_THRESHOLD  # on the 0..255 map scale
    max_boxes: int = DEFAULT_MAX_BOXES  # per finding
    box_grid: int | None = 128  # trace boxes on a grid of at most this side, then scale (None: full)
    max_images: int | None = None  # score at most this many new images per run (the rest: next run)
    rows_per_file: int = 8192
    compression: str = "zstd"
    read_attempts: int | None = None  # tries of one S3 request of an image read; None: the storage budget
    decode_cpus: float = 1.0
    in_flight_mb: int | None = None  # object-store bytes the run may hold at once (None: from batch size and actors)
    keep_uncommitted_hours: float = 24.0  # files of runs that never committed are deleted after this
    run_id: str | None = None
    batch_date: str | None = None  # YYYY-MM-DD (default: the run's UTC start date)
    overlays: str | None = None  # folder for overlay PNGs
    overlay_limit: int = 8
    overlay_threshold: float | str | None = CALIBRATED  # which findings an overlay shows (same values as boxes)
    endpoint_url: str | None = None
    # Drift monitoring (thorax_ray.monitoring): every run writes OUT/monitoring/<run_id>.json and prints one line
    # per drifted finding; drift is a warning (exit 0) unless this is set: then exit_codes.DRIFTED (65) when a
    # finding drifted or the out-of-distribution alarm rose (the run's scores are committed either way).
    fail_on_drift: bool = False

    def __post_init__(self) -> None:
        """One-line errors naming the flag (jobs/score.py prints them as `error: ...`, exit 2)."""
        check_tta(self.tta)
        if self.tta_heatmaps and self.tta == "tencrop":
            raise ValueError("--tta-heatmaps: ten-crop's maps cover different crops and cannot be averaged into one "
                             "map of the image; leave --tta-heatmaps out (maps from the un-augmented view) or use "
                             "--tta hflip")
        if self.tta_heatmaps and self.tta == NO_TTA:
            raise ValueError("--tta-heatmaps needs --tta hflip (with --tta none there is no augmented view to average)")
        if self.heatmap_bits not in PLANAR_BITS:
            raise ValueError(f"--heatmap-bits must be {PLANAR_BITS[0]} to {PLANAR_BITS[-1]}, got {self.heatmap_bits!r}")


def scorer_threads(config: ScoreConfig) -> int:
    """torch threads of each scoring actor: one per CPU it holds (bench/gpu.py measures with the same)."""
    return max(1, int(config.actor_cpus or 1))
