"""One progress line per stage: workers count on a tiny actor, the driver prints every 10% in a log (no
TTY) and updates one line in place on a terminal."""
import io
import time

import ray

from thorax_ray.progress import StageProgress, count


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@ray.remote
def work(counter, n):
    count(counter, n)


def test_a_log_gets_a_line_every_ten_percent_and_the_final_count(ray_local):
    out = io.StringIO()
    with StageProgress("prepare", total=100, stream=out, interval_s=0.05) as progress:
        for _ in range(10):
            ray.get(work.remote(progress.counter, 10))
            progress._show(progress._done())
        progress.finish(100)
    lines = out.getvalue().splitlines()
    assert 2 <= len(lines) <= 12 and all(line.startswith("[prepare] ") for line in lines)
    assert lines[-1].startswith("[prepare] 100/100 images (100%)") and "\x1b" not in out.getvalue()


def test_a_terminal_gets_one_line_updated_in_place(ray_local):
    out = Terminal()
    with StageProgress("score", total=40, unit="images", stream=out, interval_s=0.05) as progress:
        ray.get([work.remote(progress.counter, 10) for _ in range(4)])
        progress._show(progress._done())
    text = out.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n") and "\r[score] 40/40 images (100%)" in text


def test_counting_without_a_stage_is_a_no_op():
    count(None, 5)  # a job run without a progress line (e.g. a library call)


def test_the_stage_leaves_no_actor_behind_while_its_counter_is_still_held(ray_local):
    """The stage's work may hold the counter's handle after it ends (an actor pool's constructor arguments in a
    long-lived driver, e.g. the demo): the counter's actor is still killed, so stages do not pile up processes."""
    from ray.util.state import list_actors

    def alive_counters() -> int:
        return len(list_actors(address=ray.get_runtime_context().gcs_address, raise_on_missing_output=False,
                               filters=[("class_name", "=", "_Counter"), ("state", "=", "ALIVE")]))

    before = alive_counters()
    held = []
    for _ in range(2):
        with StageProgress("score", total=1, stream=io.StringIO(), interval_s=0.05) as progress:
            ray.get(work.remote(progress.counter, 1))
            held.append(progress.counter)
    deadline = time.monotonic() + 30
    while alive_counters() > before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert alive_counters() == before
