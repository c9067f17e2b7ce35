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

.PHONY: demo test test-fast bench venv clean

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

clean:
	rm -rf $(VENV) data/demo runs
