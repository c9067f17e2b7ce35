"""Shared command-line plumbing for the jobs: logging set-up and friendly failure on known errors."""
from __future__ import annotations

import logging
import sys
from collections.abc import Callable


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def run_main(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> None:
    """Runs a job's main; a ValueError/FileNotFoundError (bad input) ends with one clear line, exit 2."""
    try:
        sys.exit(main(argv))
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


def add_s3_endpoint_argument(parser) -> None:
    parser.add_argument("--s3-endpoint", help="endpoint of an S3-compatible store (default: AWS_ENDPOINT_URL)")


def add_cluster_arguments(parser) -> None:
    """--s3-endpoint and --address, shared by every job that runs on Ray."""
    add_s3_endpoint_argument(parser)
    parser.add_argument("--address", help="Ray cluster to join ('auto': the one `ray start` runs here; default: "
                                          "RAY_ADDRESS, set for jobs run by `ray job submit`, else a new local Ray)")


def add_gpu_arguments(parser, per_unit: str) -> None:
    """--use-gpu, --cluster-config and --shared-fs, shared by the jobs that place work on the cluster."""
    from thorax_ray.cluster import USE_GPU_CHOICES

    parser.add_argument("--use-gpu", choices=USE_GPU_CHOICES,
                        help=f"{per_unit}: auto (default) = when the cluster has GPUs or its autoscaler can launch "
                             "GPU nodes; true = GPUs, failing at once if the cluster can never provide them; false = CPUs")
    parser.add_argument("--cluster-config", help="the autoscaler's cluster config, to see node types that are not up "
                                                 "yet (default: $THORAX_CLUSTER_CONFIG, else ~/ray_bootstrap_config.yaml)")
    parser.add_argument("--shared-fs", action="store_true", default=None,
                        help="local paths are on a filesystem every node mounts (NFS, EFS); otherwise a multi-node "
                             "cluster needs s3:// storage")
