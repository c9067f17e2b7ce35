"""The settings of one scoring run (`jobs/score.py` makes its flags from them): defaults stated once, here."""
from __future__ import annotations

from dataclasses import dataclass, field

from thorax_ray.attribution import DEFAULT_MAX_BOXES, DEFAULT_THRESHOLD
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
    actor_cpus: float = 1.0  # CPUs per actor (= torch threads on CPU)
    cluster_config: str | None = None  # autoscaler config (default: $THORAX_CLUSTER_CONFIG, ~/ray_bootstrap_config.yaml)
    shared_fs: bool = False  # local --input/--out paths are on a filesystem every node mounts
    lock_wait_s: float = 0.0  # wait this long for another run on the same --out to finish (then: LeaseBusy)
    lock_ttl_s: float = 600.0  # a crashed run's lock is taken over after this long without renewal
    max_map_side: int | None = 16  # pool larger maps to this many cells per side (None: keep; storage budget)
    # Which findings get boxes (thorax_ray/scoring/gate.py): "calibrated" = the checkpoint's per-finding operating
    # points chosen on validation; a probability = the same gate for every finding; None = every boxed finding.
    box_min_probability: float | str | None = CALIBRATED
    box_threshold: float = DEFAULT_THRESHOLD  # on the 0..255 map scale
    max_boxes: int = DEFAULT_MAX_BOXES  # per finding
    box_grid: int | None = 128  # trace boxes on a grid of at most this side, then scale (None: full)
    max_images: int | None = None  # score at most this many new images per run (the rest: next run)
    rows_per_file: int = 8192
    compression: str = "zstd"
    read_attempts: int = 3
    decode_cpus: float = 1.0
    in_flight_mb: int | None = None  # object-store bytes the run may hold at once (None: from batch size and actors)
    keep_uncommitted_hours: float = 24.0  # files of runs that never committed are deleted after this
    run_id: str | None = None
    batch_date: str | None = None  # YYYY-MM-DD (default: the run's UTC start date)
    overlays: str | None = None  # folder for overlay PNGs
    overlay_limit: int = 8
    overlay_threshold: float | str | None = CALIBRATED  # which findings an overlay shows (same values as boxes)
    endpoint_url: str | None = None


def scorer_threads(config: ScoreConfig) -> int:
    """torch threads of each scoring actor: one per CPU it holds (bench/gpu.py measures with the same)."""
    return max(1, int(config.actor_cpus))
