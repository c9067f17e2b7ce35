"""The lease that keeps two writers off one output, locally and on a real S3-protocol server (moto)."""
import os
import threading
import time

import pytest

from thorax_ray.lease import LeaseBusy, LeaseLost, acquire_lease


@pytest.fixture(params=["local", "s3"])
def lease_uri(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "out" / "_lock.json")
    bucket = request.getfixturevalue("s3_bucket")
    return f"{bucket}/out/_lock.json"


def test_second_taker_is_refused_naming_the_holder_then_gets_it_after_release(lease_uri):
    first = acquire_lease(lease_uri, ttl_s=60, about={"run_id": "run-a"})
    with pytest.raises(LeaseBusy, match="run_id run-a"):
        acquire_lease(lease_uri, ttl_s=60, about={"run_id": "run-b"})
    first.release()
    with acquire_lease(lease_uri, ttl_s=60, about={"run_id": "run-b"}) as second:
        second.fence()


def test_a_waiting_taker_gets_it_when_the_holder_releases(lease_uri):
    first = acquire_lease(lease_uri, ttl_s=60)
    threading.Timer(1.0, first.release).start()
    started = time.monotonic()
    with acquire_lease(lease_uri, ttl_s=60, wait_s=30, poll_s=0.2):
        assert time.monotonic() - started < 30


def test_a_dead_holders_lease_is_taken_over_and_the_holder_learns_it_lost(lease_uri):
    dead = acquire_lease(lease_uri, ttl_s=1.0, keep_alive=False)  # never renewed: its holder "crashed"
    time.sleep(1.5)
    successor = acquire_lease(lease_uri, ttl_s=60)
    with pytest.raises(LeaseLost):
        dead.renew()
    with pytest.raises(LeaseLost):
        dead.fence()
    dead.release()  # does not delete the successor's lease
    with pytest.raises(LeaseBusy):
        acquire_lease(lease_uri, ttl_s=60)
    successor.release()


def test_a_renewed_lease_outlives_its_ttl(lease_uri):
    with acquire_lease(lease_uri, ttl_s=1.5) as holder:  # renewed every 0.5 s
        time.sleep(2.5)
        with pytest.raises(LeaseBusy):
            acquire_lease(lease_uri, ttl_s=1.5)
        holder.fence()


def test_many_simultaneous_takers_exactly_one_wins(lease_uri):
    winners, lock = [], threading.Lock()

    def take(i):
        try:
            lease = acquire_lease(lease_uri, ttl_s=60, keep_alive=False, about={"i": i})
        except LeaseBusy:
            return
        with lock:
            winners.append(lease)

    threads = [threading.Thread(target=take, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(winners) == 1
    winners[0].release()
    assert not os.path.exists(lease_uri) if not lease_uri.startswith("s3://") else True
