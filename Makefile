# Two commands: `make demo` (the main job on the embedded synthetic dataset) and `make test` (the full suite,
# what CI runs); `make test-fast` runs the tests not marked slow (no Ray, no training, no job subprocesses).
# Both create and reuse the virtualenv .venv (Python 3.11); it is rebuilt when pyproject.toml changes.
# `make test-pythons` runs the fast lane on the other supported Pythons, 3.12 then 3.13, each in its own virtualenv
# (.venv-3.12, .venv-3.13); `make test-fast-3.12` runs one. CI runs the full suite on 3.11 only.
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

# The Pythons besides .venv's that the package supports (pyproject.toml's requires-python). The interpreter for X.Y
# is PYTHON_X.Y if given (`make test-pythons PYTHON_3.13=/opt/py313/bin/python3`), else pythonX.Y on PATH if it
# runs (a pyenv shim of a version not selected does not), else pyenv's newest X.Y.
OTHER_PYTHONS := 3.12 3.13
OTHER_STAMPS := $(OTHER_PYTHONS:%=.venv-%/.installed)
OTHER_TESTS := $(OTHER_PYTHONS:%=test-fast-%)
python_for = $(shell for p in python$(1) "$$(pyenv prefix $(1) 2>/dev/null)/bin/python$(1)"; do \
	"$$p" -c 'import sys; print(sys.executable)' 2>/dev/null && break; done)

.PHONY: demo test test-fast test-pythons $(OTHER_TESTS) bench venv clean lock

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

$(OTHER_STAMPS): .venv-%/.installed: pyproject.toml
	@test -x .venv-$*/bin/python || { interpreter="$(or $(PYTHON_$*),$(call python_for,$*))"; \
		test -n "$$interpreter" || { echo "make: no Python $* found: put python$* on PATH," \
		"pyenv install $*, or pass PYTHON_$*=/path/to/python$*" >&2; exit 1; }; \
		echo "$$interpreter -m venv .venv-$*"; "$$interpreter" -m venv .venv-$*; }
	.venv-$*/bin/python -m pip install --quiet --upgrade pip
	.venv-$*/bin/python -m pip install --quiet -e '.[test]'
	touch $@

$(OTHER_TESTS): test-fast-%: .venv-%/.installed
	.venv-$*/bin/python -m pytest -n $(TEST_WORKERS) --dist worksteal -m "not slow" $(PYTEST_ARGS)

test-pythons: $(OTHER_TESTS)

lock:
	$(UV) pip compile --quiet pyproject.toml --python-version 3.11 --python-platform x86_64-unknown-linux-gnu \
		--generate-hashes --custom-compile-command "make lock" $(LOCK_ARGS) -o $(LOCK)

clean:
	rm -rf $(VENV) $(OTHER_PYTHONS:%=.venv-%) data/demo runs
