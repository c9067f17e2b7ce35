"""Connecting to Ray. A job joins a cluster when told so (`--address`, or RAY_ADDRESS, which `ray job
submit` sets for the jobs it runs; `--address auto` joins the cluster `ray start` runs on this machine);
otherwise it starts a private local Ray, never attaching by accident to another one on the machine."""
from __future__ import annotations

import os

# A local Ray advertises this many logical CPUs beyond the machine's cores, so that the Ray Data
# pipeline (readers/decoders) can run beside training workers that each hold one CPU; otherwise a
# 2-worker run on a 2-core machine leaves no CPU for the data tasks and waits forever.
LOCAL_EXTRA_CPUS = 2


def init_ray(address: str | None = None, **kwargs) -> None:
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    address = address or os.environ.get("RAY_ADDRESS")
    if address is None:
        kwargs.setdefault("num_cpus", (os.cpu_count() or 1) + LOCAL_EXTRA_CPUS)
        address = "local"
    ray.init(address=address, **kwargs)
    ray.data.DataContext.get_current().enable_progress_bars = True
