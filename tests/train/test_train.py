"""Driver-side settings of a training run (no Ray needed)."""
import os

from thorax_ray.train.train import POLL_ENV, REPORT_POLL_SECONDS, report_polling


def test_report_polling_sets_ray_trains_poll_interval_for_the_run_only(monkeypatch):
    monkeypatch.delenv(POLL_ENV, raising=False)
    with report_polling():
        assert float(os.environ[POLL_ENV]) == REPORT_POLL_SECONDS < 2.0  # Ray's default is 2 s
    assert POLL_ENV not in os.environ


def test_report_polling_keeps_a_value_the_user_set(monkeypatch):
    monkeypatch.setenv(POLL_ENV, "3")
    with report_polling():
        assert os.environ[POLL_ENV] == "3"
    assert os.environ[POLL_ENV] == "3"
