"""thorax_ray, its jobs and its benchmarks use Ray through its public API only: nothing under
`_internal`/`_private` (however imported), nothing of `ray.tune.impl`/`ray.tune.execution`, no underscore attribute
of a Ray object, even one a call returned (the next Ray upgrade would break it silently)."""
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SOURCES = sorted([*ROOT.glob("thorax_ray/**/*.py"), *ROOT.glob("jobs/*.py"), *ROOT.glob("bench/*.py")])
PRIVATE = re.compile(
    r"\bray(\.\w+)*\.(_(?!_)\w+)"  # ray.x._private, ray._raylet
    r"|\bfrom\s+ray(\.\w+)*\s+import\s+\(?[^#]*\b_(?!_)\w+"  # from ray import _private / from ray.x import _y
    r"|\bray\.tune\.(impl|execution)\b"  # Tune's internals outside an underscore
    r"|\bray(\.\w+)*\([^()]*\)\._(?!_)\w+"  # ray.get_runtime_context()._x
    r"|_experiment_analysis|ENV_VARS_TO_PROPAGATE")


def test_the_scan_covers_the_package_the_jobs_and_the_benchmarks():
    """An empty file list would make every parametrised check vanish without a failure."""
    folders = {path.relative_to(ROOT).parts[0] for path in SOURCES}
    assert folders == {"thorax_ray", "jobs", "bench"} and len(SOURCES) > 100


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_private_ray_api(path):
    hits = [f"{path.name}:{n}: {line.strip()}" for n, line in enumerate(path.read_text().splitlines(), 1)
            if PRIVATE.search(line) and not line.lstrip().startswith("#")]
    assert not hits, hits


def test_the_check_catches_what_the_old_code_did():
    assert PRIVATE.search("from ray.train.v2._internal import constants")
    assert PRIVATE.search("trials = grid._experiment_analysis.trials")
    assert PRIVATE.search("ray._private.state.state.get_cluster_config()")
    assert PRIVATE.search("from ray import _private")
    assert PRIVATE.search("from ray.util import _helper as helper")
    assert PRIVATE.search("from ray.tune.execution.tune_controller import TuneController")
    assert PRIVATE.search("import ray.tune.impl.tuner_internal")
    assert PRIVATE.search("node = ray.get_runtime_context()._node_id")
    assert not PRIVATE.search("from ray.data import RandomSeedConfig")
    assert not PRIVATE.search('versions = {"ray": ray.__version__}')
    assert not PRIVATE.search("from ray.train import Checkpoint, CheckpointConfig")
