"""thorax_ray uses Ray through its public API only: nothing under `_internal`/`_private`, no underscore
attribute of a Ray object (the next Ray upgrade would break it silently)."""
import pathlib
import re

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "thorax_ray"
PRIVATE = re.compile(r"\bray(\.\w+)*\.(_(?!_)\w+)|_experiment_analysis|ENV_VARS_TO_PROPAGATE")  # not dunders


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_private_ray_api(path):
    hits = [f"{path.name}:{n}: {line.strip()}" for n, line in enumerate(path.read_text().splitlines(), 1)
            if PRIVATE.search(line) and not line.lstrip().startswith("#")]
    assert not hits, hits


def test_the_check_catches_what_the_old_code_did():
    assert PRIVATE.search("from ray.train.v2._internal import constants")
    assert PRIVATE.search("trials = grid._experiment_analysis.trials")
    assert PRIVATE.search("ray._private.state.state.get_cluster_config()")
    assert not PRIVATE.search("from ray.data import RandomSeedConfig")
    assert not PRIVATE.search('versions = {"ray": ray.__version__}')
