"""Every Ray setting outside Ray's documented API is listed with its reason (thorax_ray.ray_settings), and the
installed Ray still reads each one: an upgrade that drops one fails here, not silently in a run."""
import pathlib
import re

import pytest
import ray

from thorax_ray import ray_settings
from thorax_ray.ray_settings import DOCUMENTED_ENV, UNDOCUMENTED

ROOT = pathlib.Path(__file__).resolve().parents[1]
RAY = pathlib.Path(ray.__file__).parent
SOURCES = [*ROOT.glob("thorax_ray/**/*.py"), *ROOT.glob("jobs/*.py"), *ROOT.glob("bench/*.py")]


@pytest.mark.parametrize("setting", UNDOCUMENTED, ids=lambda s: s.name)
def test_the_installed_ray_still_reads_each_undocumented_setting(setting):
    source = RAY / setting.read_in
    assert source.is_file(), f"{setting.name}: Ray no longer has {setting.read_in}; see thorax_ray/ray_settings.py"
    assert setting.name in source.read_text(), f"{setting.name} is no longer read in ray/{setting.read_in}"
    assert setting.why and setting.kind in ("environment variable", "log_once key", "warning text")


def test_every_ray_setting_in_the_code_is_listed():
    listed = {s.name for s in UNDOCUMENTED} | set(DOCUMENTED_ENV)
    used = {name for path in SOURCES for name in re.findall(r"[\"'](RAY_[A-Z0-9_]+)[\"']", path.read_text())}
    assert used and used <= listed, sorted(used - listed)
    calls = [argument.strip() for path in SOURCES for argument in re.findall(r"log_once\(([^)]*)\)", path.read_text())]
    assert calls, "no log_once call found: the check below would pass on nothing"
    keys = {argument.strip("\"'") if argument[:1] in "\"'" else getattr(ray_settings, argument, argument)
            for argument in calls}
    assert keys <= listed, sorted(keys - listed)
