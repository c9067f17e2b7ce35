"""Fixtures around tests/s3_fault_proxy.py: a fault-injecting proxy in front of the session's moto server
(tests/conftest.py's `s3_server`). Import the fixtures into a test module:

    from tests import fault_fixtures
    fault_proxy = fault_fixtures.fault_proxy  # fixture
"""
from __future__ import annotations

import pytest

from tests.s3_fault_proxy import FaultProxy


@pytest.fixture
def fault_proxy(s3_server):
    """A factory: `fault_proxy(slowdown=0.1, fail_after_apply=0.1, seed=7, always={...})` starts a proxy in
    front of moto (stopped after the test) and returns it; its `.endpoint` is what clients are pointed at."""
    started = []

    def start(**faults) -> FaultProxy:
        proxy = FaultProxy(s3_server, **faults).start()
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


@pytest.fixture
def no_backoff(monkeypatch):
    """botocore's retries in this process without their waits (the tries are what the tests count)."""
    from botocore.retries.standard import ExponentialBackoff

    monkeypatch.setattr(ExponentialBackoff, "delay_amount", lambda self, context: 0.0)
