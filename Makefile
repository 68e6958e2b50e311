# The README's commands. Everything installs into .venv with plain pip.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup demo test test-fast bench results-page clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: setup
	$(VENV)/bin/dynsweep run sweeps/specs/quickstart.yaml

test: setup
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=25   # two test files at once: most of them wait on Ray

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

bench: setup
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	$(PY) benchmarks/bench_probes.py --threads 1 --repeats 5 --clock cpu

results-page: setup   # docs/results.md's verdict tables from docs/verdicts/*.json
	$(PY) -m sweeps.results_page

clean:
	rm -rf $(VENV) runs .pytest_cache
