"""Connecting to Ray: a job joins the cluster it runs on (`ray job submit`) or starts a local one."""
from __future__ import annotations

import os


def init_ray(address: str | None = None, **kwargs) -> None:
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.data.DataContext.get_current().enable_progress_bars = True
    ray.init(address=address, log_to_driver=True, **kwargs)
