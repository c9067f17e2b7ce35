"""The lease across processes: a holder killed with SIGKILL mid-run (its successor gets the lease once the short
TTL has passed) and successor processes racing to take over one expired local lease."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from thorax_ray.lease import LeaseBusy, acquire_lease

pytestmark = pytest.mark.slow  # each test starts Python subprocesses

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOLD = """
import sys, time
from thorax_ray.lease import acquire_lease
lease = acquire_lease(sys.argv[1], ttl_s=float(sys.argv[2]), about={"run_id": "doomed"})
print("held", flush=True)
time.sleep(600)
"""
RACE = """
import json, sys, time
from thorax_ray.lease import LeaseBusy, acquire_lease
root, rounds, start_at, step = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
won = []
for k in range(rounds):  # round k: every racer tries to take over lease k at the same instant
    time.sleep(max(0.0, start_at + k * step - time.time() - 0.005))
    while time.time() < start_at + k * step:  # spin: the racers start within microseconds of each other
        pass
    try:
        won.append(acquire_lease(f"{root}/{k}/_lock.json", ttl_s=60, keep_alive=False).token)
    except LeaseBusy:
        won.append(None)
print(json.dumps(won), flush=True)
"""


def _python(code: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_holder_killed_mid_run_is_succeeded_after_its_short_ttl(where, tmp_path, request):
    """The holder (TTL 1.5 s, renewed by its heartbeat) is SIGKILLed: it never releases. The next run is
    refused while the lease is fresh and gets it once the TTL has passed (default TTL: 60 s, was 600 s)."""
    if where == "local":
        uri = str(tmp_path / "out" / "_lock.json")
    else:
        uri = request.getfixturevalue("s3_bucket") + "/out/_lock.json"
    holder = _python(HOLD, uri, "1.5")
    try:
        assert holder.stdout.readline().strip() == "held"
        time.sleep(2.0)  # past one TTL: only the heartbeat keeps it
        with pytest.raises(LeaseBusy, match="run_id doomed"):
            acquire_lease(uri, ttl_s=60, keep_alive=False)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    killed = time.monotonic()
    with acquire_lease(uri, ttl_s=60, wait_s=15, poll_s=0.1) as successor:
        waited = time.monotonic() - killed
        successor.fence()
    assert waited < 1.5 + 1.0, f"the successor waited {waited:.1f} s for a lease with a 1.5 s TTL"


def test_successor_processes_racing_for_expired_local_leases_one_wins_each(tmp_path):
    """Three processes take over each of 60 expired leases at the same instant (one round every 50 ms)."""
    rounds, racers_n = 60, 3
    for k in range(rounds):
        acquire_lease(str(tmp_path / str(k) / "_lock.json"), ttl_s=0.01, keep_alive=False)  # never released
    time.sleep(0.02)
    start_at = time.time() + 4.0  # after the interpreters have started
    racers = [_python(RACE, str(tmp_path), str(rounds), str(start_at), "0.05") for _ in range(racers_n)]
    results = [json.loads(racer.communicate(timeout=120)[0]) for racer in racers]
    for k in range(rounds):
        winners = [won[k] for won in results if won[k]]
        assert len(winners) == 1, f"lease {k}: {len(winners)} processes took it over"
        with open(tmp_path / str(k) / "_lock.json") as handle:
            assert json.load(handle)["token"] == winners[0]
