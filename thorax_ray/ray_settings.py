"""The Ray settings this project uses that are not part of Ray's documented API, each with the reason and the
Ray module that reads it (tests/test_ray_settings.py fails when an upgraded Ray no longer does), and the
documented Ray environment variables it sets or reads. Every `RAY_*` name in the code is one or the other."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RaySetting:
    name: str
    kind: str  # "environment variable" | "log_once key" | "warning text"
    read_in: str  # the file of the `ray` package that reads it (Ray 2.60)
    why: str


TRAIN_POLL_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
TUNE_OUTPUT_ENV = "RAY_AIR_NEW_OUTPUT"
GCS_PORT_ENV = "RAY_GCS_SERVER_PORT"
NODE_TYPE_ENV, INSTANCE_ID_ENV = "RAY_NODE_TYPE_NAME", "RAY_CLOUD_INSTANCE_ID"
DATA_PROGRESS_NOTICE = "ray_data_progress_manager_disabled"
DATA_DEPRECATED_REMOTE_ARGS = "`ray_remote_args` is deprecated"  # the warning a max_restarts argument raises

UNDOCUMENTED: tuple[RaySetting, ...] = (
    RaySetting(TRAIN_POLL_ENV, "environment variable", "train/v2/_internal/constants.py",
               "Ray Train's controller polls workers every 2 s and takes one report per poll, so every epoch lasted "
               "at least 2 s (the metadata MLP's take 0.2-0.5 s); no public option sets the interval"),
    RaySetting(TUNE_OUTPUT_ENV, "environment variable", "tune/experimental/output.py",
               "Tune's new console reporter prints at verbosity 0; the job prints its own one line per trial"),
    RaySetting(GCS_PORT_ENV, "environment variable", "_private/ray_constants.py",
               "a private local Ray picks a free GCS port instead of 6379, so two jobs on one machine do not meet; "
               "ray.init has no port argument"),
    RaySetting(DATA_PROGRESS_NOTICE, "log_once key", "data/_internal/progress/__init__.py",
               "Ray Data prints once per process that its progress bars are off; the jobs print their own progress"),
    RaySetting(NODE_TYPE_ENV, "environment variable", "autoscaler/_private/commands.py",
               "the autoscaler sets it on each node it starts (its node type); node_check names the node by it"),
    RaySetting(INSTANCE_ID_ENV, "environment variable", "autoscaler/_private/commands.py",
               "the autoscaler sets it on each node it starts (its cloud instance); node_check names the node by it"),
    RaySetting(DATA_DEPRECATED_REMOTE_ARGS, "warning text", "data/dataset.py",
               "the scoring actors' max_restarts=0 (Ray Data's constructor arguments live in the object store, "
               "ray-project/ray#53727) has no named map_batches parameter in Ray 2.60; its deprecation warning "
               "is silenced for that one call"),
)

DOCUMENTED_ENV = {  # set or read by the project; where Ray documents it
    "RAY_ADDRESS": "ray.init / Ray Jobs (the cluster a job joins)",
    "RAY_AUTH_MODE": "Ray token authentication",
    "RAY_AUTH_TOKEN": "Ray token authentication",
    "RAY_AUTH_TOKEN_PATH": "Ray token authentication",
    "RAY_COLOR_PREFIX": "Ray logging: colouring of worker output prefixes",
}
