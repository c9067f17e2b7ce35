"""Connecting to Ray: a job joins the cluster it runs on (`ray job submit`, RAY_ADDRESS) or starts a
local one."""
from __future__ import annotations

import os

# A local cluster advertises this many logical CPUs beyond the machine's cores, so that the Ray Data
# pipeline (readers/decoders) can run beside training workers that each hold one CPU; otherwise a
# 2-worker run on a 2-core machine leaves no CPU for the data tasks and waits forever.
LOCAL_EXTRA_CPUS = 2


def init_ray(address: str | None = None, **kwargs) -> None:
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    address = address or os.environ.get("RAY_ADDRESS")
    if address is None and not _running_local_cluster():
        kwargs.setdefault("num_cpus", (os.cpu_count() or 1) + LOCAL_EXTRA_CPUS)
        address = "local"
    ray.init(address=address, **kwargs)
    ray.data.DataContext.get_current().enable_progress_bars = True


def _running_local_cluster() -> bool:
    """Whether `ray start` runs on this machine (then `ray.init()` joins it)."""
    try:
        from ray._private.services import find_gcs_addresses

        return bool(find_gcs_addresses())
    except Exception:  # noqa: BLE001 - private API; assume none
        return False
