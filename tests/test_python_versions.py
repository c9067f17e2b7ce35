"""The Pythons the package supports, CPython 3.11 to 3.13: pyproject.toml's requires-python admits each (so pip
installs it there) and its classifiers name each; its dependencies are ranges, not exact pins (the cluster's exact
pins live in requirements/cluster.lock, for 3.11); and `make test-pythons` runs the fast lane on 3.12 and 3.13,
each in its own virtualenv, while `make test` (what CI runs) stays on .venv. Offline: that the ranges resolve on
each version is what running `make test-pythons` shows."""
from __future__ import annotations

import os
import subprocess
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUPPORTED = ("3.11", "3.12", "3.13")
OTHERS = ("3.12", "3.13")


def project() -> dict:
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as handle:
        return tomllib.load(handle)["project"]


def make_dry_run(*targets: str) -> str:
    """What `make -n -B TARGETS` prints: every recipe line of the targets, none run; each version's interpreter
    given (PYTHON_X.Y=/given/pythonX.Y), not looked for."""
    given = [f"PYTHON_{version}=/given/python{version}" for version in OTHERS]
    return subprocess.run(["make", "-n", "-B", *given, *targets], cwd=REPO, capture_output=True, text=True, check=True,
                          env={**os.environ, "MAKEFLAGS": ""}).stdout


def makefile() -> str:
    with open(os.path.join(REPO, "Makefile"), encoding="utf-8") as handle:
        return handle.read()


@pytest.mark.parametrize("version", SUPPORTED)
def test_requires_python_admits_each_supported_version(version):
    """pip refuses to install on a Python that requires-python excludes: before, 3.12 and 3.13 were refused."""
    specifier = SpecifierSet(project()["requires-python"])
    assert specifier.contains(f"{version}.0") and specifier.contains(f"{version}.99"), (version, str(specifier))


def test_requires_python_admits_no_version_nobody_tested():
    specifier = SpecifierSet(project()["requires-python"])
    assert not specifier.contains("3.10.14") and not specifier.contains("3.14.0"), str(specifier)


def test_the_classifiers_name_each_supported_version_and_no_other():
    named = {c.rsplit(" :: ", 1)[1] for c in project()["classifiers"]
             if c.startswith("Programming Language :: Python :: 3.")}
    assert named == set(SUPPORTED), sorted(named)


def test_dependencies_are_ranges_not_exact_pins():
    """An exact pin resolves only where that one release has a wheel; the lock pins, pyproject states ranges."""
    texts = project()["dependencies"] + [t for extra in project()["optional-dependencies"].values() for t in extra]
    pinned = [t for t in texts if any(s.operator in ("==", "===") for s in Requirement(t).specifier)]
    assert not pinned, pinned


def test_make_test_pythons_runs_the_fast_lane_in_a_virtualenv_per_version():
    """A venv per version, made by that version's interpreter, then pytest -m "not slow" in it; 3.12 first."""
    printed = make_dry_run("test-pythons")
    for version in OTHERS:
        venv_python = f".venv-{version}/bin/python"
        lines = printed.splitlines()
        installs = [i for i, line in enumerate(lines) if line.startswith(f"{venv_python} -m pip install")]
        runs = [i for i, line in enumerate(lines) if line.startswith(f"{venv_python} -m pytest")]
        assert installs and len(runs) == 1 and installs[-1] < runs[0], (version, printed)
        assert '-m "not slow"' in lines[runs[0]], lines[runs[0]]
        assert f'interpreter="/given/python{version}"' in printed, printed
        assert f'"$interpreter" -m venv .venv-{version}' in printed, printed
    assert printed.index(".venv-3.12/bin/python -m pytest") < printed.index(".venv-3.13/bin/python -m pytest")


def test_ci_and_make_test_stay_on_dot_venv():
    text = makefile()
    assert "VENV := .venv\n" in text
    test_recipe = text[text.index("\ntest: "):].split("\n\n")[0]
    assert "$(PY) -m pytest" in test_recipe and "not slow" not in test_recipe, test_recipe
    with open(os.path.join(REPO, ".ci", "run"), encoding="utf-8") as handle:
        assert "make test " in handle.read()


def test_make_demo_and_make_test_fast_run_what_the_readme_says():
    """The README's `make demo` (jobs/demo.py) and `make test-fast` (the tests not marked slow), on .venv."""
    printed = make_dry_run("demo", "test-fast").splitlines()
    assert ".venv/bin/python jobs/demo.py" in printed, printed
    assert any(line.startswith(".venv/bin/python -m pytest ") and '-m "not slow"' in line
               for line in printed), printed


def test_the_version_virtualenvs_are_ignored_and_cleaned():
    with open(os.path.join(REPO, ".gitignore"), encoding="utf-8") as handle:
        assert ".venv-*/" in handle.read().split()
    printed = make_dry_run("clean")
    assert all(f".venv-{version}" in printed.split() for version in OTHERS), printed
