# make demo: install, then train, score, encode and sample on a real data set that ships with scikit-learn.
# make test: install, then run the test suite on every core (pytest-xdist).
# Both create (or reuse) the virtualenv in .venv. torch is installed first and pinned: an unpinned torch,
# even one pulled in by nflows, would fetch a multi-GB CUDA build.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH := torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: install demo test lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m funnelcli.demo

# One worker per core, up to four; a file's tests stay on one worker so that its shared fixtures are built once.
# Files are handed out in the order tests/conftest.py gives them (the longest first), not by their number of tests.
test: $(STAMP)
	$(PY) -m pytest -q -n auto --maxprocesses 4 --dist loadfile --no-loadscope-reorder

lint: $(STAMP)
	$(PY) -m ruff check funnelcli tests

clean:
	rm -rf $(VENV) demo runs .pytest_cache
