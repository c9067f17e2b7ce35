# Two commands: `make demo` (the main job on the embedded synthetic dataset) and `make test` (the full suite,
# what CI runs); `make test-fast` runs the tests not marked slow (no Ray, no training, no job subprocesses).
# Both create and reuse the virtualenv .venv; it is rebuilt when pyproject.toml changes.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# Test processes (pytest-xdist): each runs its own share of the tests and its own session fixtures (moto, one
# local Ray). Two on a 2-core machine: most of a Ray test is waiting on processes, not computing.
TEST_WORKERS ?= 2

# The cluster nodes' pinned environment (cluster.yaml's setup_commands `uv pip sync` it, then add the wheel with
# --no-deps): every dependency of pyproject.toml resolved for Linux x86_64 and Python 3.11 (PyPI's CUDA build of
# torch), with hashes. `make lock` keeps the pins it can; `make lock LOCK_ARGS=--upgrade` moves them. Needs uv.
UV ?= uv
LOCK := requirements/cluster.lock
LOCK_ARGS ?=

.PHONY: demo test test-fast bench venv clean lock

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) jobs/demo.py

test: $(STAMP)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal -m "not slow" $(PYTEST_ARGS)

lock:
	$(UV) pip compile --quiet pyproject.toml --python-version 3.11 --python-platform x86_64-unknown-linux-gnu \
		--generate-hashes --custom-compile-command "make lock" $(LOCK_ARGS) -o $(LOCK)

clean:
	rm -rf $(VENV) data/demo runs
